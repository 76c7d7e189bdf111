"""ONNX Runtime int8 backend of a sentence-transformers encoder, for fast CPU encoding.

The packaged weights are exported once with `torch.onnx.export` (transformer + mean pooling + L2
normalisation, as the sentence-transformers pipeline computes them), dynamically quantised to int8 with
`onnxruntime.quantization.quantize_dynamic`, and kept under the data dir's cache folder in a folder
named by the weights digest and the export settings. The export is written to a staging folder and
renamed into place under a file lock, so concurrent builds neither export twice nor read half a file.
Encoding needs only `tokenizers`, `numpy` and `onnxruntime` (torch is imported for the export alone).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.contracts.layout import cache_root
from lvm_core.io import storage

__all__ = [
    "DEFAULT_EXPORT_SETTINGS",
    "MODEL_FILE",
    "OnnxEncoder",
    "default_threads",
    "encoder_cache_dir",
    "ensure_onnx_export",
    "export_key",
]

MODEL_FILE = "model.onnx"
EXPORT_INFO_FILE = "export.json"
AGREEMENT_FILE = "agreement.json"

# What decides the exported graph and its weights. Per-channel weight scales matter: per-tensor int8
# drops the mean cosine to fp32 to ~0.956 on the sample's chunks, per-channel keeps it at ~0.993.
DEFAULT_EXPORT_SETTINGS: dict[str, Any] = {
    "format": 1,
    "exporter": "torch.onnx.export(dynamo=False)",
    "opset": 17,
    "attention": "eager",
    "pooling": "mean",
    "normalize": True,
    "quantization": "dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "op_types": ["MatMul"],
    "batching": "one text per call",  # see OnnxEncoder; part of the key so agreement records follow it
}


def encoder_cache_dir(data_dir: Path) -> Path:
    """Where encoder exports (and their agreement checks) are kept: `<cache root>/encoders` (`layout.cache_root`)."""
    return cache_root(data_dir) / "encoders"


def export_key(weights_digest: str, settings: dict[str, Any]) -> str:
    """Folder name of one export: the source weights and every setting that changes the result."""
    return storage.json_digest({"weights_digest": weights_digest, "settings": settings})[:16]


def settings_tag(settings: dict[str, Any]) -> str:
    """Precision tag of the fingerprint: "int8" for the default export, "int8-<digest>" for another one."""
    if settings == DEFAULT_EXPORT_SETTINGS:
        return "int8"
    return "int8-" + storage.json_digest(settings)[:8]


def default_threads() -> int:
    """Intra-op threads: `OMP_NUM_THREADS` when set, else the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"OMP_NUM_THREADS={env!r} is not an integer") from None
        if n >= 1:
            return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _max_seq_length(folder: Path) -> int:
    """The sentence-transformers truncation length (`sentence_bert_config.json`), else the tokenizer's."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        try:
            value = storage.read_json(folder / name).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and 0 < value <= 8192:
            return value
    return 512


def _check_mean_pooling(folder: Path) -> None:
    """The export implements Transformer -> mean pooling -> Normalize; refuse any other pipeline."""
    modules = storage.read_json(folder / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        raise ValueError(f"{folder}: modules {kinds}; the ONNX export supports Transformer, Pooling, Normalize only")
    pooling = storage.read_json(folder / modules[1]["path"] / "config.json")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{folder}: pooling {modes}; the ONNX export supports mean pooling only")


def _export_fp32(folder: Path, out: Path, settings: dict[str, Any]) -> None:
    """Transformer + mean pooling + normalisation as one ONNX graph with dynamic batch and length."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder), attn_implementation=settings["attention"]).eval()

    class Pooled(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module):
            super().__init__()
            self.transformer = transformer

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            # sentence-transformers Pooling(mean): sum of token vectors / clamp(token count, 1e-9)
            pooled = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = torch.ones(2, 16, dtype=torch.long)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            Pooled(model),
            (example, torch.ones_like(example), torch.zeros_like(example)),
            str(out),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "sentence_embedding": {0: "batch"}},
            opset_version=settings["opset"],
            dynamo=False,
        )


