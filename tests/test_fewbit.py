"""Few-bit backward: the derivative's optimal piecewise-constant code replaces the saved input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from zoo.errors import ZooError
from zoo.kernels.fewbit import (
    approximation_for,
    grid_edges,
    optimal_piecewise_constant,
    pack,
    unpack,
)
from zoo.registry import ACTS
from zoo.registry.acts import FORMULAS


def gelu_derivative(x):
    return FORMULAS["gelu"].derivative(x)["x"]


def weighted_error(boundaries, derivative=gelu_derivative):
    """E_p[(f' - q)^2] on the same grid, for the best levels given `boundaries`."""
    edges = grid_edges()
    mids = (edges[:-1] + edges[1:]) / 2
    values = derivative(torch.from_numpy(mids)).numpy()
    weights = np.exp(-mids**2 / 2)
    cells = np.searchsorted(np.asarray(boundaries), mids)
    error = 0.0
    for piece in np.unique(cells):
        v, w = values[cells == piece], weights[cells == piece]
        error += (w * (v - np.average(v, weights=w)) ** 2).sum()
    return error / weights.sum()


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("numel", [1, 7, 8, 1001])
def test_codes_survive_packing_in_bits_per_element(bits, numel):
    codes = torch.randint(0, 2**bits, (numel,), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == bits * ((numel + 7) // 8)
    assert torch.equal(unpack(packed, bits, numel), codes)


def test_relu_needs_one_bit_and_is_then_exact():
    relu = approximation_for(FORMULAS["relu"], (), 1)
    assert relu.boundaries == (0.0,) and relu.levels == (0.0, 1.0)
    assert len(approximation_for(FORMULAS["relu"], (), 4).levels) == 2  # no useless pieces


def test_one_bit_split_is_the_best_single_boundary_by_exhaustive_search():
    dp = optimal_piecewise_constant(gelu_derivative, 2)
    candidates = np.arange(-3, 3, 0.05)
    brute = min(weighted_error([c]) for c in candidates)
    assert dp.weighted_mse <= brute + 1e-12
    assert dp.weighted_mse == pytest.approx(weighted_error(dp.boundaries), rel=1e-6)


def test_two_bit_split_beats_every_boundary_triple_on_a_coarse_grid():
    dp = optimal_piecewise_constant(gelu_derivative, 4)
    grid = np.arange(-2, 2.01, 0.25)
    brute = min(weighted_error(list(t)) for t in itertools.combinations(grid, 3))
    assert dp.weighted_mse <= brute + 1e-12


@pytest.mark.parametrize("name", ["gelu", "silu", "mish", "golu"])
def test_more_bits_approximate_the_derivative_better(name):
    errors = [approximation_for(FORMULAS[name], (), bits).weighted_mse for bits in (1, 2, 3, 4)]
    assert all(later < earlier / 2 for earlier, later in zip(errors, errors[1:]))


def test_backward_multiplies_by_the_level_of_the_inputs_interval():
    act = ACTS.get("gelu").create(backward_bits=2)
    x = torch.randn(3, 50, requires_grad=True)
    y = act(x)
    grad = torch.randn_like(y)
    y.backward(grad)
    approximation = approximation_for(FORMULAS["gelu"], (), 2)
    torch.testing.assert_close(y, torch.nn.functional.gelu(x))  # the forward is exact
    torch.testing.assert_close(x.grad, grad * approximation(x.detach()))


def saved_bytes(fn, x):
    total = []

    def keep(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        fn(x)
    return sum(total)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_only_bits_per_element_are_saved_for_backward(bits):
    x = torch.randn(64, 1000, requires_grad=True)
    exact = saved_bytes(ACTS.get("gelu").create(), x)
    few = saved_bytes(ACTS.get("gelu").create(backward_bits=bits), x)
    assert exact >= x.numel() * 4
    assert few == bits * x.numel() // 8


def test_half_precision_inputs_work():
    act = ACTS.get("silu").create(backward_bits=3)
    x = torch.randn(100, dtype=torch.bfloat16, requires_grad=True)
    act(x).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


def test_without_grad_nothing_is_coded():
    act = ACTS.get("gelu").create(backward_bits=1)
    with torch.no_grad():
        assert saved_bytes(act, torch.randn(10)) == 0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ZooError, match="backward_bits must be 1, 2, 3 or 4"):
        ACTS.get("gelu").create(backward_bits=5)
    with pytest.raises(ZooError, match="swish has learnable parameters .beta.: few-bit"):
        ACTS.get("swish").create(backward_bits=2)


def test_zero_bits_is_the_exact_backward():
    act = ACTS.get("gelu").create(backward_bits=0)
    assert act.backward_bits is None and "backward_bits" not in act.params


