"""The activation catalogue as a specification.

The list of names is the "Activations" table of the design notes' CATALOGUE.md, written out here
so that the test depends on nothing outside the repository. Each newer entry is compared at a few points with a direct NumPy/mpmath
transcription of its source's formula, written independently of the formula strings in
zoo/registry/acts.py, and the learnable expansions are checked for the initialisation their paper
promises.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermeval

from zoo.registry import ACTS

# Every name in the first column of CATALOGUE.md's "Activations" table (gelu's tanh form is
# registered as gelu_tanh).
CATALOGUE_ACTIVATIONS = [
    "relu", "gelu", "silu", "elu", "selu", "softplus", "leaky_relu", "swish", "mish", "golu",
    "velu", "apa", "aglu", "smelu", "sau", "crrelu", "relu2", "xsin2", "sine", "hermite",
    "fourier", "tropical", "rational", "shifted_relu", "soft_threshold", "elephant",
    "mittag_leffler",
]


@pytest.mark.parametrize("name", CATALOGUE_ACTIVATIONS)
def test_every_catalogue_activation_is_registered(name):
    assert name in ACTS.names()


@pytest.mark.parametrize("name", ["velu", "mittag_leffler", "hermite", "fourier", "tropical",
                                  "crrelu", "sau"])
def test_checked_entries_say_where_their_formula_comes_from(name):
    entry = ACTS.get(name)
    note = entry.extra["note"]
    assert entry.paper.arxiv and "not yet checked" not in note and len(note) > 80


def values(name: str, xs, **params) -> np.ndarray:
    """The registered activation in float64 (its parameters are stored in float32, so
    comparisons below allow a relative 1e-6)."""
    act = ACTS.get(name).create(**params).double()
    with torch.no_grad():
        return act(torch.tensor(xs, dtype=torch.float64)).numpy()


POINTS = [-30.0, -7.0, -2.5, -1.0, -0.3, 0.0, 0.4, 1.0, 2.0, 6.0, 15.0]


# --- VeLU (authors' Keras code, github AshkanShakarami/VeLU, VeLU.ipynb) --------------------------

def velu_authors(x: np.ndarray, alpha=0.1, beta1=0.1, beta2=0.1, gamma=0.1, momentum=0.9, lam=1.0):
    """The authors' layer on one row (last axis = the row): the adaptive factor from the row's
    mean of x^2, then x sigmoid(alpha (atan(beta1 x) + asin(clip(beta2 x, -1, 1))))."""
    adapt = 1 + gamma * np.tanh(momentum / np.sqrt(np.mean(x**2) + 1e-6))
    mix = np.arctan(beta1 * x) + np.arcsin(np.clip(beta2 * x, -1, 1))
    return lam * x / (1 + np.exp(-alpha * mix)) * adapt


def test_velu_is_the_authors_layer_on_a_unit_rms_row():
    x = np.array(POINTS)
    row = x / np.sqrt(np.mean(x**2))  # mean(x^2) = 1: the default `adapt`
    np.testing.assert_allclose(values("velu", row), velu_authors(row), rtol=1e-6)


def test_velu_adapt_carries_the_row_statistic():
    x = np.array(POINTS) * 0.2  # another row: mean(x^2) != 1
    adapt = 1 + 0.1 * np.tanh(0.9 / np.sqrt(np.mean(x**2) + 1e-6))
    np.testing.assert_allclose(values("velu", x, adapt=adapt), velu_authors(x), rtol=1e-6)


def test_velu_clips_the_arcsine_argument_with_finite_gradients():
    np.testing.assert_allclose(
        values("velu", [20.0, -20.0], alpha=2.0, beta1=1.0, beta2=0.7, adapt=1.0),
        velu_authors(np.array([20.0, -20.0]), alpha=2.0, beta1=1.0, beta2=0.7, gamma=0.0),
        rtol=1e-6)
    act = ACTS.get("velu").create(beta2=0.7).double()
    x = torch.tensor([-20.0, -1 / 0.7, 0.5, 1 / 0.7, 20.0], dtype=torch.float64,
                     requires_grad=True)
    act(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(act.lam.grad)


# --- Mittag-Leffler gated form, tanh family ------------------------------------------------------

def mittag_leffler_e(a: float, b: float, z: float) -> mpmath.mpf:
    """E_{a,b}(z) = sum_k z^k / Gamma(a k + b), summed in 60-digit arithmetic."""
    with mpmath.workdps(60):
        return mpmath.nsum(lambda k: mpmath.mpf(z) ** k / mpmath.gamma(a * k + b), [0, mpmath.inf])


@pytest.mark.parametrize("beta2", [1.0, 1.3, 1.5, 2.0])
def test_mittag_leffler_is_x_e22_over_e2b(beta2):
    expected = [float(x * mittag_leffler_e(2, 2, x * x) / mittag_leffler_e(2, beta2, x * x))
                for x in POINTS]
    np.testing.assert_allclose(values("mittag_leffler", POINTS, beta2=beta2), expected,
                               rtol=2e-6, atol=1e-12)


def test_mittag_leffler_interpolates_tanh_and_the_identity():
    x = np.linspace(-40, 40, 161)
    np.testing.assert_allclose(values("mittag_leffler", x, beta2=1.0), np.tanh(x), atol=1e-7)
    np.testing.assert_allclose(values("mittag_leffler", x, beta2=2.0), x, rtol=1e-7)
    assert ACTS.get("mittag_leffler").defaults == {"beta2": 1.0}


def test_mittag_leffler_beta2_learns():
    act = ACTS.get("mittag_leffler").create()
    act(torch.randn(1000) * 3).pow(2).sum().backward()
    assert [n for n, _ in act.named_parameters()] == ["beta2"]
    assert torch.isfinite(act.beta2.grad) and act.beta2.grad != 0


# --- crrelu and sau -------------------------------------------------------------------------------

def test_crrelu_is_relu_plus_eps_x_gaussian():
    x = np.array(POINTS)
    np.testing.assert_allclose(values("crrelu", x), np.maximum(x, 0) + 0.01 * x * np.exp(-x**2 / 2),
                               rtol=1e-6, atol=1e-300)
    assert [n for n, _ in ACTS.get("crrelu").create().named_parameters()] == ["eps"]


@pytest.mark.parametrize("alpha, sigma", [(0.01, 1.0), (0.25, 0.5)])
def test_sau_is_leaky_relu_convolved_with_a_gaussian(alpha, sigma):
    """(leaky_relu_alpha * N(0, sigma^2))(x), by numerical integration over the kernel."""
    t = np.linspace(-12 * sigma, 12 * sigma, 200_001)
    kernel = np.exp(-t**2 / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    expected = []
    for x in POINTS:
        u = x - t
        expected.append(np.trapezoid(np.where(u > 0, u, alpha * u) * kernel, t))
    np.testing.assert_allclose(values("sau", POINTS, alpha=alpha, sigma=sigma), expected,
                               rtol=1e-7, atol=1e-9)


# --- torchortho's expansions (github K-H-Ismail/torchortho v0.1.2) ------------------------------

def test_hermite_is_the_coefficient_weighted_sum_of_he_k_over_k_factorial():
    a = [0.3, -0.7, 1.1, 0.2]
    x = np.array(POINTS)
    expected = sum(a[k] * hermeval(x, [0] * k + [1]) / math.factorial(k) for k in range(4))
    got = values("hermite", x, **{f"a{k}": a[k] for k in range(4)})
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_fourier_is_a_series_of_cosines_over_k_factorial():
    # values exact in float32 (the parameters' dtype), so that x = -30 tests the phases exactly
    c, w, p = [0.5, -1.0, 0.375, 2.0, 0.75], [1.0, 2.5, 3.0, 4.25, 5.0], [0.125, 0.25, 0, -1, 3]
    params = {"f0": 0.4, **{f"c{k + 1}": c[k] for k in range(5)},
              **{f"w{k + 1}": w[k] for k in range(5)}, **{f"p{k + 1}": p[k] for k in range(5)}}
    x = np.array(POINTS)
    expected = 0.4 + sum(c[k] * np.cos(w[k] * x - p[k]) / math.factorial(k + 1) for k in range(5))
    np.testing.assert_allclose(values("fourier", x, **params), expected, rtol=1e-6, atol=1e-7)


def test_tropical_is_a_scaled_max_plus_polynomial():
    c = [0.0, -1.0, 2.0, 0.5, -3.0, 1.0]
    x = np.array(POINTS)
    expected = math.sqrt(2) / 5 * np.max([c[k] + k * x for k in range(6)], axis=0)
    np.testing.assert_allclose(values("tropical", x, **{f"c{k}": c[k] for k in range(6)}),
                               expected, rtol=1e-6)


def moments(name: str, n: int = 1_000_000, seed: int = 0) -> tuple[float, float, float]:
    """E[F(x)^2], Var F(x) and E[F'(x)^2] for x ~ N(0, 1), default (initial) coefficients."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x.requires_grad_(True)
    y = ACTS.get(name).create().double()(x)
    (dy,) = torch.autograd.grad(y.sum(), x)
    y = y.detach()
    return float((y**2).mean()), float(y.var()), float((dy**2).mean())


def test_hermite_init_keeps_the_second_moment_and_its_derivatives_near_one():
    """The paper's variance-preserving init is a He-style gain: E[F^2] (and E[F'^2]) ~ 1, here
    (1/e) sum_{k<3} 1/k! = 0.920 exactly for degree 3; Var F is lower (0.615: F has mean a0)."""
    second, variance, slope = moments("hermite")
    exact = (1 + 1 + 0.5) / math.e
    assert abs(second - exact) < 0.01 and abs(slope - exact) < 0.01 and abs(second - 1) < 0.1
    assert abs(variance - 0.615) < 0.01


def test_fourier_init_normalises_the_coefficients_and_keeps_the_slope_moment():
    """f0^2 + sum c_k^2 / (k!)^2 = 1 up to 1/(4!)^2 / I_0(2) (their orthonormal-basis argument);
    for Gaussian inputs the cosines are not orthogonal: E[F^2] = 1.31, E[F'^2] = 0.96."""
    defaults = ACTS.get("fourier").defaults
    norm = defaults["f0"] ** 2 + sum(defaults[f"c{k}"] ** 2 / math.factorial(k) ** 2
                                     for k in range(1, 6))
    assert abs(norm - 1) < 1e-3
    second, variance, slope = moments("fourier")
    assert abs(slope - 1) < 0.05 and 1.25 < second < 1.36 and abs(variance - 0.349) < 0.01


def test_tropical_init_has_unit_slope_moment():
    """At init F = sqrt(2)/5 + sqrt(2) relu(x): E[F'^2] = 1 exactly (He's gain for ReLU),
    E[F^2] = 1 + 2/25 + 4/(5 sqrt(2 pi))."""
    second, _, slope = moments("tropical")
    assert abs(slope - 1) < 0.005
    assert abs(second - (1 + 2 / 25 + 4 / (5 * math.sqrt(2 * math.pi)))) < 0.01
