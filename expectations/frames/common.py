"""Helpers the frame builders share: a required-file check, tolerant JSON reads and dict lookups, numbers as NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lvm_core.contracts.errors import DataContractError


def require_file(path: Path) -> None:
    """Refuse a missing data file: without it no gate can be evaluated."""
    if not path.is_file():
        raise DataContractError(f"{path}: required dataset file is missing")


def read_json_file(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, a readable problem) when the file is missing or not JSON."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} is not readable JSON ({exc})"


def get_key(obj: Any, key: str) -> Any:
    """`obj[key]` when `obj` is a dict, else None."""
    return obj.get(key) if isinstance(obj, dict) else None


def get_path(obj: Any, *keys: str) -> Any:
    """`obj[k1][k2]...`, None as soon as a level is not a dict."""
    for key in keys:
        obj = get_key(obj, key)
    return obj


def as_number(value: Any) -> float:
    """A finite number as float, anything else as NaN (a null that the not-null expectations fail)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    value = float(value)
    return value if math.isfinite(value) else float("nan")
