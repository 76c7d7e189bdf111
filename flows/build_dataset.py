"""Flow: Wikipedia snapshot → gated, published dataset folder."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, unmapped

from flows.infra.hooks import RUN_HOOKS
from flows.infra.progress import BuildProgress
from flows.infra.runners import (
    default_runner,
    describe,
    embed_placement,
    flow_runner,
    heavy_cpu_tag,
)
from flows.infra.slots import exclusive
from lvm_core.contracts.build_options import BuildConfig, BuildOptions
from lvm_core.contracts.gates import GateFailedError
from lvm_core.contracts.manifest import DatasetManifest, ShardLayout
from lvm_core.data.build.assemble import shard_layout
from lvm_core.data.build.gc import work_in_use
from lvm_core.data.build.publish import build_key, discard_staging, new_staging_dir, with_build_key
from lvm_core.data.build.reuse import reuse_lineage, with_reuse_lineage
from tasks import dataset as t
from tasks.common import gates_markdown, publish_markdown, publish_table


@flow(name="build_dataset", flow_run_name="build-{source}", log_prints=True, task_runner=default_runner(),
      **RUN_HOOKS)
def build_dataset(
    source: str = "sample",
    data_dir: str | None = None,
    limit_articles: int | None = None,
    snapshot_id: str | None = None,
    options: BuildOptions = BuildOptions(),
) -> str:
    """Ingest → chunk → embed (each mapped over shards) → coherence/splits/leakage/sequences → data gates
    → publish.

    Unless `options.cold`, the chunks and vectors of articles unchanged since the family's previous dataset
    are copied from it (`lvm_core.data.build.reuse`), and a dataset already published by a build with the
    same inputs, options and code (its `build_key`) is returned as it is. The build holds the data folder's
    work lock throughout, so `lvm gc` leaves its work folders alone. Returns the published dataset folder.
    A failed gate stops the flow before anything is published.
    Shards run where the flow's task runner says (`flows.infra.runners`: in process by default, on Dask with
    `build_dataset.with_options(task_runner=shard_task_runner(workers=N))` or LVM_WORKERS /
    LVM_DASK_ADDRESS); the dataset is the same either way.

    Args:
        source: 'sample' (embedded enwiki excerpt), a *-pages-articles*.xml[.bz2] dump path or URL, or a
            .parquet/.jsonl file with id,title,text.
        data_dir: Data folder for datasets, caches, models and the MLflow DB (default $LVM_DATA_DIR or ./lvm-data).
        limit_articles: Only the first N articles, for quick runs.
        snapshot_id: Override the snapshot id derived from the file name or digest.
        options: Chunking, encoder, context length, split mode and fractions, gate thresholds.
    """
    config = BuildConfig.from_parts(source, data_dir, limit_articles, snapshot_id, options)
    runner = flow_runner()  # LVM_WORKERS / LVM_DASK_ADDRESS / LVM_EMBED_RESOURCES: a bad value stops here
    t.open_work_store(config)  # LVM_WORK_URL / --work-url: a bad or unreachable store stops here
    info = t.resolve_source(config)
    with exclusive(f"build-{info.dataset_id}"), work_in_use(config.work_data_dir()):
        t.clean_abandoned(config)
        parent_registry = t.check_split_registry(info, config)  # a bad one stops the build before any work
        get_run_logger().info("shards run in %s", describe(runner))
        progress = BuildProgress(info.dataset_id)
        plan = t.plan_shards(info, config)
        known = t.index_previous_articles(info, config)
        ingested = progress.gather(
            "ingest", t.ingest_shard.map(plan, unmapped(info), unmapped(config), unmapped(known))
        )
        kept = t.dedup_articles(ingested, info, config)
        pinned = t.pin_encoder(config)  # one fingerprint for every shard, wherever it runs
        reuse = t.plan_reuse(info, config, pinned)  # unchanged articles' chunks and vectors, from the previous dataset
        chunk_futures = t.chunk_shard.map(list(kept.files), unmapped(info), unmapped(config), unmapped(reuse))
        with heavy_cpu_tag(), embed_placement():  # GPU workers, when the runner asks for resources
            embed_futures = t.embed_shard.map(chunk_futures, unmapped(info), unmapped(config), unmapped(pinned),
                                              unmapped(reuse))
        progress.start("embed", len(embed_futures))
        chunked = progress.gather("chunk", chunk_futures)
        embedded = progress.gather("embed", embed_futures)
        articles, chunks, vectors = t.assemble(kept, chunked, embedded, info, config)
        key = build_key(Path(articles).parent, config, parent_registry)
        if (published := t.published_from_same_inputs(key, info, config)) is not None:
            return published  # a retried pipeline: the analysis, gates and publication are done already
        layout = shard_layout(plan, ingested, kept, chunked, embedded)
        stage = new_staging_dir(config.resolved_data_dir(), info.dataset_id)
        try:
            manifest = t.analyse(stage, config, info, articles, chunks, vectors, kept.stats, layout)
            manifest = t.record_ingest(stage, manifest, info, ingested, known)
            manifest = with_reuse_lineage(manifest, reuse_lineage(reuse, config, info.snapshot_id, chunked, embedded))
            manifest = with_build_key(manifest, key)
            report = t.run_data_gates(stage, manifest, info, config)
            summary = _summary_rows(manifest)
            publish_table(summary, f"dataset-{info.dataset_id}", "Dataset build summary")
            if not report.passed:
                failed = t.set_aside(stage, manifest, report, info, config)
                docs = _moved(report.docs_path, stage, failed)
                _publish_gates(info.dataset_id, report, docs)
                raise GateFailedError(report, where=docs)
            path = t.publish(stage, manifest, report, info, config)
        finally:
            discard_staging(stage)  # gone already once published or set aside
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


def _summary_rows(manifest: DatasetManifest) -> list[dict]:
    seq = manifest.sequences
    emb = manifest.embedding or {}
    reuse = (manifest.lineage or {}).get("reuse") or {}
    return [
        {"what": "articles", "value": manifest.counts.articles},
        {"what": "chunks", "value": manifest.counts.chunks},
        {"what": "sequences train/val/test/ood", "value": "/".join(str(seq.get(k)) for k in ("train", "val", "test", "ood"))},
        {"what": "shards source/chunk/embed (redone)", "value": _shards_cell(manifest.shards)},
        {"what": "previous dataset (reused from)", "value": reuse.get("previous_dataset") or "none"},
        {"what": "articles reused / chunked", "value": f"{reuse.get('articles_reused', 0)} / {reuse.get('articles_chunked', 0)}"},
        {"what": "chunks reused / chunked", "value": f"{reuse.get('chunks_reused', 0)} / {reuse.get('chunks_chunked', 0)}"},
        {"what": "vectors copied from previous dataset", "value": emb.get("n_copied", 0)},
        {"what": "chunks reused from cache", "value": emb.get("n_reused")},
        {"what": "chunks encoded", "value": emb.get("n_encoded")},
        {"what": "coherence mean", "value": manifest.coherence.mean},
        {"what": "crossing windows", "value": manifest.crossing_windows},
        {"what": "oracle recall@5", "value": manifest.oracle_recall_at_5},
    ]


def _shards_cell(shards: ShardLayout | None) -> str:
    stages = [getattr(shards, k, None) for k in ("ingest", "chunk", "embed")]
    return "/".join(f"{s.n if s else 0} ({(s.n - (s.reused or 0)) if s else 0})" for s in stages)
