"""Flow: Wikipedia snapshot → gated, published dataset folder."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.hooks import RUN_HOOKS

from lvm_core import dataset as ds
from lvm_core.config import BuildConfig, BuildOptions
from lvm_core.gates import GateFailedError
from tasks import dataset as t
from tasks.common import gates_markdown, publish_markdown, publish_table
from tasks.slots import exclusive


@flow(name="build_dataset", flow_run_name="build-{source}", log_prints=True, **RUN_HOOKS)
def build_dataset(
    source: str = "sample",
    data_dir: str | None = None,
    limit_articles: int | None = None,
    snapshot_id: str | None = None,
    options: BuildOptions = BuildOptions(),
) -> str:
    """Ingest → chunk → embed → coherence/splits/leakage/sequences → data gates → publish.

    Returns the published dataset folder. A failed gate stops the flow before anything is published.

    Args:
        source: 'sample' (embedded enwiki excerpt), a *-pages-articles*.xml[.bz2] dump path or URL, or a
            .parquet/.jsonl file with id,title,text.
        data_dir: Data folder for datasets, caches, models and the MLflow DB (default $LVM_DATA_DIR or ./lvm-data).
        limit_articles: Only the first N articles, for quick runs.
        snapshot_id: Override the snapshot id derived from the file name or digest.
        options: Chunking, encoder, context length, split mode and fractions, gate thresholds.
    """
    config = BuildConfig.from_parts(source, data_dir, limit_articles, snapshot_id, options)
    info = t.resolve_source(config)
    with exclusive(f"build-{info.dataset_id}"):
        t.clean_abandoned(config)
        articles = t.ingest(info, config)
        chunks = t.chunk(articles, info, config)
        embedded = t.embed(chunks, info, config)
        stage = ds.new_staging_dir(config.resolved_data_dir(), info.dataset_id)
        try:
            manifest = t.analyse(stage, config, info, articles, chunks, embedded)
            report = t.run_data_gates(stage, manifest, info, config)
            summary = _summary_rows(manifest)
            publish_table(summary, f"dataset-{info.dataset_id}", "Dataset build summary")
            if not report.passed:
                kept = t.set_aside(stage, manifest, report, info, config)
                docs = _moved(report.docs_path, stage, kept)
                _publish_gates(info.dataset_id, report, docs)
                raise GateFailedError(report, where=docs)
            path = t.publish(stage, manifest, report, info, config)
        finally:
            ds.discard_staging(stage)  # gone already once published or set aside
        _publish_gates(info.dataset_id, report, _moved(report.docs_path, stage, path))
    get_run_logger().info("dataset ready: %s", path)
    return str(path)


def _moved(docs_path: str | None, old_root: Path, new_root: Path) -> str:
    """Where the Data Docs index lives after the staging folder was renamed."""
    if not docs_path:
        return str(Path(new_root) / "gx")
    try:
        return str(Path(new_root) / Path(docs_path).relative_to(old_root))
    except ValueError:
        return docs_path


def _publish_gates(dataset_id: str, report, docs: str) -> None:
    publish_markdown(
        gates_markdown(f"Data gates — {dataset_id}", report.to_manifest(), f"Data Docs: `{docs}`"),
        f"data-gates-{dataset_id}",
        "Pre-training gates",
    )


def _summary_rows(manifest: dict) -> list[dict]:
    seq = manifest.get("sequences", {})
    emb = manifest.get("embedding", {})
    return [
        {"what": "articles", "value": manifest["counts"]["articles"]},
        {"what": "chunks", "value": manifest["counts"]["chunks"]},
        {"what": "sequences train/val/test/ood", "value": "/".join(str(seq.get(k)) for k in ("train", "val", "test", "ood"))},
        {"what": "chunks reused from cache", "value": emb.get("n_reused")},
        {"what": "chunks encoded", "value": emb.get("n_encoded")},
        {"what": "coherence mean", "value": manifest["coherence"]["mean"]},
        {"what": "crossing windows", "value": manifest["crossing_windows"]},
        {"what": "oracle recall@5", "value": manifest["oracle_recall_at_5"]},
    ]
