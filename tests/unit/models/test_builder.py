"""Model architectures: shapes, unit outputs, AMN definition, registry as the only constructor path."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F

from lvm_core.models.archs.amn import AMN
from lvm_core.models.builder import MODEL_REGISTRY, UnknownArchitectureError, build_model, count_parameters, model_class
from lvm_core.models.config import ModelConfig

ARCHS = ["amn", "amn_mix", "gru", "lstm", "transformer"]


def unit_ctx(b: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, n, d, generator=g), dim=-1)


def test_amn_parameter_count_at_768() -> None:
    model = build_model(ModelConfig(arch="amn", dim=768, context_len=5, hidden=256, mlp_hidden=512))
    n = count_parameters(model)
    # anchor 5 + gate 517 (10*32+32 + 32*5+5);
    # 2 x (768*256+256) + 5*768 + (1536*512+512) + 2*512 + (512*256+256) + 2*256 + (256*768+768)
    assert n == 1_515_274
    assert 1.4e6 < n < 1.6e6


def test_untrained_amn_outputs_normalised_context_mean() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="amn", dim=32, context_len=5, hidden=16, mlp_hidden=24))
    model.train()  # zero-initialised last layer: exact even with dropout active
    ctx = unit_ctx(8, 5, 32)
    out = model(ctx)
    torch.testing.assert_close(out, F.normalize(ctx.mean(dim=1), dim=-1), atol=1e-6, rtol=0)


def test_amn_position_embedding_makes_it_order_sensitive() -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch="amn", dim=16, context_len=4, hidden=16, mlp_hidden=32, dropout=0.0))
    model.eval()
    last = model.mlp[-1]
    with torch.no_grad():  # give the residual branch a non-zero output, as after training
        last.weight.normal_(0.0, 0.5)
        last.bias.normal_(0.0, 0.1)
        model.query.weight.normal_(0.0, 1.0)  # the query starts at zero: uniform attention ignores order
        model.position.zero_()
    ctx = unit_ctx(6, 4, 16, seed=2)
    reversed_ctx = ctx.flip(dims=[1])
    with torch.no_grad():
        # Without a position signal, attention + mean are permutation invariant.
        torch.testing.assert_close(model(ctx), model(reversed_ctx), atol=1e-5, rtol=0)
        model.position.normal_(0.0, 1.0)
        diff = (model(ctx) - model(reversed_ctx)).abs().max().item()
    assert diff > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_and_unit_norm(arch: str) -> None:
    torch.manual_seed(3)
    cfg = ModelConfig(arch=arch, dim=24, context_len=5, hidden=16, mlp_hidden=32, num_layers=2, num_heads=4)
    model = build_model(cfg)
    assert isinstance(model, MODEL_REGISTRY[arch])
    assert model.config == cfg
    # Make the residual non-trivial so the check covers the whole forward path.
    for name, p in model.named_parameters():
        if name.startswith(("head.", "mlp.8.")):
            torch.nn.init.normal_(p, 0.0, 0.3)
    ctx = unit_ctx(7, 5, 24, seed=4)
    out = model(ctx)
    assert out.shape == (7, 24)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(7), atol=1e-5, rtol=0)
    assert not torch.allclose(out, F.normalize(ctx.mean(dim=1), dim=-1), atol=1e-3)
    out.sum().backward()  # differentiable end to end
    with pytest.raises(ValueError, match=r"expects a context of shape \(B, 5, 24\)"):
        model(unit_ctx(2, 4, 24))


@pytest.mark.parametrize("arch", ["gru", "lstm", "transformer"])
def test_untrained_alternatives_start_at_their_anchor_the_mean_until_fitted(arch: str) -> None:
    model = build_model(ModelConfig(arch=arch, dim=16, context_len=3, hidden=8, mlp_hidden=16, num_heads=2))
    ctx = unit_ctx(4, 3, 16, seed=5)
    torch.testing.assert_close(model(ctx), F.normalize(ctx.mean(dim=1), dim=-1), atol=1e-6, rtol=0)


def test_causal_transformer_last_position_sees_whole_context() -> None:
    torch.manual_seed(6)
    model = build_model(ModelConfig(arch="transformer", dim=16, context_len=4, hidden=16, num_heads=2, dropout=0.0))
    torch.nn.init.normal_(model.head.weight, 0.0, 0.3)
    model.eval()
    ctx = unit_ctx(3, 4, 16, seed=7)
    changed = ctx.clone()
    changed[:, 0] = unit_ctx(3, 1, 16, seed=8)[:, 0]
    with torch.no_grad():
        assert (model(ctx) - model(changed)).abs().max() > 1e-4
    assert model.causal_mask.shape == (4, 4)
    assert torch.isinf(model.causal_mask[0, 1]) and model.causal_mask[1, 0] == 0
    assert "causal_mask" not in model.state_dict()  # derived, not stored in checkpoints


def test_registry_is_the_only_constructor_path() -> None:
    assert set(MODEL_REGISTRY) == set(ARCHS)
    assert len(set(MODEL_REGISTRY.values())) == len(ARCHS)  # one class per name
    with pytest.raises(UnknownArchitectureError, match="unknown model architecture 'mlp'"):
        model_class("mlp")
    with pytest.raises(UnknownArchitectureError, match="known: amn, amn_mix, gru, lstm, transformer"):
        build_model({"arch": "mlp", "dim": 8})
    with pytest.raises(UnknownArchitectureError):
        build_model(ModelConfig.model_construct(arch="mlp", dim=8))
    # A class refuses a config naming another architecture (the reference project's mix-up).
    with pytest.raises(ValueError, match="implements arch 'amn' but the config names 'gru'"):
        AMN(ModelConfig(arch="gru", dim=8))
    assert isinstance(build_model({"arch": "lstm", "dim": 8, "hidden": 4}), MODEL_REGISTRY["lstm"])


def test_model_config_validation() -> None:
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(arch="amn", dim=0)
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(arch="amn", dim=8, dropout=1.0)
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(arch="amn", dim=8, unknown_field=1)
    with pytest.raises(pydantic.ValidationError, match="divisible by num_heads"):
        ModelConfig(arch="transformer", dim=8, hidden=10, num_heads=4)
    cfg = ModelConfig(arch="amn", dim=8)
    with pytest.raises(pydantic.ValidationError):
        cfg.dim = 16  # frozen
    assert ModelConfig.model_validate(cfg.model_dump()) == cfg


def test_mix_anchored_amn_adds_its_attention_mix_and_loads_as_before() -> None:
    """amn_mix = anchor + (mix - mean) + MLP: untrained (uniform attention) it is its anchor; with uniform anchor
    weights (how models saved before the anchor load) it is L2norm(mix + MLP([mean, mix])), what it was then."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="amn_mix", dim=16, context_len=5, hidden=8, mlp_hidden=12)).eval()
    ctx = torch.nn.functional.normalize(torch.randn(4, 5, 16), dim=-1)
    anchor = torch.tensor([0.1, 0.1, 0.2, 0.2, 0.4])
    model.set_anchor(anchor)
    with torch.no_grad():
        torch.testing.assert_close(model.attention(ctx), torch.full((4, 5), 0.2))
        torch.testing.assert_close(model(ctx), F.normalize(torch.einsum("bnd,n->bd", ctx, anchor), dim=-1))
        model.query.weight.normal_(0.0, 1.0)
        model.mlp[-1].weight.normal_(0.0, 0.3)
        old_format = {k: v for k, v in model.state_dict().items() if not k.startswith(("anchor_", "residual_"))}
        legacy = build_model(model.config).eval()
        legacy.load_state_dict(old_format)  # how a model saved before the anchor loads
        weights = legacy.attention(ctx)
        mix = torch.einsum("bn,bnd->bd", weights, ctx)
        expected = F.normalize(mix + legacy.mlp(torch.cat([ctx.mean(dim=1), mix], dim=-1)), dim=-1)
        torch.testing.assert_close(legacy(ctx), expected)
    assert not torch.allclose(weights, torch.full_like(weights, 0.2))  # attention is not a plain mean
