"""Unit Scaling / u-muP as an initialization entry, built on Graphcore's `unit-scaling` library.

Unit scaling moves the 1/sqrt(fan) factors out of the weights and into the ops: weights start at
N(0, 1), and each layer multiplies its output by 1/sqrt(fan_in) in the forward pass and its
gradients by their own factors in the backward pass, so activations and gradients start with
unit variance. The layers come from the library (`unit_scaling.Linear`, `LinearReadout`); it has
no 2-d convolution, so `UnitScaledConv2d` applies its `conv1d` rule in two dimensions.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import unit_scaling as uu
from torch import nn
from unit_scaling.constraints import apply_constraint
from unit_scaling.optim import lr_scale_func_adam
from unit_scaling.parameter import Parameter, has_parameter_data
from unit_scaling.scale import scale_bwd, scale_fwd

from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.registry.core import INITS


class UnitScaledConv2d(nn.Conv2d):
    """A unit-scaled nn.Conv2d: `unit_scaling.functional.conv1d`'s rule in two dimensions.

    Weight N(0, 1) (a u-muP "weight" parameter), bias 0. With fan_in = in_channels / groups * kh *
    kw, the output is conv2d(x, W) / sqrt(fan_in). Unconstrained, the input gradient would be
    scaled by sqrt(groups * sh * sw / (out_channels * kh * kw)) (unit variance for a unit output
    gradient); the library's default constraint "to_output_scale" uses the output scale for it
    too, as its Linear and Conv1d do, so that upstream gradients stay true gradients up to one
    factor. Weight and bias gradients are scaled by 1/sqrt(number of output positions).
    """

    def __init__(self, *args, constraint: str | None = "to_output_scale", **kwargs):
        super().__init__(*args, **kwargs)  # calls reset_parameters below
        self.constraint = constraint
        # The library's tagged parameters: what lr_scale_func_adam reads.
        self.weight = Parameter(self.weight.data, mup_type="weight")
        if self.bias is not None:
            self.bias = Parameter(self.bias.data, mup_type="bias")

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def scales(self) -> tuple[float, float]:
        """(output scale, input-gradient scale), after the constraint."""
        kernel = math.prod(self.kernel_size)
        output_scale = (self.in_channels // self.groups * kernel) ** -0.5
        grad_input_scale = (math.prod(self.stride) * self.groups
                            / (self.out_channels * kernel)) ** 0.5
        return apply_constraint(self.constraint, output_scale, grad_input_scale)

    def _output_positions(self, input: torch.Tensor) -> int:
        if self.padding == "same":
            sizes = input.shape[-2:]
        else:
            padding = (0, 0) if self.padding == "valid" else self.padding
            sizes = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                     zip(input.shape[-2:], padding, self.dilation, self.kernel_size, self.stride)]
        return input.shape[:-3].numel() * math.prod(sizes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        output_scale, grad_input_scale = self.scales()
        grad_weight_scale = self._output_positions(input) ** -0.5
        input = scale_bwd(input, grad_input_scale)
        weight = scale_bwd(self.weight, grad_weight_scale)
        bias = scale_bwd(self.bias, grad_weight_scale) if self.bias is not None else None
        return scale_fwd(self._conv_forward(input, weight, bias), output_scale)


def unit_lr_scale(param: nn.Parameter) -> float:
    """u-muP's Adam learning-rate multiplier for one parameter: the library's
    `lr_scale_func_adam` (fan_in^-0.5 for hidden weights, 1 for the readout and biases) for the
    parameters this init made, 1 for every other parameter."""
    if not has_parameter_data(param):
        return 1.0
    if param.ndim > 3:  # the library's fan_in knows weights up to conv1d's 3-d: flatten the kernel
        param = SimpleNamespace(mup_type=param.mup_type, mup_scaling_depth=param.mup_scaling_depth,
                                shape=torch.Size((*param.shape[:2], param.shape[2:].numel())))
    return float(lr_scale_func_adam(param))


def classifier_head(model: nn.Module) -> nn.Linear:
    """timm's `get_classifier()` where it is a Linear, else the last Linear producing
    `model.num_classes` outputs (or the last Linear)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Module):  # e.g. gpt2's head tied to the token embedding
        raise ZooError(f"unit_scaling needs a Linear readout; {type(model).__name__}'s classifier "
                       f"is a {type(head).__name__} (tied embeddings are not unit-scaled)")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    classes = getattr(model, "num_classes", None)
    linears = [m for m in linears if m.out_features == classes] or linears
    if not linears:
        raise ZooError(f"unit_scaling found no Linear classifier in {type(model).__name__}")
    return linears[-1]


