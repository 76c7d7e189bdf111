"""Gates over rows stay exact while the row-level suites see a sample: one bad row outside the sample of
50,000 rows still fails its gate (through the ``*_exact`` counts), and the frames stay small."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from expectations.frames import chunks as chunk_frames
from expectations.frames import npz_blocks
from expectations.frames.build import build_gate_frames
from expectations.frames.sample import SampleSpec
from expectations.runner import run_pre_training_gates, validation_result_path
from lvm_core.contracts.layout import CHUNKS_FILE, EMBEDDINGS_FILE, GX_DIR, SPLITS_FILE
from lvm_core.io import storage
from tests.fixtures.gate_dataset import N_CHUNKS, make_dataset

N_BIG = 5_004  # articles: 50,040 chunk rows
SAMPLE = SampleSpec(rows=1_000, seed=0)
ROWS_SAMPLED = set(SAMPLE.positions(N_BIG * N_CHUNKS).tolist())
ARTICLES_SAMPLED = set(SAMPLE.positions(N_BIG).tolist())  # positions among the sorted article ids


def _unsampled_row(after: int = 0) -> int:
    return next(r for r in range(after, N_BIG * N_CHUNKS) if r not in ROWS_SAMPLED)


def _unsampled_article() -> int:
    """Position of a train article (SPLIT_OF puts 8 of every 12 in train) the article sample leaves out."""
    return next(i for i in range(N_BIG) if i not in ARTICLES_SAMPLED and i % 12 < 8)


@pytest.fixture(scope="module")
def big_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "dataset"
    make_dataset(root, n_articles=N_BIG)
    return root


@pytest.fixture()
def big(big_base: Path, tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shutil.copytree(big_base, root, ignore=shutil.ignore_patterns(GX_DIR))
    return root


def _set_chunk_value(root: Path, column: str, row: int, value: object) -> None:
    path = root / CHUNKS_FILE
    table = pq.read_table(path)
    values = table[column].to_pylist()
    values[row] = value
    col = table.schema.get_field_index(column)
    pq.write_table(table.set_column(col, table.schema.field(col), pa.array(values, table.schema.field(col).type)), path)


def _blank_text(root: Path) -> None:
    _set_chunk_value(root, "text", _unsampled_row(), "   ")


def _duplicate_chunk_id(root: Path) -> None:
    first = _unsampled_row(100)
    _set_chunk_value(root, "chunk_id", _unsampled_row(first + 1), pq.read_table(root / CHUNKS_FILE)["chunk_id"][first].as_py())


def _edit_vector(root: Path, edit: Callable[[np.ndarray], None]) -> None:
    v = np.load(root / EMBEDDINGS_FILE).copy()
    edit(v[_unsampled_row()])
    storage.write_npy(root / EMBEDDINGS_FILE, v)


def _nan_vector(root: Path) -> None:
    _edit_vector(root, lambda row: row.__setitem__(0, np.nan))


def _long_vector(root: Path) -> None:
    _edit_vector(root, lambda row: row.__imul__(1.5))


def _article_in_two_splits(root: Path) -> None:
    path = root / SPLITS_FILE
    table = pq.read_table(path)
    extra = table.slice(_unsampled_article(), 1).to_pydict()
    extra["split"] = ["val"]
    pq.write_table(pa.concat_tables([table, pa.Table.from_pydict(extra, schema=table.schema)]), path)


def _chunk_index_gap(root: Path) -> None:
    last_row = _unsampled_article() * N_CHUNKS + N_CHUNKS - 1
    _set_chunk_value(root, "chunk_index", last_row, N_CHUNKS)


# fault -> (gates that fail, the sampled suite that misses it, the exact suite that catches it)
FAULTS: list[tuple[Callable[[Path], None], set[str], str]] = [
    (_blank_text, {"chunk_text_nonempty"}, "chunks"),
    (_duplicate_chunk_id, {"chunk_ids_unique"}, "chunks"),
    (_nan_vector, {"vectors_finite"}, "vectors"),
    (_long_vector, {"unit_norm"}, "vectors"),
    (_article_in_two_splits, {"splits_disjoint"}, "article_splits"),
    (_chunk_index_gap, {"chunk_index_contiguous", "crossing_windows_zero", "sequences_aligned", "manifest_consistent"},
     "article_chunks"),
]


@pytest.mark.parametrize(("fault", "expected", "suite"), FAULTS, ids=[f.__name__.lstrip("_") for f, _, _ in FAULTS])
def test_a_bad_row_outside_the_sample_fails_its_gate(big: Path, fault: Callable, expected: set[str], suite: str) -> None:
    fault(big)
    report = run_pre_training_gates(big, data_docs=False, sample=SAMPLE)

    assert set(report.failed) == expected, {r.name: r.detail for r in report.results if not r.passed}
    saved = json.loads(validation_result_path(big).read_text())
    by_suite = {vr["suite_name"]: vr["success"] for vr in saved["validation_results"]}
    assert by_suite[suite] is True  # the sample did not see the bad row ...
    assert by_suite[f"{suite}_exact"] is False  # ... the counts over every row did
    unit = "rows" if suite in ("chunks", "vectors") else "articles"
    population = N_BIG * N_CHUNKS if unit == "rows" else N_BIG
    assert saved["sample"]["frames"][suite] == {"sampled": 1_000, "of": population, "unit": unit}
    assert saved["sample"]["seed"] == 0 and saved["sample"]["rows"] == 1_000
    gate = next(r for r in report.results if r.name == sorted(expected & {
        "chunk_text_nonempty", "chunk_ids_unique", "vectors_finite", "unit_norm", "splits_disjoint",
        "chunk_index_contiguous"})[0])
    assert f"{suite} 1000 of {population} {unit}" in gate.detail and "seed 0" in gate.detail
    assert gate.value not in (0, None)


def test_the_valid_big_dataset_passes_and_its_sample_is_stated(big: Path) -> None:
    report = run_pre_training_gates(big, data_docs=False, sample=SAMPLE)
    assert report.passed, [(r.name, r.detail) for r in report.results if not r.passed]
    outcome = report.to_manifest()["chunk_text_nonempty"]
    assert "chunks 1000 of 50040 rows" in outcome["detail"] and "seed 0" in outcome["detail"]


def test_exact_counts_and_sample_sizes(big: Path) -> None:
    _blank_text(big)
    _duplicate_chunk_id(big)
    frames = build_gate_frames(big, None, SAMPLE)
    exact = frames["chunks_exact"].iloc[0]
    assert exact["n_rows"] == N_BIG * N_CHUNKS
    assert (exact["n_blank_text"], exact["n_duplicate_chunk_id"], exact["n_null_chunk_id"]) == (1, 1, 0)
    assert len(frames["chunks"]) == len(frames["vectors"]) == 1_000
    assert len(frames["article_chunks"]) == len(frames["article_splits"]) == 1_000
    assert frames["chunks"]["row"].tolist() == sorted(ROWS_SAMPLED)
    assert frames["article_chunks_exact"].iloc[0]["n_articles"] == N_BIG
    # the same seed draws the same sample
    again = build_gate_frames(big, None, SAMPLE)
    assert again["chunks"]["row"].tolist() == frames["chunks"]["row"].tolist()


def test_hash_collisions_are_confirmed_on_the_ids(big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every chunk id hashes alike: the ids themselves decide, so a sound dataset has no duplicate
    monkeypatch.setattr(chunk_frames, "_hash", lambda ids: pl.Series(np.zeros(len(ids), dtype=np.uint64)))
    assert build_gate_frames(big, None, SAMPLE)["chunks_exact"].iloc[0]["n_duplicate_chunk_id"] == 0
    _duplicate_chunk_id(big)
    assert build_gate_frames(big, None, SAMPLE)["chunks_exact"].iloc[0]["n_duplicate_chunk_id"] == 1


def _peak_bytes(root: Path) -> int:
    tracemalloc.start()
    try:
        frames = build_gate_frames(root, None, SampleSpec(rows=500, seed=0))
        assert frames["chunks_exact"].iloc[0]["n_rows"] > 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_frame_memory_does_not_grow_with_the_chunks_beyond_small_arrays(
    big_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small read blocks, so that both sizes span many blocks (the defaults are 16,384 rows / 65,536 windows)
    monkeypatch.setattr(chunk_frames, "BATCH_ROWS", 2_048)
    monkeypatch.setattr(npz_blocks, "BLOCK_ROWS", 2_048)
    small = tmp_path / "small"
    make_dataset(small, n_articles=N_BIG // 4)
    added_chunks = (N_BIG - N_BIG // 4) * N_CHUNKS
    per_chunk = (_peak_bytes(big_base) - _peak_bytes(small)) / added_chunks
    # what is kept per chunk: article id (8 B), chunk index (4 B), chunk_id hash (8 B), and per article a few
    # numbers; the frames before held five columns per chunk with every chunk_id as a Python str (~111 B here)
    assert per_chunk < 32, f"{per_chunk:.1f} bytes per added chunk"
