"""The autograd glue: a fused kernel on CUDA, the formula's PyTorch reference elsewhere."""

from __future__ import annotations

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


def apply_formula(formula: ElementwiseFormula, x: torch.Tensor,
                  params: torch.Tensor) -> torch.Tensor:
    """y = formula(x; params), differentiable in x and params; `params` holds every parameter's
    value in declaration order (a 1-d tensor, possibly empty)."""
    if runtime.can_launch(x):
        return _FusedElementwise.apply(x, params, formula)
    values = [params[i] for i in range(len(formula.params))]
    if x.dtype in (torch.float16, torch.bfloat16):  # math in float32, as in the kernels
        return formula.reference(x.float(), *(v.float() for v in values)).to(x.dtype)
    return formula.reference(x, *(v.to(x.dtype) for v in values))
