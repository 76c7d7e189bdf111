"""The build's input: which snapshot file, its digest, and the snapshot and dataset ids derived from it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.data.ingest import sources
from lvm_core.data.ingest.download import local_source
from lvm_core.data.ingest.sources import snapshot_id_for
from lvm_core.io.storage import file_digest


@dataclass(frozen=True)
class SourceInfo:
    """A resolved input snapshot."""

    path: Path
    snapshot_id: str
    digest: str
    dataset_id: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "digest": self.digest, "snapshot_id": self.snapshot_id}


def resolve_source(config: BuildConfig) -> SourceInfo:
    """Locate the source, digest it and derive the snapshot and dataset ids."""
    # A watched remote snapshot (https://, s3://, ...) is downloaded once into the data dir.
    path = sources.resolve_source(local_source(config.source, config.resolved_data_dir()))
    digest = file_digest(path)
    snapshot_id = config.snapshot_id or snapshot_id_for(path)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", snapshot_id):
        raise ValueError(f"snapshot id {snapshot_id!r} may only contain letters, digits, '.', '_' and '-'")
    dataset_id = snapshot_id if config.limit_articles is None else f"{snapshot_id}-first{config.limit_articles}"
    return SourceInfo(path=path, snapshot_id=snapshot_id, digest=digest, dataset_id=dataset_id)


def wiki_language(snapshot_id: str) -> str:
    """Sentence-splitter language from a dump name: `bgwiki-20240601` → "bg"; English otherwise."""
    m = re.match(r"^([a-z]{2,3})wiki\b", snapshot_id)
    return m.group(1) if m else "en"


def source_name(config: BuildConfig) -> str:
    return Path(str(config.source)).name
