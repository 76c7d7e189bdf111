"""The split registry of a dataset family: every article keeps, for life, the split it was first given.

Splits are drawn from coherence bins, and bins move when articles come and go (or when the vectors change), so
a fresh draw each month would turn last month's training articles into this month's test articles and no model
could be compared across months. The registry (split_registry.parquet, `SPLIT_REGISTRY_SCHEMA`) is carried from
one build of the family to the next:

- an article seen before keeps its split (a removed one stays in the registry, `present` false, so it keeps it
  when it returns);
- new articles are drawn among themselves, stratified by coherence bin with the build's seed as in a fresh
  build, or, above `NEW_BY_HASH_ABOVE` new articles, by a hash of the id salted with the family and seed;
- the explicit ood hold-outs of `ranges` / `titles` mode win over the registry: a held-out article goes to ood
  even when it had another split (recorded in `moved_from` / `split_generation`, so a contamination check still
  knows it was, say, train before). Nothing ever leaves ood, so an article moves at most once. `val_ranges`
  only place new articles; known ones keep their split. A family's first build (no parent) is exactly the
  plain split of `splits.split_articles`.

The header (family, snapshot, generation, parent hash and every ancestor's hash) is in the Parquet metadata,
and the hash covers it and every row: a registry names its whole lineage, so a model trained on generation g
can be checked against any later registry that descends from it, even when generation g's folder is gone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import SPLIT_NAMES, SPLIT_REGISTRY_META_KEY, SPLIT_REGISTRY_SCHEMA
from lvm_core.data.splits import SplitConfig, explicit_assignment, split_frame, split_inputs, stratified_draw
from lvm_core.io.storage import write_parquet

# Above this many new articles in one build they are placed by a salted hash of the id instead of the seeded
# stratified draw. At 10^4 new articles the hash gives each split its fraction within ~1% (binomial sd of a 10%
# split: 30 of 1,000), and a random 10% sample's coherence KS against train is ~0.04, far under the parity gate
# (0.5), so stratifying buys nothing there; while each article's split then depends only on its own id, not on
# which other articles arrived with it, and needs no per-bin sort of every new article. Below it, few new
# articles (a typical month) get exact per-bin counts from the stratified draw.
NEW_BY_HASH_ABOVE = 10_000
_FORMAT = 1
_COLUMNS = [f.name for f in SPLIT_REGISTRY_SCHEMA]


class SplitRegistryError(UserError, ValueError):
    """A split registry that cannot be carried on: unreadable, inconsistent, or of another family."""


@dataclass(frozen=True)
class RegistryHeader:
    """Who a registry belongs to and where it comes from; `ancestors` are the hashes of generations 0..g-1."""

    family: str
    snapshot_id: str
    dataset_id: str
    generation: int = 0
    parent_hash: str | None = None
    parent_dataset: str | None = None
    ancestors: tuple[str, ...] = ()


@dataclass(frozen=True)
class SplitRegistry:
    """A registry's header, its rows (`SPLIT_REGISTRY_SCHEMA`, sorted by article id) and its content hash."""

    header: RegistryHeader
    rows: pl.DataFrame
    hash: str

    @classmethod
    def of(cls, header: RegistryHeader, rows: pl.DataFrame) -> SplitRegistry:
        rows = rows.select(_COLUMNS).sort("article_id")
        return cls(header, rows, registry_hash(header, rows))

    def generation_of(self, registry_hash_: str) -> int | None:
        """The generation of `registry_hash_` in this registry's lineage (itself included), None if not in it."""
        lineage = (*self.header.ancestors, self.hash)
        return lineage.index(registry_hash_) if registry_hash_ in lineage else None

    def train_articles_at(self, generation: int) -> np.ndarray:
        """Article ids that were `train` in this registry's ancestor of `generation` (or in itself)."""
        r = self.rows
        then = pl.when(pl.col("split_generation") <= generation).then(pl.col("split")).otherwise(pl.col("moved_from"))
        known = r.filter((pl.col("first_generation") <= generation) & (then == "train"))
        return known["article_id"].to_numpy().astype(np.int64)

    def counts(self) -> dict[str, int]:
        """Registered articles per split (present or not)."""
        got = dict(self.rows.group_by("split").len().iter_rows())
        return {name: int(got.get(name, 0)) for name in SPLIT_NAMES}


@dataclass(frozen=True)
class CarriedSplits:
    """The splits of one build and the registry it leaves; `counts` for the lineage (kept, new, removed, ...)."""

    splits: pl.DataFrame
    registry: SplitRegistry
    counts: dict[str, int | str]