def _unit_scaled(layer: nn.Module, readout: bool) -> nn.Module:
    """The unit-scaled twin of a plain Linear or Conv2d; drawing its weight N(0, 1) uses the
    global torch generator, which the builder seeded."""
    factory = dict(device=layer.weight.device, dtype=layer.weight.dtype)
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        cls = uu.LinearReadout if readout else uu.Linear
        return cls(layer.in_features, layer.out_features, bias=bias, **factory)
    return UnitScaledConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                            stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                            groups=layer.groups, bias=bias, padding_mode=layer.padding_mode,
                            **factory)


_HANDLED = (nn.Linear, nn.Conv2d)
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@INITS.register(
    "unit_scaling",
    formula="every Linear and Conv2d: W ~ N(0, 1), b = 0, y = (W x + b) / sqrt(fan_in) with "
            "scaled gradients (u-muP); the classifier: y = (W x + b) / fan_in (u-muP readout); "
            "per-tensor Adam lr x fan_in^-0.5 for hidden weights",
    paper=("Unit Scaling: Out-of-the-Box Low-Precision Training; its parameterization from "
           "u-muP: The Unit-Scaled Maximal Update Parametrization (arXiv:2407.17465)",
           "2303.11257"),
    touches="every Linear and Conv2d, replaced by a unit-scaled layer of the same shape "
            "(Graphcore's unit-scaling library; the classifier by its LinearReadout)",
    keeps="normalization layers, position embeddings, class tokens",
    note="zoo applies only the weight-layer part of u-muP: the residual-add, attention-softmax "
         "and nonlinearity scalings of full u-muP are not applied, so unit variance holds at "
         "the weight layers' outputs only, and normalization layers, position embeddings and "
         "class tokens keep the architecture's default. The run's optimizer multiplies each "
         "tensor's learning rate by u-muP's Adam rule (fan_in^-0.5 for hidden weights, 1 for "
         "the readout, biases and untouched parameters). u-muP's base learning rate is of "
         "order 1 (the paper's optimum is about 2^1.5 for Adam), far above zoo's recipes: "
         "pass --lr (vit on digits, 5 epochs, seed 0, no weight decay: 95% test accuracy at "
         "--lr 0.3, 52% at 1, chance at 2.8: without the other u-muP scalings the paper's "
         "optimum does not carry over). zoo's AdamW multiplies the weight decay by the lr, "
         "u-muP's optimizer does not: at lr of order 1 pass a small --weight-decay (or 0).",
)
def unit_scaling():
    """Unit Scaling with u-muP's parameterization (unit variance at init)."""

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        head = classifier_head(model)
        # Parents first, then setattr: replacing a child while iterating would skip modules.
        targets = [(parent, name, child) for parent in model.modules()
                   for name, child in parent.named_children()
                   if isinstance(child, _WEIGHT_LAYERS)]
        # Only the exact types: a subclass may have its own forward (MultiheadAttention's
        # out_proj is never called at all), so a swap could silently change the model. Checked
        # before any swap, so a refused model is left as it was.
        for parent, name, child in targets:
            if type(child) not in _HANDLED:
                raise ZooError(f"unit_scaling handles nn.Linear and nn.Conv2d; {name} is a "
                               f"{type(child).__name__}")
        for parent, name, child in targets:
            layer = _unit_scaled(child, readout=child is head)
            layer.train(child.training)
            setattr(parent, name, layer)

    apply.param_lr_scale = unit_lr_scale  # read by the trainer: per-parameter lr multiplier
    return apply
