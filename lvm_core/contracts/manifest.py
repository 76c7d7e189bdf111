"""`manifest.json` of a dataset folder as one typed contract (`DatasetManifest`).

The build writes through it and `load_dataset` returns it; readers use attributes, not string keys.

File format: unchanged. `to_dict()` gives back exactly the JSON the build wrote: the same keys, values and
key order, so `content_hash` of a dataset does not move. Three rules make that hold for folders written
by older builds too:

- keys a part does not declare (older or newer fields) are kept (`extra="allow"`) and written back;
- fields added after the first manifests (`oracle`, `windows_before_purge`, `shards`, `gates`, ...) are
  optional, and one absent from the file stays absent on output (`exclude_unset`), never `null`;
- each part remembers the key order it was read in and writes its keys in that order.

A manifest with a wrong type or without a required field is refused by `read_manifest` with one line
naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_serializer, model_validator

from lvm_core.contracts.errors import DataContractError
from lvm_core.io.storage import read_json, write_json


class ManifestPart(BaseModel):
    """A section of the manifest: unknown keys kept, key order of the input kept on output."""

    model_config = ConfigDict(extra="allow")

    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: Any) -> Any:
        obj = handler(data)
        if isinstance(data, Mapping) and obj is not data:
            obj._order = [str(k) for k in data]
        return obj

    @model_serializer(mode="wrap")
    def _in_read_order(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if not self._order or not isinstance(out, dict):
            return cast(dict[str, Any], out)
        first = {k: out[k] for k in self._order if k in out}
        return {**first, **{k: v for k, v in out.items() if k not in first}}

    def to_dict(self) -> dict[str, Any]:
        """The section as it is written to manifest.json (fields never set are left out)."""
        return self.model_dump(mode="python", exclude_unset=True)


class SourceRef(ManifestPart):
    """The input snapshot: where it was read (run-only), its sha256 and snapshot id."""

    path: str
    digest: str
    snapshot_id: str


class EncoderRef(ManifestPart):
    """The encoder that made embeddings.npy (encoder.json holds the full fingerprint)."""

    name: str
    dim: int
    fingerprint: str
    weights_digest: str
    normalized: bool = True


class Counts(ManifestPart):
    """Articles and chunks in the folder; windows per split; repeated source ids (newer builds)."""

    articles: int
    chunks: int
    sequences: dict[str, int] | None = None
    duplicate_ids: int | None = None
    duplicate_rows_dropped: int | None = None
    duplicate_ids_conflicting: int | None = None


class CoherenceSummary(ManifestPart):
    """Article coherence over the dataset and the quantile bin edges used to stratify the splits."""

    mean: float | None
    std: float | None
    n_articles: int
    bin_edges: list[float]
    n_bins: int


class SplitParity(ManifestPart):
    """An evaluation split's coherence against train: KS statistic, its p-value, mean difference."""

    ks: float | None = None
    mean_diff: float | None = None
    ks_pvalue: float | None = None


class SplitsRecord(ManifestPart):
    """splits.json as recorded in the manifest: config, counts per split and bin, parity, content hash."""

    mode: str | None = None
    ood_kind: str | None = None
    seed: int | None = None
    fractions: dict[str, float] | list[float] | None = None
    ood_ranges: Any = None
    val_ranges: Any = None
    holdout_titles: list[str] | None = None
    n_articles: int | None = None
    splits: dict[str, dict[str, Any]] | None = None
    per_bin: dict[str, dict[str, int]] | None = None
    content_hash: str | None = None
    registry_hash: str | None = None  # the family's split registry this assignment follows (split_registry.parquet)
    parity: dict[str, SplitParity] | None = None
    parity_before_purge: dict[str, SplitParity] | None = None

    @property
    def ood_is_shift(self) -> bool:
        """Is `ood` a real shift (`ood_kind` "shift")? Stratified ood is a second in-distribution test sample;
        manifests written before `ood_kind` existed say it by their mode."""
        return ood_is_shift(self.model_dump())


def ood_is_shift(splits: Any) -> bool:
    """`ood_kind == "shift"` of a splits record (its dict or splits.json); without `ood_kind`, a mode other
    than "stratified" (ranges or titles held out) is a shift. Gates and reports decide "shift or not" here only."""
    splits = splits if isinstance(splits, dict) else {}
    kind = splits.get("ood_kind")
    if kind is not None:
        return str(kind) == "shift"
    return str(splits.get("mode") or "stratified") != "stratified"


class LeakageReport(ManifestPart):
    """Train/eval overlap: shared articles, exact text repeats and near duplicates per split, with rates."""

    rows: dict[str, int] | None = None
    article_overlap: int | None = None
    overlapping_articles: list[Any] | None = None
    text_hash_overlap: dict[str, int | float] | None = None
    near_duplicates: dict[str, Any] | None = None
    leaking_rows: dict[str, int | float] | None = None
    # test rows repeating a val chunk: {test_rows, text_hash_overlap, near_duplicates, rate}
    val_test: dict[str, int | float] | None = None

    @property
    def text_hash_overlap_rate(self) -> float:
        """Share of evaluation rows whose text also occurs in train (0 when not recorded)."""
        return float((self.text_hash_overlap or {}).get("rate", 0.0) or 0.0)


