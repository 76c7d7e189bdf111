"""The analyse step's row-level helpers hold numeric arrays only: hash codes, int8 splits, numpy members,
and the oracle's texts read by row group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import CHUNKS_SCHEMA, DatasetPaths
from lvm_core.data import leakage, windows
from lvm_core.data.build import analyse
from lvm_core.data.build.oracle import read_rows
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.data.hash_codes import hash_codes
from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.retrieval.oracle import oracle_hits
from lvm_core.io import storage
from tests.fixtures.vectors import chunk_table

LENGTHS = [9, 3, 8, 7, 10, 6]  # articles 100..105


def _staged(tmp_path: Path, row_group_size: int = 7) -> tuple[DatasetPaths, np.ndarray, np.ndarray]:
    v, aids, cidx, hashes, texts = chunk_table(LENGTHS, dim=16, noise=0.4, seed=1)
    paths = DatasetPaths(tmp_path)
    table = pa.table({
        "chunk_id": [f"{a}:{c}" for a, c in zip(aids, cidx)], "article_id": aids, "chunk_index": cidx,
        "text": list(texts), "text_hash": list(hashes), "n_words": np.full(aids.size, 5, np.int32),
    }, schema=CHUNKS_SCHEMA)
    pq.write_table(table, paths.chunks, row_group_size=row_group_size)
    np.save(paths.embeddings, v)
    fp = EncoderFingerprint(model_name="test/enc", weights_digest="ab" * 32, dim=16)
    storage.write_json(paths.encoder, fp.to_dict())
    return paths, v, hashes


def _split_df() -> pl.DataFrame:
    return pl.DataFrame({"article_id": [100, 101, 102, 103, 104], "split": ["train", "val", "train", "ood", "test"]})


def test_read_chunks_keeps_hash_codes_and_a_memory_map(tmp_path: Path) -> None:
    paths, v, hashes = _staged(tmp_path)
    chunks = analyse._read_chunks(paths)
    assert chunks.text_hash.dtype == np.uint64
    np.testing.assert_array_equal(chunks.text_hash, hash_codes(hashes))
    assert isinstance(chunks.vectors, np.memmap)
    np.testing.assert_array_equal(np.asarray(chunks.vectors), v)
    np.save(paths.embeddings, v[:-1])
    with pytest.raises(DataContractError, match="vectors for"):
        analyse._read_chunks(paths)


def test_row_split_is_an_int8_code_per_row_and_unsplit_rows_are_minus_one() -> None:
    aids = np.repeat(np.arange(100, 106), LENGTHS).astype(np.int64)
    codes = analyse._row_split(aids, _split_df())
    assert codes.dtype == np.int8
    names = {0: "train", 1: "val", 2: "test", 3: "ood", -1: ""}
    expected = {100: "train", 101: "val", 102: "train", 103: "ood", 104: "test", 105: ""}
    assert [names[int(c)] for c in codes] == [expected[int(a)] for a in aids]
    assert (analyse._row_split(aids, _split_df().head(0)) == leakage.UNSPLIT).all()


def test_windows_of_each_split_are_those_of_its_member_articles(tmp_path: Path) -> None:
    paths, _, _ = _staged(tmp_path)
    chunks = analyse._read_chunks(paths)
    seqs = analyse._windows(chunks, _split_df(), 3)
    for name, members in {"train": [100, 102], "val": [101], "test": [104], "ood": [103]}.items():
        ref = windows.build_windows(chunks.article_ids, chunks.chunk_index, 3, articles=np.array(members))
        np.testing.assert_array_equal(seqs[name].target_rows, ref.target_rows)
    assert len(seqs["val"]) == 0  # article 101 has 3 chunks: no window of 3 + 1


def test_purge_with_codes_counts_and_purges_as_with_names(tmp_path: Path) -> None:
    paths, v, hashes = _staged(tmp_path)
    chunks = analyse._read_chunks(paths)
    # row 30 (article 104, test) repeats the text and vector of row 0 (train): a leak
    text_hash = chunks.text_hash.copy()
    text_hash[30] = text_hash[0]
    chunks = analyse._Chunks(chunks.article_ids, chunks.chunk_index, text_hash, chunks.vectors, chunks.encoder)
    split_df = _split_df()
    seqs = analyse._windows(chunks, split_df, 3)
    before = len(seqs["test"])
    leak = analyse._purge_leakage(seqs, chunks, analyse._row_split(chunks.article_ids, split_df), 0.995)
    assert leak["leakage_raw"]["text_hash_overlap"]["test"] == 1
    assert leak["purged_windows"]["test"] == 4 and len(seqs["test"]) == before - 4  # windows touching row 30
    assert leak["leakage"]["leaking_rows"]["test"] == 0
    assert leak["leakage"]["rows"]["train"] == leak["leakage_raw"]["rows"]["train"] == 17
    # the same scan on split names and hash strings
    names = np.array([{100: "train", 102: "train", 101: "val", 103: "ood", 104: "test"}.get(int(a), "")
                      for a in chunks.article_ids])
    strings = hashes.copy()
    strings[30] = strings[0]
    assert leakage.scan_leakage(chunks.article_ids, strings, v, names).report() == leak["leakage_raw"]


def test_articles_after_purge_keeps_train_and_eval_articles_with_windows() -> None:
    split_df = pl.DataFrame({"article_id": [1, 2, 3], "split": ["train", "val", "ood"]})
    ids = np.repeat([1, 2, 3], 5).astype(np.int64)
    ci = np.tile(np.arange(5), 3).astype(np.int32)
    seqs = {"train": windows.build_windows(ids, ci, 2, articles=np.array([1])),
            "val": windows.build_windows(ids, ci, 2, articles=np.array([2])),
            "ood": windows.build_windows(ids, ci, 2, articles=np.array([], dtype=np.int64))}
    assert analyse._articles_after_purge(split_df, seqs)["article_id"].to_list() == [1, 2]
    seqs["val"] = seqs["val"].subset(np.zeros(len(seqs["val"]), bool))
    assert analyse._articles_after_purge(split_df, seqs)["article_id"].to_list() == [1]


def test_oracle_texts_are_read_from_the_row_groups_that_hold_them(tmp_path: Path) -> None:
    paths, _, _ = _staged(tmp_path, row_group_size=5)
    texts = pq.read_table(paths.chunks, columns=["text"]).column(0).to_pylist()
    rows = np.array([0, 4, 5, 6, 22, 42])
    assert read_rows(paths.chunks, rows, "text", batch_rows=3) == [texts[i] for i in rows]
    assert read_rows(paths.chunks, np.array([], dtype=np.int64), "text") == []
    with pytest.raises(DataContractError, match="outside"):
        read_rows(paths.chunks, np.array([43]), "text")


def test_a_bank_of_hash_codes_scores_the_oracle_like_a_bank_of_strings() -> None:
    v, aids, _, hashes, _ = chunk_table([12, 12, 12], dim=16, noise=0.3, seed=2)
    hashes[5] = hashes[20]  # a duplicate text: either row is a hit
    v[5] = v[20]
    by_string = ChunkBank(v, aids, hashes, use_faiss=False)
    by_code = ChunkBank(v, text_hash=hash_codes(hashes), use_faiss=False)
    assert by_code.text_hash.dtype == np.uint64
    rows = np.arange(36)
    np.testing.assert_array_equal(oracle_hits(by_code, rows, 1), oracle_hits(by_string, rows, 1))
    assert oracle_hits(by_code, np.array([5, 20]), 1).all()
    np.testing.assert_array_equal(by_code.rank_of(v[rows], rows), by_string.rank_of(v[rows], rows))
