"""Finding registered models: parse a reference, resolve a version or alias, load it, list versions.

The CLI, evaluation, comparison, rollout and the service all name models the same ways (`models:/name/3`,
`models:/name@alias`, a bare name for its champion, a local folder); this one resolver gives them the same
answers and the same "not found" messages.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from lvm_core.contracts.errors import DataContractError, ModelNotFoundError, RegistryError
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.models.loader import LoadedModel, load_model_dir
from lvm_core.tracking.setup import is_not_found, mlflow_client
from lvm_core.tracking.tags import ALIAS_CHAMPION, TAG_DATASET_DIR, TAG_ENCODER, TAG_SPLIT_HASH, TAG_SPLIT_REGISTRY


def require_registered_model(name: str) -> Any:
    try:
        return mlflow_client().get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            raise ModelNotFoundError(
                f"no registered model named {name!r} at {mlflow.get_registry_uri()}"
            ) from None
        raise


def version_numbers(name: str) -> list[int]:
    esc = name.replace("'", "\\'")
    return sorted(int(mv.version) for mv in mlflow_client().search_model_versions(f"name='{esc}'"))


def resolve_version(name: str, ref: str | int) -> Any:
    """A ModelVersion for a version number, 'latest' or an alias; ModelNotFoundError otherwise."""
    rm = require_registered_model(name)
    client = mlflow_client()
    ref = str(ref)
    if ref.isdigit():
        try:
            return client.get_model_version(name, ref)
        except MlflowException as exc:
            if is_not_found(exc):
                known = ", ".join(map(str, version_numbers(name))) or "none"
                raise ModelNotFoundError(f"registered model {name!r} has no version {ref} (versions: {known})") from None
            raise
    if ref == "latest":
        numbers = version_numbers(name)
        if not numbers:
            raise ModelNotFoundError(f"registered model {name!r} has no versions")
        return client.get_model_version(name, str(numbers[-1]))
    aliases = dict(rm.aliases or {})
    if ref not in aliases:
        known = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "none"
        raise ModelNotFoundError(f"registered model {name!r} has no alias {ref!r} (aliases: {known})")
    return client.get_model_version(name, str(aliases[ref]))


def parse_reference(ref: str) -> tuple[str, str]:
    """`models:/name/3`, `models:/name@alias`, `name/3`, `name@alias`, `name` (= champion) -> (name, version-or-alias)."""
    body = ref[len("models:/"):] if ref.startswith("models:/") else ref
    body = body.strip("/")
    if not body:
        raise ModelNotFoundError(f"empty model reference {ref!r}")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        return name, alias
    if "/" in body:
        name, version = body.rsplit("/", 1)
        if not (version.isdigit() or version == "latest"):
            raise ModelNotFoundError(
                f"{ref!r} is neither a local model folder nor a registered model reference "
                "(models:/<name>/<version>, models:/<name>@<alias>)"
            )
        return name, version
    return body, ALIAS_CHAMPION


def load_registered_model(
    uri_or_name_version: str | Path,
    expected_fingerprint: EncoderFingerprint | None = None,
    *,
    dst_dir: Path | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """Load a model from the registry (`models:/lvm-amn@champion`, `models:/lvm-amn/3`) or a local folder.

    Downloads the version's files and rebuilds the module with `build_model` + safetensors; never
    unpickles. A bare name means its champion. With `expected_fingerprint`, a model trained on another
    encoder is refused (`FingerprintMismatchError`). The download goes to `dst_dir` if given (kept),
    otherwise to a temporary folder removed after loading.
    """
    ref = str(uri_or_name_version)
    local = Path(ref[len("file://"):] if ref.startswith("file://") else ref)
    if isinstance(uri_or_name_version, Path) or (not ref.startswith("models:/") and local.exists()):
        loaded = load_model_dir(local, device=device)
    else:
        name, which = parse_reference(ref)
        mv = resolve_version(name, which)
        version = int(mv.version)

        def fetch(target: Path) -> LoadedModel:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(target)
            )
            return load_model_dir(Path(path), device=device)

        if dst_dir is not None:
            Path(dst_dir).mkdir(parents=True, exist_ok=True)
            loaded = fetch(Path(dst_dir))
        else:
            with tempfile.TemporaryDirectory(prefix="lvm-load-") as tmp:
                loaded = fetch(Path(tmp))
                loaded.path = None
        loaded.name, loaded.version, loaded.run_id = name, version, mv.run_id
        loaded.tags = dict(mv.tags or {})
        loaded.source = f"models:/{name}/{version}"
        tagged = loaded.tags.get(TAG_ENCODER)
        if tagged and tagged != loaded.fingerprint.id:
            raise DataContractError(
                f"{loaded.describe()}: version tag {TAG_ENCODER}={tagged} disagrees with its encoder.json "
                f"({loaded.fingerprint.id}); the registry entry or the files were altered"
            )
    if expected_fingerprint is not None:
        loaded.check_fingerprint(expected_fingerprint)
    return loaded


def training_dataset(model: LoadedModel) -> tuple[str | None, str | None]:
    """(dataset folder, split hash) a registered model was trained on, from its training run's tags.

    The version's own split-hash tag wins over the run's. (None, None) for a model loaded from a folder:
    it has no training run to ask.
    """
    run_tags: dict[str, str] = {}
    if model.run_id:
        run_tags = dict(mlflow_client().get_run(model.run_id).data.tags)
    split_hash = (model.tags or {}).get(TAG_SPLIT_HASH) or run_tags.get(TAG_SPLIT_HASH)
    return run_tags.get(TAG_DATASET_DIR) or None, split_hash or None


def training_registry_hash(model: LoadedModel) -> str | None:
    """The hash of the split registry a registered model's training dataset followed (tag `split_registry`),
    None for a model trained before registries or loaded from a folder."""
    tags = dict(model.tags or {})
    if TAG_SPLIT_REGISTRY not in tags and model.run_id:
        tags = dict(mlflow_client().get_run(model.run_id).data.tags)
    return tags.get(TAG_SPLIT_REGISTRY) or None


def recorded_dataset(model: LoadedModel) -> str:
    """The dataset folder recorded on the model's training run."""
    dataset_dir, _ = training_dataset(model)
    if dataset_dir:
        return dataset_dir
    raise ValueError(f"{model.describe()}: no dataset recorded on its run; pass --dataset")


