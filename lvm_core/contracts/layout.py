"""Dataset and checkpoint folder layout, Parquet schemas, split names and default locations.

Every module reads and writes datasets through these names so that a layout change happens here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

# --- Parquet schemas -------------------------------------------------------------------------------

ARTICLES_SCHEMA = pa.schema(
    [
        pa.field("article_id", pa.int64(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("snapshot_id", pa.string(), nullable=False),
        pa.field("text_sha1", pa.string(), nullable=False),
        # sha1 of the raw source text (a dump page's wikitext, a tabular row's text) the text was cleaned
        # from: an unchanged page of the next snapshot takes its text from here instead of being cleaned
        # again. Null where unknown (articles not read from a source).
        pa.field("source_sha1", pa.string(), nullable=True),
    ]
)

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("article_id", pa.int64(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("text_hash", pa.string(), nullable=False),
        pa.field("n_words", pa.int32(), nullable=False),
    ]
)

# One row per article that took part in splitting.
SPLITS_SCHEMA = pa.schema(
    [
        pa.field("article_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("n_chunks", pa.int32(), nullable=False),
        pa.field("coherence", pa.float64(), nullable=True),
        pa.field("coherence_bin", pa.int32(), nullable=True),
    ]
)

# The split registry of a dataset family (split_registry.parquet): every article the family has seen, with the
# split it keeps for life; rows sorted by article_id, the header (family, generation, lineage, hash) in the
# Parquet schema metadata under SPLIT_REGISTRY_META_KEY. `present`: in this dataset; `moved_from`: the split an
# explicit ood holdout took the article from (at `split_generation`), else null.
SPLIT_REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("article_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("present", pa.bool_(), nullable=False),
        pa.field("first_snapshot", pa.string(), nullable=False),
        pa.field("last_snapshot", pa.string(), nullable=False),
        pa.field("first_generation", pa.int32(), nullable=False),
        pa.field("split_generation", pa.int32(), nullable=False),
        pa.field("moved_from", pa.string(), nullable=True),
    ]
)
SPLIT_REGISTRY_META_KEY = b"lvm.split_registry"

# Split roles: `train` fits; `val` is for every selection (early stopping, sweeps, architecture choice);
# `test` is what is reported and gated, never read by selection; `ood` is a shift (title/range hold-out),
# or in stratified mode a second in-distribution sample, labelled so. Datasets built before the test
# split existed have no test windows: their reports fall back to val and say so.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test", "ood")
EVAL_SPLITS: tuple[str, ...] = ("val", "test", "ood")
DEFAULT_FRACTIONS: tuple[float, float, float, float] = (0.7, 0.1, 0.1, 0.1)
#: Seed of a family's first stratified split. 1521, not the earlier 1234: under 1234 the test articles of the
#: embedded sample had been validation articles while designs were chosen; under 1521 none of its test articles
#: was ever val, test or ood under 1234 (docs/evaluation.md "Split seed", tests/unit/data/test_split_seed.py).
DEFAULT_SPLIT_SEED = 1521


def split_fractions(values: tuple[float, ...] | list[float]) -> tuple[float, float, float, float]:
    """(train, val, test, ood); three values are the older (train, val, ood) with no test split."""
    fr = tuple(float(x) for x in values)
    if len(fr) == 3:
        fr = (fr[0], fr[1], 0.0, fr[2])
    if len(fr) != 4:
        raise ValueError(f"split fractions must be train,val,test,ood (or train,val,ood), got {values!r}")
    return fr

# --- Folder layout ---------------------------------------------------------------------------------

ARTICLES_FILE = "articles.parquet"
CHUNKS_FILE = "chunks.parquet"
EMBEDDINGS_FILE = "embeddings.npy"  # (n_chunks, dim) unit rows in VECTOR_DTYPES, row i <-> chunks.parquet row i
ENCODER_FILE = "encoder.json"  # EncoderFingerprint of embeddings.npy, plus its VECTOR_DTYPE_KEY
# On-disk dtype of embeddings.npy, recorded in encoder.json (absent = float32, files of before float16).
VECTOR_DTYPES: tuple[str, ...] = ("float32", "float16")
DEFAULT_VECTOR_DTYPE = "float32"
VECTOR_DTYPE_KEY = "vector_dtype"
SPLITS_FILE = "splits.parquet"
SPLITS_MANIFEST_FILE = "splits.json"
SPLIT_REGISTRY_FILE = "split_registry.parquet"  # article id -> split for life within the family (SPLIT_REGISTRY_SCHEMA)
SEQUENCES_FILE = "sequences.npz"  # per split: {split}_context_rows, {split}_target_rows, ...
MANIFEST_FILE = "manifest.json"
GX_DIR = "gx"  # Great Expectations results + Data Docs
PLOTS_DIR = "plots"
READY_MARKER = "READY"  # written last, only when every gate passed
WATCH_STATE_FILE = "watch_state.json"  # in the data dir: snapshots the watcher already triggered


def default_data_dir() -> Path:
    """`LVM_DATA_DIR` or ./lvm-data."""
    import os

    return Path(os.environ.get("LVM_DATA_DIR", "lvm-data")).expanduser()


def datasets_root(data_dir: Path) -> Path:
    return Path(data_dir) / "datasets"


def dataset_dir(data_dir: Path, snapshot_id: str) -> Path:
    return datasets_root(data_dir) / snapshot_id


CACHE_DIR_ENV = "LVM_CACHE_DIR"
# A machine's own data folder in a build whose work is shared through a work store (`BuildOptions.work_url`):
# its work folders and caches; the datasets are published by the flow into the build's data folder.
LOCAL_DATA_DIR_ENV = "LVM_LOCAL_DATA_DIR"


def cache_root(data_dir: Path) -> Path:
    """This machine's caches (SQLite vectors, encoder exports): `LVM_CACHE_DIR`, else `<data dir>/cache`.

    A data folder shared between machines (a network mount) must not hold them: SQLite's WAL needs one
    machine's shared memory, so each machine sets `LVM_CACHE_DIR` to a folder on its own disk.
    """
    import os

    local = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(local).expanduser() if local else Path(data_dir) / "cache"


def embedding_cache_dir(data_dir: Path) -> Path:
    return cache_root(data_dir) / "embeddings"


def downloads_dir(data_dir: Path) -> Path:
    """Local copies of snapshot files fetched from remote (fsspec) sources."""
    return Path(data_dir) / "downloads"


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def evaluation_reports_dir(data_dir: Path, name: str | None, version: int | str | None) -> Path:
    """Where the evaluation report of a registered model version is written."""
    return models_dir(data_dir) / "reports" / f"{name}-v{version}"


def default_tracking_uri(data_dir: Path) -> str:
    """`MLFLOW_TRACKING_URI` or a SQLite file in the data dir."""
    import os

    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    path = Path(data_dir).resolve() / "mlflow.db"
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class DatasetPaths:
    """Resolved paths of one built dataset folder."""

    root: Path

    @property
    def articles(self) -> Path:
        return self.root / ARTICLES_FILE

    @property
    def chunks(self) -> Path:
        return self.root / CHUNKS_FILE

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS_FILE

    @property
    def encoder(self) -> Path:
        return self.root / ENCODER_FILE

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_FILE

    @property
    def split_registry(self) -> Path:
        return self.root / SPLIT_REGISTRY_FILE

    @property
    def splits_manifest(self) -> Path:
        return self.root / SPLITS_MANIFEST_FILE

    @property
    def sequences(self) -> Path:
        return self.root / SEQUENCES_FILE

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def gx(self) -> Path:
        return self.root / GX_DIR

    @property
    def plots(self) -> Path:
        return self.root / PLOTS_DIR

    @property
    def ready(self) -> Path:
        return self.root / READY_MARKER


# --- Training checkpoint folder (`lvm_core.train`) ----------------------------------------------
# <checkpoint_dir>/last/ and <checkpoint_dir>/best/, each replaced atomically as a whole folder.
CHECKPOINT_LAST_DIR = "last"
CHECKPOINT_BEST_DIR = "best"
CHECKPOINT_WEIGHTS_FILE = "model.safetensors"  # weights of first-format checkpoints only (read, never written)
CHECKPOINT_STATE_FILE = "state.pt"  # optimizer/scheduler/RNG/loop state; torch.load(weights_only=True)
CHECKPOINT_META_FILE = "meta.json"  # train_config, epoch, val/best scores, status, history (model config: config.json)
