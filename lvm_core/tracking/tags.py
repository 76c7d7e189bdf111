"""Names and values of what the platform writes on MLflow runs, model versions and registered models.

Runs, registration, promotion, rollout and the service all read and write these tags: one list of names,
and one way of turning a value into a tag or param string within the stores' length limits, keeps them
agreeing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.io.plain import to_plain

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

# The staged rollout's status on the registered model (the other lvm.rollout.* tags: lvm_core.rollout.state).
# Here because promotion (this layer) refuses to move `champion` while a rollout is active.
TAG_ROLLOUT_STATUS = "lvm.rollout.status"
TAG_ROLLOUT_CHALLENGER = "lvm.rollout.challenger"
ROLLOUT_ACTIVE = "active"

# Tag keys on runs and model versions.
TAG_ARCH = "arch"
TAG_SNAPSHOT = "snapshot_id"
TAG_DATASET_ID = "dataset_id"
TAG_SPLIT_HASH = "split_hash"
TAG_SPLIT_REGISTRY = "split_registry"  # hash of the training dataset's split registry (its family lineage)
TAG_ENCODER = "encoder_fingerprint"
TAG_ENCODER_MODEL = "encoder_model"
TAG_ENCODER_DIM = "encoder_dim"
TAG_DATASET_DIGEST = "dataset_manifest_sha256"
TAG_DATASET_DIR = "dataset_dir"
TAG_FAILURE = "failure_reason"
TAG_GATES_PASSED = "gates_passed"
TAG_FAILED_GATES = "failed_gates"
TAG_GATE_RESULTS = "gate_results"
TAG_PREVIOUS_CHAMPION = "previous_champion"
TAG_CHAMPION_HISTORY = "champion_history"  # on the registered model: JSON list of versions, newest last
TAG_LAST_ROLLBACK = "last_rollback"
TAG_FORCED = "promotion_forced"
TAG_PROMOTED_AT = "promoted_at"
TAG_ROLLED_BACK_AT = "rolled_back_at"
TAG_OWNER = "lvm.owner"  # on a run: JSON of the process that runs it (host, pid, start time)
TAG_INCOMPLETE = "incomplete"  # on a version: its training run was killed before it finished
TAG_CONTAMINATION = "contamination"  # on an evaluation run and, after an allowed contaminated run, the version
RUN_TAGS_COPIED_TO_VERSION = (TAG_SNAPSHOT, TAG_DATASET_ID, TAG_SPLIT_HASH, TAG_SPLIT_REGISTRY, TAG_DATASET_DIGEST)

MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 5000  # below every store's limit for run and registry tags


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tag_value(value: Any) -> str:
    """A tag string: JSON for containers, lower-case booleans, cut to the stores' limit."""
    value = to_plain(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = str(value)
    return truncate(text, MAX_TAG_VALUE)


def fingerprint_tags(fp: EncoderFingerprint) -> dict[str, str]:
    return {TAG_ENCODER: fp.id, TAG_ENCODER_MODEL: fp.model_name, TAG_ENCODER_DIM: str(fp.dim)}


def flatten_params(params: Any, prefix: str = "") -> dict[str, str]:
    """Nested configs as flat `a.b.c -> str` MLflow params; lists become JSON, long values are cut."""
    out: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
            return
        if not key:
            raise TypeError(f"params must be a mapping or config object, got {type(params).__name__}")
        if isinstance(value, (list, tuple, Mapping)):
            text = json.dumps(value, sort_keys=True, default=str)
        else:
            text = str(value)
        out[key] = truncate(text, MAX_PARAM_VALUE)

    walk(to_plain(params), prefix)
    return out
