"""Typed configuration of a dataset build (also the Prefect UI form of the build flow)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lvm_core.contracts.gates import GateThresholds
from lvm_core.contracts.layout import (
    DEFAULT_FRACTIONS,
    DEFAULT_SPLIT_SEED,
    LOCAL_DATA_DIR_ENV,
    default_data_dir,
    split_fractions,
)


class BuildOptions(BaseModel):
    """How a snapshot is turned into a dataset (chunking, encoder, splits, gates)."""

    model_config = ConfigDict(extra="forbid")

    encoder: str | None = Field(None, description="sentence-transformers model name or path, optionally '@auto|torch|torch-fp16|onnx-int8' "
                                "(default: packaged all-MiniLM-L6-v2, auto)")
    min_words: int = Field(40, ge=1, description="Chunks close once they reach this many words at a sentence end")
    max_words: int = Field(120, ge=2, description="Upper bound on words per chunk")
    context_len: int = Field(5, ge=1, le=64, description="Chunks of context per sequence")
    n_bins: int = Field(5, ge=1, le=50, description="Coherence quantile bins for stratification")
    split_mode: Literal["stratified", "ranges", "titles"] = "stratified"
    fractions: tuple[float, ...] = Field(
        DEFAULT_FRACTIONS, description="train/val/test/ood fractions (three values: train/val/ood, no test split)"
    )
    seed: int = DEFAULT_SPLIT_SEED
    exclude_articles: str | None = Field(None, description="OOD article ranges, e.g. '1500-1999,4000-4499' (split_mode=ranges)")
    val_articles: str | None = Field(None, description="Validation article ranges (split_mode=ranges)")
    holdout_titles: list[str] | None = Field(None, description="Title regexes held out as OOD (split_mode=titles)")
    near_dup_threshold: float = Field(0.995, gt=0, le=1)
    batch_size: int = Field(64, ge=1, description="Encoder batch size")
    vector_dtype: Literal["float32", "float16"] = Field(
        "float32", description="On-disk dtype of embeddings.npy (float16 halves it; computation is float32)"
    )
    shard_bytes: int = Field(
        64 * 2**20, ge=1, description="Source bytes per ingest shard (multistream byte ranges, Parquet row groups, JSONL lines)"
    )
    shard_articles: int = Field(50_000, ge=1, description="Articles per article file; one chunk and one embed task each")
    on_duplicate: Literal["error", "first", "last"] = Field(
        "error",
        description="Parquet/JSONL rows repeating an id with a different text: fail (error) or keep the first/last row",
    )
    thresholds: dict[str, float | int | bool] = Field(default_factory=dict, description="Gate threshold overrides")
    cold: bool = Field(
        False,
        description="Full build: nothing reused from the family's previous dataset or the work folders (every "
        "article parsed, chunked and looked up again); the embedding cache is still read (its vectors are exact, "
        "so the dataset equals an incremental build's); splits still follow the family's registry",
    )
    work_url: str | None = Field(
        None,
        description="Shared storage for finished work folders and published datasets, as an fsspec URL "
        "(file:///mnt/shared/lvm, s3://bucket/lvm, ...): each machine keeps its own local data folder and takes "
        "the shards any other one finished from there (default: $LVM_WORK_URL; none: the data folder alone)",
    )
    previous_dataset: str | None = Field(
        None,
        description="Published dataset folder whose unchanged articles' chunks and vectors, and split registry, "
        "this build carries on (default: the newest published dataset of the same family, e.g. enwiki); it must "
        "have the same chunker settings and encoder fingerprint",
    )

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        v = split_fractions(v)
        if any(f < 0 or f > 1 for f in v):
            raise ValueError(f"split fractions {v} must each lie in [0, 1]")
        total = sum(v)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"split fractions sum to {total:g}, must be 1")
        return v

    @model_validator(mode="after")
    def _check(self) -> BuildOptions:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) exceeds max_words ({self.max_words})")
        if self.split_mode == "ranges" and not self.exclude_articles:
            raise ValueError("split_mode=ranges needs exclude_articles (OOD article ranges)")
        if self.split_mode == "titles" and not self.holdout_titles:
            raise ValueError("split_mode=titles needs holdout_titles")
        if self.exclude_articles and self.split_mode == "stratified":
            self.split_mode = "ranges"
        GateThresholds.from_dict(self.thresholds)  # unknown names fail early
        return self

    def gate_thresholds(self) -> GateThresholds:
        return GateThresholds.from_dict(self.thresholds)


# Options that say how a dataset was reached, not what it is: kept out of the manifest's build_config (and
# so out of its content hash); the manifest's lineage records how it was reached instead.
LINEAGE_OPTIONS = frozenset({"cold", "previous_dataset", "work_url"})
WORK_URL_ENV = "LVM_WORK_URL"


class BuildConfig(BuildOptions):
    """A build: which snapshot, where to put it, and the options; its hash names cached work."""

    source: str = Field(
        "sample",
        description="'sample' (embedded enwiki excerpt), a dump .xml/.xml.bz2, or a .parquet/.jsonl with id,title,text",
    )
    data_dir: str | None = Field(None, description="Data folder (default: $LVM_DATA_DIR or ./lvm-data)")
    limit_articles: int | None = Field(None, ge=1, description="Only the first N articles (quick runs)")
    snapshot_id: str | None = Field(None, description="Override the snapshot id derived from the source")

    @classmethod
    def from_parts(
        cls,
        source: str,
        data_dir: str | None,
        limit_articles: int | None,
        snapshot_id: str | None,
        options: BuildOptions | None,
    ) -> BuildConfig:
        base = (options or BuildOptions()).model_dump()
        base["work_url"] = base.get("work_url") or os.environ.get(WORK_URL_ENV, "").strip() or None
        return cls(source=source, data_dir=data_dir, limit_articles=limit_articles, snapshot_id=snapshot_id, **base)

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    def work_data_dir(self) -> Path:
        """This machine's folder for work folders and caches: with a work store, a machine's own
        `LVM_LOCAL_DATA_DIR` where set (a worker's local disk); else the build's data folder."""
        local = os.environ.get(LOCAL_DATA_DIR_ENV, "").strip() if self.work_url else ""
        return Path(local).expanduser() if local else self.resolved_data_dir()
