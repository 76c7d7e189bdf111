"""The manifest as the gates read it: each key they need, checked against the files they recount.

The keys read are the ones `check_manifest` and `expectations.frames.eval_splits` look up (their shape:
`lvm_core.contracts.manifest.DatasetManifest`). A missing key, a wrong type, unreadable JSON or a count
that does not match the files is a line in `problems`, which fails the ``manifest_consistent`` gate instead
of raising. The gates recount the JSON shape on their own, so a typed manifest is taken as the JSON it writes.
"""

from __future__ import annotations

import math
from typing import Any

from expectations.frames.common import as_number, get_key, get_path, read_json_file
from lvm_core.contracts.layout import EVAL_SPLITS, SPLIT_NAMES, DatasetPaths
from lvm_core.contracts.manifest import DatasetManifest

_PARITY_TOL = 1e-9


def resolve_manifest(paths: DatasetPaths, manifest: Any, problems: list[str]) -> dict[str, Any]:
    """The manifest as a JSON dict (`manifest`, else manifest.json); {} with a problem when unusable.

    When a manifest is given and manifest.json also exists, the file must still parse.
    """
    if isinstance(manifest, DatasetManifest):
        manifest = manifest.to_dict()
    if manifest is None:
        data, err = read_json_file(paths.manifest)
        if err:
            problems.append(err)
            return {}
        manifest = data
    elif paths.manifest.exists():
        _, err = read_json_file(paths.manifest)
        if err:
            problems.append(err)
    if not isinstance(manifest, dict):
        problems.append(f"manifest is not a JSON object (got {type(manifest).__name__})")
        return {}
    return manifest


def parity_of(report: Any) -> dict[str, dict[str, Any]] | None:
    """{"val"|"test"|"ood": {"ks", "mean_diff"}} from a split report, or None when it carries no parity.

    Two shapes are read: ``parity.<split>.{ks,mean_diff}`` (what the builder writes, measured after the
    leakage purge), and the per-split entries of `lvm_core.data.splits.split_report`,
    ``splits.<split>.{ks_statistic_vs_train,mean_diff_vs_train}``. The mean difference may be signed.
    """
    parity = get_key(report, "parity")
    if isinstance(parity, dict):
        return {s: {"ks": get_path(parity, s, "ks"), "mean_diff": get_path(parity, s, "mean_diff")} for s in EVAL_SPLITS}
    per_split = get_key(report, "splits")
    if isinstance(per_split, dict) and any(isinstance(per_split.get(s), dict) for s in EVAL_SPLITS):
        return {
            s: {
                "ks": get_path(per_split, s, "ks_statistic_vs_train"),
                "mean_diff": get_path(per_split, s, "mean_diff_vs_train"),
            }
            for s in EVAL_SPLITS
        }
    return None


def parity_from_manifest(manifest: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The split parity recorded under the manifest's ``splits`` ({} with a problem when absent)."""
    parity = parity_of(get_key(manifest, "splits"))
    if parity is None:
        if manifest:
            problems.append(
                "manifest lacks split parity (splits.parity or splits.splits.<split>.ks_statistic_vs_train)"
            )
        return {}
    return parity


def check_manifest(
    manifest: dict[str, Any],
    paths: DatasetPaths,
    problems: list[str],
    n_articles: int,
    n_chunks: int,
    windows: dict[str, Any],
    parity: dict[str, Any],
) -> None:
    """Append a readable line to `problems` for each missing key or count that disagrees with the files."""
    if not manifest:
        return  # unreadable / not an object: already recorded
    expected_ints: list[tuple[str, Any, int | None]] = [
        ("counts.articles", get_path(manifest, "counts", "articles"), n_articles),
        ("counts.chunks", get_path(manifest, "counts", "chunks"), n_chunks),
        ("crossing_windows", manifest.get("crossing_windows"), windows["crossing"]),
        ("leakage.article_overlap", get_path(manifest, "leakage", "article_overlap"), None),
    ]
    for split in SPLIT_NAMES:
        expected_ints.append((f"sequences.{split}", get_path(manifest, "sequences", split), windows["counts"][split]))
    for key, value, actual in expected_ints:
        if value is None:
            problems.append(f"manifest lacks {key}")
        elif isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"manifest {key} is not an integer ({value!r})")
        elif actual is not None and value != actual:
            problems.append(f"manifest {key}={value} but the files give {actual}")

    floats = [
        ("leakage.text_hash_overlap.rate", get_path(manifest, "leakage", "text_hash_overlap", "rate")),
        ("leakage.near_duplicates.rate", get_path(manifest, "leakage", "near_duplicates", "rate")),
        ("oracle_recall_at_5", manifest.get("oracle_recall_at_5")),
    ]
    for split in EVAL_SPLITS:
        for field in ("ks", "mean_diff"):
            value = get_path(parity, split, field)
            if split == "test" and value is None:
                continue  # a dataset built before the test split
            floats.append((f"split parity {split}.{field}", value))
    for key, value in floats:
        if value is None:
            problems.append(f"manifest lacks {key}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"manifest {key} is not a finite number ({value!r})")

    if parity:
        report, err = read_json_file(paths.splits_manifest)
        if err:
            problems.append(err)
        elif not _same_parity(parity, parity_of(report)):
            problems.append(f"manifest split parity differs from the parity in {paths.splits_manifest.name}")


def _same_parity(a: Any, b: Any) -> bool:
    if not isinstance(b, dict):
        return False
    for split in EVAL_SPLITS:
        for field in ("ks", "mean_diff"):
            x, y = as_number(get_path(a, split, field)), as_number(get_path(b, split, field))
            if not (math.isnan(x) and math.isnan(y)) and not abs(x - y) <= _PARITY_TOL:
                return False
    return True