def registry_hash(header: RegistryHeader, rows: pl.DataFrame) -> str:
    """sha256 over the header (without the parent's dataset id, informative only) and every row in id order;
    a text column as its sorted distinct values and each row's code into them (few values, many rows)."""
    h = hashlib.sha256()
    ident = {k: v for k, v in asdict(header).items() if k != "parent_dataset"}
    h.update(json.dumps({**ident, "ancestors": list(header.ancestors), "format": _FORMAT}, sort_keys=True).encode())
    h.update(rows["article_id"].to_numpy().astype("<i8").tobytes())
    h.update(rows["present"].to_numpy().astype(np.uint8).tobytes())
    for col in ("first_generation", "split_generation"):
        h.update(rows[col].to_numpy().astype("<i4").tobytes())
    for col in ("split", "first_snapshot", "last_snapshot", "moved_from"):
        values = rows[col].fill_null("\x00")
        distinct = sorted(values.unique().to_list())
        codes = values.replace_strict(distinct, list(range(len(distinct))), return_dtype=pl.UInt32)
        h.update(json.dumps(distinct).encode() + codes.to_numpy().astype("<u4").tobytes())
    return h.hexdigest()


def write_registry(path: Path, registry: SplitRegistry) -> None:
    """The registry as Parquet, its header and hash in the schema metadata (atomically)."""
    meta = {**asdict(registry.header), "ancestors": list(registry.header.ancestors), "hash": registry.hash,
            "format": _FORMAT}
    table = registry.rows.to_arrow().cast(SPLIT_REGISTRY_SCHEMA)
    write_parquet(Path(path), table.replace_schema_metadata({SPLIT_REGISTRY_META_KEY: json.dumps(meta)}))


def read_registry(path: Path) -> SplitRegistry:
    """Read and check a registry: readable, its header, unique ids, known split names, the recorded hash."""
    path = Path(path)
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[SPLIT_REGISTRY_META_KEY])
        header = RegistryHeader(
            family=str(meta["family"]), snapshot_id=str(meta["snapshot_id"]), dataset_id=str(meta["dataset_id"]),
            generation=int(meta["generation"]), parent_hash=meta.get("parent_hash"),
            parent_dataset=meta.get("parent_dataset"), ancestors=tuple(str(a) for a in meta.get("ancestors") or ()),
        )
        rows = pl.from_arrow(table.select(_COLUMNS).cast(SPLIT_REGISTRY_SCHEMA))
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException) as exc:
        raise SplitRegistryError(f"{path}: unreadable split registry ({type(exc).__name__}: {exc})") from None
    assert isinstance(rows, pl.DataFrame)
    check_registry_rows(path, rows, header)
    registry = SplitRegistry.of(header, rows)
    if registry.hash != meta.get("hash"):
        raise SplitRegistryError(f"{path}: split registry content does not match its recorded hash "
                                 f"{str(meta.get('hash'))[:12]} (edited or damaged)")
    return registry


def check_registry_rows(path: Path, rows: pl.DataFrame, header: RegistryHeader) -> None:
    """Refuse repeated article ids, unknown split names and a header whose lineage does not fit its generation."""
    dup = rows["article_id"].is_duplicated()
    if dup.any():
        first = int(rows.filter(dup)["article_id"][0])
        raise SplitRegistryError(f"{path}: split registry lists article {first} more than once")
    for col in ("split", "moved_from"):
        unknown = set(rows[col].drop_nulls().unique().to_list()) - set(SPLIT_NAMES)
        if unknown:
            raise SplitRegistryError(f"{path}: unknown split name(s) {sorted(unknown)} in column {col!r} "
                                     f"(expected {', '.join(SPLIT_NAMES)})")
    if len(header.ancestors) != header.generation or (header.generation and not header.parent_hash):
        raise SplitRegistryError(f"{path}: split registry header of generation {header.generation} lists "
                                 f"{len(header.ancestors)} ancestor(s)")


def registry_from_splits(splits: pl.DataFrame, header: RegistryHeader) -> SplitRegistry:
    """A generation-0 registry holding the articles of a split frame (a family's first build, or a dataset
    published before registries existed, from its splits.parquet)."""
    rows = splits.select(
        pl.col("article_id").cast(pl.Int64),
        pl.col("split").cast(pl.Utf8),
        pl.lit(True).alias("present"),
        pl.lit(header.snapshot_id).alias("first_snapshot"),
        pl.lit(header.snapshot_id).alias("last_snapshot"),
        pl.lit(0, dtype=pl.Int32).alias("first_generation"),
        pl.lit(0, dtype=pl.Int32).alias("split_generation"),
        pl.lit(None, dtype=pl.Utf8).alias("moved_from"),
    )
    return SplitRegistry.of(header, rows)


