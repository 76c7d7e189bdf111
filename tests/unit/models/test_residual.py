"""The residual wrapper every architecture shares: untrained, a model predicts exactly its anchor baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvm_core.models.baselines.recency import RecencyWeightedMean
from lvm_core.models.baselines.ridge import RidgeBaseline
from lvm_core.models.builder import build_model
from lvm_core.models.config import ModelConfig
from lvm_core.models.predict import mean_cosine, predict_windows
from lvm_core.train.baselines import fit_anchor
from tests.fixtures.training import CTX, DIM, training_data

ARCHS = ["amn", "amn_mix", "gru", "lstm", "transformer"]


@pytest.fixture(scope="module")
def data():
    return training_data()


@pytest.mark.parametrize("arch", ARCHS)
def test_untrained_model_predicts_exactly_the_recency_weighted_mean(data, arch: str) -> None:
    vectors, train_seqs, val_seqs = data
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, dim=DIM, context_len=CTX, hidden=16, mlp_hidden=16, num_heads=2))
    baseline = RecencyWeightedMean().fit(vectors, train_seqs)
    assert not np.allclose(baseline.weights, 1.0 / CTX, atol=0.02)  # the anchor differs from the plain mean
    weights = fit_anchor(model, vectors, train_seqs)
    np.testing.assert_array_equal(weights, baseline.weights)
    model.train()  # exact even with dropout active: the residual's last layer is zero
    np.testing.assert_allclose(predict_windows(model, vectors, val_seqs), predict_windows(baseline, vectors, val_seqs),
                               atol=1e-6, rtol=0)


def test_set_anchor_refuses_weights_of_the_wrong_shape() -> None:
    model = build_model(ModelConfig(arch="gru", dim=8, context_len=3, hidden=8))
    with pytest.raises(ValueError, match=r"anchor weights must be \(3,\)"):
        model.set_anchor(np.ones(4))


def test_ridge_on_the_residual_shrinks_to_the_recency_mean(data) -> None:
    """A very strong alpha leaves the recency-weighted mean (plus the mean residual); a weak one learns more."""
    vectors, train_seqs, val_seqs = data
    recency = RecencyWeightedMean().fit(vectors, train_seqs)
    strong = RidgeBaseline(alpha=1e9, fit_intercept=False, anchor_weights=recency.weights).fit(vectors, train_seqs)
    np.testing.assert_allclose(predict_windows(strong, vectors, val_seqs), predict_windows(recency, vectors, val_seqs),
                               atol=1e-4)
    chosen = RidgeBaseline(anchor_weights=recency.weights).fit(vectors, train_seqs)
    # this data's target is a rotation of the context mean: linear, so the residual ridge beats the anchor
    assert mean_cosine(chosen, vectors, val_seqs) > mean_cosine(recency, vectors, val_seqs) + 0.05


def test_ridge_alpha_choice_takes_the_strongest_alpha_within_one_standard_error() -> None:
    ridge = RidgeBaseline(alphas=(1.0, 10.0, 100.0))
    groups = np.repeat(np.arange(4), 5)
    noise = np.random.default_rng(0).normal(0, 0.05, size=(20, 1))
    # alpha 10 is best by 0.001, far inside the article-to-article noise: the strongest (100) is taken
    cosines = 0.5 + noise + np.array([[0.0, 0.001, 0.0]]) + np.random.default_rng(1).normal(0, 0.01, size=(20, 3))
    assert ridge._one_se_choice(cosines, groups) == 2
    # a clear gain for the weakest alpha is kept
    clear = 0.5 + noise + np.array([[0.2, 0.0, -0.1]])
    assert ridge._one_se_choice(clear, groups) == 0
    assert ridge._one_se_choice(cosines, np.zeros(20)) == int(np.argmax(cosines.mean(axis=0)))  # one article: argmax
