"""Prefect tasks of the dataset build; each wraps one lvm_core.data.build step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.gates import GateReport
from lvm_core.contracts.manifest import DatasetManifest, ShardLayout
from lvm_core.data.build import dedup, ingest
from lvm_core.data.build import publish as build_publish
from lvm_core.data.build import reuse as build_reuse
from lvm_core.data.build import source as build_source
from lvm_core.data.build.analyse import analyse_step
from lvm_core.data.build.assemble import assemble_step, assemble_work_dir
from lvm_core.data.build.chunk import chunk_shard_step, chunk_shard_work_dir
from lvm_core.data.build.dedup import dedup_work_dir
from lvm_core.data.build.embed import embed_shard_step, embed_shard_work_dir
from lvm_core.data.build.family import store_dataset
from lvm_core.data.build.gc import GcReport, collect_garbage
from lvm_core.data.build.ingest import ingest_shard_step, ingest_shard_work_dir
from lvm_core.data.build.known import KnownArticles, known_articles_for
from lvm_core.data.build.publish import clean_abandoned_builds, finalize_manifest, published_with_key, set_aside_failed
from lvm_core.data.build.records import (
    ChunkedShard,
    EmbeddedShard,
    EmbedResult,
    IngestedShard,
    KeptArticles,
)
from lvm_core.data.build.reuse import ReusePlan
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.build.store import open_store
from lvm_core.data.build.work import parquet_rows
from lvm_core.data.embedding import pinned as embedding_pinned
from lvm_core.data.embedding.pinned import PinnedEncoder
from lvm_core.data.ingest.duplicates import DuplicateReport
from lvm_core.runtime.faults import crash_point
from lvm_core.runtime.progress import ShardTicker
from tasks.common import COMPUTE_RETRIES, HOUR, IO_RETRIES


@task(name="resolve-source", task_run_name="resolve-source-{config.source}", **IO_RETRIES, timeout_seconds=HOUR)
def resolve_source(config: BuildConfig) -> SourceInfo:
    """Locate and digest the snapshot file."""
    info = build_source.resolve_source(config)
    get_run_logger().info("source %s → snapshot %s (sha256 %s…)", info.path, info.snapshot_id, info.digest[:12])
    return info


@task(name="open-work-store", cache_policy=NO_CACHE, **IO_RETRIES)
def open_work_store(config: BuildConfig) -> str | None:
    """Check the work store (`--work-url`) before any work: a bad URL or an unreachable store stops here."""
    store = open_store(config.work_url)
    if store is None:
        return None
    store.check()
    get_run_logger().info("work folders and published datasets shared through %s; this machine's data folder: %s",
                          store.url, config.work_data_dir())
    return store.url


@task(name="clean-abandoned-builds", cache_policy=NO_CACHE, **IO_RETRIES)
def clean_abandoned(config: BuildConfig) -> list[str]:
    """Staging folders of killed builds go; a publish cut between its two renames is undone."""
    done = clean_abandoned_builds(config.resolved_data_dir())
    log = get_run_logger()
    for line in done:
        log.warning("%s", line)
    return done


@task(name="check-split-registry", task_run_name="check-split-registry-{source.dataset_id}", cache_policy=NO_CACHE,
      **IO_RETRIES)
def check_split_registry(source: SourceInfo, config: BuildConfig) -> str | None:
    """Read and check the family's split registry before any work: a bad one stops the build here, in one line."""
    from lvm_core.data.build.splitting import carried_registry  # polars/scipy: imported when a build runs

    previous, registry = carried_registry(config, source)
    log = get_run_logger()
    if previous is None or registry is None:
        log.info("first build of its family: a fresh split registry")
        return None
    log.info("splits follow the registry of %s (generation %d, %s articles, hash %s…)", previous.dataset_id,
             registry.header.generation, registry.rows.height, registry.hash[:12])
    return registry.hash


# --- shard tasks --------------------------------------------------------------------------------------