def carry_splits(
    coh_binned: pl.DataFrame, config: SplitConfig, titles: pl.Series | None, parent: SplitRegistry | None,
    header: RegistryHeader,
) -> CarriedSplits:
    """The splits of this build's articles and the registry it leaves, from the parent registry (None: first
    build of the family, a plain split). `header` names this build (family, snapshot, dataset id)."""
    ids, bins = split_inputs(coh_binned)
    assign, pool, fracs = explicit_assignment(ids.shape[0], config, titles)
    if parent is None:
        if pool.any():
            assign[pool] = stratified_draw(ids[pool], bins[pool], fracs, config.seed)
        splits = split_frame(coh_binned, assign)
        registry = registry_from_splits(splits, header)
        return CarriedSplits(splits, registry, {"kept": 0, "new": splits.height, "removed": 0, "returned": 0,
                                                "moved": 0, "new_assigned_by": "stratified"})
    prev = parent.rows
    cur = (pl.DataFrame({"article_id": ids}, schema={"article_id": pl.Int64}).with_row_index("pos")
           .join(prev.rename({c: f"p_{c}" for c in _COLUMNS if c != "article_id"}), on="article_id", how="left")
           .sort("pos"))
    known = cur["p_split"].is_not_null().to_numpy()
    known_split = cur["p_split"].fill_null("").to_numpy().astype(object)
    held_ood = assign == "ood"
    assign[known & ~held_ood] = known_split[known & ~held_ood]
    new_pool = pool & ~known
    by_hash = int(new_pool.sum()) > NEW_BY_HASH_ABOVE
    if new_pool.any():
        draw = hashed_draw if by_hash else _seeded_draw
        assign[new_pool] = draw(ids[new_pool], bins[new_pool], fracs, config.seed, header.family)
    moved = known & held_ood & (known_split != "ood")
    splits = split_frame(coh_binned, assign)
    child = RegistryHeader(header.family, header.snapshot_id, header.dataset_id, parent.header.generation + 1,
                           parent.hash, parent.header.dataset_id, (*parent.header.ancestors, parent.hash))
    rows = _next_rows(prev, cur.with_columns(split=splits["split"], moved=pl.Series(moved)), child)
    was_present = cur["p_present"].fill_null(False).to_numpy()
    counts: dict[str, int | str] = {
        "kept": int(known.sum()), "new": int((~known).sum()),
        "removed": int(prev["present"].sum()) - int(was_present.sum()),
        "returned": int((known & ~was_present).sum()), "moved": int(moved.sum()),
        "new_assigned_by": "hash" if by_hash else "stratified",
    }
    return CarriedSplits(splits, SplitRegistry.of(child, rows), counts)


def _next_rows(prev: pl.DataFrame, cur: pl.DataFrame, child: RegistryHeader) -> pl.DataFrame:
    """The child registry's rows: this build's articles (`cur`: id, split, moved, and the parent's `p_` columns,
    null where new) carried, moved or new, and the parent's articles absent from this build."""
    gen, snap = child.generation, child.snapshot_id
    moved = pl.col("moved")
    current = cur.select(
        "article_id", "split", pl.lit(True).alias("present"),
        pl.coalesce("p_first_snapshot", pl.lit(snap)).alias("first_snapshot"), pl.lit(snap).alias("last_snapshot"),
        pl.coalesce("p_first_generation", pl.lit(gen)).cast(pl.Int32).alias("first_generation"),
        pl.when(moved).then(pl.lit(gen)).otherwise(pl.coalesce("p_split_generation", pl.lit(gen)))
        .cast(pl.Int32).alias("split_generation"),
        pl.when(moved).then(pl.col("p_split")).otherwise(pl.col("p_moved_from")).alias("moved_from"),
    )
    here = cur.select("article_id")
    absent = prev.join(here, on="article_id", how="anti").with_columns(pl.lit(False).alias("present"))
    return pl.concat([current.select(_COLUMNS), absent.select(_COLUMNS)], how="vertical_relaxed")


def _seeded_draw(ids: np.ndarray, bins: np.ndarray, fracs: np.ndarray, seed: int, family: str) -> np.ndarray:
    """The stratified draw of a fresh build, over the new articles only."""
    return stratified_draw(ids, bins, fracs, seed)


def hashed_draw(ids: np.ndarray, bins: np.ndarray, fracs: np.ndarray, seed: int, family: str) -> np.ndarray:
    """Split names by a hash of each id salted with the family and seed, cut at the cumulative fractions;
    articles with no coherence bin (too short for a window) go to train, as in the stratified draw."""
    names = np.array(SPLIT_NAMES, dtype=object)
    u = unit_hash(ids, f"{family}:{seed}")
    cut = np.searchsorted(np.cumsum(np.asarray(fracs, dtype=np.float64)), u, side="right")
    out = names[np.minimum(cut, len(SPLIT_NAMES) - 1)]
    out[bins < 0] = "train"
    return out


def unit_hash(ids: np.ndarray, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per id: splitmix64 of the id xor a 64-bit salt, top 53 bits."""
    s = np.uint64(int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little"))
    with np.errstate(over="ignore"):
        z = (np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ s) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
