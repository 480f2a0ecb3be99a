"""Fake quantization as the layers call it: the CuPy kernel when it can run, the PyTorch reference
otherwise, and a straight-through estimator so quantization-aware training gets gradients."""

from __future__ import annotations

import torch

from zoo.quant import cuda as quant_cuda
from zoo.quant import formats
from zoo.quant.formats import Format


def fake_quantize(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """dequantize(quantize(x)) of a 2-d tensor, on the GPU kernel when possible."""
    if x.is_cuda:
        if quant_cuda.can_launch(x, fmt):
            return quant_cuda.fake_quantize(x, fmt)
    return formats.fake_quantize(x, fmt)


class _StraightThrough(torch.autograd.Function):
    """Forward: fake quantization. Backward: the identity (Bengio et al.'s straight-through
    estimator), so the float weights a QAT run trains receive the gradient of the quantized
    forward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fmt: Format) -> torch.Tensor:
        return fake_quantize(x, fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def fake_quantize_ste(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _StraightThrough.apply(x, fmt)
    return fake_quantize(x, fmt)


def fake_quantize_rows(x: torch.Tensor, fmt: Format, feature_dim: int = -1) -> torch.Tensor:
    """Fake-quantize an activation with one row per token: the feature dimension is moved last
    and every other dimension becomes rows (for a convolution's input, a pixel is a token)."""
    moved = x.movedim(feature_dim, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    return fake_quantize_ste(rows, fmt).reshape(moved.shape).movedim(-1, feature_dim)