@task(name="plan-shards", task_run_name="plan-shards-{source.dataset_id}", cache_policy=NO_CACHE, **IO_RETRIES)
def plan_shards(source: SourceInfo, config: BuildConfig) -> list[Any]:
    """Cut the source into independently readable shards (multistream byte ranges via the index, ...)."""
    plan = ingest.plan_shards(source, config)
    get_run_logger().info("%s: %d source shard(s) of ~%d bytes (%s)", Path(source.path).name, len(plan),
                          config.shard_bytes, plan[0].kind)
    return plan


@task(name="index-previous-articles", task_run_name="index-previous-{source.dataset_id}", cache_policy=NO_CACHE,
      **IO_RETRIES)
def index_previous_articles(source: SourceInfo, config: BuildConfig) -> KnownArticles | None:
    """Index the family's previous dataset by (page id, raw text digest): unchanged pages are not cleaned."""
    known, why = known_articles_for(config, source)
    get_run_logger().info("ingest: %s", why)
    return known


@task(name="ingest-shard", task_run_name="ingest-{source.dataset_id}-{shard.index}", cache_policy=NO_CACHE, **IO_RETRIES)
def ingest_shard(
    shard: Any, source: SourceInfo, config: BuildConfig, known: KnownArticles | None = None
) -> IngestedShard:
    """Parse and clean one source shard (namespace 0, no redirects/disambiguation) into article files;
    pages unchanged since the previous dataset (`known`) take their text from there."""
    out = ingest_shard_work_dir(shard, source, config, known)
    log = get_run_logger()
    with ShardTicker(f"ingest {shard.label}", "articles", log, total=config.limit_articles) as ticker:
        record = ingest_shard_step(shard, source, config, out, on_progress=ticker.advance, known=known)
    _log_reused(record, f"ingest {shard.label}")
    log.info("ingest %s: %s articles, %s cleaned, %s taken from previous dataset %s", shard.label, record.articles,
             record.cleaned, record.reused_articles, known.dataset_id if known is not None else "(none)")
    return record


@task(name="record-ingest", task_run_name="record-ingest-{source.dataset_id}", cache_policy=NO_CACHE, **IO_RETRIES)
def record_ingest(
    stage_dir: Path, manifest: DatasetManifest, source: SourceInfo, ingested: list[IngestedShard],
    known: KnownArticles | None,
) -> DatasetManifest:
    """Record the cleaner in the manifest and what ingest cleaned or reused (lineage.reuse.ingest)."""
    manifest = ingest.record_ingest(stage_dir, manifest, source, ingested, known)
    counts = (manifest.lineage or {})["reuse"]["ingest"]
    get_run_logger().info("ingest: %s articles cleaned, %s taken from the previous dataset",
                          counts["articles_cleaned"], counts["articles_reused"])
    return manifest


@task(name="dedup-articles", task_run_name="dedup-{source.dataset_id}", cache_policy=NO_CACHE, **IO_RETRIES)
def dedup_articles(ingested: list[IngestedShard], source: SourceInfo, config: BuildConfig) -> KeptArticles:
    """One pass over the ids and text hashes of all shards: first N articles, repeated-id rules."""
    out = dedup_work_dir(ingested, source, config)
    record = dedup.dedup_articles(ingested, source, config, out)
    get_run_logger().info("%s articles kept of %s read, in %d file(s); repeated ids: %s", record.articles,
                          record.read, len(record.files), record.stats.duplicate_ids)
    return record


@task(name="plan-reuse", task_run_name="plan-reuse-{source.dataset_id}", cache_policy=NO_CACHE, **IO_RETRIES)
def plan_reuse(source: SourceInfo, config: BuildConfig, pinned: PinnedEncoder | None = None) -> ReusePlan | None:
    """Find the family's previous dataset (unless cold), check its chunker and encoder, index its articles once."""
    plan = build_reuse.plan_reuse(config, source, pinned.fingerprint if pinned is not None else None)
    log = get_run_logger()
    if plan is None:
        log.info("no previous dataset to reuse (%s)", "cold build" if config.cold else "first of its family")
    else:
        log.info("unchanged articles reuse %s (content %s…)%s", plan.previous, plan.content_hash[:12],
                 "" if plan.copy_vectors else "; its vectors are of lower precision: looked up again")
    return plan


