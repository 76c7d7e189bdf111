"""Dataset build steps over files: ingest → chunk → embed (shard by shard) → assemble → analyse
(coherence, splits, leakage, sequences, oracle) → manifest → publish; and loading a published dataset.

Each step writes its output into a content-addressed work folder (`<data_dir>/work/<key>/`) and is
idempotent, so an interrupted build resumes from the last finished shard and an unchanged snapshot is
not recomputed. The dataset folder is assembled in a staging folder and renamed into place only when
its gates passed; a failed build is kept aside for inspection and never replaces a good dataset.

Submodules, one stage each: source (which snapshot), work (step keys, work folders, done records),
ingest, dedup (the global pass), chunk, embed, assemble, analyse, oracle, publish, load.
"""

from lvm_core.data.build.analyse import analyse_step
from lvm_core.data.build.assemble import assemble_step, assemble_work_dir, shard_layout
from lvm_core.data.build.chunk import chunk_shard_step, chunk_shard_work_dir
from lvm_core.data.build.dedup import dedup_articles, dedup_work_dir
from lvm_core.data.build.embed import (
    EmbedResult,
    embed_shard_step,
    embed_shard_work_dir,
)
from lvm_core.data.build.ingest import (
    INGEST_STATS_FILE,
    ingest_shard_step,
    ingest_shard_work_dir,
    ingest_step,
    plan_shards,
    read_ingest_stats,
    shard_key,
)
from lvm_core.data.build.load import (
    Dataset,
    DatasetNotReadyError,
    list_datasets,
    load_dataset,
)
from lvm_core.data.build.oracle import measure_oracle
from lvm_core.data.build.publish import (
    STAGING_PREFIX,
    clean_abandoned_builds,
    content_hash,
    discard_staging,
    finalize_manifest,
    new_staging_dir,
    publish,
    set_aside_failed,
)
from lvm_core.data.build.source import (
    SourceInfo,
    resolve_source,
    source_name,
    wiki_language,
)
from lvm_core.data.build.work import DONE_FILE, STEP_VERSIONS, step_key, work_dir

__all__ = [
    "DONE_FILE",
    "INGEST_STATS_FILE",
    "STAGING_PREFIX",
    "STEP_VERSIONS",
    "Dataset",
    "DatasetNotReadyError",
    "EmbedResult",
    "SourceInfo",
    "analyse_step",
    "assemble_step",
    "assemble_work_dir",
    "chunk_shard_step",
    "chunk_shard_work_dir",
    "clean_abandoned_builds",
    "content_hash",
    "dedup_articles",
    "dedup_work_dir",
    "discard_staging",
    "embed_shard_step",
    "embed_shard_work_dir",
    "finalize_manifest",
    "ingest_shard_step",
    "ingest_shard_work_dir",
    "ingest_step",
    "list_datasets",
    "load_dataset",
    "measure_oracle",
    "new_staging_dir",
    "plan_shards",
    "publish",
    "read_ingest_stats",
    "resolve_source",
    "set_aside_failed",
    "shard_key",
    "shard_layout",
    "source_name",
    "step_key",
    "wiki_language",
    "work_dir",
]
