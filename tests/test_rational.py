"""KAT's group-rational activation: the formula, its fitted initializations, groups, and `kat`."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import ZooError
from zoo.kernels.rational import INITS, TARGETS, fit_coefficients, group_rational, rational
from zoo.models.activation import GroupRational
from zoo.models.build import build_model, check_activations

GRID = torch.linspace(-3, 3, 4001, dtype=torch.float64)


@pytest.mark.parametrize("init", sorted(INITS))
def test_each_initialization_fits_its_target_on_minus_3_to_3(init):
    a, b = (torch.tensor(c, dtype=torch.float64) for c in INITS[init])
    mse = ((rational(GRID, a, b) - TARGETS[init](GRID)) ** 2).mean().item()
    assert mse < 1e-4


def test_the_formula_is_p5_over_one_plus_abs_b_abs_x_powers():
    a = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    b = torch.tensor([-0.5, 0.25, -0.125, 0.0625], dtype=torch.float64)
    for x in (-2.0, -0.3, 0.0, 1.7):
        p = sum(a[k].item() * x**k for k in range(6))
        q = 1 + sum(abs(b[i - 1].item()) * abs(x) ** i for i in range(1, 5))
        assert rational(torch.tensor(x, dtype=torch.float64), a, b).item() == pytest.approx(p / q)


def test_fitting_reproduces_a_good_initialization():
    a, b, mse = fit_coefficients(TARGETS["silu"], restarts=0)
    assert mse < 1e-4 and torch.all(b >= 0)


def test_float64_gradcheck_in_input_and_coefficients():
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    a = (torch.randn(4, 6, dtype=torch.float64) * 0.3).requires_grad_()
    b = (torch.randn(4, 4, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(group_rational, (x, a, b))


def test_each_group_of_channels_uses_its_own_coefficients():
    layer = GroupRational(groups=4, init="identity")
    x = torch.randn(2, 3, 16)
    with torch.no_grad():
        layer.a[2, 1] = 3.0  # group 2 (channels 8..11) now computes 3x
    y = layer(x)
    assert torch.allclose(y[..., 8:12], 3 * x[..., 8:12])
    assert torch.allclose(y[..., :8], x[..., :8]) and torch.allclose(y[..., 12:], x[..., 12:])


def test_nchw_maps_are_grouped_along_channels():
    layer = GroupRational(groups=2, init="identity")
    with torch.no_grad():
        layer.a[1, 1] = 2.0
    x = torch.randn(2, 4, 3, 3)
    y = layer(x)
    assert torch.allclose(y[:, 2:], 2 * x[:, 2:]) and torch.allclose(y[:, :2], x[:, :2])


def test_bad_options_are_one_line_errors():
    with pytest.raises(ZooError, match="rational init must be one of"):
        GroupRational(init="tanh")
    with pytest.raises(ZooError, match="groups must be a positive whole number"):
        GroupRational(groups=0)
    with pytest.raises(ValueError, match="do not split into 8 equal groups"):
        GroupRational(groups=8)(torch.randn(2, 12))


def test_kat_is_the_vit_with_group_rational_mlps_starting_as_identity_then_gelu():
    kat = build_model("kat", image_size=(8, 8), channels=1, num_classes=10)
    assert check_activations(kat, "rational") == 2 * len(kat.blocks)
    mlp = kat.blocks[0].mlp
    assert (mlp.act1.init, mlp.act2.init) == ("identity", "gelu")
    x = torch.randn(5, 64)
    vit_mlp = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))
    assert torch.allclose(mlp(x), vit_mlp, atol=0.05)  # the GELU fit's error, through fc2


def test_kat_refuses_other_activations():
    with pytest.raises(ZooError, match="use --act rational"):
        build_model("kat", act="gelu", image_size=(8, 8), channels=1, num_classes=10)