class _DropPreprocessAdvice(logging.Filter):
    """quantize_dynamic logs advice to run shape pre-processing on the root logger; the export needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(src: Path, out: Path, settings: dict[str, Any]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropPreprocessAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=getattr(QuantType, settings["weight_type"]),
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            op_types_to_quantize=list(settings["op_types"]),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(advice)


def ensure_onnx_export(
    folder: Path, weights_digest: str, cache_dir: Path, settings: dict[str, Any] | None = None
) -> Path:
    """The export folder for these weights and settings, exporting it first if it is not cached.

    Returns the folder holding `model.onnx` and `export.json` (settings, versions, export seconds).
    """
    settings = DEFAULT_EXPORT_SETTINGS if settings is None else settings
    target = Path(cache_dir) / f"onnx-{settings_tag(settings)}-{export_key(weights_digest, settings)}"
    if (target / MODEL_FILE).is_file():
        return target
    _check_mean_pooling(folder)
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if (target / MODEL_FILE).is_file():  # another process exported it while we waited
            return target
        t0 = time.perf_counter()
        with storage.atomic_dir(target) as staging:
            fp32 = staging / "fp32.onnx"
            _export_fp32(folder, fp32, settings)
            t_export = time.perf_counter() - t0
            _quantize(fp32, staging / MODEL_FILE, settings)
            fp32.unlink()
            import onnxruntime
            import torch

            storage.write_json(
                staging / EXPORT_INFO_FILE,
                {
                    "source": str(folder),
                    "weights_digest": weights_digest,
                    "settings": settings,
                    "seconds_export": round(t_export, 3),
                    "seconds_total": round(time.perf_counter() - t0, 3),
                    "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__,
                    "python": platform.python_version(),
                },
            )
    return target


class OnnxEncoder:
    """Encodes with an int8 ONNX export through ONNX Runtime on CPU; same tokenizer and pooling as fp32.

    Dynamic quantisation scales activations per call by the range of the whole input tensor, so a
    text's vector would depend on the other texts (and padding) of its batch. Each text therefore runs
    alone, unpadded: its vector depends on the text only, so cached vectors stay valid whatever batch
    they came from. On CPU this costs no throughput (measured: CPU time of one-text calls within the
    noise of batches of 64) and agrees better with fp32 (no padding in the activation range).
    """

    backend = "onnx"

    def __init__(
        self,
        folder: Path,
        export_dir: Path,
        fingerprint: Any,
        threads: int | None = None,
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_path = Path(folder)
        self.export_dir = Path(export_dir)
        self.fingerprint = fingerprint
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        self.tokenizer = Tokenizer.from_file(str(self.model_path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(_max_seq_length(self.model_path))
        options = ort.SessionOptions()
        # One compute thread per run, `threads` runs at once (`encode`): a one-text run is too small to split
        # well across cores (measured 1.6 cores busy of 2), and a vector never depends on the core count.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning: on shared cores (other builds, Dask workers) the
        # spinning doubled the CPU time per chunk and halved throughput (bench_encoders, load average 20+).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.export_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.agreement: dict[str, Any] | None = None

    @property
    def cache_key(self) -> str:
        """Names this export in agreement records (its folder name)."""
        return self.export_dir.name

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated as the fp32 pipeline truncates (for checks and tests)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """float32 (len(texts), dim) unit rows; `batch_size` is checked but each text runs alone (see class)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        out = np.empty((len(texts), self.fingerprint.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        bar = None
        if show_progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encoding chunks", unit="chunk")
        ids_of = self.token_ids(texts)

        def run(rows: range) -> None:
            for i in rows:
                input_ids = np.asarray([ids_of[i]], dtype=np.int64)
                feeds = {
                    "input_ids": input_ids,
                    "attention_mask": np.ones_like(input_ids),
                    "token_type_ids": np.zeros_like(input_ids),
                }
                (vector,) = self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
                out[i] = vector[0]
                if bar is not None:
                    bar.update(1)

        n_parts = min(self.threads, len(texts))
        parts = [range(p, len(texts), n_parts) for p in range(n_parts)]  # interleaved: long texts spread out
        if n_parts == 1:
            run(parts[0])
        else:  # InferenceSession.run is thread-safe and releases the GIL
            with ThreadPoolExecutor(max_workers=n_parts, thread_name_prefix="lvm-onnx") as pool:
                for f in [pool.submit(run, part) for part in parts]:
                    f.result()
        if bar is not None:
            bar.close()
        return out

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.fingerprint.model_name!r}, {self.export_dir.name}, threads={self.threads})"
