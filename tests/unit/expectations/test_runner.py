"""Pre-training data gates: a small valid dataset folder passes every gate, each injected fault fails its gate."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from expectations.frames.build import build_gate_frames
from expectations.runner import (
    SUITE_NAMES,
    load_suite,
    raise_for_failures,
    run_pre_training_gates,
    validation_result_path,
)
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.gates import GateFailedError, GateThresholds
from lvm_core.contracts.layout import (
    ARTICLES_FILE,
    CHUNKS_FILE,
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    GX_DIR,
    MANIFEST_FILE,
    SEQUENCES_FILE,
    SPLITS_FILE,
    SPLITS_MANIFEST_FILE,
    VECTOR_DTYPE_KEY,
)
from lvm_core.io import storage
from tests.fixtures.gate_dataset import DIM, N_ARTICLES, N_CHUNKS, make_dataset

ALL_GATES = {
    "chunk_ids_unique",
    "chunk_text_nonempty",
    "vectors_finite",
    "unit_norm",
    "vector_dim",
    "vector_dtype",
    "vectors_aligned",
    "chunk_index_contiguous",
    "chunk_rows_ordered",
    "chunk_articles_known",
    "splits_disjoint",
    "sequence_articles_assigned",
    "leakage_zero",
    "near_duplicates_zero",
    "crossing_windows_zero",
    "sequences_aligned",
    "split_parity_val",
    "split_parity_test",
    "split_parity_ood",
    "oracle_recall_at_5",
    "manifest_consistent",
    "purged_fraction",
}


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base") / "dataset"
    make_dataset(root)
    return root


@pytest.fixture()
def dataset(base_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shutil.copytree(base_dataset, root, ignore=shutil.ignore_patterns(GX_DIR))
    return root


def _edit_manifest(root: Path, edit: Callable[[dict], None]) -> None:
    path = root / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _edit_sequences(root: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    path = root / SEQUENCES_FILE
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    edit(arrays)
    np.savez(path, **arrays)


def _edit_vectors(root: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    path = root / EMBEDDINGS_FILE
    storage.write_npy(path, edit(np.load(path, allow_pickle=False).copy()))


# --- the valid dataset -----------------------------------------------------------------------------


def test_valid_dataset_passes_every_gate_and_writes_docs(dataset: Path) -> None:
    report = run_pre_training_gates(dataset, manifest=None)

    assert report.stage == "pre_training"
    assert {r.name for r in report.results} == ALL_GATES
    assert report.passed, [(r.name, r.value, r.detail) for r in report.results if not r.passed]
    assert report.failed == []
    docs = Path(report.docs_path)
    assert docs.name == "index.html" and docs.is_file()
    assert docs.is_relative_to((dataset / GX_DIR).resolve())
    assert "local_site" in docs.parts and "data_docs" in docs.parts
    html = docs.read_text()
    assert "vectors" in html and "dataset_metrics" in html
    # the site is built once after the checkpoint: every suite still has its validation page
    pages = {p.parent.parent.parent.name for p in docs.parent.glob("validations/*/*/*/*.html")}
    assert pages == set(SUITE_NAMES)

    saved = json.loads(validation_result_path(dataset).read_text())
    assert saved["success"] is True and saved["passed"] is True
    assert len(saved["validation_results"]) == len(SUITE_NAMES)
    assert saved["suite_parameters"]["min_oracle_recall_at_5"] == pytest.approx(0.97)
    assert set(saved["gates"]) == ALL_GATES

    gates = {r.name: r for r in report.results}
    assert gates["vector_dim"].value == DIM and gates["vector_dim"].threshold == DIM
    assert gates["oracle_recall_at_5"].value == pytest.approx(0.98)
    assert gates["oracle_recall_at_5"].threshold == pytest.approx(0.97)
    assert gates["crossing_windows_zero"].value == 0
    assert gates["unit_norm"].value < 1e-5
    json.dumps(report.to_manifest())  # the manifest's `gates` section must serialise
    raise_for_failures(report)  # no exception


def test_a_second_run_in_the_same_folder_reuses_the_gx_project(dataset: Path) -> None:
    first = run_pre_training_gates(dataset, data_docs=False)
    _low_oracle_recall(dataset)
    second = run_pre_training_gates(dataset)
    assert first.passed and first.docs_path is None
    assert second.failed == ["oracle_recall_at_5"]
    assert Path(second.docs_path).is_file()
    saved = json.loads(validation_result_path(dataset).read_text())
    assert saved["failed"] == ["oracle_recall_at_5"]  # the file describes the latest run
    with pytest.raises(GateFailedError) as err:
        raise_for_failures(second)
    assert second.docs_path in str(err.value) and "oracle_recall_at_5" in str(err.value)


def test_frames_hold_per_row_summaries_not_vector_components(dataset: Path) -> None:
    frames = build_gate_frames(dataset, None)
    assert set(frames["vectors"].columns) == {"row", "norm", "is_finite"}
    assert len(frames["vectors"]) == N_ARTICLES * N_CHUNKS
    assert "text" not in frames["chunks"].columns
    assert len(frames["article_chunks"]) == N_ARTICLES
    assert (frames["article_splits"]["n_splits"] == 1).all()
    metrics = frames["dataset_metrics"].iloc[0]
    assert metrics["crossing_windows"] == 0 and metrics["n_manifest_problems"] == 0
    assert metrics["abs_mean_diff_val"] == pytest.approx(0.02)


# --- faults ----------------------------------------------------------------------------------------


def _nan_vector(root: Path) -> None:
    def edit(v: np.ndarray) -> np.ndarray:
        v[5, 3] = np.nan
        return v

    _edit_vectors(root, edit)


def _non_unit_vector(root: Path) -> None:
    def edit(v: np.ndarray) -> np.ndarray:
        v[7] *= 1.5
        return v

    _edit_vectors(root, edit)


def _missing_vector_row(root: Path) -> None:
    _edit_vectors(root, lambda v: v[:-1])


def _wrong_encoder_dim(root: Path) -> None:
    path = root / ENCODER_FILE
    enc = json.loads(path.read_text())
    enc["dim"] = 32
    path.write_text(json.dumps(enc))


def _float64_vectors(root: Path) -> None:
    _edit_vectors(root, lambda v: v.astype(np.float64))


def _float16_vectors_recorded_as_float32(root: Path) -> None:
    _edit_vectors(root, lambda v: v.astype(np.float16))  # encoder.json records no dtype: float32


def _set_vector_dtype(root: Path, dtype: str) -> None:
    path = root / ENCODER_FILE
    enc = json.loads(path.read_text())
    enc[VECTOR_DTYPE_KEY] = dtype
    path.write_text(json.dumps(enc))


def _article_in_two_splits(root: Path) -> None:
    path = root / SPLITS_FILE
    table = pq.read_table(path)
    extra = table.slice(0, 1).to_pydict()  # a train article, listed again under val
    extra["split"] = ["val"]
    pq.write_table(pa.concat_tables([table, pa.Table.from_pydict(extra, schema=table.schema)]), path)


def _crossing_window(root: Path) -> None:
    def edit(a: dict[str, np.ndarray]) -> None:
        a["train_context_rows"][0, 0] = N_CHUNKS * 3 + 4  # a row of another article

    _edit_sequences(root, edit)


def _chunk_index_gap(root: Path) -> None:
    path = root / CHUNKS_FILE
    table = pq.read_table(path)
    idx = table["chunk_index"].to_numpy().copy()
    idx[N_CHUNKS - 1] = N_CHUNKS  # first article: 0..8, 10
    col = table.schema.get_field_index("chunk_index")
    pq.write_table(table.set_column(col, table.schema.field(col), pa.array(idx, pa.int32())), path)


def _edit_chunks(root: Path, column: str, edit: Callable[[list], None]) -> None:
    path = root / CHUNKS_FILE
    table = pq.read_table(path)
    values = table[column].to_pylist()
    edit(values)
    col = table.schema.get_field_index(column)
    pq.write_table(table.set_column(col, table.schema.field(col), pa.array(values, table.schema.field(col).type)), path)


def _whitespace_text(root: Path) -> None:
    _edit_chunks(root, "text", lambda v: v.__setitem__(17, " \n\t "))


def _no_words(root: Path) -> None:
    _edit_chunks(root, "n_words", lambda v: v.__setitem__(17, 0))


def _duplicate_chunk_id(root: Path) -> None:
    _edit_chunks(root, "chunk_id", lambda v: v.__setitem__(17, v[40]))


def _empty_chunk_id(root: Path) -> None:
    _edit_chunks(root, "chunk_id", lambda v: v.__setitem__(17, ""))


def _rows_out_of_order(root: Path) -> None:
    # the first article's rows 0 and 1 swap places (chunk_index 1, 0, 2, ...): the windows over them cross too
    path = root / CHUNKS_FILE
    table = pq.read_table(path)
    order = np.arange(table.num_rows)
    order[[0, 1]] = [1, 0]
    pq.write_table(table.take(pa.array(order)), path)


def _article_missing_from_articles(root: Path) -> None:
    path = root / ARTICLES_FILE
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)  # the manifest still counts 12 articles


def _window_article_missing_from_splits(root: Path) -> None:
    path = root / SPLITS_FILE
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.not_equal(table["article_id"], 1008)), path)  # a val article


def _manifest_bad_json(root: Path) -> None:
    (root / MANIFEST_FILE).write_text('{"counts": {"articles": 12,')


def _manifest_wrong_chunk_count(root: Path) -> None:
    _edit_manifest(root, lambda m: m["counts"].update(chunks=N_ARTICLES * N_CHUNKS + 1))


def _manifest_wrong_sequence_count(root: Path) -> None:
    _edit_manifest(root, lambda m: m["sequences"].update(val=3))


def _manifest_parity_differs_from_splits_json(root: Path) -> None:
    _edit_manifest(root, lambda m: m["splits"]["splits"]["val"].update(ks_statistic_vs_train=0.26))


def _low_oracle_recall(root: Path) -> None:
    _edit_manifest(root, lambda m: m.update(oracle_recall_at_5=0.9))


def _text_hash_leakage(root: Path) -> None:
    # raw: 2 of val's 20 chunks (10%) also occur in train; 1% allowed
    _edit_manifest(root, lambda m: m["leakage_raw"]["text_hash_overlap"].update(val=2, rate=0.05))


def _val_test_leakage(root: Path) -> None:
    # 2 of 20 test chunks repeat a val chunk: what selection saw reappears in the reported number
    _edit_manifest(root, lambda m: m["leakage_raw"].update(
        val_test={"test_rows": 20, "text_hash_overlap": 2, "near_duplicates": 0, "rate": 0.1}))


def _post_purge_leakage_only(root: Path) -> None:
    # the post-purge remainder is recorded, not gated (it is 0 by construction); the raw rates are
    _edit_manifest(root, lambda m: m["leakage"]["text_hash_overlap"].update(val=2, rate=0.05))


def _article_overlap_leakage(root: Path) -> None:
    _edit_manifest(root, lambda m: m["leakage"].update(article_overlap=1))


def _near_duplicates(root: Path) -> None:
    _edit_manifest(root, lambda m: m["leakage_raw"]["near_duplicates"].update(ood=1, rate=0.025))


def _leakage_missing(root: Path) -> None:
    _edit_manifest(root, lambda m: m.pop("leakage_raw"))


def _purged_30_percent_of_val(root: Path) -> None:
    # val keeps 14 windows in sequences.npz; 6 purged means 20 before the purge: 30% removed, 1% allowed
    _edit_manifest(root, lambda m: m["purged_windows"].update(val=6))


MANIFEST_GATES = {
    "leakage_zero",
    "near_duplicates_zero",
    "split_parity_val",
    "split_parity_ood",
    "oracle_recall_at_5",
    "manifest_consistent",
    "purged_fraction",
}

FAULTS: list[tuple[Callable[[Path], None], set[str]]] = [
    (_nan_vector, {"vectors_finite"}),
    (_non_unit_vector, {"unit_norm"}),
    (_missing_vector_row, {"vectors_aligned"}),
    (_wrong_encoder_dim, {"vector_dim"}),
    (_float64_vectors, {"vector_dtype"}),
    (_float16_vectors_recorded_as_float32, {"vector_dtype"}),
    (_article_in_two_splits, {"splits_disjoint"}),
    # the manifest still claims 0 crossing windows, so it is inconsistent too
    (_crossing_window, {"crossing_windows_zero", "manifest_consistent"}),
    (_chunk_index_gap, {"chunk_index_contiguous", "crossing_windows_zero", "sequences_aligned", "manifest_consistent"}),
    (_whitespace_text, {"chunk_text_nonempty"}),
    (_no_words, {"chunk_text_nonempty"}),
    (_duplicate_chunk_id, {"chunk_ids_unique"}),
    (_empty_chunk_id, {"chunk_ids_unique"}),
    (_rows_out_of_order, {"chunk_rows_ordered", "crossing_windows_zero", "manifest_consistent"}),
    (_article_missing_from_articles, {"chunk_articles_known", "manifest_consistent"}),
    (_window_article_missing_from_splits, {"sequence_articles_assigned"}),
    (_manifest_bad_json, MANIFEST_GATES),
    (_manifest_wrong_chunk_count, {"manifest_consistent"}),
    (_manifest_wrong_sequence_count, {"manifest_consistent"}),
    (_manifest_parity_differs_from_splits_json, {"manifest_consistent"}),
    (_low_oracle_recall, {"oracle_recall_at_5"}),
    (_text_hash_leakage, {"leakage_zero"}),
    (_article_overlap_leakage, {"leakage_zero"}),
    (_val_test_leakage, {"leakage_zero"}),
    (_near_duplicates, {"near_duplicates_zero"}),
    (_leakage_missing, {"leakage_zero", "near_duplicates_zero", "manifest_consistent"}),
    (_purged_30_percent_of_val, {"purged_fraction"}),
]


@pytest.mark.parametrize(("fault", "expected"), FAULTS, ids=[f.__name__.lstrip("_") for f, _ in FAULTS])
def test_each_fault_fails_its_gate(dataset: Path, fault: Callable[[Path], None], expected: set[str]) -> None:
    fault(dataset)
    report = run_pre_training_gates(dataset, data_docs=False)  # HTML rendering is covered elsewhere

    assert set(report.failed) == expected, {r.name: r.detail for r in report.results if not r.passed}
    assert {r.name for r in report.results} == ALL_GATES  # every gate still evaluated
    for name in report.failed:
        assert next(r for r in report.results if r.name == name).detail
    saved = json.loads(validation_result_path(dataset).read_text())
    assert saved["success"] is False and set(saved["failed"]) == expected
    with pytest.raises(GateFailedError) as err:
        raise_for_failures(report)
    assert all(name in str(err.value) for name in expected)


def test_float16_vectors_pass_when_encoder_json_records_float16(dataset: Path) -> None:
    _edit_vectors(dataset, lambda v: v.astype(np.float16))
    _set_vector_dtype(dataset, "float16")
    gates = {r.name: r for r in run_pre_training_gates(dataset, data_docs=False).results}
    assert gates["vector_dtype"].passed and gates["unit_norm"].passed
    assert (gates["vector_dtype"].value, gates["vector_dtype"].threshold) == ("float16", "float16")


def test_fault_values_are_reported(dataset: Path) -> None:
    _crossing_window(dataset)
    _non_unit_vector(dataset)
    _edit_manifest(dataset, lambda m: m["counts"].update(chunks=7))
    gates = {r.name: r for r in run_pre_training_gates(dataset, data_docs=False).results}
    assert gates["crossing_windows_zero"].value == 1
    assert gates["unit_norm"].value == pytest.approx(0.5, abs=1e-5)
    assert "counts.chunks=7" in gates["manifest_consistent"].detail
    assert "crossing_windows=0" in gates["manifest_consistent"].detail
    assert gates["manifest_consistent"].value == 2


def test_purge_over_the_threshold_fails_only_its_gate(dataset: Path) -> None:
    _purged_30_percent_of_val(dataset)
    report = run_pre_training_gates(dataset, data_docs=False)
    gates = {r.name: r for r in report.results}
    assert report.failed == ["purged_fraction"]
    assert gates["purged_fraction"].value == {"val": pytest.approx(0.3), "ood": 0.0}
    assert gates["purged_fraction"].threshold == pytest.approx(0.01)
    frame = build_gate_frames(dataset, None)["eval_splits"].set_index("split")
    assert frame.loc["val", "windows_before_purge"] == 20 and frame.loc["val", "windows"] == 14
    # a threshold that allows it passes
    assert run_pre_training_gates(dataset, thresholds=GateThresholds(max_purged_fraction=0.3), data_docs=False).passed


def test_post_purge_remainder_is_not_what_is_gated(dataset: Path) -> None:
    _post_purge_leakage_only(dataset)
    assert run_pre_training_gates(dataset, data_docs=False).passed


def test_raw_leakage_is_gated_per_split(dataset: Path) -> None:
    _text_hash_leakage(dataset)
    gates = {r.name: r for r in run_pre_training_gates(dataset, data_docs=False).results}
    assert gates["leakage_zero"].value["text_hash_overlap_rate"] == {"val": pytest.approx(0.1), "ood": 0.0}
    assert not gates["leakage_zero"].passed


def test_manifest_given_as_dict_is_checked_against_the_files(dataset: Path) -> None:
    manifest = json.loads((dataset / MANIFEST_FILE).read_text())
    manifest["counts"]["articles"] = 99
    report = run_pre_training_gates(dataset, manifest=manifest, data_docs=False)
    assert report.failed == ["manifest_consistent"]
    # a given manifest does not hide a corrupt manifest.json on disk
    (dataset / MANIFEST_FILE).write_text("not json")
    manifest["counts"]["articles"] = N_ARTICLES
    report = run_pre_training_gates(dataset, manifest=manifest, data_docs=False)
    gate = next(r for r in report.results if r.name == "manifest_consistent")
    assert report.failed == ["manifest_consistent"] and "manifest.json is not readable JSON" in gate.detail


def test_parity_block_shape_is_read_too(dataset: Path) -> None:
    parity = {"val": {"ks": 0.1, "mean_diff": 0.2}, "ood": {"ks": 0.05, "mean_diff": -0.01}}
    storage.write_json(dataset / SPLITS_MANIFEST_FILE, {"seed": 0, "parity": parity})
    _edit_manifest(dataset, lambda m: m.update(splits={"seed": 0, "parity": parity}))
    report = run_pre_training_gates(dataset, data_docs=False)
    gates = {r.name: r for r in report.results}
    assert report.failed == ["split_parity_val"]  # |0.2| > max_split_mean_diff 0.1
    assert gates["split_parity_val"].value == {"ks": pytest.approx(0.1), "abs_mean_diff": pytest.approx(0.2)}
    assert gates["split_parity_ood"].value["abs_mean_diff"] == pytest.approx(0.01)


def test_missing_ks_fails_the_parity_gate(dataset: Path) -> None:
    def edit(m: dict) -> None:
        m["splits"]["splits"]["ood"]["ks_statistic_vs_train"] = None

    _edit_manifest(dataset, edit)
    path = dataset / SPLITS_MANIFEST_FILE
    report = json.loads(path.read_text())
    report["splits"]["ood"]["ks_statistic_vs_train"] = None
    path.write_text(json.dumps(report))
    result = run_pre_training_gates(dataset, data_docs=False)
    assert set(result.failed) == {"split_parity_ood", "manifest_consistent"}


# --- thresholds ------------------------------------------------------------------------------------


def test_thresholds_are_honoured(dataset: Path) -> None:
    strict = GateThresholds(min_oracle_recall_at_5=0.99, max_split_ks=0.28)
    report = run_pre_training_gates(dataset, thresholds=strict, data_docs=False)
    assert set(report.failed) == {"oracle_recall_at_5", "split_parity_ood"}
    gates = {r.name: r for r in report.results}
    assert gates["oracle_recall_at_5"].threshold == pytest.approx(0.99)
    assert gates["split_parity_ood"].value["ks"] == pytest.approx(0.3)
    assert gates["split_parity_val"].passed  # ks 0.25 <= 0.28


def test_parity_of_a_shifted_ood_is_recorded_not_gated(dataset: Path) -> None:
    """Held out by range or title, ood may differ in coherence: its parity is recorded, and gated only when
    ood is a stratified (in-distribution) sample, where a difference means a broken draw."""
    strict = GateThresholds(max_split_ks=0.28)
    assert "split_parity_ood" in run_pre_training_gates(dataset, thresholds=strict, data_docs=False).failed

    def shift(m: dict) -> None:
        m["splits"].update(mode="titles", ood_kind="shift")

    _edit_manifest(dataset, shift)
    path = dataset / SPLITS_MANIFEST_FILE
    splits = json.loads(path.read_text())
    splits.update(mode="titles", ood_kind="shift")
    path.write_text(json.dumps(splits))
    report = run_pre_training_gates(dataset, thresholds=strict, data_docs=False)
    gates = {r.name: r for r in report.results}
    assert gates["split_parity_ood"].passed and gates["split_parity_ood"].value["ks"] == pytest.approx(0.3)
    assert gates["split_parity_ood"].threshold == "not gated: ood is a real shift"
    assert report.passed

    lenient = GateThresholds(max_crossing_windows=1)
    _crossing_window(dataset)
    report = run_pre_training_gates(dataset, thresholds=lenient, data_docs=False)
    assert "crossing_windows_zero" not in report.failed
    assert report.failed == ["manifest_consistent"]


def test_docs_dir_can_be_elsewhere(dataset: Path, tmp_path: Path) -> None:
    docs = tmp_path / "elsewhere"
    report = run_pre_training_gates(dataset, docs_dir=docs)
    assert Path(report.docs_path).is_relative_to(docs.resolve())
    assert (docs / "validation_result.json").is_file()
    assert not (dataset / GX_DIR).exists()


# --- suites ----------------------------------------------------------------------------------------


def test_stored_suites_load_with_gates_and_parameters() -> None:
    params = set()
    for name in SUITE_NAMES:
        suite = load_suite(name)
        assert suite.name == name and suite.expectations
        for exp in suite.expectations:
            assert exp.meta["gate"] in ALL_GATES
        for exp in suite.to_json_dict()["expectations"]:
            params |= {v["$PARAMETER"] for v in exp["kwargs"].values() if isinstance(v, dict) and "$PARAMETER" in v}
    assert {"min_oracle_recall_at_5", "max_leakage_rate", "min_unit_norm", "max_split_ks", "max_purged_fraction"} <= params


def test_missing_data_file_is_a_clear_error(dataset: Path) -> None:
    (dataset / SEQUENCES_FILE).unlink()
    with pytest.raises(DataContractError, match="sequences.npz"):
        run_pre_training_gates(dataset, data_docs=False)
