"""Train/evaluation contamination: were the articles a model is evaluated on among those it was trained on?

A model trained on dataset A and evaluated on dataset B (another build of the same snapshot, another
split seed or mode) can meet its own training articles in B's val/test/ood windows; its numbers would
then measure memory, not prediction. The check reads the split assignment of the model's training
dataset (`splits.parquet`: article_id → split) and intersects its `train` articles with the articles of
every evaluation split B reports (the splits other than train that have windows).

Evaluating on the training dataset itself (the same split assignment, by its content hash) is never
contaminated. When the training split cannot be read (the folder is gone or was rebuilt with other
splits, or the model records no training dataset), the family's split registry decides if it can: when the
evaluation dataset's registry (split_registry.parquet) descends from the registry the model was trained with
(its hash is in the evaluation registry's lineage), the registry says which articles were train at that
generation, moved ones included, so a model trained on month N is checked against month N+1 without month N's
folder. Otherwise the check cannot vouch for the numbers and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.data.split_registry import SplitRegistryError, read_registry
from lvm_core.io.storage import read_json

__all__ = ["ContaminationError", "ContaminationReport", "check_contamination", "evaluation_articles"]


class ContaminationError(UserError, ValueError):
    """The evaluation would report numbers on articles the model was trained on (or cannot rule it out)."""


@dataclass
class ContaminationReport:
    """Outcome of the check; `status` is "clean", "own_dataset", "contaminated" or "unchecked"."""

    status: str
    model: str
    eval_dataset: str
    training_dataset: str | None = None
    n_overlap: int = 0
    n_eval_articles: int = 0
    by_split: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)  # [{"article_id", "title", "split"}]
    reason: str = ""  # why unchecked
    checked_by: str = ""  # "training splits" (the training folder's splits.parquet) or "split registry"

    @property
    def trusted(self) -> bool:
        return self.status in ("clean", "own_dataset")

    def tag_value(self) -> str:
        """The `contamination` tag: "none", "<n> articles" or "unchecked: <reason>"."""
        if self.status == "contaminated":
            return f"{self.n_overlap} articles"
        if self.status == "unchecked":
            return f"unchecked: {self.reason}"[:500]
        return "none"

    def message(self) -> str:
        """One line for the refusal / the warning."""
        if self.status == "unchecked":
            return (
                f"cannot check {self.model} for train/evaluation contamination on {self.eval_dataset}: {self.reason}; "
                "evaluate on the training dataset, or pass --allow-contamination to evaluate anyway (recorded)"
            )
        if self.status != "contaminated":
            return f"{self.model}: no evaluation article of {self.eval_dataset} was a training article"
        parts = ", ".join(f"{s} {n}" for s, n in self.by_split.items() if n)
        ex = self.examples[0] if self.examples else {}
        title = f" {ex.get('title')!r}" if ex.get("title") else ""
        return (
            f"{self.n_overlap} of the {self.n_eval_articles} evaluation articles of {self.eval_dataset} ({parts}) were "
            f"training articles of {self.model} (trained on {self.training_dataset}), e.g. article "
            f"{ex.get('article_id')}{title}; evaluate on a dataset with the same splits, or pass "
            "--allow-contamination to evaluate anyway (recorded)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "model": self.model,
            "eval_dataset": self.eval_dataset,
            "training_dataset": self.training_dataset,
            "n_overlap": self.n_overlap,
            "n_eval_articles": self.n_eval_articles,
            "by_split": dict(self.by_split),
            "examples": list(self.examples),
            "reason": self.reason,
            "checked_by": self.checked_by,
            "tag": self.tag_value(),
        }


def evaluation_articles(sequences: dict[str, Any]) -> dict[str, np.ndarray]:
    """Article ids of the windows of every evaluation split (not train) that has windows."""
    out = {}
    for name, seqs in sequences.items():
        if name != "train" and len(seqs) > 0:
            out[name] = np.unique(np.asarray(seqs.article_ids, dtype=np.int64))
    return out


def _split_hash(root: Path) -> str | None:
    try:
        manifest = read_json(DatasetPaths(root).manifest)
    except (OSError, ValueError):
        return None
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    return splits.get("content_hash") if isinstance(splits, dict) else None


def _titles(root: Path, ids: list[int]) -> dict[int, str]:
    try:
        table = pq.read_table(DatasetPaths(root).articles, columns=["article_id", "title"])
    except (OSError, ValueError):
        return {}
    wanted = set(ids)
    return {a: t for a, t in zip(table.column("article_id").to_pylist(), table.column("title").to_pylist()) if a in wanted}


def check_contamination(
    eval_root: Path,
    eval_sequences: dict[str, Any],
    *,
    model: str,
    training_dataset: str | None,
    training_split_hash: str | None = None,
    eval_split_hash: str | None = None,
    training_registry_hash: str | None = None,
) -> ContaminationReport:
    """Compare the evaluation articles of `eval_root` with the train articles of the model's training dataset.

    `training_split_hash` is the split content hash recorded when the model was trained (registry tag
    `split_hash`); `eval_split_hash` that of the evaluation dataset (read from its manifest if None);
    `training_registry_hash` the hash of the training dataset's split registry (tag `split_registry`), used
    when the training folder cannot answer.
    """
    eval_root = Path(eval_root)
    if eval_split_hash is None:
        eval_split_hash = _split_hash(eval_root)
    report = ContaminationReport(status="clean", model=model, eval_dataset=str(eval_root), training_dataset=training_dataset)
    status, reason = _decided_without_overlap(eval_root, training_dataset, training_split_hash, eval_split_hash)
    train_ids: np.ndarray | None = None
    if status is None:
        train_ids, report.checked_by = _train_articles(DatasetPaths(Path(str(training_dataset))).splits), "training splits"
    elif status == "unchecked" and training_registry_hash:
        train_ids, why = _registry_train_articles(eval_root, training_registry_hash)
        report.checked_by = "split registry" if train_ids is not None else ""
        reason = f"{reason}, and {why}" if why else reason
    if train_ids is None:
        report.status, report.reason = str(status), reason
        return report
    _count_overlap(report, eval_root, train_ids, eval_sequences)
    return report


def _registry_train_articles(eval_root: Path, training_registry_hash: str) -> tuple[np.ndarray | None, str]:
    """The model's train articles as the evaluation dataset's registry knows them, when it descends from the
    training registry; else (None, why not)."""
    path = DatasetPaths(eval_root).split_registry
    if not path.is_file():
        return None, f"the evaluation dataset has no split registry ({path.name}) to follow"
    try:
        registry = read_registry(path)
    except SplitRegistryError as exc:
        return None, str(exc)
    generation = registry.generation_of(training_registry_hash)
    if generation is None:
        return None, (f"the evaluation dataset's split registry {registry.hash[:12]} does not descend from the "
                      f"training registry {training_registry_hash[:12]}")
    return registry.train_articles_at(generation), ""


def _decided_without_overlap(
    eval_root: Path, training_dataset: str | None, training_split_hash: str | None, eval_split_hash: str | None
) -> tuple[str | None, str]:
    """("own_dataset" | "unchecked", reason) when the split assignments decide without comparing articles;
    (None, "") when the training dataset's train articles must be compared."""
    if training_split_hash and eval_split_hash == training_split_hash:
        return "own_dataset", ""
    if not training_dataset:
        return "unchecked", "the model records no training dataset folder"
    train_root = Path(training_dataset)
    same_folder = train_root.exists() and eval_root.exists() and train_root.resolve() == eval_root.resolve()
    if same_folder and not training_split_hash:
        return "own_dataset", ""  # an older model without a split hash: its own folder is trusted
    paths = DatasetPaths(train_root)
    if not paths.splits.is_file():
        return "unchecked", f"its training dataset folder {train_root} no longer exists (or has no {paths.splits.name})"
    if training_split_hash:
        found = _split_hash(train_root)
        if found != training_split_hash:
            return "unchecked", (
                f"its training dataset folder {train_root} was rebuilt with other splits since training "
                f"(split hash {str(found)[:12]}, trained on {training_split_hash[:12]})"
            )
    return None, ""


