"""A fast deterministic test encoder for benchmarks: unit vectors from a seeded hash of the text.

Benchmarks of the build's memory and time at 10^5–10^6 chunks would otherwise measure the transformer.
This encoder costs microseconds per text, so what is left is the platform. Its vectors carry no meaning
(the coherence, leakage and oracle numbers of a dataset built with it say nothing about quality), so it
has a fingerprint of its own — model name `hash-test-384`, backend `hash-test`, a weights digest naming
the algorithm and its version — and is reached only by the explicit spec `hash-test`, never by default.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from lvm_core.data.chunking import text_hash
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.io.vectors import l2_normalize

__all__ = [
    "HASH_TEST_DIM",
    "HASH_TEST_FINGERPRINT",
    "HASH_TEST_SPEC",
    "HashTestEncoder",
    "is_hash_test_spec",
]

log = logging.getLogger(__name__)
_announced: list[bool] = []  # warned once per process

HASH_TEST_SPEC = "hash-test"
HASH_TEST_DIM = 384
_SEED = 20260101
# Bump the version when the algorithm changes: the digest is what keeps old cached vectors apart.
_ALGORITHM = f"hash-test-v1:shake_128(seed={_SEED},sha1(normalised text))->int16x{HASH_TEST_DIM}->l2"

HASH_TEST_FINGERPRINT = EncoderFingerprint(
    model_name=f"hash-test-{HASH_TEST_DIM}",
    weights_digest=_ALGORITHM,
    dim=HASH_TEST_DIM,
    normalized=True,
    casefold=True,  # vectors come from the case-folded text hash, as the chunk hashes that key the cache
    backend="hash-test",
    precision="fp32",
)


def is_hash_test_spec(spec: object) -> bool:
    """True for the explicit test specs only: `hash-test` or the fingerprint's own spec."""
    return isinstance(spec, str) and spec in (HASH_TEST_SPEC, HASH_TEST_FINGERPRINT.spec)


class HashTestEncoder:
    """Unit vectors from a seeded hash of each text's case-folded hash (equal hashes, equal vectors)."""

    agreement = None  # not a backend of real weights: nothing to agree with
    casefold = True

    def __init__(self) -> None:
        if not _announced:
            _announced.append(True)
            log.warning("encoder %s: the hash test encoder for benchmarks; its vectors carry no meaning",
                        HASH_TEST_FINGERPRINT.describe())

    @property
    def fingerprint(self) -> EncoderFingerprint:
        return HASH_TEST_FINGERPRINT

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """float32 (len(texts), 384), rows L2-normalised; `batch_size` and `show_progress` are ignored."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single string")
        seed = f"{_SEED}\0".encode()
        raw = b"".join(
            hashlib.shake_128(seed + text_hash(t, True).encode()).digest(2 * HASH_TEST_DIM) for t in texts
        )
        vectors = np.frombuffer(raw, dtype="<i2").reshape(len(texts), HASH_TEST_DIM).astype(np.float32)
        vectors += 0.5  # int16 is -32768..32767: centred, and no row can be all zero
        return l2_normalize(vectors, out=vectors)

    def __repr__(self) -> str:
        return f"HashTestEncoder({HASH_TEST_FINGERPRINT.model_name!r}, test only)"