@task(name="chunk-shard", task_run_name="chunk-{source.dataset_id}", cache_policy=NO_CACHE, **COMPUTE_RETRIES)
def chunk_shard(
    articles_file: str, source: SourceInfo, config: BuildConfig, reuse: ReusePlan | None = None
) -> ChunkedShard:
    """Sentence-split one article file and group into bounded chunks, never across paragraphs or articles
    (unchanged articles' chunks copied from the previous dataset)."""
    out = chunk_shard_work_dir(articles_file, source, config, reuse)
    total = parquet_rows(Path(articles_file))
    with ShardTicker(f"chunk {Path(articles_file).name}", "articles", get_run_logger(), total=total) as ticker:
        record = chunk_shard_step(articles_file, source, config, out, on_progress=ticker.advance, reuse=reuse)
    _log_reused(record, f"chunk {Path(articles_file).name}")
    if reuse is not None:
        get_run_logger().info("chunk %s: %d articles copied, %d chunked", Path(articles_file).name,
                              record.articles_reused, record.articles - record.articles_reused)
    return record


@task(name="pin-encoder", cache_policy=NO_CACHE, **COMPUTE_RETRIES)
def pin_encoder(config: BuildConfig) -> PinnedEncoder:
    """Resolve the encoder spec once (backend, weights digest) for every embed shard of the build."""
    pinned = embedding_pinned.pin_encoder(config.encoder)
    get_run_logger().info("encoder of every embed shard: %s as %s", pinned.fingerprint.describe(), pinned.spec)
    return pinned


@task(name="embed-shard", task_run_name="embed-{source.dataset_id}", cache_policy=NO_CACHE, **COMPUTE_RETRIES)
def embed_shard(
    chunked: ChunkedShard, source: SourceInfo, config: BuildConfig, pinned: PinnedEncoder | None = None,
    reuse: ReusePlan | None = None,
) -> EmbeddedShard:
    """Encode one chunk file with the build's pinned encoder; vectors of unchanged articles are copied from the
    previous dataset, and only texts unseen under its fingerprint are encoded."""
    chunks_file = chunked.file
    pinned = pinned or embedding_pinned.pin_encoder(config.encoder)
    out = embed_shard_work_dir(chunks_file, config, pinned)
    log = get_run_logger()
    with ShardTicker(f"embed {Path(chunks_file).parent.name}", "chunks", log, total=int(chunked.chunks)) as ticker:
        record = embed_shard_step(chunks_file, config, out, config.work_data_dir(), on_progress=ticker.advance,
                                  pinned=pinned, reuse=reuse, previous_rows=chunked.previous_rows)
    s = record.stats
    log.info(
        "embedded %s chunks: %s copied, %s reused, %s encoded (%.1f chunks/s)%s", s.get("n_total", record.chunks),
        s.get("n_copied", 0), s.get("n_reused"), s.get("n_encoded"), s.get("chunks_per_second") or 0.0,
        " — shard already done" if record.reused else "",
    )
    return record


def _log_reused(record: IngestedShard | ChunkedShard, what: str) -> None:
    if record.reused:
        get_run_logger().info("%s: already done, output reused", what)


@task(name="assemble", task_run_name="assemble-{source.dataset_id}", cache_policy=NO_CACHE, **IO_RETRIES)
def assemble(
    articles: KeptArticles, chunked: list[ChunkedShard], embedded: list[EmbeddedShard],
    source: SourceInfo, config: BuildConfig,
) -> tuple[Path, Path, EmbedResult]:
    """Join the shards: articles.parquet, chunks.parquet and a memory-mapped embeddings.npy, in shard order."""
    out = assemble_work_dir(articles, chunked, embedded, config)
    return assemble_step(articles, chunked, embedded, config, out)


@task(name="find-published-build", task_run_name="find-published-{source.dataset_id}", cache_policy=NO_CACHE,
      **IO_RETRIES)
