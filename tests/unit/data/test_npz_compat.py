"""Reference-project NPZ files: read, convert with --exclude-articles semantics, read back, refuse pickles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lvm_core.data.npz_compat import (
    NpzFormatError,
    convert_reference_npz,
    load_reference_sequences,
    read_reference_vectors,
)

CTX = 3
LENGTHS = {0: 6, 1: 2, 2: 5, 3: 7, 4: 4, 7: 9, 10: 3}  # article_indices value -> chunks


def make_reference(path: Path, with_texts: bool = True, shuffle: bool = True) -> dict[tuple[int, int], int]:
    """Write a reference vector dump; rows deliberately not in (article, chunk) order. Returns key -> row."""
    rng = np.random.default_rng(0)
    keys = [(a, c) for a, n in LENGTHS.items() for c in range(n)]
    if shuffle:
        keys = [keys[i] for i in rng.permutation(len(keys))]
    n = len(keys)
    v = rng.standard_normal((n, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    arrays = {
        "vectors": v,
        "article_indices": np.array([a for a, _ in keys], dtype=np.int32),
        "chunk_indices": np.array([c for _, c in keys], dtype=np.int32),
    }
    if with_texts:
        arrays["concept_texts"] = np.array([f"article {a} chunk {c}" for a, c in keys])
        arrays["article_titles"] = np.array([f"Title {a}" for a, _ in keys])
    np.savez(path, **arrays)
    return {k: i for i, k in enumerate(keys)}


def test_read_reference_vectors(tmp_path) -> None:
    path = tmp_path / "ref.npz"
    rows = make_reference(path)
    ref = read_reference_vectors(path)
    assert len(ref) == len(rows) and ref.dim == 8 and ref.vectors.dtype == np.float32
    assert ref.article_indices.dtype == np.int64
    assert ref.concept_texts is not None and ref.concept_texts[rows[(3, 4)]] == "article 3 chunk 4"
    assert ref.article_titles is not None and ref.article_titles[rows[(3, 4)]] == "Title 3"


def test_convert_with_exclusions_and_aligned_texts(tmp_path) -> None:
    src = tmp_path / "ref.npz"
    rows = make_reference(src)
    vectors = np.load(src)["vectors"]
    summary = convert_reference_npz(src, tmp_path / "train.npz", exclude_articles="2-3,7", context_len=CTX)
    kept = {a: n for a, n in LENGTHS.items() if a not in (2, 3, 7)}
    expected_n = sum(max(0, n - CTX) for n in kept.values())
    assert summary["n_sequences"] == expected_n == 3 + 1  # articles 0 (6 chunks) and 4 (4 chunks)
    assert summary["n_articles"] == 7 and summary["n_articles_kept"] == 4
    assert summary["n_vectors_excluded"] == 5 + 7 + 9
    assert summary["exclude_articles"] == "2-3,7-7"

    raw = np.load(tmp_path / "train.npz", allow_pickle=False)  # a plain np.savez-compatible archive
    assert set(raw.files) == {"context_sequences", "target_vectors", "context_texts", "target_texts",
                              "article_index", "target_chunk_index", "context_length", "vector_dim"}
    assert raw["context_sequences"].shape == (expected_n, CTX, 8) and raw["context_sequences"].dtype == np.float32
    assert int(raw["context_length"]) == CTX and int(raw["vector_dim"]) == 8
    assert set(raw["article_index"].tolist()) == {0, 4}
    for w in range(expected_n):
        art, t = int(raw["article_index"][w]), int(raw["target_chunk_index"][w])
        assert raw["target_texts"][w] == f"article {art} chunk {t}"
        assert np.array_equal(raw["target_vectors"][w], vectors[rows[(art, t)]])
        for j in range(CTX):
            c = t - CTX + j
            assert raw["context_texts"][w, j] == f"article {art} chunk {c}"
            assert np.array_equal(raw["context_sequences"][w, j], vectors[rows[(art, c)]])

    ctx, tgt, meta = load_reference_sequences(tmp_path / "train.npz")
    assert ctx.shape == (expected_n, CTX, 8) and tgt.shape == (expected_n, 8)
    assert meta["context_length"] == CTX and meta["vector_dim"] == 8
    assert meta["context_texts"].shape == (expected_n, CTX)
    assert np.array_equal(meta["article_index"], raw["article_index"])

    # the held-out file: only the excluded ranges
    val = convert_reference_npz(src, tmp_path / "val.npz", include_articles="2-3,7", context_len=CTX)
    assert val["n_sequences"] == (5 - CTX) + (7 - CTX) + (9 - CTX)
    assert set(np.load(tmp_path / "val.npz")["article_index"].tolist()) == {2, 3, 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz", "train.npz", "val.npz"]  # no temp files


def test_convert_without_texts_and_suffix(tmp_path) -> None:
    src = tmp_path / "ref.npz"
    make_reference(src, with_texts=False)
    summary = convert_reference_npz(src, tmp_path / "out", context_len=CTX)
    assert summary["output"] == str(tmp_path / "out.npz") and (tmp_path / "out.npz").exists()
    assert not (tmp_path / "out").exists()
    assert summary["n_sequences"] == sum(max(0, n - CTX) for n in LENGTHS.values())
    _, _, meta = load_reference_sequences(tmp_path / "out.npz")
    assert meta["target_texts"].dtype.kind == "U" and set(meta["target_texts"].tolist()) == {""}
    assert meta["context_texts"].shape == (summary["n_sequences"], CTX)


def test_gaps_break_windows_and_bad_ranges(tmp_path) -> None:
    v = np.eye(8, dtype=np.float32)
    src = tmp_path / "gap.npz"
    # article 5: chunks 0,1,2,4,5,6,7 (3 missing) -> with ctx 2 windows only inside runs 0-2 and 4-7
    np.savez(src, vectors=v[:7], article_indices=np.full(7, 5), chunk_indices=np.array([0, 1, 2, 4, 5, 6, 7]))
    s = convert_reference_npz(src, tmp_path / "o.npz", context_len=2)
    assert s["n_sequences"] == 1 + 2 and s["n_chunk_gaps"] == 1
    assert np.load(tmp_path / "o.npz")["target_chunk_index"].tolist() == [2, 6, 7]
    with pytest.raises(ValueError, match="range 6-9 matches no article in gap.npz"):
        convert_reference_npz(src, tmp_path / "o2.npz", exclude_articles="5,6-9", context_len=2)
    with pytest.raises(ValueError, match="before start"):
        convert_reference_npz(src, tmp_path / "o3.npz", exclude_articles="9-6", context_len=2)
    dup = tmp_path / "dup.npz"
    np.savez(dup, vectors=v[:3], article_indices=np.array([1, 1, 1]), chunk_indices=np.array([0, 1, 1]))
    with pytest.raises(NpzFormatError, match="article 1 has chunk index 1 twice"):
        convert_reference_npz(dup, tmp_path / "o4.npz", context_len=1)
    assert not (tmp_path / "o2.npz").exists() and not (tmp_path / "o4.npz").exists()


def test_object_array_refused_with_clear_message(tmp_path) -> None:
    path = tmp_path / "file.npz"
    np.savez(path, vectors=np.eye(3, dtype=np.float32), article_indices=np.zeros(3, np.int64),
             chunk_indices=np.arange(3), concept_texts=np.array(["a", "b", None], dtype=object))
    with pytest.raises(NpzFormatError) as err:
        read_reference_vectors(path)
    assert str(err.value) == (
        "file.npz: array 'concept_texts' is an object array; refusing to unpickle "
        "(re-save texts as a unicode array)"
    )


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"article_indices": np.zeros(3), "chunk_indices": np.arange(3)}, "missing array\\(s\\) 'vectors'"),
        ({"vectors": np.zeros(3, np.float32), "article_indices": np.zeros(3), "chunk_indices": np.arange(3)},
         "'vectors' must be 2-D"),
        ({"vectors": np.array([[1.0, np.nan]] * 3, np.float32), "article_indices": np.zeros(3, int),
          "chunk_indices": np.arange(3)}, "'vectors' has NaN/Inf values \\(first at row 0\\)"),
        ({"vectors": np.eye(3, dtype=np.float32), "article_indices": np.zeros(2, int), "chunk_indices": np.arange(3)},
         "'article_indices' has length 2, expected 3"),
        ({"vectors": np.eye(3, dtype=np.float32), "article_indices": np.zeros(3, int), "chunk_indices": np.arange(3),
          "concept_texts": np.array(["a", "b"])}, "'concept_texts' has shape \\(2,\\), expected \\(3,\\)"),
        ({"vectors": np.eye(3, dtype=np.float32), "article_indices": np.full(3, 0.5), "chunk_indices": np.arange(3)},
         "'article_indices' has non-integer values"),
    ],
)
def test_bad_vector_files(tmp_path, arrays, message) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(NpzFormatError, match=message):
        read_reference_vectors(path)


def test_bad_sequence_files(tmp_path) -> None:
    ok = {"context_sequences": np.zeros((4, 3, 8), np.float32), "target_vectors": np.zeros((4, 8), np.float32),
          "context_length": np.array(3), "vector_dim": np.array(8)}
    for change, message in (
        ({"target_vectors": np.zeros((4, 7), np.float32)}, "'target_vectors' must be float \\(4, 8\\)"),
        ({"context_length": np.array(5)}, "'context_length' is \\[5\\]"),
        ({"context_sequences": np.zeros((4, 8), np.float32)}, "must be float \\(M, ctx, D\\)"),
        ({"target_vectors": np.full((4, 8), np.inf, np.float32)}, "'target_vectors' has NaN/Inf"),
        ({"target_texts": np.array(["x"] * 4, dtype=object)}, "'target_texts' is an object array"),
    ):
        path = tmp_path / "s.npz"
        np.savez(path, **{**ok, **change})
        with pytest.raises(NpzFormatError, match=message):
            load_reference_sequences(path)
    path = tmp_path / "s.npz"
    np.savez(path, target_vectors=ok["target_vectors"])
    with pytest.raises(NpzFormatError, match="missing array\\(s\\) 'context_sequences'"):
        load_reference_sequences(path)
    with pytest.raises(NpzFormatError, match="file not found"):
        load_reference_sequences(tmp_path / "nope.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(NpzFormatError, match="single .npy array"):
        load_reference_sequences(tmp_path / "single.npy")
