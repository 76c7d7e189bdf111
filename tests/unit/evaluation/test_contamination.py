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


# --- datasets of a family: the split registry answers when the training folder cannot ----------------------


def _month(root: Path, ids: list[int], parent, month: int, config=None, titles=None):
    """A dataset folder of month `month` whose splits follow `parent`'s registry; one window per article."""
    from lvm_core.data.split_registry import RegistryHeader, carry_splits, write_registry
    from lvm_core.data.splits import SplitConfig

    frame = pl.DataFrame({"article_id": ids, "n_chunks": [9] * len(ids), "coherence": [0.5] * len(ids),
                          "coherence_bin": [i % 3 for i in ids]}, schema_overrides={"coherence_bin": pl.Int32})
    sid = f"enwiki-2026{month:02d}01"
    carried = carry_splits(frame, config or SplitConfig(), titles, parent, RegistryHeader("enwiki", sid, sid))
    assignment = dict(carried.splits.select("article_id", "split").iter_rows())
    root, seqs, h = _folder(root, assignment)
    write_registry(root / "split_registry.parquet", carried.registry)
    test_ids = np.array([a for a, s in assignment.items() if s == "test"], dtype=np.int64)
    seqs["test"] = SequenceSet(np.zeros((len(test_ids), 2), np.int64), np.zeros(len(test_ids), np.int64), test_ids,
                               np.zeros(len(test_ids), np.int32))
    return root, seqs, h, carried


def test_next_month_is_clean_by_the_registry_when_the_training_folder_is_gone(tmp_path: Path):
    m1_root, _, m1_hash, m1 = _month(tmp_path / "m1", list(range(60)), None, 1)
    m2_root, m2_seqs, _, m2 = _month(tmp_path / "m2", list(range(10, 80)), m1.registry, 2)
    # with the folder: the training splits answer (clean: every shared article kept its split)
    r = check_contamination(m2_root, m2_seqs, model="m", training_dataset=str(m1_root), training_split_hash=m1_hash,
                            training_registry_hash=m1.registry.hash)
    assert (r.status, r.checked_by) == ("clean", "training splits")
    shutil.rmtree(m1_root)
    r = check_contamination(m2_root, m2_seqs, model="m", training_dataset=str(m1_root), training_split_hash=m1_hash,
                            training_registry_hash=m1.registry.hash)
    assert (r.status, r.checked_by, r.n_overlap) == ("clean", "split registry", 0) and r.n_eval_articles > 0
    # two months on, still descended
    m3_root, m3_seqs, _, _ = _month(tmp_path / "m3", list(range(20, 90)), m2.registry, 3)
    r = check_contamination(m3_root, m3_seqs, model="m", training_dataset=str(m1_root), training_split_hash=m1_hash,
                            training_registry_hash=m1.registry.hash)
    assert r.status == "clean" and r.checked_by == "split registry"
    # without a registry hash the old answer stands
    r = check_contamination(m2_root, m2_seqs, model="m", training_dataset=str(m1_root), training_split_hash=m1_hash)
    assert r.status == "unchecked" and "no longer exists" in r.reason


def test_a_training_article_moved_into_evaluation_is_caught_by_the_registry(tmp_path: Path):
    from lvm_core.data.splits import SplitConfig

    m1_root, _, m1_hash, m1 = _month(tmp_path / "m1", list(range(60)), None, 1)
    ids = list(range(10, 80))
    train_article = next(a for a, s in m1.splits.select("article_id", "split").iter_rows() if s == "train" and a in ids)
    titles = pl.Series([f"Title {a}" for a in ids])
    held = SplitConfig(mode="titles", holdout_titles=[f"^Title {train_article}$"])
    m2_root, m2_seqs, _, _ = _month(tmp_path / "m2", ids, m1.registry, 2, config=held, titles=titles)
    shutil.rmtree(m1_root)
    r = check_contamination(m2_root, m2_seqs, model="m", training_dataset=str(m1_root), training_split_hash=m1_hash,
                            training_registry_hash=m1.registry.hash)
    assert (r.status, r.n_overlap, r.by_split.get("ood")) == ("contaminated", 1, 1)
    assert r.examples[0]["article_id"] == train_article and r.checked_by == "split registry"


def test_a_registry_of_another_lineage_cannot_vouch(tmp_path: Path):
    m1_root, _, m1_hash, m1 = _month(tmp_path / "m1", list(range(60)), None, 1)
    fresh_root, fresh_seqs, _, _ = _month(tmp_path / "fresh", list(range(10, 80)), None, 2)  # started over
    shutil.rmtree(m1_root)
    r = check_contamination(fresh_root, fresh_seqs, model="m", training_dataset=str(m1_root),
                            training_split_hash=m1_hash, training_registry_hash=m1.registry.hash)
    assert r.status == "unchecked" and "does not descend from the training registry" in r.message()
    (fresh_root / "split_registry.parquet").write_bytes(b"junk")
    r = check_contamination(fresh_root, fresh_seqs, model="m", training_dataset=str(m1_root),
                            training_split_hash=m1_hash, training_registry_hash=m1.registry.hash)
    assert r.status == "unchecked" and "unreadable split registry" in r.reason and "\n" not in r.message()