class OracleRecord(ManifestPart):
    """Oracle Recall@K: re-encoded target texts found among the stored vectors (DESIGN "Oracle Recall@K")."""

    k: int
    sample_size: int
    seed: int
    n_targets: int | None = None
    query: str | None = None
    encoder: str | None = None
    hits: int
    recall: float
    train_sample_size: int | None = None  # train targets re-encoded beside the evaluation sample
    misaligned: int | None = None  # sampled rows whose stored vector disagrees with their re-encoded text (gated at 0)
    aligned_cos: float | None = None  # the cosine below which a row counts as misaligned
    min_cos: float | None = None


class ShardStage(ManifestPart):
    """One stage of a sharded build: parts, what they hold (articles or chunks), bytes, reused parts."""

    n: int
    kind: str | None = None
    articles: int | None = None
    chunks: int | None = None
    read: int | None = None
    bytes: int | None = None
    reused: int | None = None
    per_shard: list[int] | None = None


class ShardLayout(ManifestPart):
    """How the build was cut into tasks (run-only: not part of the content hash)."""

    n: int
    source: ShardStage | None = None
    ingest: ShardStage | None = None
    articles: ShardStage | None = None
    chunk: ShardStage | None = None
    embed: ShardStage | None = None


class GateOutcome(ManifestPart):
    """One data gate: passed or not, the measured value and the threshold it was held to."""

    passed: bool
    value: Any = None
    threshold: Any = None
    detail: str | None = None


class DatasetManifest(ManifestPart):
    """manifest.json of a dataset folder. Field order is the order the build writes them in.

    The window counts stay top-level fields as on disk: `sequences` (per split, after the purge),
    `context_len`, `windows_before_purge`, `purged_windows`, `purged_fraction`, `crossing_windows`.
    """

    dataset_id: str
    snapshot_id: str
    created_at: str
    source: SourceRef
    encoder: EncoderRef
    build_config: dict[str, Any]  # BuildConfig.model_dump(mode="json") of the build (older option sets kept as-is)
    counts: Counts
    ingest: dict[str, Any] | None = None
    # which cleaner made the article text from the raw source, and its version (`wikitext-1`, `tabular-1`):
    # a next build takes unchanged pages' text from this dataset only when it cleans with the same one
    cleaner: str | None = None
    sequences: dict[str, int]
    context_len: int | None = None
    coherence: CoherenceSummary
    splits: SplitsRecord
    leakage: LeakageReport  # after the purge of leaking evaluation windows
    leakage_raw: LeakageReport | None = None  # before the purge
    purged_windows: dict[str, int] | None = None
    windows_before_purge: dict[str, int] | None = None
    purged_fraction: dict[str, float] | None = None
    crossing_windows: int
    oracle_recall_at_5: float | None
    oracle: OracleRecord | None = None
    data_direction: list[float] | None = None
    embedding: dict[str, Any] | None = None  # encoding throughput of this run (run-only)
    shards: ShardLayout | None = None
    # how this dataset was reached (run-only): previous_dataset, previous_content_hash, cold, split_registry, reuse
    lineage: dict[str, Any] | None = None
    gates: dict[str, GateOutcome] | None = None
    gates_passed: bool | None = None
    gate_docs: str | None = None
    content_hash: str | None = None

    def with_fields(self, **fields: Any) -> DatasetManifest:
        """A validated copy with `fields` set (new keys go last, as the build appends them)."""
        return DatasetManifest.model_validate({**self.to_dict(), **fields})

    @property
    def failed_gates(self) -> list[str]:
        """Names of the recorded data gates that did not pass."""
        return [name for name, g in (self.gates or {}).items() if not g.passed]


def manifest_error(path: Path | str, exc: ValidationError) -> DataContractError:
    """One line naming the file, the first offending field and what is wrong with it."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    got = "" if first["type"] == "missing" else f", got {first.get('input')!r:.60}"
    return DataContractError(f"{path}: manifest field {field}: {first['msg']}{got}{more}")


def parse_manifest(data: Any, path: Path | str = "manifest.json") -> DatasetManifest:
    """Validate a manifest as read from JSON; `path` names the file in the error."""
    if not isinstance(data, Mapping):
        raise DataContractError(f"{path}: a manifest must be a JSON object, got {type(data).__name__}")
    try:
        return DatasetManifest.model_validate(data)
    except ValidationError as exc:
        raise manifest_error(path, exc) from None


def read_manifest(path: Path | str) -> DatasetManifest:
    """Read and validate a manifest.json (a missing file raises OSError; a bad one DataContractError)."""
    try:
        data = read_json(Path(path))
    except ValueError as exc:
        raise DataContractError(f"{path}: unreadable manifest ({exc})") from exc
    return parse_manifest(data, path)


def write_manifest(path: Path | str, manifest: DatasetManifest) -> None:
    """Write manifest.json atomically, exactly as `to_dict()` gives it."""
    write_json(Path(path), manifest.to_dict())
