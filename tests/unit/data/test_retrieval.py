"""ChunkBank exact search/ranks against brute force, exclusions, FAISS backends and Oracle Recall@K."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.retrieval.oracle import oracle_hits, oracle_recall_at_k, oracle_sample
from lvm_core.data.retrieval.rows import RetrievalError, normalize_exclusions
from lvm_core.data.windows import build_windows
from tests.fixtures.vectors import chunk_table

DIM = 24
LENGTHS = (12, 9, 7, 15, 6, 10)


def brute_topk(v, q, k, excl):
    s = q @ v.T
    for i, ex in enumerate(excl):
        s[i, [r for r in ex if r >= 0]] = -np.inf
    rows = np.stack([np.lexsort((np.arange(v.shape[0]), -si))[:k] for si in s])
    return np.take_along_axis(s, rows, axis=1), rows


def brute_rank(v, q, true_rows, excl, hashes=None, eps=1e-6):
    s = q @ v.T
    out = []
    for i, t in enumerate(true_rows):
        ahead = s[i] >= s[i, t] - eps
        ahead[t] = False
        ahead[[r for r in excl[i] if r >= 0]] = False
        if hashes is not None:
            ahead &= hashes != hashes[t]
        out.append(1 + int(ahead.sum()))
    return np.array(out)


@pytest.fixture(scope="module")
def data():
    return chunk_table(LENGTHS, DIM, noise=1.2)


@pytest.mark.parametrize("block_rows,query_block", [(8192, 512), (7, 3), (1, 1)])
def test_search_matches_brute_force_with_exclusions(data, block_rows, query_block):
    v, aids, _, hashes, _ = data
    rng = np.random.default_rng(1)
    q = rng.normal(size=(11, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    excl = [rng.choice(v.shape[0], size=rng.integers(0, 6), replace=False) for _ in range(11)]
    bank = ChunkBank(v, aids, hashes, block_rows=block_rows, query_block=query_block)
    assert bank.backend == "exact"
    scores, rows = bank.search(q, 5, excl)
    pad = normalize_exclusions(excl, 11, v.shape[0])
    want_s, want_r = brute_topk(v, q, 5, pad)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    for i, ex in enumerate(excl):
        assert not set(rows[i]) & set(ex.tolist())
    # a padded (B, e) matrix with -1 padding means the same thing as the ragged list
    _, rows2 = bank.search(q, 5, pad)
    np.testing.assert_array_equal(rows2, rows)


def test_search_pads_when_fewer_rows_than_k(data):
    v, aids, _, hashes, _ = data
    small = ChunkBank(v[:4], aids[:4], hashes[:4], block_rows=3)
    scores, rows = small.search(v[:1], 6, [np.array([0, 1])])
    assert sorted(rows[0, :2].tolist()) == [2, 3]
    assert rows[0, 2:].tolist() == [-1] * 4
    assert np.isneginf(scores[0, 2:]).all()


def test_context_rows_are_excluded_so_copy_last_cannot_match_itself(data):
    v, aids, cidx, hashes, _ = data
    seqs = build_windows(aids, cidx, context_len=3)
    bank = ChunkBank(v, aids, hashes, block_rows=16)
    pred = v[seqs.context_rows[:, -1]]  # copy-last prediction: exactly a context chunk
    _, rows_free = bank.search(pred, 1)
    np.testing.assert_array_equal(rows_free[:, 0], seqs.context_rows[:, -1])  # without exclusion: itself
    _, rows = bank.search(pred, 3, seqs.context_rows)
    for i in range(len(seqs)):
        assert not set(rows[i].tolist()) & set(seqs.context_rows[i].tolist())

    ranks_free = bank.rank_of(pred, seqs.target_rows)
    ranks = bank.rank_of(pred, seqs.target_rows, seqs.context_rows)
    assert (ranks_free >= 2).all()  # its own chunk (score 1) is ahead when not excluded
    assert (ranks < ranks_free).all()
    np.testing.assert_array_equal(ranks, brute_rank(v, pred, seqs.target_rows, seqs.context_rows, hashes))


@pytest.mark.parametrize("block_rows,query_block", [(8192, 512), (5, 2)])
def test_rank_of_matches_brute_force(data, block_rows, query_block):
    v, aids, _, hashes, _ = data
    rng = np.random.default_rng(2)
    q = rng.normal(size=(17, DIM)).astype(np.float32)
    true_rows = rng.integers(0, v.shape[0], size=17)
    excl = np.stack([np.setdiff1d(rng.choice(v.shape[0], 4, replace=False), [t])[:3] for t in true_rows])
    bank = ChunkBank(v, aids, hashes, block_rows=block_rows, query_block=query_block)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_array_equal(bank.rank_of(q, true_rows, excl), brute_rank(v, qn, true_rows, excl, hashes))
    # the true vector as query: rank 1 unless excluded neighbours tie
    np.testing.assert_array_equal(bank.rank_of(v[true_rows], true_rows), np.ones(17, np.int64))


def test_rank_ties_are_pessimistic_but_duplicate_texts_are_the_target(data):
    v, aids, _, hashes, _ = data
    v2 = v.copy()
    v2[5] = v2[20]  # row 5 now has exactly row 20's vector
    distinct = ChunkBank(v2, aids, hashes)
    assert distinct.rank_of(v2[[20]], np.array([20]))[0] == 2  # a tie with another text counts ahead
    h2 = hashes.copy()
    h2[5] = h2[20]  # ... unless it is the same text
    same = ChunkBank(v2, aids, h2)
    assert same.rank_of(v2[[20]], np.array([20]))[0] == 1
    assert same.rank_of(v2[[20]], np.array([20]), same_hash_is_target=False)[0] == 2


def test_bad_inputs_raise_clear_errors(data):
    v, aids, _, hashes, _ = data
    bank = ChunkBank(v, aids, hashes)
    with pytest.raises(RetrievalError, match="dim"):
        bank.search(np.ones((2, DIM + 1), np.float32), 3)
    with pytest.raises(RetrievalError, match="out of range"):
        bank.search(v[:2], 3, np.array([[0], [v.shape[0]]]))
    with pytest.raises(RetrievalError, match="excludes its own true row"):
        bank.rank_of(v[:1], np.array([3]), np.array([[3]]))
    with pytest.raises(RetrievalError, match="NaN"):
        ChunkBank(np.full((3, 4), np.nan, np.float32))
    with pytest.raises(RetrievalError, match="zero length"):
        ChunkBank(np.zeros((3, 4), np.float32))
    with pytest.raises(RetrievalError, match="text_hash"):
        ChunkBank(v, aids, hashes[:-1])


def test_unnormalised_bank_vectors_are_normalised(data):
    v, aids, _, hashes, _ = data
    bank = ChunkBank(v * 3.0, aids, hashes)
    np.testing.assert_allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, atol=1e-6)
    scores, rows = bank.search(v[:3] * 7.0, 1)
    np.testing.assert_array_equal(rows[:, 0], [0, 1, 2])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)


# --- Oracle Recall@K --------------------------------------------------------------------------------


def test_oracle_recall_is_one_on_a_consistent_bank(data):
    v, aids, cidx, hashes, _ = data
    seqs = build_windows(aids, cidx, context_len=3)
    bank = ChunkBank(v, aids, hashes)
    assert oracle_recall_at_k(bank, seqs.target_rows, 5) == 1.0
    assert (
        oracle_recall_at_k(
            bank, seqs.target_rows, 1, target_vectors=v[seqs.target_rows], target_hashes=hashes[seqs.target_rows]
        )
        == 1.0
    )


def test_oracle_recall_drops_when_vector_order_is_permuted(data):
    v, aids, cidx, hashes, _ = data
    seqs = build_windows(aids, cidx, context_len=3)
    perm = np.random.default_rng(3).permutation(v.shape[0])
    bad = ChunkBank(v[perm], aids, hashes)  # vectors no longer match their rows' ids and hashes
    r = oracle_recall_at_k(
        bad, seqs.target_rows, 5, target_vectors=v[seqs.target_rows], target_hashes=hashes[seqs.target_rows]
    )
    assert r < 0.5


def test_oracle_recall_drops_when_text_hashes_are_shuffled(data):
    v, aids, cidx, hashes, _ = data
    seqs = build_windows(aids, cidx, context_len=3)
    shuffled = hashes[np.random.default_rng(4).permutation(hashes.size)]
    bad = ChunkBank(v, aids, shuffled)
    r = oracle_recall_at_k(bad, seqs.target_rows, 5, target_hashes=hashes[seqs.target_rows])
    assert r < 0.5


def test_oracle_counts_a_duplicate_text_hash_as_a_hit(data):
    v, aids, cidx, hashes, _ = data
    t, u = 30, 2  # bank row u holds row t's vector (and vice versa)
    swapped = v.copy()
    swapped[[t, u]] = swapped[[u, t]]
    hits_diff = oracle_hits(
        ChunkBank(swapped, aids, hashes), np.array([t]), 1, target_vectors=v[[t]], target_hashes=hashes[[t]]
    )
    assert not hits_diff[0]  # different texts: retrieving row u is a miss
    same = hashes.copy()
    same[u] = same[t]  # rows t and u are the same text
    hits_same = oracle_hits(
        ChunkBank(swapped, aids, same), np.array([t]), 1, target_vectors=v[[t]], target_hashes=same[[t]]
    )
    assert hits_same[0]


def test_oracle_without_hashes_uses_row_identity(data):
    v, aids, _, _, _ = data
    bank = ChunkBank(v)
    assert oracle_recall_at_k(bank, np.arange(10), 1) == 1.0
    perm = np.arange(v.shape[0])[::-1]
    assert oracle_recall_at_k(ChunkBank(v[perm]), np.arange(10), 1, target_vectors=v[:10]) == 0.0


def test_oracle_sample_is_seeded_distinct_and_all_when_few():
    rows = np.arange(2000, dtype=np.int64)[::-1]
    a, b = oracle_sample(rows, 500, seed=7), oracle_sample(np.concatenate([rows, rows]), 500, seed=7)
    assert a.size == 500 and np.unique(a).size == 500 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, b)  # duplicates do not change the sample
    assert not np.array_equal(a, oracle_sample(rows, 500, seed=8))
    np.testing.assert_array_equal(oracle_sample(np.array([5, 3, 5, 9]), 500), [3, 5, 9])
    with pytest.raises(RetrievalError):
        oracle_sample(rows, 0)


def test_oracle_with_fresh_queries_fails_on_a_permuted_bank_but_own_rows_do_not(data):
    """Querying with the bank's own rows cannot see a permutation; re-encoded (here: true) vectors can."""
    v, aids, cidx, hashes, _ = data
    seqs = build_windows(aids, cidx, context_len=3)
    perm = np.random.default_rng(5).permutation(v.shape[0])
    bad = ChunkBank(v[perm], aids, hashes)
    assert oracle_recall_at_k(bad, seqs.target_rows, 5) == 1.0  # own rows: checks nothing
    fresh = v[seqs.target_rows] + np.random.default_rng(6).normal(scale=1e-3, size=(seqs.target_rows.size, v.shape[1]))
    assert oracle_recall_at_k(ChunkBank(v, aids, hashes), seqs.target_rows, 5, target_vectors=fresh) == 1.0
    assert oracle_recall_at_k(bad, seqs.target_rows, 5, target_vectors=fresh) < 0.5


