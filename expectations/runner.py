"""Run the pre-training data gates as one Great Expectations checkpoint and turn its result into a GateReport.

The suites (``expectations/suites/*.json``) are the source of truth for which gates exist: every
expectation carries ``meta.gate`` and a gate passes when all of its expectations pass. Thresholds that
depend on configuration are suite parameters (``{"$PARAMETER": name}``) filled from `GateThresholds` at
run time, so one stored suite serves every configuration and the Data Docs show the values used.

Each frame from `build_gate_frames` is written to ``<docs_dir>/frames/<name>.parquet`` and registered as a
parquet asset of one pandas data source: an in-memory dataframe asset takes its frame through the
checkpoint's ``batch_parameters``, which a single ``Checkpoint.run`` shares between all validation
definitions, so several frames cannot go through one checkpoint that way. The parquet frames also keep
the validated numbers beside the Data Docs.

Row-level suites run on a seeded sample and their ``*_exact`` partners on counts over every row
(`expectations.frames.build`); the sample (size, seed, rows drawn of how many) is written into those
suites' meta, hence the Data Docs, into ``validation_result.json`` and into the detail of every gate
that has a sampled expectation, hence the manifest's gate outcomes.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
import pyarrow as pa
from great_expectations.checkpoint.checkpoint import CheckpointResult
from great_expectations.core.expectation_validation_result import ExpectationValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from expectations.frames.build import FRAME_NAMES, build_gate_frames
from expectations.frames.sample import SampleSpec
from expectations.measures import GATE_DETAIL, GATE_MEASURES, no_measure
from lvm_core.contracts.errors import UserError
from lvm_core.contracts.gates import GateFailedError, GateReport, GateResult, GateThresholds
from lvm_core.contracts.layout import GX_DIR
from lvm_core.contracts.manifest import DatasetManifest
from lvm_core.io import storage
from lvm_core.io.plain import to_plain

STAGE = "pre_training"
SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITE_NAMES: tuple[str, ...] = FRAME_NAMES  # one suite per frame, same name
DATASOURCE_NAME = "pre_training_frames"
CHECKPOINT_NAME = "pre_training_gates"
DOCS_SITE_NAME = "local_site"
DOCS_SITE_DIR = "uncommitted/data_docs/local_site/"
DOCS_INDEX_RELPATH = DOCS_SITE_DIR + "index.html"  # relative to docs_dir: survives the staging-dir rename
FRAMES_SUBDIR = "frames"
# sampled suite -> (the exact frame holding its population size, that column, what a row is)
SAMPLED_SUITES: dict[str, tuple[str, str, str]] = {
    "chunks": ("chunks_exact", "n_rows", "rows"),
    "vectors": ("vectors_exact", "n_rows", "rows"),
    "article_chunks": ("article_chunks_exact", "n_articles", "articles"),
    "article_splits": ("article_splits_exact", "n_articles", "articles"),
}
VALIDATION_RESULT_FILE = "validation_result.json"


class SuiteError(UserError, ValueError):
    """A stored suite file is missing, unreadable or holds expectations GX cannot build."""


# --- suites ----------------------------------------------------------------------------------------


def load_suite(name: str) -> gx.ExpectationSuite:
    """The stored suite `name` as a fresh `gx.ExpectationSuite` (each run gets its own object)."""
    path = SUITES_DIR / f"{name}.json"
    if name not in SUITE_NAMES:
        raise SuiteError(f"unknown suite {name!r}; known: {', '.join(SUITE_NAMES)}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read suite: {exc}") from exc
    raw = data.get("expectations") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{path}: suite has no 'expectations' list")
    no_gate = [i for i, e in enumerate(raw) if not (isinstance(e, dict) and (e.get("meta") or {}).get("gate"))]
    if no_gate:
        raise SuiteError(f"{path}: expectation(s) {no_gate} lack meta.gate")
    suite = gx.ExpectationSuite(
        name=data.get("name") or name,
        expectations=raw,
        meta=data.get("meta"),
        notes=data.get("notes"),
    )
    # ExpectationSuite logs and drops invalid expectations instead of raising: refuse a partial suite.
    if len(suite.expectations) != len(raw):
        raise SuiteError(f"{path}: {len(raw) - len(suite.expectations)} expectation(s) are not valid GX expectations")
    return suite


def suite_parameters(thresholds: GateThresholds) -> dict[str, float | int]:
    """Values for the suites' ``$PARAMETER`` references, derived from the gate thresholds."""
    tol = float(thresholds.unit_norm_tolerance)
    return {
        "min_unit_norm": 1.0 - tol,
        "max_unit_norm": 1.0 + tol,
        "max_leakage_rate": float(thresholds.max_leakage_rate),
        "max_near_duplicate_rate": float(thresholds.max_near_duplicate_rate),
        "max_purged_fraction": float(thresholds.max_purged_fraction),
        "max_crossing_windows": int(thresholds.max_crossing_windows),
        "min_oracle_recall_at_5": float(thresholds.min_oracle_recall_at_5),
        "max_oracle_misaligned": int(thresholds.max_oracle_misaligned),
        "max_split_ks": float(thresholds.max_split_ks),
        "max_split_mean_diff": float(thresholds.max_split_mean_diff),
    }


