"""Publication of a built dataset: staging folders, gate results, content hash, publish or set aside.

The dataset folder is assembled in a staging folder and renamed into place only when its gates
passed; a failed build is kept aside for inspection and never replaces a good dataset; staging
folders of dead builds are cleaned by the next build.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core import __version__
from lvm_core.contracts.build_options import LINEAGE_OPTIONS, BuildConfig
from lvm_core.contracts.layout import DatasetPaths, dataset_dir, datasets_root
from lvm_core.contracts.manifest import DatasetManifest, write_manifest
from lvm_core.data.build.family import published_manifest
from lvm_core.io.storage import (
    file_digest,
    json_digest,
    recover_interrupted_swaps,
    replace_dir,
)
from lvm_core.runtime.faults import crash_point
from lvm_core.runtime.liveness import OWNER_FILE, abandoned_dirs, claim_dir

STAGING_PREFIX = ".staging-"
# A staging folder's owner record is written once; from another host only its age can tell it is dead.
STAGING_STALE_AFTER_S = 24 * 3600


def new_staging_dir(data_dir: Path, dataset_id: str) -> Path:
    """A fresh staging folder owned by this process (so a later build can tell when it was abandoned)."""
    root = datasets_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    stage = root / f"{STAGING_PREFIX}{dataset_id}-{uuid.uuid4().hex[:8]}"
    claim_dir(stage, label=f"build of {dataset_id}")
    return stage


def clean_abandoned_builds(data_dir: Path) -> list[str]:
    """Remove staging folders of builds whose process is gone; finish or undo an interrupted publish.

    Returns what was done, one line each, for the build's log.
    """
    root = datasets_root(data_dir)
    if not root.is_dir():
        return []
    done = [f"restored {p}" for p in recover_interrupted_swaps(root)]
    stages = sorted(p for p in root.glob(f"{STAGING_PREFIX}*") if p.is_dir())
    for stage, why in abandoned_dirs(stages, stale_after=STAGING_STALE_AFTER_S):
        shutil.rmtree(stage, ignore_errors=True)
        done.append(f"removed abandoned staging folder {stage.name}: {why}")
    return done


def discard_staging(stage_dir: Path) -> None:
    """Remove this build's own staging folder after an error or a stop (never a published folder)."""
    stage_dir = Path(stage_dir)
    if stage_dir.name.startswith(STAGING_PREFIX):
        shutil.rmtree(stage_dir, ignore_errors=True)


def finalize_manifest(
    stage_dir: Path, manifest: DatasetManifest, gates: dict[str, Any], passed: bool, docs_path: str | None = None
) -> DatasetManifest:
    """Add gate results; the Data Docs link is stored relative to the dataset folder (it gets renamed)."""
    added: dict[str, Any] = {"gates": gates, "gates_passed": passed}
    if docs_path:
        try:
            added["gate_docs"] = str(Path(docs_path).relative_to(Path(stage_dir)))
        except ValueError:
            added["gate_docs"] = str(docs_path)
    manifest = manifest.with_fields(**added)
    manifest = manifest.with_fields(content_hash=content_hash(manifest, Path(stage_dir)))
    write_manifest(DatasetPaths(stage_dir).manifest, manifest)
    return manifest


# Manifest fields that say when, where or how fast a build ran, not what the dataset holds.
_RUN_ONLY_FIELDS = ("created_at", "embedding", "gate_docs", "content_hash", "shards", "lineage")
# Build options that say how the work was cut into tasks; the data files hold what came of it.
_RUN_ONLY_OPTIONS = ("data_dir", "shard_bytes", "shard_articles")


def content_hash(manifest: DatasetManifest, root: Path) -> str:
    """Identity of a dataset: its data files and the manifest without run-only fields.

    Two builds of one snapshot with the same options have the same hash, whatever the data folder, the
    machine, the task runner, the shard sizes or how many crashes and resumes it took (vectors of
    differently cut shards agree bitwise when they come from one embedding cache).
    """
    paths = DatasetPaths(Path(root))
    body = {k: v for k, v in manifest.to_dict().items() if k not in _RUN_ONLY_FIELDS}
    body["source"] = {k: v for k, v in dict(body.get("source") or {}).items() if k != "path"}
    body["build_config"] = {k: v for k, v in dict(body.get("build_config") or {}).items() if k not in _RUN_ONLY_OPTIONS}
    files = [paths.articles, paths.chunks, paths.embeddings, paths.encoder, paths.splits, paths.sequences]
    if manifest.splits.registry_hash:  # datasets published before split registries have none
        files.append(paths.split_registry)
    return json_digest([body, {f.name: _data_digest(f) for f in files}])


def build_key(assembled_dir: Path, config: BuildConfig, parent_registry: str | None) -> str:
    """What the analysis, gates and publication of a build depend on: its assembled shards (their work key
    chains from the snapshot's digest, the chunking and the encoder's fingerprint), every build option that
    is not about where or how the work ran, the split registry it carries on from, and this code's version.

    A rerun with the same key would publish the same dataset (`published_with_key`): a pipeline retried after
    its training died does not redo hours of analysis over a full snapshot.
    """
    skipped = {*_RUN_ONLY_OPTIONS, *LINEAGE_OPTIONS}  # `cold` and the previous dataset make the same dataset
    options = {k: v for k, v in config.model_dump(mode="json").items() if k not in skipped}
    return json_digest(["dataset", __version__, Path(assembled_dir).name, options, parent_registry])


def published_with_key(data_dir: Path, dataset_id: str, key: str) -> Path | None:
    """The published dataset folder of `dataset_id` when a build with this `build_key` made it and its gates
    passed; None when there is none, or it came from other inputs, options or code."""
    root = dataset_dir(data_dir, dataset_id)
    manifest = published_manifest(root)
    if not isinstance(manifest, dict) or manifest.get("gates_passed") is not True:
        return None
    return root if (manifest.get("lineage") or {}).get("build_key") == key else None


def with_build_key(manifest: DatasetManifest, key: str) -> DatasetManifest:
    """The manifest with its `build_key` in the run-only lineage (it names inputs, not content)."""
    return manifest.with_fields(lineage={**(manifest.lineage or {}), "build_key": key})


def _data_digest(path: Path) -> str:
    """Digest of a data file's content; an .npz is hashed array by array (its zip entries carry timestamps)."""
    if path.suffix != ".npz":
        return file_digest(path)
    with np.load(path, allow_pickle=False) as z:
        return json_digest({k: [str(z[k].dtype), list(z[k].shape), hashlib.sha256(z[k].tobytes()).hexdigest()]
                            for k in sorted(z.files)})


def publish(stage_dir: Path, data_dir: Path, dataset_id: str) -> Path:
    """Mark the staging folder READY and rename it onto the dataset folder."""
    stage = DatasetPaths(Path(stage_dir))
    stage.ready.write_text(_dt.datetime.now(_dt.UTC).isoformat() + "\n")
    crash_point("publish")
    target = dataset_dir(data_dir, dataset_id)
    replace_dir(stage.root, target)
    (target / OWNER_FILE).unlink(missing_ok=True)  # kept until here, so a dead publish's staging is cleaned
    return target


def set_aside_failed(stage_dir: Path, data_dir: Path, dataset_id: str) -> Path:
    """Keep a failed build (with its gate results) under datasets/_failed/ for inspection."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    target = datasets_root(data_dir) / "_failed" / f"{dataset_id}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    (Path(stage_dir) / OWNER_FILE).unlink(missing_ok=True)
    shutil.move(str(stage_dir), target)
    return target
