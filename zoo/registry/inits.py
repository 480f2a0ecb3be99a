"""Built-in weight initializations.

An entry's factory takes its options and returns `apply(model, ctx)`, which re-initializes the
model in place. These touch the weights of every Linear and Conv layer (attention projections,
MLPs, patch embedding, convolutions, classifier) and zero their biases; normalization layers,
position embeddings and class tokens keep the architecture's default.
"""

from __future__ import annotations


import torch
from torch import nn

from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.registry import INITS

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
TOUCHES = "weights of Linear and Conv layers (biases set to 0)"
KEEPS = "normalization layers, position embeddings, class tokens"


def _weight_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, _WEIGHT_LAYERS)]


def _reinit(model: nn.Module, init_weight) -> None:
    with torch.no_grad():
        for layer in _weight_layers(model):
            init_weight(layer.weight)
            if layer.bias is not None:
                layer.bias.zero_()


@INITS.register("default", summary="the architecture's own initialization (timm's)",
                formula="unchanged", touches="nothing", keeps="everything")
def default():
    def apply(model: nn.Module, ctx: BuildContext) -> None:
        return None

    return apply


@INITS.register(
    "kaiming",
    formula="W ~ N(0, 2 / fan) (normal) or U(-sqrt(6/fan), sqrt(6/fan)) (uniform), ReLU gain",
    paper=("Delving Deep into Rectifiers: Surpassing Human-Level Performance on ImageNet "
           "Classification", "1502.01852"),
    defaults={"mode": "fan_in", "distribution": "normal"},
    touches=TOUCHES, keeps=KEEPS,
)
def kaiming(mode: str = "fan_in", distribution: str = "normal"):
    """He initialization (variance 2 / fan, derived for ReLU)."""
    if mode not in ("fan_in", "fan_out") or distribution not in ("normal", "uniform"):
        raise ZooError("kaiming takes mode=fan_in|fan_out and distribution=normal|uniform")
    init = nn.init.kaiming_normal_ if distribution == "normal" else nn.init.kaiming_uniform_

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, lambda w: init(w, mode=mode, nonlinearity="relu"))

    return apply


@INITS.register(
    "xavier",
    formula="W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (uniform) or N(0, 2/(fan_in+fan_out))",
    paper=("Understanding the difficulty of training deep feedforward neural networks", None),
    defaults={"distribution": "uniform"},
    touches=TOUCHES, keeps=KEEPS,
)
def xavier(distribution: str = "uniform"):
    """Glorot initialization (keeps variance for a linear/tanh network)."""
    init = nn.init.xavier_uniform_ if distribution == "uniform" else nn.init.xavier_normal_

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, init)

    return apply


@INITS.register(
    "orthogonal",
    formula="W = gain * Q, Q with orthonormal rows or columns (convolutions: over the flattened "
            "kernel)",
    paper=("Exact solutions to the nonlinear dynamics of learning in deep linear neural networks",
           "1312.6120"),
    defaults={"gain": 1.0},
    touches=TOUCHES, keeps=KEEPS,
)
def orthogonal(gain: float = 1.0):
    """Orthogonal weight matrices."""

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, lambda w: nn.init.orthogonal_(w, gain=gain))

    return apply