# --- run -------------------------------------------------------------------------------------------


def run_pre_training_gates(
    dataset_dir: Path,
    manifest: DatasetManifest | dict[str, Any] | None = None,
    thresholds: GateThresholds = GateThresholds(),
    docs_dir: Path | None = None,
    data_docs: bool = True,
    sample: SampleSpec = SampleSpec(),
) -> GateReport:
    """Validate a built dataset folder; Data Docs and ``validation_result.json`` land in `docs_dir`.

    `manifest` is the manifest as the build holds it (None reads ``manifest.json``). `docs_dir` is the
    GX project root (default ``<dataset_dir>/gx``). `data_docs=False` skips rendering the HTML site
    (most of a run's time; `docs_path` is then None) for quick re-checks. `sample` bounds the rows the
    row-level expectations see; counts always cover every row. Gate failures are reported, not raised:
    call `raise_for_failures` to stop a flow.
    """
    dataset_dir = Path(dataset_dir)
    docs_dir = Path(docs_dir) if docs_dir is not None else dataset_dir / GX_DIR
    frames = build_gate_frames(dataset_dir, manifest, sample)
    drawn = sample_record(frames, sample)
    docs_dir.mkdir(parents=True, exist_ok=True)

    frame_paths = {}
    for name in SUITE_NAMES:
        frame_paths[name] = docs_dir / FRAMES_SUBDIR / f"{name}.parquet"
        storage.write_parquet(frame_paths[name], pa.Table.from_pandas(frames[name], preserve_index=False))

    context = _file_context(docs_dir)
    datasource = context.data_sources.add_or_update_pandas(DATASOURCE_NAME)
    definitions = []
    for name in SUITE_NAMES:
        asset = datasource.add_parquet_asset(name=name, path=frame_paths[name].resolve())
        batch = asset.add_batch_definition_whole_dataframe(name)
        suite = load_suite(name)
        if name in drawn["frames"]:
            suite.meta = {**(suite.meta or {}), "sample": {**sample.to_dict(), **drawn["frames"][name]}}
            suite.notes = f"{suite.notes or ''} This run: {_sample_note(drawn, [name])}.".strip()
        suite = context.suites.add_or_update(suite)
        definitions.append(
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=f"{STAGE}_{name}", data=batch, suite=suite)
            )
        )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=CHECKPOINT_NAME,
            validation_definitions=definitions,
            actions=[],  # Data Docs are built once below: an UpdateDataDocsAction rebuilds the whole site per suite
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
        )
    )
    params = suite_parameters(thresholds)
    # the run name carries the sample into every validation page of the Data Docs
    result = checkpoint.run(expectation_parameters=params, run_id=RunIdentifier(run_name=run_name(sample)))

    if data_docs:
        context.build_data_docs(site_names=[DOCS_SITE_NAME])
    report = _build_report(result, frames, thresholds, drawn)
    report.docs_path = str(_docs_index(context, docs_dir)) if data_docs else None
    storage.write_json(
        docs_dir / VALIDATION_RESULT_FILE,
        {
            "stage": STAGE,
            "success": bool(result.success),
            "passed": report.passed,
            "failed": report.failed,
            "run_id": str(result.run_id),
            "dataset_dir": str(dataset_dir),
            "docs_path": report.docs_path,
            "thresholds": thresholds.to_dict(),
            "suite_parameters": params,
            "sample": drawn,
            "gates": report.to_manifest(),
            "validation_results": [vr.to_json_dict() for vr in result.run_results.values()],
        },
    )
    return report


def run_name(sample: SampleSpec) -> str:
    """GX run name of a checkpoint run: the sample it drew, e.g. ``sample-10000-seed-0``."""
    return f"sample-{sample.rows}-seed-{sample.seed}"


def sample_record(frames: dict[str, pd.DataFrame], sample: SampleSpec) -> dict[str, Any]:
    """The sample as results record it: size, seed and, per sampled suite, rows drawn of how many."""
    per_frame = {}
    for name, (exact, column, unit) in SAMPLED_SUITES.items():
        per_frame[name] = {"sampled": len(frames[name]), "of": int(frames[exact][column].iloc[0]), "unit": unit}
    return {**sample.to_dict(), "frames": per_frame}


