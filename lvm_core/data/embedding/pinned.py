"""One encoder for a whole build: its fingerprint resolved once, and every worker held to it.

The backend of a spec may be decided per process ("auto": CUDA fp16 on a GPU, torch fp32 on a CPU), and
a worker may hold other weights than the machine that started the build. Vectors of two fingerprints must
not meet in one dataset, so the build resolves the spec once (`pin_encoder`, without loading the model),
hands the result to every embed shard, and a worker whose encoder is not that one fails at once, naming
itself and what it has (`load_pinned`), instead of the build failing after all the embedding.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from lvm_core.data.embedding import onnx
from lvm_core.data.embedding.encoder import BACKENDS, load_encoder, parse_encoder_spec
from lvm_core.data.embedding.fingerprint import Encoder, EncoderFingerprint, EncoderLoadError
from lvm_core.data.embedding.hash_encoder import HASH_TEST_FINGERPRINT, HASH_TEST_SPEC, is_hash_test_spec
from lvm_core.data.embedding.model_folder import encoder_casefolds, output_dim, resolve_model_folder, weights_digest

__all__ = ["PinnedEncoder", "PinnedEncoderError", "load_pinned", "pin_encoder", "worker_name"]


class PinnedEncoderError(EncoderLoadError):
    """A worker cannot produce the fingerprint the build pinned (other weights, backend or device)."""


@dataclass(frozen=True)
class PinnedEncoder:
    """What every embed shard of a build loads (`spec`, its backend decided) and must get (`fingerprint`)."""

    spec: str
    fingerprint: EncoderFingerprint


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def pin_encoder(spec: str | None, device: str | None = None) -> PinnedEncoder:
    """The fingerprint a spec "<model>[@<backend>]" gives here, read from the model's files (not loaded).

    "auto" is decided once, by this process's device (`device`, else CUDA when present): workers then
    load that backend whatever their own hardware.
    """
    if is_hash_test_spec(spec):  # benchmarks only: no model files, one fingerprint everywhere
        return PinnedEncoder(spec=HASH_TEST_SPEC, fingerprint=HASH_TEST_FINGERPRINT)
    name, backend = parse_encoder_spec(spec)
    if backend == "auto":
        cuda = device.startswith("cuda") if device else _cuda_available()
        backend = "torch-fp16" if cuda else "torch"
    kind, precision = BACKENDS[backend] or ("torch", "fp32")
    if kind == "onnx":
        precision = onnx.settings_tag(onnx.DEFAULT_EXPORT_SETTINGS)
    folder, model_name = resolve_model_folder(name)
    fingerprint = EncoderFingerprint(
        model_name=model_name, weights_digest=weights_digest(folder), dim=output_dim(folder), normalized=True,
        casefold=encoder_casefolds(folder), backend=kind, precision=precision,
    )
    return PinnedEncoder(spec=f"{name}@{'torch' if backend == 'torch-fp32' else backend}", fingerprint=fingerprint)


def worker_name() -> str:
    """This process as a person finds it in a cluster: host and pid."""
    return f"{socket.gethostname()} (pid {os.getpid()})"


def load_pinned(pinned: PinnedEncoder, cache_dir: Path | None = None) -> Encoder:
    """The build's encoder in this process; `PinnedEncoderError` (permanent, not retried) when it cannot be had."""
    try:
        encoder = load_encoder(pinned.spec, cache_dir=cache_dir)
    except EncoderLoadError as exc:
        raise PinnedEncoderError(
            f"worker {worker_name()} cannot load the build's encoder {pinned.spec!r} "
            f"(pinned {pinned.fingerprint.describe()}): {exc}"
        ) from exc
    if encoder.fingerprint != pinned.fingerprint:
        raise PinnedEncoderError(
            f"worker {worker_name()} has encoder {encoder.fingerprint.describe()}, but the build pinned "
            f"{pinned.fingerprint.describe()}; give every worker the same model files and backend"
        )
    return encoder
