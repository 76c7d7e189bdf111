"""Dataset families: the snapshots of one wiki (`enwiki-20240601`, `enwiki-20240701`, ...) and, for a new
build, the family's previous published dataset it carries on from (its split registry and unchanged articles).

With a work store (`store.py`) a published dataset is also stored under `datasets/<id>/` at the store's URL:
a build on a machine that does not hold the family's previous dataset finds it there and downloads it, and a
worker reads the previous dataset a build carries on from as its own copy (`local_dataset`).

A month's build finds its predecessor by itself, so a scheduled rebuild keeps every article's split and is
incremental without being told; `--previous-dataset` names one explicitly. `--cold` (`BuildOptions.cold`)
reuses none of its articles, but the splits still follow its registry.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import MANIFEST_FILE, DatasetPaths, dataset_dir, datasets_root
from lvm_core.data.build.store import WorkStore, open_store
from lvm_core.io.storage import read_json

DATASETS = "datasets"  # published datasets under a work store's URL

_DATED = re.compile(r"^(?P<family>.+)-(?P<date>\d{8})$")


class FamilyError(UserError, ValueError):
    """A previous dataset that cannot be carried on from (another family, not published, unreadable)."""


@dataclass(frozen=True)
class PublishedDataset:
    """A published dataset folder (READY written) and the ids its manifest records."""

    root: Path
    dataset_id: str
    snapshot_id: str
    created_at: str

    @property
    def family(self) -> str:
        return dataset_family(self.snapshot_id)

    @property
    def date(self) -> _dt.date | None:
        return snapshot_date(self.snapshot_id)


def dataset_family(snapshot_id: str) -> str:
    """The family of a snapshot: its wiki for a dated dump id (`enwiki-20240601` → `enwiki`). An undated id
    (`enwiki-a53f4648dec4`, named by its digest: the embedded sample, a "latest" dump) is a family of its own,
    so a month of a real wiki never carries on from the sample's articles and splits."""
    m = _DATED.match(snapshot_id)
    return m["family"] if m else snapshot_id


def snapshot_date(snapshot_id: str) -> _dt.date | None:
    m = _DATED.match(snapshot_id)
    if not m:
        return None
    try:
        return _dt.datetime.strptime(m["date"], "%Y%m%d").date()
    except ValueError:
        return None


def published_manifest(root: Path) -> object | None:
    """The manifest (as read from JSON) of the published dataset at `root`; None without a READY marker or a
    readable manifest."""
    paths = DatasetPaths(Path(root))
    if not paths.ready.is_file():
        return None
    try:
        manifest: object = read_json(paths.manifest)
    except (OSError, ValueError):
        return None
    return manifest


def read_published(root: Path) -> PublishedDataset | None:
    """The published dataset at `root`, or None when it is not one (no READY marker, no readable manifest)."""
    manifest = published_manifest(root)
    return None if manifest is None else _published(Path(root), manifest)


def _published(root: Path, manifest: object) -> PublishedDataset | None:
    if not isinstance(manifest, dict) or not manifest.get("snapshot_id") or not manifest.get("dataset_id"):
        return None
    return PublishedDataset(
        root=Path(root), dataset_id=str(manifest["dataset_id"]), snapshot_id=str(manifest["snapshot_id"]),
        created_at=str(manifest.get("created_at") or ""),
    )


def published_datasets(data_dir: Path) -> list[PublishedDataset]:
    """Every published dataset under the data folder, in folder-name order."""
    root = datasets_root(Path(data_dir))
    if not root.is_dir():
        return []
    found = (read_published(p) for p in sorted(root.iterdir()) if p.is_dir())
    return [d for d in found if d is not None]


def stored_datasets(store: WorkStore, data_dir: Path) -> list[PublishedDataset]:
    """The datasets published on the work store (from their manifests), each with the folder of this machine's
    data folder it is downloaded into (`fetch_stored_dataset`)."""
    found = (_published(dataset_dir(data_dir, name), store.read_json(f"{DATASETS}/{name}", MANIFEST_FILE))
             for name in store.names(DATASETS))
    return [d for d in found if d is not None]


