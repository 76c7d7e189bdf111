"""Encoder backends: spec parsing, device choice, per-backend fingerprints, the ONNX int8 export and
the agreement check against torch fp32."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from lvm_core.data.embedding import agreement as embedding_agreement
from lvm_core.data.embedding import encoder as embedding_encoder
from lvm_core.data.embedding import model_folder as embedding_model_folder
from lvm_core.data.embedding import onnx as embedding_onnx
from lvm_core.data.embedding.agreement import (
    AGREEMENT_MIN_MEAN_COSINE,
    agreement_sample,
    check_agreement,
    measure_agreement,
)
from lvm_core.data.embedding.cache import EmbeddingCache
from lvm_core.data.embedding.embed import EmbedStats, embed_texts
from lvm_core.data.embedding.encoder import SentenceTransformerEncoder, load_encoder, parse_encoder_spec
from lvm_core.data.embedding.fingerprint import (
    EncoderAgreementError,
    EncoderFingerprint,
    EncoderLoadError,
    FingerprintMismatchError,
    ensure_same_fingerprint,
)
from lvm_core.io import storage

DIGEST = "ab" * 32


def _fp(**kw) -> EncoderFingerprint:
    return EncoderFingerprint(**({"model_name": "m/x", "weights_digest": DIGEST, "dim": 8} | kw))


class FixedEncoder:
    """Test double: vectors from a seeded generator per text, optionally perturbed by `noise`."""

    def __init__(self, fp: EncoderFingerprint, noise: float = 0.0, fail: bool = False):
        self.fingerprint = fp
        self.noise = noise
        self.fail = fail
        self.agreement = None

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if self.fail:
            raise AssertionError("encode must not be called: the kept agreement record applies")
        out = np.empty((len(texts), self.fingerprint.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(int(storage.json_digest(t)[:8], 16))
            v = rng.standard_normal(self.fingerprint.dim)
            if self.noise:
                v = v + self.noise * np.random.default_rng(i).standard_normal(self.fingerprint.dim)
            out[i] = v / np.linalg.norm(v)
        return out


# --- fingerprints ----------------------------------------------------------------------------------


def test_old_fingerprint_reads_as_torch_fp32_with_its_id():
    old = {"model_name": "m/x", "weights_digest": DIGEST, "dim": 8, "normalized": True}
    old_id = storage.json_digest(old)[:16]
    fp = EncoderFingerprint.from_dict({**old, "id": old_id})
    assert (fp.backend, fp.precision, fp.is_reference) == ("torch", "fp32", True)
    assert fp.id == old_id == _fp().id  # existing datasets and caches keep their ids
    assert fp.to_dict()["backend"] == "torch" and fp.spec == "m/x@torch"


def test_each_backend_has_its_own_fingerprint():
    fp32, fp16, int8 = _fp(), _fp(precision="fp16"), _fp(backend="onnx", precision="int8")
    assert len({fp32.id, fp16.id, int8.id}) == 3
    for fp in (fp16, int8):
        assert EncoderFingerprint.from_dict(json.loads(json.dumps(fp.to_dict()))) == fp
    assert (fp16.spec, int8.spec) == ("m/x@torch-fp16", "m/x@onnx-int8")
    with pytest.raises(FingerprintMismatchError, match="onnx int8"):
        ensure_same_fingerprint(fp32, int8, "embedding cache")
    with pytest.raises(ValueError, match="backend"):
        _fp(backend="")


def test_cache_of_one_backend_refuses_another(tmp_path: Path):
    fp32, int8 = _fp(), _fp(backend="onnx", precision="int8")
    EmbeddingCache(tmp_path / "c", fp32)
    with pytest.raises(FingerprintMismatchError):
        embed_texts(["a"], ["h"], FixedEncoder(int8), EmbeddingCache(tmp_path / "c", fp32))


def test_cache_and_vectors_written_before_backends_still_load(tmp_path: Path):
    from lvm_core.data.vector_files import load_embeddings, save_embeddings

    fp32 = _fp()
    vectors = FixedEncoder(fp32).encode(["a", "b"])
    cache = EmbeddingCache(tmp_path / "cache", fp32)
    cache.put_many(["ha", "hb"], vectors)
    cache.close()
    save_embeddings(tmp_path / "ds", vectors, fp32)
    # rewrite both fingerprint files as they were written before the backend fields existed
    for path in (tmp_path / "cache" / fp32.id / "fingerprint.json", tmp_path / "ds" / "encoder.json"):
        old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("backend", "precision")}
        path.write_text(json.dumps(old))
    got, found = EmbeddingCache(tmp_path / "cache", fp32).get_many(["ha", "hb"])
    assert found.all()
    np.testing.assert_array_equal(got, vectors)
    _, fp = load_embeddings(tmp_path / "ds", expected=fp32)
    assert fp == fp32 and fp.is_reference
    with pytest.raises(FingerprintMismatchError):
        load_embeddings(tmp_path / "ds", expected=_fp(backend="onnx", precision="int8"))


# --- spec and device -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, ("all-MiniLM-L6-v2", "auto")),
        ("all-MiniLM-L6-v2", ("all-MiniLM-L6-v2", "auto")),
        ("all-MiniLM-L6-v2@onnx-int8", ("all-MiniLM-L6-v2", "onnx-int8")),
        ("org/model@torch-fp16", ("org/model", "torch-fp16")),
        ("@torch", ("all-MiniLM-L6-v2", "torch")),
    ],
)
def test_parse_encoder_spec(spec, expected):
    assert parse_encoder_spec(spec) == expected


def test_parse_encoder_spec_refuses_unknown_backend_but_keeps_folders(tmp_path: Path):
    with pytest.raises(EncoderLoadError, match=r"unknown encoder backend 'int4'.*onnx-int8"):
        parse_encoder_spec("all-MiniLM-L6-v2@int4")
    folder = tmp_path / "models@v2"
    folder.mkdir()
    assert parse_encoder_spec(str(folder)) == (str(folder), "auto")


def test_auto_picks_cuda_fp16_when_present_else_cpu_fp32(monkeypatch):
    monkeypatch.setattr(embedding_encoder, "_cuda_available", lambda: False)
    assert embedding_encoder._resolve_backend("auto", None) == ("torch", "fp32", "cpu")
    assert embedding_encoder._resolve_backend("onnx-int8", None) == ("onnx", "int8", "cpu")
    with pytest.raises(EncoderLoadError, match="needs a CUDA device.*none is present"):
        embedding_encoder._resolve_backend("torch-fp16", None)
    monkeypatch.setattr(embedding_encoder, "_cuda_available", lambda: True)
    assert embedding_encoder._resolve_backend("auto", None) == ("torch", "fp16", "cuda")
    assert embedding_encoder._resolve_backend("torch", None) == ("torch", "fp32", "cuda")
    assert embedding_encoder._resolve_backend("auto", "cpu") == ("torch", "fp32", "cpu")
    with pytest.raises(EncoderLoadError, match="CPU only"):
        embedding_encoder._resolve_backend("onnx-int8", "cuda")


def test_threads_follow_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert embedding_onnx.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        embedding_onnx.default_threads()


# --- agreement -------------------------------------------------------------------------------------


def test_broken_backend_is_refused_with_its_numbers(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(embedding_agreement, "agreement_sample", lambda n=256: [f"text {i}" for i in range(32)])
    reference, broken = FixedEncoder(_fp()), FixedEncoder(_fp(backend="onnx", precision="int8"), noise=1.0)
    agreement = check_agreement(broken, reference, tmp_path)
    assert agreement["n_texts"] == 32 and agreement["mean_cosine"] < 0.9
    with pytest.raises(EncoderAgreementError, match=r"onnx int8 agrees with torch fp32 at mean cosine 0\.\d+ "
                       r"\(median 0\.\d+, min -?0\.\d+\) over 32 check chunks, below the required mean 0\.99"):
        embedding_agreement.require_agreement(broken.fingerprint, agreement, AGREEMENT_MIN_MEAN_COSINE)
    # measured once: the kept record serves the next process (encode would fail here)
    again = check_agreement(FixedEncoder(broken.fingerprint, fail=True), reference, tmp_path)
    assert again == agreement
    # a faithful backend passes
    good = check_agreement(FixedEncoder(_fp(precision="fp16"), noise=0.01), reference, None)
    assert good["mean_cosine"] > 0.99 and good["min_cosine"] <= good["median_cosine"] <= 1.0
    embedding_agreement.require_agreement(_fp(precision="fp16"), good, AGREEMENT_MIN_MEAN_COSINE)


def test_embed_stats_carry_agreement_only_for_other_backends():
    enc = FixedEncoder(_fp(backend="onnx", precision="int8"))
    enc.agreement = {"mean_cosine": 0.995}
    _, stats = embed_texts(["a", "b"], ["1", "2"], enc, None)
    assert stats.to_dict()["agreement"] == {"mean_cosine": 0.995}
    _, plain = embed_texts(["a"], ["1"], FixedEncoder(_fp()), None)
    assert "agreement" not in plain.to_dict() and isinstance(plain, EmbedStats)


def test_concurrent_exports_write_once_and_never_half(tmp_path: Path, monkeypatch):
    calls: list[int] = []

    def fake_export(folder, out, settings):
        calls.append(1)
        out.write_bytes(b"fp32")

    def fake_quantize(src, out, settings):
        out.write_bytes(b"int8")

    monkeypatch.setattr(embedding_onnx, "_export_fp32", fake_export)
    monkeypatch.setattr(embedding_onnx, "_quantize", fake_quantize)
    folder = embedding_model_folder.default_model_path()
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(embedding_onnx.ensure_onnx_export(folder, DIGEST, tmp_path)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    (export,) = set(results)
    assert (export / "model.onnx").read_bytes() == b"int8" and not (export / "fp32.onnx").exists()
    assert storage.read_json(export / "export.json")["settings"] == embedding_onnx.DEFAULT_EXPORT_SETTINGS
    # other settings or other weights: another folder
    other = embedding_onnx.ensure_onnx_export(folder, DIGEST, tmp_path, {**embedding_onnx.DEFAULT_EXPORT_SETTINGS, "per_channel": False})
    assert other != export and other.name.startswith("onnx-int8-")
    assert not [p for p in tmp_path.iterdir() if ".staging." in p.name]


# --- the real ONNX int8 encoder --------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="module")
def int8_encoder(int8_cache):
    return load_encoder("all-MiniLM-L6-v2@onnx-int8", cache_dir=int8_cache, threads=2)


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_real_text(int8_encoder, int8_cache):
    fp = int8_encoder.fingerprint
    reference = load_encoder("all-MiniLM-L6-v2@torch", device="cpu")
    assert (fp.backend, fp.precision, fp.model_name) == ("onnx", "int8", reference.fingerprint.model_name)
    assert fp.weights_digest == reference.fingerprint.weights_digest and fp.id != reference.fingerprint.id
    agreement = int8_encoder.agreement
    assert agreement["n_texts"] == 256 and agreement["reference"] == reference.fingerprint.id
    assert agreement["mean_cosine"] >= 0.99 and agreement["min_cosine"] > 0.95
    assert json.loads((int8_cache / "agreement" / f"{int8_encoder.cache_key}.json").read_text()) == agreement
    # the same tokens as the fp32 pipeline, including truncation at 256 tokens
    sample = agreement_sample() + ["word " * 400, ""]
    expected = [reference.model.tokenize([t])["input_ids"][0].tolist() for t in sample]
    assert int8_encoder.token_ids(sample) == expected
    # loaded once per process; unit float32 rows; through embed_texts the agreement reaches the stats
    assert load_encoder("@onnx-int8", cache_dir=int8_cache, threads=2) is int8_encoder
    texts = sample[:20]
    vectors, stats = embed_texts(texts, [str(i) for i in range(20)], int8_encoder, None, batch_size=7)
    assert vectors.dtype == np.float32 and vectors.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # a text's vector does not depend on its neighbours (dynamic int8 would otherwise scale per batch)
    np.testing.assert_array_equal(vectors, int8_encoder.encode(list(reversed(texts)), batch_size=64)[::-1])
    assert stats.to_dict()["agreement"]["mean_cosine"] == agreement["mean_cosine"]


@pytest.mark.slow
def test_int8_refused_above_what_it_reaches(int8_encoder, int8_cache):
    mean = int8_encoder.agreement["mean_cosine"]
    with pytest.raises(EncoderAgreementError, match=rf"mean cosine {mean:.4f} .* below the required mean 0\.9999"):
        load_encoder("all-MiniLM-L6-v2@onnx-int8", cache_dir=int8_cache, threads=2, min_agreement=0.9999)


@pytest.mark.slow
def test_fp16_backend_fingerprint_and_vectors():
    """fp16 is meant for CUDA; on the CPU the same code path still runs (slowly) and must agree."""
    fp16 = SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu", precision="fp16")
    reference = load_encoder("all-MiniLM-L6-v2@torch", device="cpu")
    assert fp16.fingerprint.precision == "fp16" and fp16.fingerprint.spec.endswith("@torch-fp16")
    texts = [t[:200] for t in agreement_sample()[:4]]  # fp16 matmuls are slow on a CPU: keep it short
    agreement = measure_agreement(fp16, reference, texts)
    assert agreement["mean_cosine"] > 0.999
    assert fp16.encode(texts).dtype == np.float32
