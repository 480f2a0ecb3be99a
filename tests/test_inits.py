"""The initialization catalogue: each entry keeps the statistics it promises, on every
architecture, and is deterministic under a seed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo.build import build_model
from zoo.errors import ZooError
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


# gpt2: tests/test_gpt2.py applies every init; var, rar: tests/test_var_training.py
IMAGE_ARCHS = [name for name in ARCHS.names()
               if not {"text", "generator"} & set(ARCHS.get(name).tags)]


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("init", INITS.names())
def test_every_init_applies_to_every_architecture_and_is_seed_deterministic(arch, init):
    if INITS.get(init).extra.get("requires"):
        pytest.skip(f"{init} needs {INITS.get(init).extra['requires']} (tested on its own)")
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


# -- LIR / TVR and variance preservation ----------------------------------------------------------


def test_lir_scales_the_std_of_block_l_by_one_over_sqrt_l():
    model = build("vit", "gelu", "lir", init_params={"std": 0.05})
    for index in range(4):
        qkv = model.blocks[index].attn.qkv.weight  # 192 x 64
        assert qkv.std().item() == pytest.approx(0.05 / math.sqrt(index + 1), rel=0.05)
    assert model.patch_embed.proj.weight.std().item() == pytest.approx(0.05, rel=0.2)
    assert model.head.weight.std().item() == pytest.approx(0.05, rel=0.2)


def test_tvr_rescales_only_weights_above_the_threshold_and_only_on_its_interval():
    from zoo.registry.inits import residual_blocks

    rule = INITS.get("lir").create(tvr_std=0.02, tvr_interval=10, tvr_threshold=1.2)
    model = build("vit", "gelu", "lir")
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.mul_(10)  # grown far beyond the target
        model.blocks[1].mlp.fc1.weight.normal_(0.3, 0.022)  # within 1.2x of the target
    grown = model.blocks[0].mlp.fc1.weight.clone()
    rule.after_step(model, 9)
    assert torch.equal(model.blocks[0].mlp.fc1.weight, grown)  # not a multiple of 10
    within = model.blocks[1].mlp.fc1.weight.clone()
    rule.after_step(model, 10)
    fc1 = model.blocks[0].mlp.fc1.weight
    assert fc1.std().item() == pytest.approx(0.02, rel=1e-4)
    assert fc1.mean().item() == pytest.approx(grown.mean().item(), abs=1e-6)  # mean kept
    assert torch.equal(model.blocks[1].mlp.fc1.weight, within)
    assert len(residual_blocks(model)) == 4
    assert not hasattr(INITS.get("lir").create(), "after_step")  # tvr_std = 0: LIR alone


def _second_moment_after_a_layer(act_module, weight_variance: float, n: int = 512) -> float:
    """E[(W g(x))^2] for x ~ N(0, 1), averaged over 4 draws of W (one draw's gain fluctuates by
    about sqrt(2 / n))."""
    torch.manual_seed(0)
    x = torch.randn(1024, n, dtype=torch.float64)
    draws = [act_module(x) @ (torch.randn(n, n, dtype=torch.float64) * math.sqrt(weight_variance)).T
             for _ in range(4)]  # rational: 512 channels in its 8 groups
    return sum(y.pow(2).mean().item() for y in draws) / len(draws)


@pytest.mark.parametrize("act", ["gelu", "hermite", "fourier", "tropical", "relu", "rational"])
def test_variance_preserving_makes_unit_second_moment_a_fixed_point(act):
    """x -> W g(x) with W ~ N(0, 1 / (n E[g(z)^2])) maps E[x^2] = 1 to E[x^2] = 1, where
    LeCun's 1 / n maps it to E[g(z)^2]. (A fixed point, not always a stable one: over many
    layers finite-width noise drifts, and grows for hermite's polynomial.)"""
    from zoo.registry.inits import gaussian_moments

    act_module = ACTS.get(act).create().double()
    second_moment, _ = gaussian_moments(act_module)
    n = 512
    assert _second_moment_after_a_layer(act_module, 1 / (n * second_moment)) == pytest.approx(
        1, rel=0.1)
    assert _second_moment_after_a_layer(act_module, 1 / n) == pytest.approx(second_moment, rel=0.1)


def test_variance_preserving_uses_the_activations_own_second_moment():
    from zoo.registry.inits import gaussian_moments

    model = build("vit", "tropical", "variance_preserving")
    second_moment, _ = gaussian_moments(ACTS.get("tropical").create().double())
    fc1 = model.blocks[0].mlp.fc1.weight  # 128 x 64
    assert fc1.var().item() == pytest.approx(1 / (64 * second_moment), rel=0.1)
    relu_moment, _ = gaussian_moments(ACTS.get("relu").create().double())
    assert relu_moment == pytest.approx(0.5, rel=1e-3)  # E[relu(z)^2] = 1/2
