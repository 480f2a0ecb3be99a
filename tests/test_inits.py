"""The initialization catalogue: each entry keeps the statistics it promises, on every
architecture, and is deterministic under a seed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.models.build import build_model
from zoo.registry import ACTS, ARCHS, INITS
from zoo.registry.inits import ReZeroGate, edge_of_chaos_gain, zero_matrix

DIGITS = dict(image_size=(8, 8), channels=1, num_classes=10)
BATCH = torch.randn(64, 1, 8, 8)


def build(arch="vit", act="gelu", init="default", **kwargs):
    return build_model(arch, act=act, init=init, calibration_batch=lambda: BATCH, **DIGITS,
                       **kwargs)


def weights(model):
    return [m.weight for m in model.modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("arch", ARCHS.names())
@pytest.mark.parametrize("init", INITS.names())
def test_every_init_applies_to_every_architecture_and_is_seed_deterministic(arch, init):
    act = "gelu" if arch != "kat" else "rational"
    first, again = build(arch, act, init, seed=3), build(arch, act, init, seed=3)
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    out = first(BATCH)
    assert out.shape == (64, 10) and torch.isfinite(out).all()


def test_every_init_states_what_it_touches_and_keeps():
    for entry in INITS:
        assert entry.formula and "touches" in entry.extra and "keeps" in entry.extra


def test_trunc_normal_has_std_and_cut_at_two_std():
    for w in weights(build(init="trunc_normal")):
        if w.numel() > 10000:
            assert w.std().item() == pytest.approx(0.02, rel=0.15)
        assert w.abs().max().item() <= 0.04 + 1e-7


def test_lsuv_gives_unit_output_variance_layer_by_layer_on_the_data():
    model = build("resnet", "relu", "lsuv")
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, m=m: outputs.__setitem__(m, o))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model(BATCH)
    for h in hooks:
        h.remove()
    variances = [o.var().item() for o in outputs.values()]
    assert len(variances) > 5 and all(abs(v - 1) < 0.1 for v in variances)


def test_lsuv_without_data_is_a_one_line_error():
    with pytest.raises(ZooError, match="lsuv needs a calibration batch"):
        build_model("vit", act="gelu", init="lsuv", **DIGITS)


def test_zero_init_is_made_of_identities_and_scaled_hadamards_whatever_the_seed():
    assert torch.equal(zero_matrix(4, 4), torch.eye(4))
    assert torch.equal(zero_matrix(3, 5), torch.eye(3, 5))
    grow = zero_matrix(6, 3)  # m = 3, c = 2^-1
    assert set(grow.unique().tolist()) <= {-0.5, 0.5}
    assert torch.equal(grow.abs(), torch.full((6, 3), 0.5))
    a, b = build(init="zero", seed=0), build(init="zero", seed=1)
    for wa, wb in zip(weights(a), weights(b)):
        assert torch.equal(wa, wb)
    for layer in (m for m in a.modules() if isinstance(m, nn.Linear)):
        rows, cols = layer.weight.shape
        if rows <= cols:
            assert torch.equal(layer.weight, torch.eye(rows, cols))


def test_lowrank_weights_have_the_asked_rank_and_the_default_scale():
    for w in weights(build(init="lowrank", init_params={"rank": 3})):
        matrix = w.detach().reshape(w.shape[0], -1)  # float32: its own round-off tolerance
        assert torch.linalg.matrix_rank(matrix).item() == min(3, *matrix.shape)
        if matrix.numel() > 10000:
            assert (matrix**2).mean().item() == pytest.approx(1 / matrix.shape[1], rel=0.35)


def test_act_aware_variance_follows_the_activation_at_zero():
    # gelu: g(0) = 0, g'(0) = 1/2 -> variance 4 / fan_in; softplus: g(0) = log 2, g'(0) = 1/2
    for act, expected in (("gelu", 4.0), ("softplus", 4.0 / (1 + math.log(2) ** 2))):
        for w in weights(build(act=act, init="act_aware")):
            if w.numel() > 10000:
                fan_in = w[0].numel()
                assert w.var().item() * fan_in == pytest.approx(expected, rel=0.1)
    with pytest.raises(ZooError, match="act_aware needs g'.0. != 0; relu has g'.0. = 0"):
        build(act="relu", init="act_aware")


def test_edge_of_chaos_recovers_kaiming_for_relu_and_one_for_the_identity():
    assert edge_of_chaos_gain(ACTS.get("relu").create()) == pytest.approx(2.0, rel=1e-3)
    identity = ACTS.get("leaky_relu").create(slope=1.0)
    assert edge_of_chaos_gain(identity) == pytest.approx(1.0, rel=1e-9)
    # the gain makes E[g'(z)^2] sigma_w^2 = 1, checked by sampling
    golu = ACTS.get("golu").create().double()
    z = torch.randn(10**6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z.requires_grad_()
    (grad,) = torch.autograd.grad(golu(z).sum(), z)
    assert edge_of_chaos_gain(golu) * (grad**2).mean().item() == pytest.approx(1.0, abs=5e-3)


def test_siren_bounds_first_layer_by_fan_in_and_later_ones_by_omega0():
    layers = [m for m in build(act="sine", init="siren").modules()
              if isinstance(m, (nn.Linear, nn.Conv2d))]
    first = layers[0].weight
    assert first.abs().max().item() <= 1 / first[0].numel()
    for layer in layers[1:]:
        fan_in = layer.weight[0].numel()
        assert layer.weight.abs().max().item() <= math.sqrt(6 / fan_in) / 30 + 1e-7


@pytest.mark.parametrize("init", ["zero_residual", "rezero"])
def test_zero_residual_and_rezero_make_every_residual_branch_start_at_zero(init):
    vit = build("vit", init=init).eval()
    for block in vit.blocks:  # a pre-norm transformer block becomes the identity
        x = torch.randn(2, 5, block.norm1.normalized_shape[0])
        torch.testing.assert_close(block(x), x)
    resnet = build("resnet", act="gelu", init=init).eval()
    blocks = [b for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
              for b in stage]
    for block in blocks:  # out = act(shortcut(x) + branch(x)) with the branch at 0
        x = torch.randn(2, block.conv1.in_channels, 4, 4)
        shortcut = block.downsample(x) if block.downsample is not None else x
        torch.testing.assert_close(block(x), torch.nn.functional.gelu(shortcut))


def test_rezero_gates_are_learnable_scalars():
    rezero = build("vit", init="rezero")
    gates = [m for m in rezero.modules() if isinstance(m, ReZeroGate)]
    assert len(gates) == 2 * len(rezero.blocks)
    rezero(BATCH).sum().backward()
    assert all(g.alpha.grad is not None and g.alpha.grad.item() != 0 for g in gates)


def test_bad_init_options_are_one_line_errors():
    with pytest.raises(ZooError, match="lowrank rank must be a positive whole number"):
        INITS.get("lowrank").create(rank=0.5)
    with pytest.raises(ZooError, match="trunc_normal std must be positive"):
        INITS.get("trunc_normal").create(std=-1)
