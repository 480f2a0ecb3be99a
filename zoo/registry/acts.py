"""Built-in activation functions (PyTorch references).

Each entry's factory returns an `Activation` module; the formula in the metadata is the one the
reference implements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.models.activation import Activation
from zoo.registry import ACTS


def _elementwise(name: str, fn):
    """A factory that wraps a reference function as an Activation module."""

    def factory(inplace: bool = False, **params) -> Activation:
        return Activation(name, fn, inplace=inplace, **params)

    factory.__doc__ = fn.__doc__
    return factory


def relu(x: torch.Tensor) -> torch.Tensor:
    """Rectified linear unit."""
    return F.relu(x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Gaussian error linear unit (exact, erf form)."""
    return F.gelu(x)


def silu(x: torch.Tensor) -> torch.Tensor:
    """Sigmoid linear unit (Swish with beta = 1)."""
    return F.silu(x)


def mish(x: torch.Tensor) -> torch.Tensor:
    """Self-regularized non-monotonic activation."""
    return F.mish(x)


# Below this, exp(-exp(-x)) is exactly 0 in every float format; clamping keeps exp(-x) finite so
# the gradient is 0 instead of 0 * inf = NaN.
_GOLU_FLOOR = -20.0


def golu(x: torch.Tensor) -> torch.Tensor:
    """Gompertz linear unit: x times the Gompertz function (asymmetric, self-gated)."""
    return x * torch.exp(-torch.exp(-x.clamp(min=_GOLU_FLOOR)))


ACTS.register("relu", formula="max(0, x)", tags=("baseline",),
              paper=("Rectified Linear Units Improve Restricted Boltzmann Machines", None),
              )(_elementwise("relu", relu))
ACTS.register("gelu", formula="x * Phi(x), Phi the standard normal CDF (erf form)",
              tags=("baseline",),
              paper=("Gaussian Error Linear Units (GELUs)", "1606.08415"))(_elementwise("gelu", gelu))
ACTS.register("silu", formula="x * sigmoid(x)", tags=("baseline",),
              paper=("Sigmoid-Weighted Linear Units for Neural Network Function Approximation in "
                     "Reinforcement Learning", "1702.03118"))(_elementwise("silu", silu))
ACTS.register("mish", formula="x * tanh(softplus(x))", tags=("baseline",),
              paper=("Mish: A Self Regularized Non-Monotonic Activation Function", "1908.08681"),
              )(_elementwise("mish", mish))
ACTS.register("golu", formula="x * exp(-exp(-x))", tags=("gated",),
              paper=("Gompertz Linear Units: Leveraging Asymmetry for Enhanced Learning Dynamics",
                     "2502.03654"))(_elementwise("golu", golu))
