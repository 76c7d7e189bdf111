"""Markdown pieces of the model card: one cell format (4 decimals, "–" for missing, yes/no) and tables.

Pipes and newlines inside values are escaped, so a config value cannot break the card's tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["cell", "kv_table", "table"]


def cell(value: Any) -> str:
    """One value as Markdown table text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True, default=str).replace("|", "\\|").replace("`", "'") + "`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; string headers are kept as they are (they may hold Markdown)."""
    head = "| " + " | ".join(cell(h) if not isinstance(h, str) else h for h in headers) + " |"
    sep = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, key))
        else:
            out.append((key, v))
    return out


def kv_table(d: Mapping[str, Any]) -> str:
    """A nested mapping as key/value rows, nested keys joined with dots."""
    return table(["key", "value"], [(k, v) for k, v in _flatten(d)])
