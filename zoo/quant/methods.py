"""Quantization methods: how each layer's `LayerScheme` is chosen, from its weight and (for the
data-dependent methods) a sample of its calibration inputs.

`inputs` is what the layer received on the calibration batch: rows of features for a linear
layer (tokens, C), the input maps for a convolution (N, C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from zoo.quant import formats
from zoo.quant.formats import Format, int_group
from zoo.quant.layers import LayerScheme, Part, feature_dim, layer_output
from zoo.quant.ops import fake_quantize_rows
from zoo.quant.rotations import principal_basis, random_orthogonal, randomized_hadamard

Scheme = Union[LayerScheme, str]  # a scheme, or why the layer stays float


def input_channels(layer: nn.Module) -> int:
    return layer.weight.shape[1]


def _rotatable(layer: nn.Module) -> Optional[str]:
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return "grouped convolution: its input channels cannot be rotated"
    return None


def _feature_rows(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return inputs.movedim(feature_dim(layer), -1).reshape(-1, input_channels(layer)).float()


@dataclass
class WeightOnly:
    """Round-to-nearest weights; activations stay float."""

    weight: Format
    needs_calibration = False

    def scheme(self, layer: nn.Module, inputs=None) -> Scheme:
        return LayerScheme([Part(input_channels(layer), self.weight)])


@dataclass
class WeightActivation:
    """Round-to-nearest weights and dynamic activations (a scale per token, computed on the fly),
    optionally after a randomized Hadamard rotation of the input features (QuaRot's trick: the
    rotation spreads outlier channels over all channels, so 4-bit activations lose less)."""

    weight: Format
    act: Format
    hadamard: bool = False
    seed: int = 0
    needs_calibration = False

    def scheme(self, layer: nn.Module, inputs=None) -> Scheme:
        channels = input_channels(layer)
        rotation = None
        if self.hadamard:
            if (reason := _rotatable(layer)) is not None:
                return reason
            generator = torch.Generator().manual_seed(self.seed)
            rotation = randomized_hadamard(channels, generator).to(layer.weight.device)
        return LayerScheme([Part(channels, self.weight, self.act)], rotation=rotation,
                           store_rotation=False)


@dataclass
class ResQ:
    """ResQ: project the input features onto their principal basis (from calibration data), keep
    the highest-variance `high_fraction` of directions in `high_bits` (weights and activations)
    and the rest in `low_bits`, with a random orthogonal rotation inside each subspace."""

    high_fraction: float = 1 / 8
    high_bits: int = 8
    low_bits: int = 4
    seed: int = 0
    needs_calibration = True

    def scheme(self, layer: nn.Module, inputs: torch.Tensor) -> Scheme:
        if (reason := _rotatable(layer)) is not None:
            return reason
        channels = input_channels(layer)
        basis = principal_basis(_feature_rows(layer, inputs))
        high = max(1, round(channels * self.high_fraction)) if channels > 1 else channels
        generator = torch.Generator().manual_seed(self.seed)
        inner = torch.block_diag(random_orthogonal(high, generator),
                                 random_orthogonal(channels - high, generator))
        rotation = (basis @ inner).to(layer.weight.device)
        parts = [Part(high, per_channel_int(self.high_bits), per_channel_int(self.high_bits))]
        if channels > high:
            low = per_channel_int(self.low_bits)
            parts.append(Part(channels - high, low, low))
        return LayerScheme(parts, rotation=rotation,
                           note=f"{high} of {channels} directions in {self.high_bits} bits")


FP4_ELEMENTS = ("e1m2", "e2m1", "e3m0")
CLIP_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


@dataclass
class LLMFP4:
    """LLM-FP4: 4-bit floating point weights (per channel) and activations (per tensor), with
    the exponent/mantissa split and the clipping range searched per layer to minimise the
    layer's output error on calibration data. Per-channel activation ranges are moved into the
    weights first (x / s, W * s with s = sqrt(max|x_c| / max|W_c|)), the reparameterization
    that lets one activation scale serve all channels."""

    elements: tuple[str, ...] = FP4_ELEMENTS
    clips: tuple[float, ...] = CLIP_GRID
    needs_calibration = True

    def scheme(self, layer: nn.Module, inputs: torch.Tensor) -> Scheme:
        inputs = inputs.to(layer.weight.device).float()
        weight = layer.weight.detach().float()
        dim = feature_dim(layer)
        reduce_x = [d for d in range(inputs.ndim) if d != dim % inputs.ndim]
        x_range = inputs.abs().amax(dim=reduce_x).clamp(min=1e-5)
        w_range = weight.abs().transpose(0, 1).flatten(1).amax(dim=1).clamp(min=1e-5)
        smooth = (x_range / w_range).sqrt().clamp(min=1e-5, max=1e5)
        probe = LayerScheme([Part(input_channels(layer), None)], smooth=smooth)
        x = probe.input(inputs, dim)
        w = probe.transformed_weight(weight)
        target = layer_output(layer, inputs, weight)

        def error(x_q, w_q):
            return (layer_output(layer, x_q, w_q) - target).pow(2).mean().item()

        def weight_format(element, clip):
            return Format(element, 4, "channel", clip=clip)

        def act_format(element, clip):
            return Format(element, 4, "tensor", clip=clip)

        w_choice = min(((e, c) for e in self.elements for c in self.clips),
                       key=lambda ec: error(x, formats.fake_quantize(
                           w.flatten(1), weight_format(*ec)).view_as(w)))
        w_q = formats.fake_quantize(w.flatten(1), weight_format(*w_choice)).view_as(w)
        a_choice = min(((e, c) for e in self.elements for c in self.clips),
                       key=lambda ec: error(fake_quantize_rows(x, act_format(*ec), dim), w_q))
        note = (f"W {w_choice[0]} clip {w_choice[1]:g}, A {a_choice[0]} clip {a_choice[1]:g}")
        return LayerScheme([Part(input_channels(layer), weight_format(*w_choice),
                                 act_format(*a_choice))], smooth=smooth, note=note)


def int_weight_only(bits: int, group_size: int = 0, symmetric: bool = True) -> WeightOnly:
    if group_size:
        return WeightOnly(int_group(bits, group_size, symmetric))
    return WeightOnly(Format("int", bits, "channel", symmetric=symmetric))


def per_channel_int(bits: int) -> Format:
    """Symmetric ints with a scale per row: per output channel for a weight, per token for an
    activation."""
    return Format("int", bits, "channel")
