"""Dataset analysis at scale: float16/float32 vector files, memory-mapped analysis equal to in-memory,
FAISS and exact search agreeing, and temporary memory bounded by the block size rather than the rows."""

from __future__ import annotations

import hashlib
import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import EMBEDDINGS_FILE, ENCODER_FILE, VECTOR_DTYPE_KEY
from lvm_core.data.coherence import article_coherence, consecutive_cosines
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.data.leakage import scan_leakage
from lvm_core.data.retrieval import faiss_index
from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.retrieval.nearest import ivf_plan, max_cosine
from lvm_core.data.retrieval.oracle import oracle_recall_at_k, oracle_sample
from lvm_core.data.vector_files import load_embeddings, save_embeddings
from lvm_core.data.windows import build_windows, data_direction
from lvm_core.io.vectors import l2_normalize

DIM = 32


def _fp(dim: int = DIM) -> EncoderFingerprint:
    return EncoderFingerprint(model_name="test/encoder", weights_digest="ab" * 32, dim=dim)


def _table(n_articles: int = 120, dim: int = DIM, seed: int = 0):
    """Articles of 1..14 chunks drifting around a topic; unique text hashes except planted repeats."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, size=n_articles)
    vecs, aids, cidx = [], [], []
    for a, n in enumerate(lengths):
        topic = rng.normal(size=dim)
        for i in range(n):
            vecs.append(topic + rng.normal(size=dim))
            aids.append(1000 + a)
            cidx.append(i)
    hashes = np.array([hashlib.sha1(f"{a}:{i}".encode()).hexdigest() for a, i in zip(aids, cidx)])
    return l2_normalize(np.asarray(vecs)), np.array(aids, np.int64), np.array(cidx, np.int32), hashes


def _split(aids: np.ndarray, seed: int = 1) -> np.ndarray:
    """Article-level split names per row (train 70 %, val/test/ood 10 % each)."""
    arts = np.unique(aids)
    names = np.random.default_rng(seed).choice(["train", "val", "test", "ood"], size=arts.size, p=[0.7, 0.1, 0.1, 0.1])
    return names[np.searchsorted(arts, aids)]


def _memmap(tmp_path: Path, v: np.ndarray, dtype: str) -> np.ndarray:
    save_embeddings(tmp_path, v, _fp(v.shape[1]), dtype=dtype)
    return load_embeddings(tmp_path)[0]


# --- vector files --------------------------------------------------------------------------------------


def test_float16_round_trip_is_memory_mapped_and_recorded(tmp_path: Path):
    v, *_ = _table(30)
    save_embeddings(tmp_path, v, _fp(), dtype="float16")
    assert np.load(tmp_path / EMBEDDINGS_FILE, mmap_mode="r").dtype == np.float16
    assert json.loads((tmp_path / ENCODER_FILE).read_text())[VECTOR_DTYPE_KEY] == "float16"
    got, fp = load_embeddings(tmp_path, expected=_fp())
    assert isinstance(got, np.memmap) and got.dtype == np.float16 and fp == _fp()
    np.testing.assert_allclose(got.astype(np.float32), v, atol=1e-3)
    np.testing.assert_array_equal(got, v.astype(np.float16))


def test_float32_files_of_before_the_field_load_unchanged(tmp_path: Path):
    v, *_ = _table(20)
    np.save(tmp_path / EMBEDDINGS_FILE, v, allow_pickle=False)
    (tmp_path / ENCODER_FILE).write_text(json.dumps(_fp().to_dict()))  # no vector_dtype key
    got, _ = load_embeddings(tmp_path, expected=_fp())
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, v)
    save_embeddings(tmp_path / "new", v, _fp())  # default stays float32, now recorded
    assert json.loads((tmp_path / "new" / ENCODER_FILE).read_text())[VECTOR_DTYPE_KEY] == "float32"
    np.testing.assert_array_equal(load_embeddings(tmp_path / "new")[0], v)


def test_a_dtype_that_disagrees_with_the_contract_is_refused(tmp_path: Path):
    v, *_ = _table(20)
    save_embeddings(tmp_path, v, _fp(), dtype="float16")
    enc = json.loads((tmp_path / ENCODER_FILE).read_text())
    (tmp_path / ENCODER_FILE).write_text(json.dumps({**enc, VECTOR_DTYPE_KEY: "float32"}))
    with pytest.raises(DataContractError, match="holds float16 vectors but encoder.json records vector_dtype=float32"):
        load_embeddings(tmp_path)
    (tmp_path / ENCODER_FILE).write_text(json.dumps({**enc, VECTOR_DTYPE_KEY: "bfloat16"}))
    with pytest.raises(DataContractError, match="vector_dtype 'bfloat16' is not one of float32, float16"):
        load_embeddings(tmp_path)
    with pytest.raises(DataContractError, match="vector dtype 'float64' is not one of"):
        save_embeddings(tmp_path / "x", v, _fp(), dtype="float64")
    with pytest.raises(DataContractError, match="not unit length"):  # float16 input is checked like float32
        save_embeddings(tmp_path / "y", (v * 2).astype(np.float16), _fp())


# --- memory-mapped analysis equals the in-memory result -----------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_memmapped_analysis_equals_in_memory(tmp_path: Path, dtype: str):
    v, aids, cidx, hashes = _table()
    mm = _memmap(tmp_path, v, dtype)
    mem = np.array(mm)  # the same stored values, in memory
    assert isinstance(mm, np.memmap) and not isinstance(mem, np.memmap)

    a, b = article_coherence(mm, aids, cidx, block=37), article_coherence(mem, aids, cidx)
    assert a.equals(b)
    if dtype == "float16":  # float16 storage moves coherence by a rounding error only
        ref = article_coherence(v, aids, cidx)
        np.testing.assert_allclose(a["coherence"].to_numpy(), ref["coherence"].to_numpy(), atol=2e-3)

    split = _split(aids)
    planted = np.flatnonzero(split != "train")[:5]  # eval rows repeating a train row's text and vector
    train_rows = np.flatnonzero(split == "train")[:5]
    hashes = hashes.copy()
    hashes[planted] = hashes[train_rows]
    v2 = v.copy()
    v2[planted] = v[train_rows]
    mm2 = _memmap(tmp_path / "p", v2, dtype)
    mem2 = np.array(mm2)
    s_mm = scan_leakage(aids, hashes, mm2, split, query_block=13, train_block=29)
    s_mem = scan_leakage(aids, hashes, mem2, split, query_block=13, train_block=29)
    np.testing.assert_array_equal(s_mm.leaking_rows, s_mem.leaking_rows)
    np.testing.assert_array_equal(s_mm.max_train_cos, s_mem.max_train_cos)
    assert s_mm.report() == s_mem.report()
    assert set(np.flatnonzero(s_mm.text_leak)) == set(planted) and s_mm.near_leak[planted].all()

    seqs = build_windows(aids, cidx, context_len=3)
    assert data_direction(mm, seqs, block=11) == pytest.approx(data_direction(mem, seqs), abs=1e-9)

    bank_mm, bank_mem = ChunkBank(mm, aids, hashes), ChunkBank(mem, aids, hashes)
    assert bank_mm.vectors is mm  # the memory map itself, no copy
    q = l2_normalize(np.random.default_rng(3).normal(size=(7, DIM)))
    for x, y in zip(bank_mm.search(q, 5), bank_mem.search(q, 5)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(bank_mm.rank_of(q, np.arange(7)), bank_mem.rank_of(q, np.arange(7)))


# --- FAISS and exact agree ------------------------------------------------------------------------------


def _near_dup_table(n_train: int = 3000, n_eval: int = 400, n_dup: int = 40, dim: int = DIM, seed: int = 4):
    """Train rows, eval rows; the first n_dup eval rows are near copies (cos ~0.999) of train rows."""
    rng = np.random.default_rng(seed)
    train = l2_normalize(rng.normal(size=(n_train, dim)))
    ev = l2_normalize(rng.normal(size=(n_eval, dim)))
    src = rng.choice(n_train, size=n_dup, replace=False)
    ev[:n_dup] = l2_normalize(train[src] + 0.03 * l2_normalize(rng.normal(size=(n_dup, dim))))
    v = np.concatenate([train, ev])
    split = np.array(["train"] * n_train + ["val"] * n_eval)
    aids = np.arange(v.shape[0], dtype=np.int64)  # one chunk per article
    hashes = np.array([f"h{i}" for i in range(v.shape[0])])
    return v, aids, hashes, split, n_train + np.arange(n_dup)


def test_faiss_and_exact_near_duplicate_scans_flag_the_same_rows(tmp_path: Path):
    pytest.importorskip("faiss")
    v, aids, hashes, split, dups = _near_dup_table()
    mm = _memmap(tmp_path, v, "float16")
    exact = scan_leakage(aids, hashes, mm, split, near_dup_threshold=0.995, use_faiss=False)
    flat = scan_leakage(aids, hashes, mm, split, near_dup_threshold=0.995, use_faiss=True, train_block=700)
    assert (exact.backend, flat.backend) == ("exact", "faiss-flat")
    np.testing.assert_array_equal(exact.near_leak, flat.near_leak)
    assert set(np.flatnonzero(exact.near_leak)) == set(dups)
    np.testing.assert_allclose(exact.max_train_cos, flat.max_train_cos, atol=1e-5)
    assert exact.report()["near_duplicates"]["backend"] == "exact"

    # the bounded IVF backend (used above EXACT_PAIR_BUDGET pairs): candidates are scored exactly, so a
    # reported cosine is never above the exact one; near-duplicate recall >= 0.99
    ev_rows, tr_rows = np.flatnonzero(split == "val"), np.flatnonzero(split == "train")
    ivf = max_cosine(mm, ev_rows, tr_rows, backend="ivf", plan=ivf_plan(ev_rows.size, tr_rows.size, list_rows=200))
    ref = exact.max_train_cos[ev_rows]
    assert (ivf <= ref + 1e-6).all()
    found = (ivf >= 0.995)[ref >= 0.995]
    assert found.mean() >= 0.99
    assert not (ivf >= 0.995)[ref < 0.995].any()


def test_faiss_flat_bank_in_blocks_matches_exact_on_a_float16_memmap(tmp_path: Path):
    pytest.importorskip("faiss")
    v, aids, cidx, hashes = _table(200)
    mm = _memmap(tmp_path, v, "float16")
    exact = ChunkBank(mm, aids, hashes, use_faiss=False, block_rows=97)
    flat = ChunkBank(mm, aids, hashes, use_faiss=True)
    flat.faiss_block_rows = 101  # several faiss.knn blocks merged into one top-k
    assert flat.backend == "faiss-flat" and flat.vectors is mm
    rng = np.random.default_rng(8)
    q = l2_normalize(rng.normal(size=(25, DIM)))
    excl = [rng.choice(mm.shape[0], size=4, replace=False) for _ in range(25)]
    s1, r1 = exact.search(q, 6, excl)
    s2, r2 = flat.search(q, 6, excl)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    rows = oracle_sample(np.arange(mm.shape[0]), 60)
    assert oracle_recall_at_k(flat, rows, 5) == oracle_recall_at_k(exact, rows, 5) == 1.0


def test_missing_faiss_falls_back_to_exact_with_a_log_line(monkeypatch, caplog):
    v, aids, hashes, split, dups = _near_dup_table(n_train=300, n_eval=60, n_dup=6)
    monkeypatch.setattr(faiss_index, "import_faiss", lambda: None)
    monkeypatch.setattr(faiss_index, "FAISS_AUTO_THRESHOLD", 100)
    with caplog.at_level(logging.WARNING, logger="lvm_core.data.retrieval"):
        bank = ChunkBank(v, aids, hashes)
        scan = scan_leakage(aids, hashes, v, split)
    assert bank.backend == "exact" and scan.backend == "exact"
    assert set(np.flatnonzero(scan.near_leak)) == set(dups)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("faiss is not installed: the bank of 360 rows" in m and "exact" in m for m in msgs)
    assert any("faiss is not installed: the near-duplicate scan over 300 rows" in m for m in msgs)


# --- bounded temporary memory --------------------------------------------------------------------------------


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_analysis_of_a_memmap_allocates_blocks_not_the_matrix(tmp_path: Path):
    """Each pass over an (n, 256) float16 file stays far below the n x D float32 matrix it would cost to
    materialise (n x D x 4 = 20 MB here); what remains is O(block) plus O(n) scalars."""
    n, dim = 20_000, 256
    rng = np.random.default_rng(0)
    v = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 5000):
        v[s : s + 5000] = l2_normalize(rng.normal(size=(5000, dim)))
    mm = _memmap(tmp_path, v, "float16")
    del v
    full = n * dim * 4
    aids = np.repeat(np.arange(n // 10, dtype=np.int64), 10)
    cidx = np.tile(np.arange(10, dtype=np.int32), n // 10)
    split = np.where(aids % 50 == 0, "val", "train")
    hashes = np.array([f"{i:08x}" for i in range(n)])
    seqs = build_windows(aids, cidx, context_len=5)

    peaks = {
        "consecutive_cosines": _peak_bytes(lambda: consecutive_cosines(mm, block=1024)),
        "article_coherence": _peak_bytes(lambda: article_coherence(mm, aids, cidx, block=1024)),
        "near_duplicates": _peak_bytes(lambda: max_cosine(mm, np.flatnonzero(split == "val"),
                                                          np.flatnonzero(split == "train"),
                                                          query_block=256, bank_block=1024)),
        "scan_leakage": _peak_bytes(lambda: scan_leakage(aids, hashes, mm, split, query_block=256, train_block=1024)),
        "data_direction": _peak_bytes(lambda: data_direction(mm, seqs, block=1024)),
        "bank_search": _peak_bytes(lambda: ChunkBank(mm, check_block=1024, block_rows=1024).search(
            np.asarray(mm[:64], dtype=np.float32), 5)),
    }
    too_big = {k: p for k, p in peaks.items() if p > full // 4}
    assert not too_big, f"peak bytes above n*D*4/4 = {full // 4}: {too_big}"


def test_text_hash_codes_that_collide_are_confirmed_on_the_strings(monkeypatch):
    """The numpy pass matches 64-bit codes; two different hashes sharing a code must not count as a leak."""
    import polars as pl

    from lvm_core.data.leakage import text_hash_leaks

    hashes = pl.Series(["aa", "bb", "aa", "cc", "dd"])
    train = np.array([True, True, False, False, False])
    evalmask = ~train
    np.testing.assert_array_equal(text_hash_leaks(hashes, train, evalmask), [False, False, True, False, False])
    monkeypatch.setattr(pl.Series, "hash", lambda self, seed=0: pl.Series([7] * self.len(), dtype=pl.UInt64))
    np.testing.assert_array_equal(text_hash_leaks(hashes, train, evalmask), [False, False, True, False, False])