def published_from_same_inputs(key: str, source: SourceInfo, config: BuildConfig) -> str | None:
    """The dataset this build would publish, when a build with the same key published it (never for `--cold`)."""
    found = None if config.cold else published_with_key(config.resolved_data_dir(), source.dataset_id, key)
    if found is not None:
        get_run_logger().info("dataset %s was published from the same inputs, options and code (build key %s…): "
                              "not analysed, gated or published again (--cold rebuilds it)", found, key[:12])
    return None if found is None else str(found)


@task(name="analyse", task_run_name="analyse-{source.dataset_id}", timeout_seconds=6 * HOUR, **COMPUTE_RETRIES)
def analyse(
    stage_dir: Path, config: BuildConfig, source: SourceInfo, articles_path: Path, chunks_path: Path,
    embedded: EmbedResult, ingest_stats: DuplicateReport | None = None, shards: ShardLayout | None = None,
) -> DatasetManifest:
    """Coherence bins, stratified splits, leakage guards, strict sequences, oracle recall → manifest."""
    manifest = analyse_step(stage_dir, config, source, articles_path, chunks_path, embedded,
                            ingest_stats=ingest_stats, shards=shards)
    log = get_run_logger()
    log.info(
        "coherence mean %.3f; sequences %s; crossing windows %s; oracle R@5 %.4f",
        manifest.coherence.mean or float("nan"), manifest.sequences, manifest.crossing_windows,
        manifest.oracle_recall_at_5,
    )
    return manifest


@task(name="data-gates", task_run_name="data-gates-{source.dataset_id}", timeout_seconds=HOUR)
def run_data_gates(stage_dir: Path, manifest: DatasetManifest, source: SourceInfo, config: BuildConfig) -> GateReport:
    """Great Expectations checkpoint over the staged dataset; results and Data Docs stay in the folder."""
    from expectations.runner import run_pre_training_gates

    report = run_pre_training_gates(Path(stage_dir), manifest, config.gate_thresholds())
    crash_point("gates")
    log = get_run_logger()
    for r in report.results:
        (log.info if r.passed else log.error)("gate %-24s %s value=%s threshold=%s", r.name,
                                              "PASS" if r.passed else "FAIL", r.value, r.threshold)
    return report


@task(name="publish-dataset", task_run_name="publish-{source.dataset_id}", **IO_RETRIES)
def publish(stage_dir: Path, manifest: DatasetManifest, report: GateReport, source: SourceInfo, config: BuildConfig) -> Path:
    """Write READY and rename the staged folder onto the dataset folder (the old one goes only then)."""
    finalize_manifest(stage_dir, manifest, report.to_manifest(), True, report.docs_path)
    published = build_publish.publish(stage_dir, config.resolved_data_dir(), source.dataset_id)
    store_dataset(published, source.dataset_id, open_store(config.work_url))  # the next month's build, elsewhere
    return published


@task(name="set-aside-failed-build", task_run_name="set-aside-{source.dataset_id}", **IO_RETRIES)
def set_aside(stage_dir: Path, manifest: DatasetManifest, report: GateReport, source: SourceInfo, config: BuildConfig) -> Path:
    """Keep a build whose gates failed (with its Data Docs) under datasets/_failed/; nothing is published."""
    finalize_manifest(stage_dir, manifest, report.to_manifest(), False, report.docs_path)
    return set_aside_failed(stage_dir, config.resolved_data_dir(), source.dataset_id)


@task(name="collect-garbage", task_run_name="gc-{data_dir}", cache_policy=NO_CACHE, **IO_RETRIES)
def collect_work_garbage(data_dir: str) -> GcReport:
    """`lvm gc` after a publish: work folders no running build needs, abandoned staging folders."""
    report = collect_garbage(Path(data_dir))
    log = get_run_logger()
    for line in report.kept:
        log.info("gc: %s", line)
    log.info("gc: %d folder(s) removed, %d bytes freed", len(report.removed), report.bytes_freed)
    return report
