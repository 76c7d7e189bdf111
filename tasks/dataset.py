"""Prefect tasks of the dataset build; each wraps one lvm_core.dataset step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lvm_core import dataset as ds
from lvm_core.config import BuildConfig
from lvm_core.embedding import encoder_casefolds
from lvm_core.faults import crash_point
from lvm_core.gates import GateReport
from lvm_core.progress import progress_enabled
from tasks.common import COMPUTE_RETRIES, HEAVY_CPU_TAG, HOUR, IO_RETRIES, output_cache_key


def _ingest_out(p: dict[str, Any]) -> tuple[str, Path]:
    source, config = p["source"], p["config"]
    key = ds.step_key("ingest", source.digest, config.limit_articles, source.snapshot_id, config.on_duplicate)
    return key, ds.work_dir(config.resolved_data_dir(), "ingest", key) / "articles.parquet"


@task(name="resolve-source", task_run_name="resolve-source-{config.source}", **IO_RETRIES, timeout_seconds=HOUR)
def resolve_source(config: BuildConfig) -> ds.SourceInfo:
    """Locate and digest the snapshot file."""
    info = ds.resolve_source(config)
    get_run_logger().info("source %s → snapshot %s (sha256 %s…)", info.path, info.snapshot_id, info.digest[:12])
    return info


@task(name="clean-abandoned-builds", cache_policy=NO_CACHE, **IO_RETRIES)
def clean_abandoned(config: BuildConfig) -> list[str]:
    """Staging folders of killed builds go; a publish cut between its two renames is undone."""
    done = ds.clean_abandoned_builds(config.resolved_data_dir())
    log = get_run_logger()
    for line in done:
        log.warning("%s", line)
    return done


@task(
    name="ingest",
    task_run_name="ingest-{source.dataset_id}",
    cache_key_fn=output_cache_key(_ingest_out),
    persist_result=True,
    timeout_seconds=6 * HOUR,
    **IO_RETRIES,
)
def ingest(source: ds.SourceInfo, config: BuildConfig) -> Path:
    """Parse the dump (namespace 0, no redirects/disambiguation) and clean wikitext into articles.parquet."""
    key, out = _ingest_out({"source": source, "config": config})
    path = ds.ingest_step(source, config, out.parent, progress=progress_enabled())
    get_run_logger().info("articles → %s", path)
    return path


def _chunk_out(p: dict[str, Any]) -> tuple[str, Path]:
    config = p["config"]
    lang = ds.wiki_language(p["source"].snapshot_id)
    casefold = encoder_casefolds(config.encoder)
    parts = [str(p["articles_path"]), config.min_words, config.max_words, lang]
    key = ds.step_key("chunk", *parts, *([] if casefold else ["cased"]))  # uncased: the key of before
    return key, ds.work_dir(config.resolved_data_dir(), "chunk", key) / "chunks.parquet"


@task(
    name="chunk",
    task_run_name="chunk-{source.dataset_id}",
    cache_key_fn=output_cache_key(_chunk_out),
    persist_result=True,
    timeout_seconds=6 * HOUR,
    **COMPUTE_RETRIES,
)
def chunk(articles_path: Path, source: ds.SourceInfo, config: BuildConfig) -> Path:
    """Sentence-split and group into bounded chunks, never across paragraphs or articles."""
    _, out = _chunk_out({"articles_path": articles_path, "config": config, "source": source})
    return ds.chunk_step(articles_path, config, out.parent, language=ds.wiki_language(source.snapshot_id),
                         casefold=encoder_casefolds(config.encoder))


def _embed_out(chunks_path: Path, config: BuildConfig) -> Path:
    key = ds.step_key("embed", str(chunks_path), config.encoder or "default")
    return ds.work_dir(config.resolved_data_dir(), "embed", key) / "embed_stats.json"


@task(
    name="embed",
    task_run_name="embed-{source.dataset_id}",
    tags=[HEAVY_CPU_TAG],
    cache_policy=NO_CACHE,  # the embedding cache is the resume point; the step always reports reuse
    timeout_seconds=24 * HOUR,
    **COMPUTE_RETRIES,
)
def embed(chunks_path: Path, source: ds.SourceInfo, config: BuildConfig) -> ds.EmbedResult:
    """Encode chunks; only texts unseen under this encoder fingerprint are encoded."""
    out = _embed_out(chunks_path, config)
    result = ds.embed_step(chunks_path, config, out.parent, config.resolved_data_dir(), progress=progress_enabled())
    s = result.stats
    get_run_logger().info(
        "embedded %s chunks: %s reused from cache, %s encoded (%.1f chunks/s)",
        s.get("n_total"), s.get("n_reused"), s.get("n_encoded"), s.get("chunks_per_second") or 0.0,
    )
    return result


@task(name="analyse", task_run_name="analyse-{source.dataset_id}", timeout_seconds=6 * HOUR, **COMPUTE_RETRIES)
def analyse(
    stage_dir: Path, config: BuildConfig, source: ds.SourceInfo, articles_path: Path, chunks_path: Path, embedded: ds.EmbedResult
) -> dict[str, Any]:
    """Coherence bins, stratified splits, leakage guards, strict sequences, oracle recall → manifest."""
    manifest = ds.analyse_step(stage_dir, config, source, articles_path, chunks_path, embedded)
    log = get_run_logger()
    log.info(
        "coherence mean %.3f; sequences %s; crossing windows %s; oracle R@5 %.4f",
        manifest["coherence"]["mean"] or float("nan"), manifest["sequences"], manifest["crossing_windows"],
        manifest["oracle_recall_at_5"],
    )
    return manifest


@task(name="data-gates", task_run_name="data-gates-{source.dataset_id}", timeout_seconds=HOUR)
def run_data_gates(stage_dir: Path, manifest: dict[str, Any], source: ds.SourceInfo, config: BuildConfig) -> GateReport:
    """Great Expectations checkpoint over the staged dataset; results and Data Docs stay in the folder."""
    from expectations.runner import run_pre_training_gates

    report = run_pre_training_gates(Path(stage_dir), manifest, config.gate_thresholds())
    crash_point("gates")
    log = get_run_logger()
    for r in report.results:
        (log.info if r.passed else log.error)("gate %-24s %s value=%s threshold=%s", r.name, "PASS" if r.passed else "FAIL", r.value, r.threshold)
    return report


@task(name="publish-dataset", task_run_name="publish-{source.dataset_id}", **IO_RETRIES)
def publish(stage_dir: Path, manifest: dict[str, Any], report: GateReport, source: ds.SourceInfo, config: BuildConfig) -> Path:
    """Write READY and rename the staged folder onto the dataset folder (the old one goes only then)."""
    ds.finalize_manifest(stage_dir, manifest, report.to_manifest(), True, report.docs_path)
    return ds.publish(stage_dir, config.resolved_data_dir(), source.dataset_id)


@task(name="set-aside-failed-build", task_run_name="set-aside-{source.dataset_id}", **IO_RETRIES)
def set_aside(stage_dir: Path, manifest: dict[str, Any], report: GateReport, source: ds.SourceInfo, config: BuildConfig) -> Path:
    """Keep a build whose gates failed (with its Data Docs) under datasets/_failed/; nothing is published."""
    ds.finalize_manifest(stage_dir, manifest, report.to_manifest(), False, report.docs_path)
    return ds.set_aside_failed(stage_dir, config.resolved_data_dir(), source.dataset_id)
