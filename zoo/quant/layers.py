"""Quantized linear and convolution layers.

A `LayerScheme` says how one layer's matrix product is quantized: optionally divide the input
features by a per-channel factor and multiply the weight's input columns by it (SmoothQuant-style
reparameterization; the product is unchanged), optionally rotate the input features by an
orthogonal matrix R on both sides (x R and W R: again the product is unchanged, since R R^T = I),
then split the features into parts, each with a weight format and an optional activation format.
One part is the usual case; ResQ keeps a high-variance subspace in 8 bits and the rest in 4.

`QuantLinear` / `QuantConv2d` replace nn.Linear / nn.Conv2d and keep their parameters (the same
tensors, under the same names), so a float checkpoint loads into a quantized model and QAT trains
the float weights through the straight-through estimator. In eval mode without gradients the
quantized weight is computed once and reused until the weight changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.quant import formats
from zoo.quant.formats import Format
from zoo.quant.ops import fake_quantize_rows, fake_quantize_ste


@dataclass(frozen=True)
class Part:
    """`width` consecutive (rotated) input channels with their own weight and activation formats."""

    width: int
    weight: Optional[Format]
    act: Optional[Format] = None


class LayerScheme(nn.Module):
    def __init__(self, parts: list[Part], rotation: Optional[torch.Tensor] = None,
                 smooth: Optional[torch.Tensor] = None, note: str = "",
                 store_rotation: bool = True):
        """`store_rotation=False` for rotations rebuilt from a seed (randomized Hadamard, applied
        by a fast transform in deployment): they are not part of the checkpoint or its size."""
        super().__init__()
        self.parts = list(parts)
        self.note = note
        # (C, C) orthogonal, or None
        self.register_buffer("rotation", rotation, persistent=store_rotation)
        self.register_buffer("smooth", smooth)  # (C,) positive, or None

    @property
    def quantizes_activations(self) -> bool:
        return any(part.act is not None for part in self.parts)

    def _bounds(self):
        start = 0
        for part in self.parts:
            yield part, start, start + part.width
            start += part.width

    def input(self, x: torch.Tensor, feature_dim: int) -> torch.Tensor:
        if self.smooth is not None:
            shape = [1] * x.ndim
            shape[feature_dim] = -1
            x = x / self.smooth.view(shape).to(x.dtype)
        if self.rotation is not None:
            x = (x.movedim(feature_dim, -1) @ self.rotation.to(x.dtype)).movedim(-1, feature_dim)
        if not self.quantizes_activations:
            return x
        pieces = []
        for part, lo, hi in self._bounds():
            piece = x.narrow(feature_dim, lo, hi - lo)
            pieces.append(piece if part.act is None else
                          fake_quantize_rows(piece, part.act, feature_dim))
        return torch.cat(pieces, dim=feature_dim) if len(pieces) > 1 else pieces[0]

    def transformed_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The float weight after reparameterization and rotation (dim 1 = input channels)."""
        if self.smooth is not None:
            shape = [1] * weight.ndim
            shape[1] = -1
            weight = weight * self.smooth.view(shape).to(weight.dtype)
        if self.rotation is not None:
            weight = torch.einsum("oc...,cd->od...", weight, self.rotation.to(weight.dtype))
        return weight

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        weight = self.transformed_weight(weight)
        pieces = []
        for part, lo, hi in self._bounds():
            piece = weight.narrow(1, lo, hi - lo)
            if part.weight is not None:
                piece = fake_quantize_ste(piece.flatten(1), part.weight).view_as(piece)
            pieces.append(piece)
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]

    def weight_bits(self, weight_shape: torch.Size) -> int:
        """Storage bits of the quantized weight (codes, scales, zero points) over all parts; a
        part without a weight format stays float32."""
        rows, inner = weight_shape[0], weight_shape[2:].numel()
        bits = 0
        for part, lo, hi in self._bounds():
            shape = (rows, (hi - lo) * inner)
            bits += (formats.storage_bits(shape, part.weight) if part.weight is not None
                     else shape[0] * shape[1] * 32)
        return bits

    def describe(self) -> str:
        text = " + ".join(
            f"{part.width} ch: W {part.weight.describe() if part.weight else 'float'}"
            + (f", A {part.act.describe()}" if part.act else "") for part in self.parts)
        if self.rotation is not None:
            text = "rotated; " + text
        if self.smooth is not None:
            text = "smoothed; " + text
        return text + (f" ({self.note})" if self.note else "")

    def extra_repr(self) -> str:
        return self.describe()


class _QuantizedWeights:
    """Shared by the two layer types: the quantized weight, cached when nothing can change it."""

    def _quantized_weight(self) -> torch.Tensor:
        if self.training or (torch.is_grad_enabled() and self.weight.requires_grad):
            return self.scheme.weight(self.weight)
        key = (self.weight._version, self.weight.data_ptr(), self.weight.dtype)
        if getattr(self, "_cache_key", None) != key:
            with torch.no_grad():
                self._cache = self.scheme.weight(self.weight)
            self._cache_key = key
        return self._cache


class QuantLinear(_QuantizedWeights, nn.Linear):
    def __init__(self, linear: nn.Linear, scheme: LayerScheme):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.scheme = scheme

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.scheme.input(x, -1), self._quantized_weight(), self.bias)


_CONV_ATTRIBUTES = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                    "transposed", "output_padding", "groups", "padding_mode",
                    "_reversed_padding_repeated_twice")


class QuantConv2d(_QuantizedWeights, nn.Conv2d):
    def __init__(self, conv: nn.Conv2d, scheme: LayerScheme):
        nn.Module.__init__(self)
        for name in _CONV_ATTRIBUTES:
            setattr(self, name, getattr(conv, name))
        self.weight, self.bias = conv.weight, conv.bias
        self.scheme = scheme

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.scheme.input(x, 1), self._quantized_weight(), self.bias)


QUANTIZABLE = (nn.Linear, nn.Conv2d)


def quantized(layer: nn.Module, scheme: LayerScheme) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return QuantLinear(layer, scheme)
    if isinstance(layer, nn.Conv2d):
        return QuantConv2d(layer, scheme)
    raise TypeError(f"cannot quantize a {type(layer).__name__}")


def layer_output(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The float layer's product with a given (already transformed) input and weight."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    return layer._conv_forward(x, weight, None)


def feature_dim(layer: nn.Module) -> int:
    return -1 if isinstance(layer, nn.Linear) else 1
