"""The one conversion of project values to plain JSON values (dict, list, str, int, float, bool, None).

Every JSON file, MLflow artifact, hashed key and report table goes through `to_plain` (or, for
`json.dumps`, its `json_default` hook), so a numpy scalar, a path or a config object is written the same
way everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default", "to_plain"]


def to_plain(obj: Any, *, nan_to_none: bool = False) -> Any:
    """Pydantic models, dataclasses, `to_dict()` objects, numpy values and paths as JSON-like values.

    Mapping keys become strings, tuples lists. `nan_to_none` turns NaN and ±inf (Python or numpy, also
    inside arrays) into None, for strict JSON readers (`allow_nan=False`, browsers, MLflow's UI).
    """
    if hasattr(obj, "model_dump") and callable(obj.model_dump):
        return to_plain(obj.model_dump(mode="json"), nan_to_none=nan_to_none)
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, Mapping):
        return to_plain(obj.to_dict(), nan_to_none=nan_to_none)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj), nan_to_none=nan_to_none)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v, nan_to_none=nan_to_none) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, nan_to_none=nan_to_none) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist(), nan_to_none=True) if nan_to_none else obj.tolist()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if nan_to_none and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` hook: what `to_plain` converts; anything else is a TypeError naming its type."""
    plain = to_plain(obj)
    if plain is obj:
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
    return plain
