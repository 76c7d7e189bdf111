"""Encoder fingerprint, embedding cache, embed_texts and embeddings files."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lvm_core.contracts.errors import DataContractError  # noqa: E402
from lvm_core.contracts.layout import EMBEDDINGS_FILE, ENCODER_FILE
from lvm_core.data.embedding.cache import EmbeddingCache  # noqa: E402
from lvm_core.data.embedding.embed import embed_texts
from lvm_core.data.embedding.encoder import load_encoder
from lvm_core.data.embedding.fingerprint import (
    Encoder,
    EncoderFingerprint,
    EncoderLoadError,
    FingerprintMismatchError,
    ensure_same_fingerprint,
)
from lvm_core.data.embedding.model_folder import CANONICAL_DEFAULT_MODEL, encoder_casefolds, weights_digest  # noqa: E402
from lvm_core.data.vector_files import load_embeddings, save_embeddings  # noqa: E402
from tests.fixtures.vectors import random_unit

DIM = 8

SENTENCES = [
    "The cat sat on the mat.",
    "Anarchism is a political philosophy that is skeptical of authority.",
    "Albedo is the fraction of sunlight that is diffusely reflected by a body.",
    "The cat sat on the mat.",
    "Autism is a neurodevelopmental condition.",
]


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()


class CountingEncoder:
    """Test double: deterministic pseudo-random unit vectors per text, counts encoded texts."""

    def __init__(self, name: str = "test/counting", dim: int = DIM):
        self.fingerprint = EncoderFingerprint(name, "d" * 64, dim)
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        self.encoded.extend(texts)
        out = np.empty((len(texts), self.fingerprint.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(int(_hash(t)[:8], 16))
            out[i] = rng.standard_normal(self.fingerprint.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _fp(**kw) -> EncoderFingerprint:
    base = dict(model_name="m/x", weights_digest="ab" * 32, dim=DIM, normalized=True)
    base.update(kw)
    return EncoderFingerprint(**base)


# --- fingerprint -----------------------------------------------------------------------------------


def test_fingerprint_id_is_stable_and_field_sensitive():
    a = _fp()
    assert a.id == _fp().id
    assert len(a.id) == 16 and all(c in "0123456789abcdef" for c in a.id)
    others = {_fp(model_name="m/y").id, _fp(weights_digest="cd" * 32).id, _fp(dim=16).id, _fp(normalized=False).id}
    assert a.id not in others and len(others) == 4


def test_fingerprint_dict_roundtrip_and_errors():
    a = _fp()
    d = json.loads(json.dumps(a.to_dict()))
    assert EncoderFingerprint.from_dict(d) == a
    del d["weights_digest"]
    with pytest.raises(DataContractError, match="weights_digest"):
        EncoderFingerprint.from_dict(d)
    tampered = a.to_dict() | {"dim": 16}
    with pytest.raises(DataContractError, match="does not match its fields"):
        EncoderFingerprint.from_dict(tampered)
    with pytest.raises(ValueError, match="dim"):
        _fp(dim=0)


def test_fingerprint_casefold_field_keeps_old_ids_and_files():
    uncased, cased = _fp(), _fp(casefold=False)
    # A fingerprint written before the field existed loads as case-folding, with the same id.
    old = {"model_name": "m/x", "weights_digest": "ab" * 32, "dim": DIM, "normalized": True}
    from lvm_core.io import storage

    old_id = storage.json_digest(old)[:16]
    assert uncased.id == old_id and EncoderFingerprint.from_dict({**old, "id": old_id}) == uncased
    assert uncased.to_dict()["casefold"] is True and cased.to_dict()["casefold"] is False
    # A cased encoder is another fingerprint (its hashes key other cache entries).
    assert cased.id != uncased.id and cased != uncased
    assert EncoderFingerprint.from_dict(json.loads(json.dumps(cased.to_dict()))) == cased
    with pytest.raises(FingerprintMismatchError, match="cased hashes"):
        ensure_same_fingerprint(uncased, cased, "embedding cache")
    with pytest.raises(DataContractError, match="does not match its fields"):
        EncoderFingerprint.from_dict(cased.to_dict() | {"casefold": True})


def _model_folder(root: Path, *, sbert_lower=None, tok_lower=None, normalizer=None) -> Path:
    root.mkdir(parents=True)
    transformer = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    (root / "modules.json").write_text(json.dumps([transformer]))
    if sbert_lower is not None:
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": sbert_lower}))
    if tok_lower is not None:
        (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": tok_lower}))
    if normalizer is not None:
        (root / "tokenizer.json").write_text(json.dumps({"normalizer": normalizer}))
    return root


def test_encoder_casing_is_read_from_the_model_folder(tmp_path: Path):
    assert encoder_casefolds() is True  # packaged all-MiniLM-L6-v2: uncased BERT tokenizer
    assert encoder_casefolds(_model_folder(tmp_path / "a", sbert_lower=False, tok_lower=True)) is True
    assert encoder_casefolds(_model_folder(tmp_path / "b", sbert_lower=True, tok_lower=False)) is True
    assert encoder_casefolds(_model_folder(tmp_path / "c", sbert_lower=False, tok_lower=False)) is False
    lower = {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "Lowercase"}]}
    assert encoder_casefolds(_model_folder(tmp_path / "d", normalizer=lower)) is True
    assert encoder_casefolds(_model_folder(tmp_path / "e", normalizer={"type": "NFC"})) is False
    bert = {"type": "BertNormalizer", "lowercase": True}
    assert encoder_casefolds(_model_folder(tmp_path / "f", tok_lower=False, normalizer=bert)) is False
    assert encoder_casefolds(_model_folder(tmp_path / "g")) is False  # nothing says it lower-cases


def test_ensure_same_fingerprint_message_names_artifact_and_both():
    a, b = _fp(), _fp(model_name="other/model", dim=16, weights_digest="ef" * 32)
    ensure_same_fingerprint(a, _fp(), "x")  # equal: no error
    with pytest.raises(FingerprintMismatchError) as ei:
        ensure_same_fingerprint(a, b, "embeddings of snapshot S")
    msg = str(ei.value)
    for part in ("embeddings of snapshot S", "m/x", "other/model", "dim=8", "dim=16", "abababab", "efefefef"):
        assert part in msg


# --- cache + embed_texts with the test double --------------------------------------------------------


def test_embed_texts_dedups_and_reuses_cache(tmp_path: Path):
    enc = CountingEncoder()
    texts = [f"text number {i}" for i in range(20)] + ["text number 3", "text number 7"]
    hashes = [_hash(t) for t in texts]
    cache = EmbeddingCache(tmp_path, enc.fingerprint)

    v1, s1 = embed_texts(texts, hashes, enc, cache)
    assert (s1.n_total, s1.n_unique, s1.n_reused, s1.n_encoded) == (22, 20, 0, 20)
    assert len(enc.encoded) == 20 and len(cache) == 20
    assert v1.shape == (22, DIM) and v1.dtype == np.float32
    np.testing.assert_array_equal(v1[20], v1[3])
    np.testing.assert_array_equal(v1, CountingEncoder().encode(texts))

    v2, s2 = embed_texts(texts, hashes, enc, cache)
    assert (s2.n_reused, s2.n_encoded) == (20, 0) and len(enc.encoded) == 20
    np.testing.assert_array_equal(v2, v1)

    changed = texts[:10] + ["brand new A", "brand new B"] + texts[10:15]
    enc.encoded.clear()
    v3, s3 = embed_texts(changed, [_hash(t) for t in changed], enc, cache)
    assert enc.encoded == ["brand new A", "brand new B"]
    assert (s3.n_total, s3.n_unique, s3.n_reused, s3.n_encoded) == (17, 17, 15, 2)
    np.testing.assert_array_equal(v3, CountingEncoder().encode(changed))

    # a new instance reads the shards back
    reopened = EmbeddingCache(tmp_path, enc.fingerprint)
    assert len(reopened) == 22
    got, found = reopened.get_many([hashes[5], "0" * 40, _hash("brand new B")])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(got[0], v1[5])
    assert not got[1].any()


def test_embed_texts_without_cache_and_empty(tmp_path: Path):
    enc = CountingEncoder()
    v, s = embed_texts(["a", "b", "a"], ["h1", "h2", "h1"], enc, None)
    assert (s.n_unique, s.n_encoded, s.n_reused) == (2, 2, 0) and enc.encoded == ["a", "b"]
    np.testing.assert_array_equal(v[0], v[2])
    v, s = embed_texts([], [], enc, EmbeddingCache(tmp_path, enc.fingerprint))
    assert v.shape == (0, DIM) and s.n_encoded == 0
    with pytest.raises(ValueError, match="2 texts but 1 hashes"):
        embed_texts(["a", "b"], ["h"], enc, None)


def test_embed_texts_refuses_cache_of_other_encoder(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, CountingEncoder("test/one").fingerprint)
    with pytest.raises(FingerprintMismatchError, match="embedding cache"):
        embed_texts(["a"], ["h"], CountingEncoder("test/two"), cache)


# The cache itself (layout, concurrency, migration, memory): tests/unit/data/embedding/test_cache.py (in one
# process) and tests/system/test_embedding_cache.py (across processes).


# --- embeddings files ------------------------------------------------------------------------------


def test_save_load_embeddings_roundtrip_and_refusals(tmp_path: Path):
    fp = _fp()
    v = random_unit(0, 10, DIM)
    save_embeddings(tmp_path, v, fp)
    assert (tmp_path / EMBEDDINGS_FILE).is_file() and (tmp_path / ENCODER_FILE).is_file()
    got, got_fp = load_embeddings(tmp_path, expected=fp)
    assert got_fp == fp
    np.testing.assert_array_equal(got, v)
    got_mm, _ = load_embeddings(tmp_path, mmap=True)
    assert isinstance(got_mm, np.memmap)

    other = _fp(model_name="sentence-transformers/all-mpnet-base-v2", dim=768)
    with pytest.raises(FingerprintMismatchError) as ei:
        load_embeddings(tmp_path, expected=other)
    assert "all-mpnet-base-v2" in str(ei.value) and str(tmp_path) in str(ei.value)
    with pytest.raises(FingerprintMismatchError):
        load_embeddings(tmp_path, expected=_fp(weights_digest="00" * 32))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (random_unit(0, 4, DIM).astype(np.float64), "float32"),
        (random_unit(0, 4, DIM)[0], "2-D"),
        (random_unit(0, 4, DIM + 1), "dim"),
        (np.where(np.eye(4, DIM, dtype=bool), np.float32("nan"), random_unit(0, 4, DIM)), "non-finite"),
        (random_unit(0, 4, DIM) * np.float32(2.0), "unit length"),
    ],
)
def test_load_embeddings_refuses_contract_violations(tmp_path: Path, bad: np.ndarray, match: str):
    fp = _fp()
    with pytest.raises(DataContractError, match=match):
        save_embeddings(tmp_path, bad, fp)  # save validates too
    # write it behind the contract's back: load must refuse it as well
    np.save(tmp_path / EMBEDDINGS_FILE, bad, allow_pickle=False)
    (tmp_path / ENCODER_FILE).write_text(json.dumps(fp.to_dict()))
    with pytest.raises(DataContractError, match=match):
        load_embeddings(tmp_path)


def test_load_embeddings_missing_files(tmp_path: Path):
    with pytest.raises(DataContractError, match="encoder.json is missing"):
        load_embeddings(tmp_path)


def test_load_encoder_unknown_model_names_it():
    with pytest.raises(EncoderLoadError, match="no-such-org/no-such-model"):
        load_encoder("no-such-org/no-such-model")
    with pytest.raises(EncoderLoadError, match="does not exist"):
        load_encoder("./models/missing-folder")


# --- the real encoder ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_encoder():
    return load_encoder(device="cpu")  # on the CPU the default backend is torch fp32 on any machine


@pytest.mark.slow
def test_real_encoder_vectors_and_fingerprint(real_encoder):
    fp = real_encoder.fingerprint
    assert fp.model_name == CANONICAL_DEFAULT_MODEL
    assert fp.dim == 384 and fp.normalized and len(fp.weights_digest) == 64
    assert isinstance(real_encoder, Encoder)
    # torch fp32, with the id the fingerprint had before backends existed (datasets and caches stay valid)
    assert (fp.backend, fp.precision) == ("torch", "fp32")
    assert fp.id == EncoderFingerprint(fp.model_name, fp.weights_digest, fp.dim).id
    # the same model through its aliases is the same loaded instance, with the same fingerprint
    assert load_encoder("all-MiniLM-L6-v2", device="cpu") is real_encoder
    assert load_encoder(CANONICAL_DEFAULT_MODEL, device="cpu") is real_encoder
    assert load_encoder(f"{CANONICAL_DEFAULT_MODEL}@torch", device="cpu") is real_encoder
    assert load_encoder(fp, device="cpu") is real_encoder
    assert weights_digest(real_encoder.model_path) == fp.weights_digest

    v1 = real_encoder.encode(SENTENCES)
    v2 = real_encoder.encode(list(reversed(SENTENCES)))[::-1]
    assert v1.shape == (5, 384) and v1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    np.testing.assert_allclose(v1[0], v1[3], atol=1e-6)
    sims = v1 @ v1.T
    assert sims[0, 1] < 0.5  # different topics are far apart, not a constant vector
    assert real_encoder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_real_encoder_through_cache(real_encoder, tmp_path: Path):
    hashes = [_hash(t) for t in SENTENCES]
    fresh = real_encoder.encode(SENTENCES)
    cache = EmbeddingCache(tmp_path, real_encoder.fingerprint)
    v1, s1 = embed_texts(SENTENCES, hashes, real_encoder, cache)
    assert (s1.n_unique, s1.n_encoded, s1.n_reused) == (4, 4, 0) and s1.chunks_per_second > 0
    np.testing.assert_allclose(v1, fresh, atol=1e-5)

    v2, s2 = embed_texts(SENTENCES, hashes, real_encoder, EmbeddingCache(tmp_path, real_encoder.fingerprint))
    assert (s2.n_encoded, s2.n_reused) == (0, 4)
    np.testing.assert_array_equal(v2, v1)

    save_embeddings(tmp_path / "ds", v2, real_encoder.fingerprint)
    loaded, fp = load_embeddings(tmp_path / "ds", expected=real_encoder.fingerprint)
    assert fp == real_encoder.fingerprint
    np.testing.assert_array_equal(loaded, v2)
