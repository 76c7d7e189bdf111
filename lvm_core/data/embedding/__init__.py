"""Chunk embeddings: the encoder, its fingerprint and `embed_texts` (cache in embedding.cache, files in vector_files).

Every embeddings artifact carries the fingerprint of the encoder that produced it (model name, weights
digest, dimension, normalisation). Vectors from two encoders live in different spaces, so an artifact
built with another fingerprint is refused instead of being mixed in.

Modules: `fingerprint` (identity, Encoder protocol, errors), `model_folder` (where the weights are,
digest, casing), `encoder` (loading, backend choice), `agreement` (faster backends against fp32),
`onnx` (ONNX int8 export and encoder), `embed` (embed_texts), `cache` (the persistent vector cache).
"""

from __future__ import annotations

from lvm_core.data.embedding.agreement import (
    AGREEMENT_MIN_MEAN_COSINE,
    agreement_sample,
    check_agreement,
    measure_agreement,
)
from lvm_core.data.embedding.embed import EmbedStats, embed_texts
from lvm_core.data.embedding.encoder import (
    BACKENDS,
    SentenceTransformerEncoder,
    load_encoder,
    parse_encoder_spec,
)
from lvm_core.data.embedding.fingerprint import (
    UNIT_NORM_TOLERANCE,
    Encoder,
    EncoderAgreementError,
    EncoderFingerprint,
    EncoderLoadError,
    FingerprintMismatchError,
    ensure_same_fingerprint,
)
from lvm_core.data.embedding.model_folder import (
    CANONICAL_DEFAULT_MODEL,
    DEFAULT_MODEL,
    encoder_casefolds,
    weights_digest,
)

__all__ = [
    "CANONICAL_DEFAULT_MODEL",
    "DEFAULT_MODEL",
    "UNIT_NORM_TOLERANCE",
    "EmbedStats",
    "Encoder",
    "EncoderFingerprint",
    "AGREEMENT_MIN_MEAN_COSINE",
    "BACKENDS",
    "EncoderAgreementError",
    "EncoderLoadError",
    "FingerprintMismatchError",
    "encoder_casefolds",
    "SentenceTransformerEncoder",
    "embed_texts",
    "ensure_same_fingerprint",
    "agreement_sample",
    "check_agreement",
    "load_encoder",
    "measure_agreement",
    "parse_encoder_spec",
    "weights_digest",
]