# --- FAISS ------------------------------------------------------------------------------------------


def test_faiss_flat_matches_exact_search(data):
    pytest.importorskip("faiss")
    v, aids, _, hashes, _ = data
    rng = np.random.default_rng(5)
    q = rng.normal(size=(9, DIM)).astype(np.float32)
    excl = [rng.choice(v.shape[0], size=3, replace=False) for _ in range(9)]
    exact = ChunkBank(v, aids, hashes, use_faiss=False)
    fb = ChunkBank(v, aids, hashes, use_faiss=True)
    assert fb.backend == "faiss-flat" and exact.backend == "exact"
    s1, r1 = exact.search(q, 4, excl)
    s2, r2 = fb.search(q, 4, excl)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    # ranks are exact whatever the backend
    np.testing.assert_array_equal(fb.rank_of(q, r1[:, 2]), exact.rank_of(q, r1[:, 2]))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_approximate_indexes_keep_oracle_recall(kind):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(6)
    v = rng.normal(size=(3000, 32)).astype(np.float32)
    bank = ChunkBank(v, use_faiss=True, faiss_index=kind, ivf_nprobe=8)
    assert bank.backend == f"faiss-{kind}"
    assert oracle_recall_at_k(bank, np.arange(0, 3000, 7), 5) >= 0.97
    _, rows = bank.search(bank.vectors[:20], 3, np.arange(20)[:, None])
    assert not (rows == np.arange(20)[:, None]).any()  # exclusions honoured on the FAISS path too


def test_use_faiss_true_without_faiss_is_an_error(monkeypatch, data):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    v, aids, _, hashes, _ = data
    with pytest.raises(RetrievalError, match="faiss"):
        ChunkBank(v, aids, hashes, use_faiss=True)
    assert ChunkBank(v, aids, hashes, use_faiss=None).backend == "exact"
