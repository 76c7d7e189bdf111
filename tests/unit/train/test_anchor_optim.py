"""The anchor's own optimiser group: faster and undecayed for new models, absent for models from before it."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_core.models.builder import build_model
from lvm_core.models.config import ModelConfig
from lvm_core.train.config import TrainConfig
from lvm_core.train.optim import ANCHOR_LR_FACTOR, make_optimizer, make_scheduler

CFG = ModelConfig(arch="gru", dim=8, context_len=3, hidden=8, mlp_hidden=8)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_anchor_parameters_get_their_own_faster_undecayed_group(schedule: str) -> None:
    model = build_model(CFG)
    tc = TrainConfig(lr=1e-3, weight_decay=0.1, schedule=schedule)
    opt = make_optimizer(model, tc)
    make_scheduler(opt, tc, total_steps=100)
    anchor = {id(p) for n, p in model.named_parameters() if n.startswith("anchor_")}
    assert len(anchor) == 5  # slot weights + the gate's two layers
    groups = [g for g in opt.param_groups if {id(p) for p in g["params"]} == anchor]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    other = [g for g in opt.param_groups if g is not groups[0]]
    if schedule == "onecycle":  # starts low, peaks at max_lr: the ratio holds throughout
        assert groups[0]["lr"] == pytest.approx(ANCHOR_LR_FACTOR * other[0]["lr"])
    else:
        assert groups[0]["initial_lr"] == pytest.approx(ANCHOR_LR_FACTOR * tc.lr)


def test_a_model_saved_before_the_anchor_trains_with_the_two_old_groups() -> None:
    old_format = {k: v for k, v in build_model(CFG).state_dict().items() if not k.startswith(("anchor_", "residual_"))}
    model = build_model(CFG)
    model.load_state_dict(old_format)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("anchor_"))
    assert float(model.residual_scale) == 1.0
    assert len(make_optimizer(model, TrainConfig()).param_groups) == 2
    again = build_model(CFG)
    again.load_state_dict(model.state_dict())  # saved again in the new format: still the old model
    assert len(make_optimizer(again, TrainConfig()).param_groups) == 2


def test_given_anchor_weights_replace_the_fit(tmp_path) -> None:
    from lvm_core.models.baselines.recency import RecencyWeightedMean
    from lvm_core.models.baselines.simple import ContextMean
    from lvm_core.models.predict import mean_cosine
    from lvm_core.train.trainer import train
    from tests.fixtures.training import CTX, MODEL, training_data

    vectors, train_seqs, val_seqs = training_data()
    cfg = TrainConfig(epochs=1, num_threads=1)
    fitted = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path / "fitted")
    recency = RecencyWeightedMean().fit(vectors, train_seqs)
    assert fitted.initial_val_cosine == pytest.approx(mean_cosine(recency, vectors, val_seqs), abs=1e-6)
    given = train(MODEL, cfg, vectors, train_seqs, val_seqs, tmp_path / "given", anchor_weights=np.full(CTX, 1 / CTX))
    assert given.initial_val_cosine == pytest.approx(mean_cosine(ContextMean(), vectors, val_seqs), abs=1e-6)
    assert given.initial_val_cosine != pytest.approx(fitted.initial_val_cosine, abs=1e-4)
