"""The train/evaluation contamination check on small synthetic dataset folders (no model, no Prefect)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lvm_core.data.splits import splits_content_hash
from lvm_core.data.windows import SequenceSet
from lvm_core.evaluation.contamination import check_contamination, evaluation_articles


def _folder(root: Path, assignment: dict[int, str]) -> tuple[Path, dict[str, SequenceSet], str]:
    """splits.parquet, articles.parquet and a manifest with the split hash; one window per article."""
    root.mkdir(parents=True)
    splits = pl.DataFrame({"article_id": list(assignment), "split": list(assignment.values())})
    splits.write_parquet(root / "splits.parquet")
    pl.DataFrame({"article_id": list(assignment), "title": [f"Title {a}" for a in assignment]}).write_parquet(
        root / "articles.parquet")
    h = splits_content_hash(splits)
    (root / "manifest.json").write_text(json.dumps({"splits": {"content_hash": h}}))
    seqs = {}
    for name in ("train", "val", "ood"):
        ids = np.array([a for a, s in assignment.items() if s == name], dtype=np.int64)
        seqs[name] = SequenceSet(np.zeros((len(ids), 2), np.int64), np.zeros(len(ids), np.int64), ids,
                                 np.zeros(len(ids), np.int32))
    return root, seqs, h


TRAIN_SPLITS = {1: "train", 2: "train", 3: "train", 4: "val", 5: "ood"}
OTHER_SPLITS = {1: "train", 2: "val", 3: "ood", 4: "train", 5: "ood"}  # 2 and 3 were training articles


def test_overlap_is_counted_per_split_with_an_example(tmp_path: Path):
    train_root, _, train_hash = _folder(tmp_path / "a", TRAIN_SPLITS)
    eval_root, seqs, _ = _folder(tmp_path / "b", OTHER_SPLITS)
    r = check_contamination(eval_root, seqs, model="m v1", training_dataset=str(train_root),
                            training_split_hash=train_hash)
    assert r.status == "contaminated" and not r.trusted
    assert (r.n_overlap, r.n_eval_articles, r.by_split) == (2, 3, {"val": 1, "ood": 1})
    assert r.examples[0] == {"article_id": 2, "title": "Title 2", "split": "val"}
    assert r.tag_value() == "2 articles"
    msg = r.message()
    assert "\n" not in msg and "2 of the 3 evaluation articles" in msg and "article 2 'Title 2'" in msg
    assert "--allow-contamination" in msg


def test_own_dataset_is_never_contaminated(tmp_path: Path):
    train_root, seqs, h = _folder(tmp_path / "a", TRAIN_SPLITS)
    copy = tmp_path / "copy"
    shutil.copytree(train_root, copy)
    for root in (train_root, copy):  # same split hash, wherever the folder is
        r = check_contamination(root, seqs, model="m", training_dataset=str(train_root), training_split_hash=h)
        assert r.status == "own_dataset" and r.trusted and r.tag_value() == "none"
    # an older model without a split hash: its own folder is trusted, a disjoint dataset is clean
    assert check_contamination(train_root, seqs, model="m", training_dataset=str(train_root)).status == "own_dataset"
    clean_root, clean_seqs, _ = _folder(tmp_path / "c", {1: "train", 2: "train", 3: "train", 4: "ood", 5: "val"})
    r = check_contamination(clean_root, clean_seqs, model="m", training_dataset=str(train_root), training_split_hash=h)
    assert r.status == "clean" and r.n_overlap == 0 and r.n_eval_articles == 2


@pytest.mark.parametrize("case", ["gone", "rebuilt", "unrecorded"])
def test_unreadable_training_split_is_reported_not_guessed(tmp_path: Path, case: str):
    train_root, _, train_hash = _folder(tmp_path / "a", TRAIN_SPLITS)
    eval_root, seqs, _ = _folder(tmp_path / "b", OTHER_SPLITS)
    training = str(train_root)
    if case == "gone":
        shutil.rmtree(train_root)
    elif case == "rebuilt":
        shutil.rmtree(train_root)
        _folder(train_root, OTHER_SPLITS)  # same folder, another split seed
    else:
        training = None
    r = check_contamination(eval_root, seqs, model="m", training_dataset=training, training_split_hash=train_hash)
    assert r.status == "unchecked" and not r.trusted
    expected = {"gone": "no longer exists", "rebuilt": "rebuilt with other splits", "unrecorded": "no training dataset"}
    assert expected[case] in r.message() and r.tag_value().startswith("unchecked: ")


def test_evaluation_articles_skip_train_and_empty_splits():
    seqs = {
        "train": SequenceSet(np.zeros((2, 2), np.int64), np.zeros(2, np.int64), np.array([1, 1]), np.zeros(2, np.int32)),
        "val": SequenceSet(np.zeros((3, 2), np.int64), np.zeros(3, np.int64), np.array([4, 4, 6]), np.zeros(3, np.int32)),
        "test": SequenceSet(np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)),
    }
    got = evaluation_articles(seqs)
    assert list(got) == ["val"] and got["val"].tolist() == [4, 6]
