"""Compiling and launching the generated kernels with CuPy, on PyTorch's current CUDA stream.

CuPy compiles with NVRTC and caches the binaries on disk (CUPY_CACHE_DIR, by default
~/.cupy/kernel_cache), so a kernel is compiled once per machine, not once per process.
Tensors are passed as device pointers: zero-copy like DLPack, and it also covers bfloat16, a dtype
CuPy arrays (and so DLPack through CuPy) do not have. The caller keeps the tensors alive.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np
import torch

from zoo.kernels.cuda_codegen import PRELUDE, THREADS, cuda_source, kernel_name
from zoo.kernels.formula import ElementwiseFormula

SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
# ZOO_KERNELS=0 forces the PyTorch reference everywhere (for A/B checks and debugging).
ENV_SWITCH = "ZOO_KERNELS"


@functools.lru_cache(maxsize=1)
def cupy_or_none():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def kernels_enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def can_launch(x: torch.Tensor) -> bool:
    """The fused kernel runs for CUDA tensors of a supported dtype when CuPy is installed."""
    return x.is_cuda and x.dtype in SUFFIX and kernels_enabled() and cupy_or_none() is not None


@functools.lru_cache(maxsize=None)
def compiled(source: str, digest: str):
    """The CuPy module for `source` (one per process; NVRTC's own cache is on disk)."""
    cupy = cupy_or_none()
    return cupy.RawModule(code=source, options=("--std=c++17",), name_expressions=None)


def module_for(formula: ElementwiseFormula):
    source = PRELUDE + cuda_source(formula)
    return compiled(source, hashlib.sha256(source.encode()).hexdigest())


def _grid(n: int, device: torch.device) -> int:
    # Enough blocks to fill the GPU a few times over; the grid-stride loop covers the rest and
    # keeps the number of parameter-gradient partials small.
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min((n + THREADS - 1) // THREADS, sms * 8))


def _launch(formula, direction, x: torch.Tensor, args) -> None:
    cupy = cupy_or_none()
    kernel = module_for(formula).get_function(kernel_name(formula, direction, SUFFIX[x.dtype]))
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(x.device).cuda_stream)
    with cupy.cuda.Device(x.device.index), stream:
        kernel((_grid(x.numel(), x.device),), (THREADS,), args)


def _ptr(t: torch.Tensor):
    return np.uint64(t.data_ptr())


def _aligned(*tensors: torch.Tensor) -> np.int32:
    """1 when every tensor starts on a 16-byte boundary (the kernels' vector width)."""
    return np.int32(all(t.data_ptr() % 16 == 0 for t in tensors))


def forward(formula: ElementwiseFormula, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel():
        _launch(formula, "fwd", x, (_ptr(x), _ptr(y), _ptr(params), np.int64(x.numel()),
                                    _aligned(x, y)))
    return y


def backward(formula: ElementwiseFormula, x: torch.Tensor, grad_y: torch.Tensor,
             params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_params): grad_params sums the per-block partials (the second reduction);
    fixed parameters get a zero gradient."""
    x, grad_y = x.contiguous(), grad_y.contiguous().to(x.dtype)
    grad_x = torch.empty_like(x)
    learnable = [i for i, p in enumerate(formula.params) if p.learnable]
    partials = torch.zeros((_grid(x.numel(), x.device), max(1, len(learnable))),
                           device=x.device, dtype=torch.float32)
    if x.numel():
        _launch(formula, "bwd", x, (_ptr(x), _ptr(grad_y), _ptr(grad_x), _ptr(params),
                                    _ptr(partials), np.int64(x.numel()),
                                    _aligned(x, grad_y, grad_x)))
    grad_params = torch.zeros(len(formula.params), device=x.device, dtype=torch.float32)
    grad_params[learnable] = partials.sum(dim=0)[: len(learnable)]
    return grad_x, grad_params
