"""The model card: metrics beside baselines, gates, encoder and data sections."""

from __future__ import annotations

from lvm_core.evaluation.model_card.card import render_model_card
from tests.fixtures.model_records import FAIL, FP


def test_model_card_puts_metrics_beside_baselines():
    card = render_model_card({
        "name": "lvm-amn", "version": 3,
        "model": {"arch": "amn", "params": 1_512_000, "config": {"dim": 384, "context_len": 5}},
        "data": {"snapshot_id": "enwiki-2026", "manifest_digest": "ab" * 32, "counts": {"articles": 106}},
        "encoder": FP,
        "training": {"epochs_run": 7, "early_stopped": True, "best_epoch": 4},
        "metrics": {
            "amn": {"val": {"cosine": 0.571, "r@5": 0.2}, "ood": {"cosine": 0.54}},
            "copy_last": {"val": {"cosine": 0.472}, "ood": {"cosine": 0.441}},
            "context_mean": {"val": {"cosine": 0.542}, "ood": {"cosine": 0.517}},
            "recency_weighted_mean": {"val": {"cosine": 0.556}, "ood": {"cosine": 0.528}},
            "ridge": {"val": {"cosine": 0.55}, "ood": {"cosine": 0.52}},
        },
        "gates": FAIL,
        "limitations": ["Evaluated on 10 articles only."],
    })
    assert card.startswith("# Model card: lvm-amn v3")
    for section in ("## Model", "## Data", "## Encoder", "## Training", "## Metrics beside baselines",
                    "## Gates", "## Intended use", "## Limitations"):
        assert section in card
    assert "| **amn** (model) | 0.5710 | 0.5400 |" in card
    assert "| recency_weighted_mean | 0.5560 | 0.5280 |" in card
    assert "beats the baseline (recency_weighted_mean, best trivial baseline on val, 0.5560) by +0.0150" in card
    # on ood the baseline stays the one chosen on val, not the best on ood
    assert "- ood: the model beats the baseline (recency_weighted_mean, best trivial baseline on val, 0.5280)" in card
    assert "FAILED: ood_val_gap" in card
    assert FP.id in card and "enwiki-2026" in card
    assert "predicts a vector, not text" in card.lower() and "Evaluated on 10 articles only." in card

    minimal = render_model_card({})
    assert "## Intended use" in minimal and "## Metrics" not in minimal


def test_model_card_shows_the_protocol_and_labels_an_in_distribution_ood():
    metrics = {"amn": {"val": {"cosine": 0.57}, "test": {"cosine": 0.56}, "ood": {"cosine": 0.55}},
               "copy_last": {"val": {"cosine": 0.47}, "test": {"cosine": 0.46}, "ood": {"cosine": 0.45}}}
    protocol = {"primary_comparison": "amn − copy_last on test", "test_evaluations": 4, "warn_test_evaluations": 3,
                "max_test_evaluations": 5, "split_hash": "ab" * 32}
    card = render_model_card({"metrics": metrics, "model_name": "amn", "ood_kind": "in_distribution",
                              "protocol": protocol})
    assert "## Evaluation protocol" in card and "amn − copy_last on test" in card
    assert "this one included: **4** — WARNING: above 3" in card and "`abababababab`" in card
    assert "ood (2nd in-distribution test sample) cosine" in card and "not a shift" in card
    assert "|ood −" not in card  # no shift gap for a second in-distribution sample
    over = render_model_card({"protocol": {**protocol, "test_evaluations": 6}})
    assert "above the limit of 5: the test_evaluations gate fails" in over
    shift = render_model_card({"metrics": metrics, "model_name": "amn", "ood_kind": "shift"})
    assert "|ood − test| cosine of the model (ood a held-out shift): 0.0100" in shift
