"""CuPy raw kernels (fused forward and backward) for the registered variants.

Empty for now: every variant runs its PyTorch reference, which is the specification a kernel
must match. `available()` tells the rest of zoo whether the GPU path can be used.
"""

from __future__ import annotations


def available() -> bool:
    """True when CuPy and a CUDA device are present (the kernel path is not implemented yet)."""
    try:
        import cupy  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
