"""Activation references: exactly their formula, smooth where claimed, finite everywhere."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.errors import ZooError
from zoo.registry import ACTS
from zoo.sweep.submission import EXTREMES  # +-1e4, 0, denormals, where exp() overflows

NAMES = ACTS.names()


def make(name: str, **options):
    """The activation with its defaults; grouped ones (rational) as one group, so that any
    channel count works."""
    if "groups" in ACTS.get(name).defaults:
        options.setdefault("groups", 1)
    return ACTS.get(name).create(**options)


@pytest.mark.parametrize("name", NAMES)
def test_float64_gradcheck_of_the_reference(name):
    act = make(name)
    # Keep away from 0 for relu, whose derivative jumps there.
    x = (torch.rand(64, dtype=torch.float64) * 8 - 4).add_(0.01).requires_grad_()
    assert torch.autograd.gradcheck(act, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_outputs_and_gradients_are_finite_on_extreme_inputs(name, dtype):
    """Finite wherever the exact value fits the dtype (relu2(1e4) = 1e8 is inf in float16)."""
    act = make(name)
    x = torch.tensor(EXTREMES, dtype=dtype, requires_grad=True)
    y = act(x)
    y.sum().backward()
    exact = torch.tensor(EXTREMES, dtype=torch.float64, requires_grad=True)
    act.double()(exact).sum().backward()
    fits = torch.isfinite(exact.detach().to(dtype)) & torch.isfinite(act(exact).detach().to(dtype))
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.isfinite(exact.grad).all() and torch.isfinite(act(exact)).all()
    assert torch.isfinite(y[fits]).all()
    assert torch.isfinite(x.grad[torch.isfinite(exact.grad.to(dtype))]).all()


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_non_contiguous_inputs_are_preserved(name):
    act = make(name)
    x = torch.randn(4, 6, 5).transpose(0, 2)
    torch.testing.assert_close(act(x), act(x.contiguous()))


def test_golu_matches_its_formula():
    golu = ACTS.get("golu").create()
    for v in (-3.0, -0.5, 0.0, 0.7, 2.0):
        assert golu(torch.tensor(v, dtype=torch.float64)).item() == pytest.approx(
            v * math.exp(-math.exp(-v)), rel=1e-12, abs=1e-300)


def test_golu_is_zero_with_zero_gradient_far_below_zero():
    golu = ACTS.get("golu").create()
    x = torch.tensor([-1e4, -50.0], requires_grad=True)
    y = golu(x)
    y.sum().backward()
    assert torch.equal(y.detach(), torch.zeros(2)) and torch.equal(x.grad, torch.zeros(2))


def test_activations_accept_inplace_without_modifying_their_input():
    x = torch.randn(10)
    before = x.clone()
    for name in NAMES:
        make(name, inplace=True)(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_parameter_is_a_one_line_error_naming_the_real_ones(name):
    with pytest.raises(ZooError, match=f"{name} has no parameter bogus .its parameters: "):
        ACTS.get(name).create(bogus=1.0)
