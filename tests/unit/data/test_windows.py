"""Windows as row indices: counts, no crossing windows, contiguity validation, direction, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.chunk_layout import check_chunk_order
from lvm_core.data.windows import (
    SequenceSet,
    build_windows,
    check_windows,
    count_crossing_windows,
    data_direction,
    gather,
    iter_gathered,
    load_sequences,
    save_sequences,
)


def layout(lengths: list[int], first_id: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Chunk-table arrays for articles of the given lengths (ids first_id, first_id+1, ...)."""
    lengths_a = np.asarray(lengths)
    ids = np.repeat(np.arange(first_id, first_id + len(lengths)), lengths_a).astype(np.int64)
    ci = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32) if lengths else np.empty(0, np.int32)
    return ids, ci


def naive_windows(ids: np.ndarray, ci: np.ndarray, ctx: int) -> list[tuple[list[int], int]]:
    out = []
    for r in range(len(ids) - ctx):
        rows = list(range(r, r + ctx + 1))
        if all(ids[x] == ids[r] for x in rows):
            out.append((rows[:-1], rows[-1]))
    return out


@pytest.mark.parametrize("ctx", [1, 3, 5])
def test_window_count_and_content(ctx: int) -> None:
    lengths = [7, 1, 5, 6, 0, 12, 3]
    lengths = [n for n in lengths if n]
    ids, ci = layout(lengths)
    seqs = build_windows(ids, ci, context_len=ctx)
    assert len(seqs) == sum(max(0, n - ctx) for n in lengths)
    assert seqs.ctx == ctx
    expected = naive_windows(ids, ci, ctx)
    assert [(list(c), int(t)) for c, t in zip(seqs.context_rows, seqs.target_rows)] == expected
    assert np.array_equal(seqs.article_ids, ids[seqs.target_rows])
    assert np.array_equal(seqs.target_chunk_index, ci[seqs.target_rows])
    assert seqs.context_rows.dtype == np.int64 and seqs.target_chunk_index.dtype == np.int32
    assert count_crossing_windows(seqs, ids, ci) == 0


def test_article_filter_and_short_articles() -> None:
    ids, ci = layout([8, 4, 6])  # ids 10, 11, 12
    seqs = build_windows(ids, ci, 5, articles=np.array([12, 11]))
    assert set(seqs.article_ids.tolist()) == {12}  # 11 has 4 chunks: no window
    assert len(seqs) == 1
    assert seqs.target_rows.tolist() == [8 + 4 + 5]
    empty = build_windows(ids, ci, 5, articles=np.array([999]))
    assert len(empty) == 0 and empty.context_rows.shape == (0, 5)


def test_non_sorted_article_ids_are_fine_when_grouped() -> None:
    ids = np.array([7, 7, 7, 3, 3, 3, 3, 5, 5], dtype=np.int64)
    ci = np.array([0, 1, 2, 0, 1, 2, 3, 0, 1], dtype=np.int32)
    seqs = build_windows(ids, ci, 2)
    assert seqs.target_rows.tolist() == [2, 5, 6]
    assert seqs.article_ids.tolist() == [7, 3, 3]


def test_count_crossing_detects_tampering() -> None:
    ids, ci = layout([9, 9, 9])
    seqs = build_windows(ids, ci, 5)
    assert count_crossing_windows(seqs, ids, ci) == 0
    bad = SequenceSet(seqs.context_rows.copy(), seqs.target_rows.copy(), seqs.article_ids, seqs.target_chunk_index)
    bad.context_rows[0, 2] = 9 + 1  # a row of the next article
    assert count_crossing_windows(bad, ids, ci) == 1
    bad.target_rows[3] = bad.target_rows[3] + 1  # target one chunk too far
    assert count_crossing_windows(bad, ids, ci) == 2
    bad.context_rows[5, 0] = 10_000  # outside the table
    assert count_crossing_windows(bad, ids, ci) == 3
    # a window that swaps two context rows is not in chunk order
    swapped = SequenceSet(seqs.context_rows[:, ::-1].copy(), seqs.target_rows, seqs.article_ids, seqs.target_chunk_index)
    assert count_crossing_windows(swapped, ids, ci) == len(seqs)


