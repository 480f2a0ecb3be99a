"""pytest-benchmark suite: every activation's forward+backward, one benchmark group per
activation, so each group's table compares the implementations measured in the same run:
the eager PyTorch reference, PyTorch's native op (where one exists), `torch.compile` of the
reference (with ZOO_BENCH_COMPILE=1) and zoo's fused kernel (on a GPU with CuPy).

    pytest benchmarks --benchmark-enable                 # time them
    pytest benchmarks --benchmark-enable --benchmark-compare   # against a saved run

In the normal test run (`pytest`), benchmarks are disabled: each body runs once, as a test that
every implementation agrees with the reference.
"""

from __future__ import annotations

import os

import pytest
import torch

from zoo.registry.acts import FORMULAS
from zoo.tools import kernel_bench

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
NUMEL = int(os.environ.get("ZOO_BENCH_NUMEL", 2**26 if DEVICE == "cuda" else 2**18))
COMPILE = os.environ.get("ZOO_BENCH_COMPILE") == "1"


def implementations(name: str) -> dict:
    return kernel_bench.implementations(name, torch.device(DEVICE), DTYPE, compile=COMPILE)


CASES = [(name, label) for name in sorted(FORMULAS) + ["rational"]
         for label in implementations(name)]


@pytest.mark.parametrize("name,label", CASES, ids=[f"{n}-{l}" for n, l in CASES])
def test_forward_and_backward(benchmark, name, label):
    fn = implementations(name)[label]
    x = (torch.randn(NUMEL // 768, 768, device=DEVICE) * 3).to(DTYPE).requires_grad_()
    grad = torch.ones_like(x)

    def step():
        y = fn(x)
        (gx,) = torch.autograd.grad(y, x, grad)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return y, gx

    benchmark.group = name
    benchmark.extra_info.update(numel=x.numel(), dtype=str(DTYPE), device=DEVICE)
    y, gx = benchmark(step)
    reference = implementations(name)["reference"]
    y_ref = reference(x)
    (gx_ref,) = torch.autograd.grad(y_ref, x, grad)
    tolerance = 1e-4 if DTYPE == torch.float32 else 2e-2
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(gx.float(), gx_ref.float(), rtol=tolerance, atol=tolerance)