def _train_articles(train_splits: Path) -> np.ndarray:
    """The `train` article ids of a splits.parquet."""
    splits = pq.read_table(train_splits, columns=["article_id", "split"])
    ids = np.asarray(splits.column("article_id").to_numpy(), dtype=np.int64)
    names = np.asarray(splits.column("split").to_pylist(), dtype=object)
    train: np.ndarray = ids[names == "train"]
    return train


def _count_overlap(report: ContaminationReport, eval_root: Path, train_ids: np.ndarray, eval_sequences: dict[str, Any]) -> None:
    """Evaluation articles per split that are among `train_ids`; examples with titles."""
    by_split: dict[str, int] = {}
    overlap_split: dict[int, str] = {}
    n_eval = 0
    for name, articles in evaluation_articles(eval_sequences).items():
        n_eval += len(articles)
        hit = articles[np.isin(articles, train_ids)]
        by_split[name] = int(hit.size)
        for a in hit.tolist():
            overlap_split.setdefault(int(a), name)
    report.by_split, report.n_eval_articles = by_split, n_eval
    report.n_overlap = len(overlap_split)
    if overlap_split:
        report.status = "contaminated"
        first = sorted(overlap_split)[:5]
        titles = _titles(eval_root, first)
        report.examples = [{"article_id": a, "title": titles.get(a, ""), "split": overlap_split[a]} for a in first]