def test_contiguity_violations_raise_naming_article() -> None:
    ids, ci = layout([4, 6, 3])
    gap = ci.copy()
    gap[4 + 3] = 9  # article 11 chunk 3 -> 9
    with pytest.raises(DataContractError, match=r"article 11 .*row 7 has chunk_index 9, expected 3"):
        build_windows(ids, gap, 2)
    swapped = ci.copy()
    swapped[[5, 6]] = swapped[[6, 5]]
    with pytest.raises(DataContractError, match="article 11"):
        build_windows(ids, swapped, 2)
    starts_at_one = ci.copy()
    starts_at_one[:4] += 1
    with pytest.raises(DataContractError, match="article 10"):
        build_windows(ids, starts_at_one, 2)
    split_article = np.array([1, 1, 2, 2, 1, 1], dtype=np.int64)
    with pytest.raises(DataContractError, match=r"article 1 are not contiguous.*row 4"):
        check_chunk_order(split_article, np.array([0, 1, 0, 1, 2, 3], dtype=np.int32))
    with pytest.raises(DataContractError, match="not aligned"):
        build_windows(ids, ci[:-1], 2)
    with pytest.raises(ValueError, match="context_len"):
        build_windows(ids, ci, 0)


def test_data_direction_on_constructed_vectors() -> None:
    # article of 6 chunks, ctx 5: one window; target e0; context j = cos_j*e0 + sin_j*e1
    cosines = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    v = np.zeros((6, 4), dtype=np.float32)
    v[:5, 0] = cosines
    v[:5, 1] = np.sqrt(1 - cosines**2)
    v[5, 0] = 1.0
    ids, ci = layout([6])
    seqs = build_windows(ids, ci, 5)
    assert data_direction(v, seqs) == pytest.approx(cosines.tolist(), abs=1e-6)
    # blockwise accumulation: many windows with block smaller than the set
    rng = np.random.default_rng(3)
    ids2, ci2 = layout([30, 17, 25])
    v2 = rng.standard_normal((len(ids2), 8)).astype(np.float32)
    v2 /= np.linalg.norm(v2, axis=1, keepdims=True)
    s2 = build_windows(ids2, ci2, 4)
    ctx, tgt = gather(v2, s2)
    expected = np.einsum("njd,nd->j", ctx.astype(np.float64), tgt) / len(s2)
    assert data_direction(v2, s2, block=7) == pytest.approx(expected.tolist(), abs=1e-6)
    assert data_direction(v2, s2.subset(np.zeros(len(s2), bool))) == []
    # sparse targets (one article of three) and arbitrary windows (reversed context, duplicates)
    one = s2.subset(s2.article_ids == 11)
    c1, t1 = gather(v2, one)
    assert data_direction(v2, one, block=16) == pytest.approx(
        (np.einsum("njd,nd->j", c1.astype(np.float64), t1) / len(one)).tolist(), abs=1e-6)
    rev = SequenceSet(s2.context_rows[:, ::-1].copy(), s2.target_rows, s2.article_ids, s2.target_chunk_index)
    assert data_direction(v2, rev, block=5) == pytest.approx(expected[::-1].tolist(), abs=1e-6)
    with pytest.raises(DataContractError, match="outside the 72 rows"):
        data_direction(v2, SequenceSet(s2.context_rows + 5, s2.target_rows + 5, s2.article_ids, s2.target_chunk_index))
    dup = s2.subset(np.r_[np.arange(len(s2)), np.arange(len(s2))])
    assert data_direction(v2, dup, block=9) == pytest.approx(expected.tolist(), abs=1e-6)


def test_gather_shapes_and_values() -> None:
    ids, ci = layout([8])
    v = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    seqs = build_windows(ids, ci, 5)
    ctx, tgt = gather(v, seqs, np.array([2]))
    assert ctx.shape == (1, 5, 3) and tgt.shape == (1, 3)
    assert np.array_equal(ctx[0], v[2:7]) and np.array_equal(tgt[0], v[7])


def test_iter_gathered_batches_cover_the_index_in_order() -> None:
    ids, ci = layout([8, 9])
    v = np.arange(17 * 2, dtype=np.float32).reshape(17, 2)
    seqs = build_windows(ids, ci, 3)
    idx = np.array([0, 4, 5, 7, 9])
    batches = list(iter_gathered(v, seqs, 2, idx))
    assert [len(t) for _, t in batches] == [2, 2, 1]
    ctx, tgt = gather(v, seqs, idx)
    assert np.array_equal(np.concatenate([c for c, _ in batches]), ctx)
    assert np.array_equal(np.concatenate([t for _, t in batches]), tgt)


