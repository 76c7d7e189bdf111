"""Agreement of a faster encoder backend with the torch fp32 reference, measured on real chunks.

A backend other than torch fp32 (fp16, ONNX int8) is used only if its vectors agree closely with fp32
ones on a fixed sample of the embedded enwiki; each export is measured once and the record kept.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from lvm_core.data.embedding.fingerprint import (
    Encoder,
    EncoderAgreementError,
    EncoderFingerprint,
    EncoderLoadError,
)
from lvm_core.io import storage

__all__ = [
    "AGREEMENT_MIN_MEAN_COSINE",
    "AGREEMENT_SAMPLE_SIZE",
    "agreement_sample",
    "check_agreement",
    "measure_agreement",
    "require_agreement",
]

# A backend other than torch fp32 is used only if its vectors agree this closely with fp32 ones.
AGREEMENT_MIN_MEAN_COSINE = 0.99
AGREEMENT_SAMPLE_SIZE = 256

_sample_cache: dict[int, list[str]] = {}
_sample_lock = threading.Lock()


def agreement_sample(n: int = AGREEMENT_SAMPLE_SIZE) -> list[str]:
    """Fixed check texts: every 8th chunk (default chunking) of the embedded enwiki sample, the first `n`."""
    with _sample_lock:
        if n not in _sample_cache:
            # Imported when a check runs: the readers and the sentence splitter cost ~0.3 s to import.
            from itertools import islice

            from lvm_core.data.chunking import iter_chunks
            from lvm_core.data.ingest.sources import read_articles

            rows = islice(iter_chunks(read_articles("sample")), 0, None, 8)
            texts = [str(row["text"]) for row in islice(rows, n)]
            if len(texts) < n:
                raise EncoderLoadError(f"the embedded sample yields {len(texts)} check chunks, fewer than {n}")
            _sample_cache[n] = texts
        return _sample_cache[n]


def measure_agreement(
    candidate: Encoder, reference: Encoder, texts: Sequence[str], batch_size: int = 64
) -> dict[str, Any]:
    """Cosine between each text's candidate and reference vectors: mean, median, min over `texts`."""
    a = candidate.encode(texts, batch_size=batch_size)
    b = reference.encode(texts, batch_size=batch_size)
    cos = np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)
    return {
        "reference": reference.fingerprint.id,
        "candidate": candidate.fingerprint.id,
        "n_texts": len(texts),
        "sample_digest": storage.json_digest(list(texts))[:16],
        "mean_cosine": round(float(cos.mean()), 6),
        "median_cosine": round(float(np.median(cos)), 6),
        "min_cosine": round(float(cos.min()), 6),
    }


def check_agreement(candidate: Encoder, reference: Encoder, cache_dir: Path | None) -> dict[str, Any]:
    """`measure_agreement` on `agreement_sample()`, kept in `<cache_dir>/agreement/<candidate key>.json`.

    A kept record is reused when its reference, candidate and sample match, so each export is measured
    once, not once per process or worker.
    """
    texts = agreement_sample()
    expected = {
        "reference": reference.fingerprint.id,
        "candidate": candidate.fingerprint.id,
        "n_texts": len(texts),
        "sample_digest": storage.json_digest(list(texts))[:16],
    }
    if cache_dir is None:
        return measure_agreement(candidate, reference, texts)
    key = getattr(candidate, "cache_key", None) or candidate.fingerprint.id
    path = Path(cache_dir) / "agreement" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.name}.lock"))):  # workers starting together measure once
        try:
            kept = storage.read_json(path)
        except (OSError, ValueError):
            kept = None
        if isinstance(kept, dict) and all(kept.get(k) == v for k, v in expected.items()):
            return kept
        result = measure_agreement(candidate, reference, texts)
        with storage.atomic_path(path) as tmp:
            storage.write_json(tmp, result)
    return result


def require_agreement(fp: EncoderFingerprint, agreement: dict[str, Any], min_mean: float) -> None:
    """Raise `EncoderAgreementError` (with the measured numbers) when the mean cosine is below `min_mean`."""
    if agreement["mean_cosine"] < min_mean:
        raise EncoderAgreementError(
            f"encoder {fp.model_name!r} with backend {fp.backend} {fp.precision} agrees with torch fp32 at "
            f"mean cosine {agreement['mean_cosine']:.4f} (median {agreement['median_cosine']:.4f}, "
            f"min {agreement['min_cosine']:.4f}) over {agreement['n_texts']} check chunks, below the "
            f"required mean {min_mean:g}; use the torch backend (\"{fp.model_name}@torch\")"
        )