def raise_for_failures(report: GateReport) -> None:
    """Stop the caller with `GateFailedError` (naming the failed gates and the Data Docs) when a gate failed."""
    if not report.passed:
        raise GateFailedError(report, where=report.docs_path or "")


def validation_result_path(dataset_dir: Path, docs_dir: Path | None = None) -> Path:
    """Where `run_pre_training_gates` writes the full validation result JSON."""
    root = Path(docs_dir) if docs_dir is not None else Path(dataset_dir) / GX_DIR
    return root / VALIDATION_RESULT_FILE


# --- GX context ------------------------------------------------------------------------------------


def _file_context(root: Path) -> Any:
    """A file-backed GX project at `root` with progress bars off and the local Data Docs site."""
    context = gx.get_context(mode="file", context_root_dir=str(root.resolve()))
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.variables.analytics_enabled = False
    context.variables.save()
    sites = context.variables.data_docs_sites or {}
    if DOCS_SITE_NAME not in sites:
        context.add_data_docs_site(
            site_name=DOCS_SITE_NAME,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": DOCS_SITE_DIR},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _docs_index(context: Any, root: Path) -> Path:
    for site in context.get_docs_sites_urls(site_name=DOCS_SITE_NAME):
        url = site.get("site_url") or ""
        if url.startswith("file:"):
            return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    return root.resolve() / DOCS_INDEX_RELPATH


# --- report ----------------------------------------------------------------------------------------


def _build_report(
    result: CheckpointResult, frames: dict[str, pd.DataFrame], thresholds: GateThresholds, drawn: dict[str, Any]
) -> GateReport:
    by_suite = {vr.suite_name: vr for vr in result.run_results.values()}
    grouped: dict[str, list[ExpectationValidationResult]] = {}
    sampled: dict[str, list[str]] = {}
    for name in SUITE_NAMES:
        for er in by_suite[name].results:
            gate = _expectation(er).meta["gate"]
            grouped.setdefault(gate, []).append(er)
            if name in drawn["frames"] and name not in sampled.setdefault(gate, []):
                sampled[gate].append(name)

    report = GateReport(stage=STAGE)
    for gate, results in grouped.items():
        failed = [er for er in results if not er.success]
        value, threshold = GATE_MEASURES.get(gate, no_measure)(frames, thresholds)
        detail = "; ".join(_describe(er) for er in failed) if failed else f"{len(results)} expectation(s) passed"
        extra = GATE_DETAIL.get(gate)
        if failed and extra:
            text = str(frames["dataset_metrics"][extra].iloc[0] or "")
            if text:
                detail = f"{text} | {detail}"
        if sampled.get(gate):
            detail = f"{detail} ({_sample_note(drawn, sampled[gate])})"
        report.results.append(
            GateResult(
                name=gate,
                passed=not failed,
                value=to_plain(value, nan_to_none=True),
                threshold=to_plain(threshold, nan_to_none=True),
                detail=detail,
            )
        )
    return report


def _sample_note(drawn: dict[str, Any], suites: list[str]) -> str:
    """How much a gate's row-level expectations saw, e.g. "row checks on a seeded sample: chunks 10000 of 9150 rows"."""
    parts = [f"{s} {drawn['frames'][s]['sampled']} of {drawn['frames'][s]['of']} {drawn['frames'][s]['unit']}" for s in suites]
    return f"counts over every row; row checks on a sample (seed {drawn['seed']}): {', '.join(parts)}"


def _expectation(er: ExpectationValidationResult) -> ExpectationConfiguration:
    """The expectation a result belongs to (a checkpoint always records it)."""
    if er.expectation_config is None:
        raise SuiteError("a validation result names no expectation")
    return er.expectation_config


def _describe(er: ExpectationValidationResult) -> str:
    """One line naming a failed expectation and what it saw."""
    cfg = _expectation(er)
    cols = ",".join(str(cfg.kwargs[k]) for k in ("column", "column_A", "column_B") if k in cfg.kwargs)
    head = f"{cfg.type}({cols})"
    if er.exception_info and er.exception_info.get("raised_exception"):
        return f"{head} raised: {er.exception_info.get('exception_message')}"
    res = er.result or {}
    if "unexpected_count" in res:
        sample = list(res.get("partial_unexpected_list") or [])[:5]
        return f"{head}: {res['unexpected_count']} unexpected of {res.get('element_count')}, e.g. {sample}"
    return f"{head}: observed {res.get('observed_value')}"