def test_check_windows_is_the_one_window_check() -> None:
    """Shapes, dtypes, row bounds, same article and consecutive chunks: each failure is named."""
    ids, ci = layout([6, 6])
    v = np.zeros((12, 4), np.float32)
    seqs = build_windows(ids, ci, 3)
    assert check_windows(seqs, v, ids, ci) is seqs
    with pytest.raises(DataContractError, match="context_rows must hold integers"):
        SequenceSet(seqs.context_rows.astype(float), seqs.target_rows, seqs.article_ids, seqs.target_chunk_index)
    with pytest.raises(DataContractError, match="no target_chunk_index"):
        check_windows(type("Half", (), {"context_rows": seqs.context_rows, "target_rows": seqs.target_rows,
                                        "article_ids": seqs.article_ids})(), v)
    with pytest.raises(DataContractError, match=r"val\.target_rows indexes rows 4\.\.12, out of range \[0, 12\)"):
        check_windows(SequenceSet(seqs.context_rows, seqs.target_rows + 1, seqs.article_ids,
                                  seqs.target_chunk_index), v, what="val")
    with pytest.raises(DataContractError, match="vectors must be a 2-d array"):
        check_windows(seqs, v[0])
    with pytest.raises(DataContractError, match="holds no windows"):
        check_windows(seqs.subset(slice(0, 0)), v, allow_empty=False)
    # rows 3, 4, 5 are the last chunks of article 10; row 6 is chunk 0 of article 11
    crossing = SequenceSet(np.array([[3, 4, 5]]), np.array([6]), np.array([10]), np.array([6]))
    check_windows(crossing, v)  # in range: only the chunk table tells
    with pytest.raises(DataContractError, match="1 of 1 windows are not"):
        check_windows(crossing, v, ids, ci)
    shuffled = SequenceSet(np.array([[1, 0, 2]]), np.array([3]), np.array([10]), np.array([3]))
    with pytest.raises(DataContractError, match="1 of 1 windows are not"):
        check_windows(shuffled, None, ids, ci)


def test_save_load_round_trip(tmp_path) -> None:
    ids, ci = layout([9, 7, 12])
    all_w = build_windows(ids, ci, 5)
    sets = {"train": all_w.subset(all_w.article_ids != 11), "val": all_w.subset(all_w.article_ids == 11), "ood": all_w.subset(slice(0, 0))}
    path = tmp_path / "sequences.npz"
    save_sequences(path, sets)
    assert [p.name for p in tmp_path.iterdir()] == ["sequences.npz"]  # no temp files left behind
    loaded = load_sequences(path)
    assert set(loaded) == {"train", "val", "ood"}
    for name, s in sets.items():
        got = loaded[name]
        assert got.ctx == 5 and len(got) == len(s)
        for key in ("context_rows", "target_rows", "article_ids", "target_chunk_index"):
            assert np.array_equal(getattr(got, key), getattr(s, key))
            assert getattr(got, key).dtype == getattr(s, key).dtype


def test_load_rejects_bad_files(tmp_path) -> None:
    bad_shape = tmp_path / "a.npz"
    np.savez(bad_shape, train_context_rows=np.zeros((3, 5), np.int64), train_target_rows=np.zeros(4, np.int64),
             train_article_ids=np.zeros(3, np.int64), train_target_chunk_index=np.zeros(3, np.int32))
    with pytest.raises(DataContractError, match="target_rows has shape"):
        load_sequences(bad_shape)
    missing = tmp_path / "b.npz"
    np.savez(missing, val_context_rows=np.zeros((3, 5), np.int64))
    with pytest.raises(DataContractError, match="lacks array"):
        load_sequences(missing)
    floats = tmp_path / "c.npz"
    np.savez(floats, train_context_rows=np.zeros((3, 5)), train_target_rows=np.zeros(3, np.int64),
             train_article_ids=np.zeros(3, np.int64), train_target_chunk_index=np.zeros(3, np.int32))
    with pytest.raises(DataContractError, match="dtype float64"):
        load_sequences(floats)
    obj = tmp_path / "d.npz"
    np.savez(obj, train_context_rows=np.array([[1, "x"]], dtype=object))
    with pytest.raises(DataContractError, match="without pickle"):
        load_sequences(obj)
    junk = tmp_path / "e.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataContractError, match="not a readable"):
        load_sequences(junk)


def test_real_chunk_table_of_the_sample() -> None:
    """The chunk layout produced by the real ingest + chunking of the embedded enwiki sample."""
    from lvm_core.data.chunking import chunk_articles
    from lvm_core.data.ingest.sources import read_articles

    table = chunk_articles(read_articles("sample", limit=20))
    ids = table.column("article_id").to_numpy()
    ci = table.column("chunk_index").to_numpy()
    _, first = np.unique(ids, return_index=True)
    lengths = np.bincount(np.searchsorted(np.sort(first), np.arange(len(ids)), side="right") - 1)
    seqs = build_windows(ids, ci, 5)
    assert len(seqs) == int(np.maximum(lengths - 5, 0).sum()) > 100
    assert count_crossing_windows(seqs, ids, ci) == 0
    assert set(seqs.article_ids.tolist()) <= set(ids.tolist())
