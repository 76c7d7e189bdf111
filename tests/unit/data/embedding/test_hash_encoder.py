"""The hash test encoder (benchmarks only): deterministic unit vectors, its own fingerprint, never the default."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_core.contracts.build_options import BuildOptions
from lvm_core.data.chunking import text_hash
from lvm_core.data.embedding.cache import EmbeddingCache
from lvm_core.data.embedding.embed import embed_texts
from lvm_core.data.embedding.encoder import load_encoder, parse_encoder_spec
from lvm_core.data.embedding.fingerprint import EncoderFingerprint, EncoderLoadError
from lvm_core.data.embedding.hash_encoder import (
    HASH_TEST_DIM,
    HASH_TEST_FINGERPRINT,
    HashTestEncoder,
    is_hash_test_spec,
)
from lvm_core.data.embedding.model_folder import DEFAULT_MODEL, encoder_casefolds

TEXTS = ["The cat sat on the mat.", "the  CAT sat on the mat.", "A different sentence entirely.", ""]


def test_vectors_are_deterministic_unit_float32_keyed_by_the_casefolded_hash() -> None:
    enc = load_encoder("hash-test")
    a = enc.encode(TEXTS)
    b = HashTestEncoder().encode(list(reversed(TEXTS)))[::-1]
    assert a.dtype == np.float32 and a.shape == (len(TEXTS), HASH_TEST_DIM)
    np.testing.assert_array_equal(a, b)  # same text, same vector, whatever the batch
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert text_hash(TEXTS[0]) == text_hash(TEXTS[1])
    np.testing.assert_array_equal(a[0], a[1])  # equal cache keys must mean equal vectors
    assert abs(float(a[0] @ a[2])) < 0.3  # distinct texts: unrelated directions
    assert enc.encode([]).shape == (0, HASH_TEST_DIM)


def test_fingerprint_is_its_own_and_names_the_test_algorithm() -> None:
    fp = load_encoder("hash-test").fingerprint
    assert fp == HASH_TEST_FINGERPRINT
    assert fp.model_name == "hash-test-384" and fp.backend == "hash-test" and not fp.is_reference
    assert "hash-test-v1" in fp.weights_digest and "hash-test-384" in fp.describe()
    assert EncoderFingerprint.from_dict(fp.to_dict()) == fp
    same_name_other_backend = EncoderFingerprint(fp.model_name, fp.weights_digest, fp.dim)
    assert same_name_other_backend.id != fp.id
    # the fingerprint stored in a dataset loads the same encoder back (serving, oracle)
    assert isinstance(load_encoder(fp), HashTestEncoder)
    assert encoder_casefolds("hash-test") is True


def test_only_the_explicit_spec_reaches_it() -> None:
    assert BuildOptions().encoder is None or not is_hash_test_spec(BuildOptions().encoder)
    assert parse_encoder_spec(None)[0] == DEFAULT_MODEL
    for spec in ("Hash-Test", "hash-test-384", "hash_test", "hash-test@torch"):
        assert not is_hash_test_spec(spec)
        with pytest.raises(EncoderLoadError):
            load_encoder(spec)


def test_default_encoder_is_not_the_hash_encoder() -> None:
    enc = load_encoder(None, device="cpu")
    assert not isinstance(enc, HashTestEncoder)
    assert enc.fingerprint.id != HASH_TEST_FINGERPRINT.id


def test_embed_texts_caches_under_the_test_fingerprint(tmp_path) -> None:
    enc = load_encoder("hash-test")
    hashes = [text_hash(t) for t in TEXTS]
    cache = EmbeddingCache(tmp_path, enc.fingerprint)
    try:
        first, stats = embed_texts(TEXTS, hashes, enc, cache)
        again, stats2 = embed_texts(TEXTS, hashes, enc, cache)
    finally:
        cache.close()
    assert stats.n_encoded == 3 and stats2.n_encoded == 0
    np.testing.assert_array_equal(first, again)


def test_loading_it_says_so(caplog, monkeypatch) -> None:
    from lvm_core.data.embedding import hash_encoder

    monkeypatch.setattr(hash_encoder, "_announced", [])
    with caplog.at_level("WARNING", logger=hash_encoder.__name__):
        load_encoder("hash-test")
        load_encoder("hash-test")
    assert [r.getMessage() for r in caplog.records if "hash test encoder" in r.getMessage()] == [
        f"encoder {HASH_TEST_FINGERPRINT.describe()}: the hash test encoder for benchmarks; its vectors carry no meaning"
    ]
