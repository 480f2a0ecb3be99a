"""Activation references: exactly their formula, smooth where claimed, finite everywhere."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import ZooError
from zoo.registry import ACTS
from zoo.sweep.submission import EXTREMES  # +-1e4, 0, denormals, where exp() overflows
from zoo.tools.kernel_bench import NATIVE  # the built-in activations that have a PyTorch op

# PyTorch's op for each such activation at zoo's defaults (swish: its default beta = 1 is silu)
TORCH_OPS = {**NATIVE, "swish": F.silu}

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


# 0 (the kink of relu, leaky_relu, elu, selu) from both sides and as -0.0; +-10, the bounds of
# gelu_tanh's guarded domain; 20, softplus's threshold; the far range.
PARITY_POINTS = [-30.0, -20.5, -10.5, -10.0, -4.0, -1.0, -0.5, -1e-3, -1e-30, -0.0, 0.0, 1e-30,
                 1e-3, 0.5, 1.0, 4.0, 10.0, 10.5, 20.0, 20.5, 30.0]


@pytest.mark.parametrize("name", sorted(TORCH_OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_and_gradient_equal_pytorchs_op_at_zero_and_at_boundaries(name, dtype):
    """The reference follows PyTorch's convention at a kink (x = 0 takes the x <= 0 branch:
    elu'(0) = alpha, selu'(0) = scale * alpha, leaky_relu'(0) = slope, relu'(0) = 0). Both sides
    round differently only: a few units in the last place of values and slopes of order 1."""
    x_zoo = torch.tensor(PARITY_POINTS, dtype=dtype, requires_grad=True)
    x_torch = x_zoo.detach().clone().requires_grad_()
    y_zoo, y_torch = ACTS.get(name).create()(x_zoo), TORCH_OPS[name](x_torch)
    grad_zoo, = torch.autograd.grad(y_zoo.sum(), x_zoo)
    grad_torch, = torch.autograd.grad(y_torch.sum(), x_torch)
    ulps = 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(y_zoo, y_torch, rtol=ulps, atol=ulps)
    torch.testing.assert_close(grad_zoo, grad_torch, rtol=ulps, atol=ulps)


def test_the_kink_derivatives_are_pytorchs():
    zero = torch.zeros(1, dtype=torch.float64)
    for name, slope in [("relu", 0.0), ("leaky_relu", 0.01), ("elu", 1.0),
                        ("selu", 1.0507009873554805 * 1.6732632423543772)]:
        x = zero.clone().requires_grad_()
        ACTS.get(name).create()(x).backward()
        assert x.grad.item() == pytest.approx(slope, rel=1e-15, abs=0), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_parameters_are_exact_in_every_dtype(dtype):
    """A fixed parameter is the number given, in the input's dtype: float64 leaky_relu(-1) is
    -0.01, as PyTorch's, not float32's 0.00999999977648 widened; also after .double()."""
    x = torch.tensor([-1.0, -50.0, 2.0], dtype=dtype, requires_grad=True)
    for act in (ACTS.get("leaky_relu").create(), ACTS.get("leaky_relu").create().double()):
        y = act(x)
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(y, F.leaky_relu(x, 0.01)) and torch.equal(grad[:2], torch.full(
            (2,), 0.01, dtype=dtype))
    if dtype == torch.float64:
        assert y[0].item() == -0.01
    # elu(-50) is -alpha to the last bit (exp(-50) - 1 rounds to -1): alpha itself, a set value
    elu = ACTS.get("elu").create(alpha=0.3).double()
    minus_alpha = torch.tensor(-0.3, dtype=dtype)
    assert elu(x.detach())[1] == minus_alpha == F.elu(x.detach(), alpha=0.3)[1]
