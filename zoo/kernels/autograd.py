"""The autograd glue: a fused kernel on CUDA, the formula's PyTorch reference elsewhere."""

from __future__ import annotations

from typing import Mapping

import torch

from zoo.kernels import runtime
from zoo.kernels.formula import ElementwiseFormula


class _FusedElementwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, formula: ElementwiseFormula):
        params32 = params.detach().float().contiguous()
        ctx.formula = formula
        ctx.save_for_backward(x, params32)
        ctx.params_dtype = params.dtype
        return runtime.forward(formula, x, params32)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, params32 = ctx.saved_tensors
        grad_x, grad_params = runtime.backward(ctx.formula, x, grad_y, params32)
        grad_params = grad_params.to(ctx.params_dtype) if ctx.needs_input_grad[1] else None
        return grad_x.view_as(x), grad_params, None


def apply_formula(formula: ElementwiseFormula, x: torch.Tensor, params: torch.Tensor,
                  exact: Mapping[str, float] | None = None) -> torch.Tensor:
    """y = formula(x; params), differentiable in x and params; `params` holds every parameter's
    value in declaration order (a 1-d tensor, possibly empty). `exact` may give parameters'
    values as Python floats, which the reference then uses in x's own dtype: a fixed 0.01 stays
    0.01 in float64, where the float32 entry of `params` is 0.00999999977648. (The kernels
    compute in float32 anyway.)"""
    if runtime.can_launch(x):
        return _FusedElementwise.apply(x, params, formula)
    exact = exact or {}
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    # half precision: math in float32, as in the kernels
    values = [exact[p.name] if p.name in exact else params[i].to(dtype)
              for i, p in enumerate(formula.params)]
    return formula.reference(x.to(dtype), *values).to(x.dtype)