def store_dataset(root: Path, dataset_id: str, store: WorkStore | None) -> None:
    """Put a published dataset on the work store (again, when it was published anew), READY after its files."""
    if store is not None:
        store.upload(Path(root), f"{DATASETS}/{dataset_id}", replace=True)


def ensure_stored(root: Path, dataset_id: str, content_hash: str, store: WorkStore | None) -> None:
    """Put the dataset a build carries on from on the work store unless the store holds this very one, so the
    workers can read it."""
    if store is None:
        return
    stored = store.read_json(f"{DATASETS}/{dataset_id}", MANIFEST_FILE)
    if not isinstance(stored, dict) or stored.get("content_hash") != content_hash:
        store_dataset(Path(root), dataset_id, store)


def local_dataset(root: str | Path, dataset_id: str, content_hash: str, data_dir: Path, store: WorkStore | None) -> Path:
    """The dataset a build carries on from (published at `root` on the flow's machine), as a folder this machine
    reads: its own copy when it holds this content, else the work store's (downloaded into its data folder),
    else `root` itself (a folder every machine mounts). Refused in one line when none holds it."""
    if store is None:
        return Path(root)
    local = dataset_dir(data_dir, dataset_id)
    if _holds(local, content_hash):
        return local
    if store.download(f"{DATASETS}/{dataset_id}", local) and _holds(local, content_hash):
        return local
    if _holds(Path(root), content_hash):
        return Path(root)
    raise FamilyError(f"previous dataset {dataset_id} (content {content_hash[:12]}…) is neither in {data_dir} nor "
                      f"on the work store {store.url}: build it again, or pass --cold")


def _holds(root: Path, content_hash: str) -> bool:
    if read_published(root) is None:
        return False
    try:
        return bool(read_json(DatasetPaths(root).manifest).get("content_hash") == content_hash)
    except (OSError, ValueError, AttributeError):
        return False


def find_previous_dataset(
    data_dir: Path, snapshot_id: str, dataset_id: str, store: WorkStore | None = None
) -> PublishedDataset | None:
    """The newest published dataset of `snapshot_id`'s family that came before it (by snapshot date when
    both are dated, else by creation time), other than `dataset_id` itself; None for a family's first build.

    With a work store, its datasets count too: one this machine does not hold is downloaded when chosen.
    """
    family, date = dataset_family(snapshot_id), snapshot_date(snapshot_id)
    local = published_datasets(data_dir)
    held = {d.dataset_id for d in local}
    stored = [d for d in stored_datasets(store, data_dir) if d.dataset_id not in held] if store is not None else []
    candidates = [d for d in (*local, *stored) if d.family == family and d.dataset_id != dataset_id]
    if date is not None:
        candidates = [d for d in candidates if d.date is not None and d.date < date]
    if not candidates:
        return None
    chosen = max(candidates, key=lambda d: (d.date or _dt.date.min, d.created_at))
    if store is not None and chosen in stored:
        store.download(f"{DATASETS}/{chosen.dataset_id}", chosen.root)
        return read_published(chosen.root)
    return chosen


def previous_dataset_for(config: BuildConfig, snapshot_id: str, dataset_id: str) -> PublishedDataset | None:
    """The dataset this build carries on from: the one named by `previous_dataset` (checked: published, same
    family), else the family's newest earlier one. `cold` is the caller's to apply (splits follow it anyway)."""
    if config.previous_dataset:
        named = read_published(Path(config.previous_dataset).expanduser())
        if named is None:
            raise FamilyError(f"--previous-dataset {config.previous_dataset}: not a published dataset folder "
                              "(no READY marker or manifest)")
        if named.family != dataset_family(snapshot_id):
            raise FamilyError(f"--previous-dataset {config.previous_dataset}: family {named.family!r}, but this "
                              f"build is of family {dataset_family(snapshot_id)!r}")
        return named
    return find_previous_dataset(config.resolved_data_dir(), snapshot_id, dataset_id, open_store(config.work_url))