def registered_version(model: LoadedModel) -> tuple[str, int]:
    """(name, version) of a registered model version: only those are promoted or carry gate outcomes."""
    if model.name is None or model.version is None:
        raise RegistryError(f"{model.describe()} is not a registered model version")
    return model.name, model.version


def current_champion(name: str) -> int | None:
    """The version holding `champion`, or None; ModelNotFoundError for an unknown model."""
    rm = require_registered_model(name)
    v = (rm.aliases or {}).get(ALIAS_CHAMPION)
    return int(v) if v is not None else None



def list_versions(name: str, metric_keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per version, newest first: version, aliases, status, created, run id, tags, run metrics."""
    rm = require_registered_model(name)
    client = mlflow_client()
    by_version: dict[int, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(int(v), []).append(alias)
    esc = name.replace("'", "\\'")
    rows: list[dict[str, Any]] = []
    for mv in client.search_model_versions(f"name='{esc}'"):
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(client.get_run(mv.run_id).data.metrics)
            except MlflowException:
                metrics = {}
        if metric_keys is not None:
            metrics = {k: metrics[k] for k in metric_keys if k in metrics}
        created = _dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, _dt.UTC).isoformat(timespec="seconds")
        rows.append(
            {
                "version": int(mv.version),
                "aliases": sorted(by_version.get(int(mv.version), [])),
                "status": mv.status,
                "created": created,
                "run_id": mv.run_id,
                "tags": dict(mv.tags or {}),
                "metrics": metrics,
            }
        )
    rows.sort(key=lambda r: r["version"], reverse=True)
    return rows
