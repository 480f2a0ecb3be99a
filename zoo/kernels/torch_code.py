"""sympy expression -> a PyTorch function, by printing Python source that calls torch ops.

Only the functions activation formulas use are supported; anything else fails at declaration time
(not in the middle of a training run) with the name of the unsupported function.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import sympy as sp
import torch

_FUNCTIONS = {
    sp.exp: "torch.exp", sp.log: "torch.log", sp.tanh: "torch.tanh", sp.sin: "torch.sin",
    sp.cos: "torch.cos", sp.atan: "torch.atan", sp.asin: "torch.asin", sp.erf: "torch.erf",
    sp.erfc: "torch.erfc", sp.Abs: "torch.abs", sp.sign: "torch.sign", sp.cosh: "torch.cosh",
    sp.sinh: "torch.sinh",
}


def _step(a: torch.Tensor) -> torch.Tensor:
    """Heaviside step with H(0) = 0, the convention of PyTorch's own relu gradient."""
    return (a > 0).to(a.dtype)


def _maximum(a, b):
    return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))


def _minimum(a, b):
    return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))


def _asin_clip(v: torch.Tensor) -> torch.Tensor:
    """asin(v) clipped to [-1, 1] (zoo.kernels.formula.asin_clip): sign(v) pi / 2 where |v| >= 1,
    with a gradient of exactly 0 there (the inner where keeps asin's infinite slope at |v| = 1
    out of the graph)."""
    inside = v.abs() < 1
    safe = torch.where(inside, v, torch.zeros_like(v))
    return torch.where(inside, torch.asin(safe), torch.sign(v) * (math.pi / 2))


def _gamma(v: torch.Tensor) -> torch.Tensor:
    """Gamma(v) from log|Gamma(v)| and the sign of Gamma (negative on (-1, 0), (-3, -2), ...)."""
    v = torch.as_tensor(v)
    negative = (v < 0) & (torch.remainder(torch.ceil(-v), 2) == 1)
    return torch.exp(torch.lgamma(v)) * torch.where(negative, -1.0, 1.0).to(v.dtype)


_HELPERS = {"torch": torch, "_step": _step, "_maximum": _maximum, "_minimum": _minimum,
            "_asin_clip": _asin_clip, "_gamma": _gamma}


def to_torch_source(expr: sp.Expr) -> str:
    name = type(expr).__name__
    if name in ("sigmoid", "softplus"):  # zoo's stable functions (zoo.kernels.formula)
        return f"torch.nn.functional.{name}({to_torch_source(expr.args[0])})"
    if name == "asin_clip":  # zoo.kernels.formula.asin_clip
        return f"_asin_clip({to_torch_source(expr.args[0])})"
    if isinstance(expr, sp.gamma):
        return f"_gamma({to_torch_source(expr.args[0])})"
    if isinstance(expr, sp.polygamma):  # only digamma: the derivative of gamma
        if expr.args[0] != 0:
            raise ValueError(f"no PyTorch translation for {expr} (only polygamma(0, v))")
        return f"torch.special.digamma({to_torch_source(expr.args[1])})"
    if isinstance(expr, sp.Symbol):
        return expr.name
    if expr.is_number:  # constants such as sqrt(2 / pi) are folded to one float
        return repr(float(expr))
    if isinstance(expr, sp.Add):
        return "(" + " + ".join(to_torch_source(a) for a in expr.args) + ")"
    if isinstance(expr, sp.Mul):
        return "(" + " * ".join(to_torch_source(a) for a in expr.args) + ")"
    if isinstance(expr, sp.Pow):
        base, exponent = expr.args
        if exponent == sp.Rational(1, 2):
            return f"torch.sqrt({to_torch_source(base)})"
        if exponent == -1:
            return f"(1.0 / {to_torch_source(base)})"
        return f"({to_torch_source(base)} ** {to_torch_source(exponent)})"
    if isinstance(expr, sp.Heaviside):
        return f"_step({to_torch_source(expr.args[0])})"
    if isinstance(expr, (sp.Max, sp.Min)):
        # A constant bound c goes through relu: max(v, c) = relu(v - c) + c and
        # min(v, c) = c - relu(c - v). relu's backward is one fast mask; clamp's and maximum's
        # backward (aten::where) are 5-10x slower on CPU.
        is_max = isinstance(expr, sp.Max)
        helper = "_maximum" if isinstance(expr, sp.Max) else "_minimum"
        constants = [a for a in expr.args if a.is_number]
        others = [to_torch_source(a) for a in expr.args if not a.is_number]
        code = others[0]
        for arg in others[1:]:
            code = f"{helper}({code}, {arg})"
        for constant in constants:  # sympy folds several constants into one
            c = float(constant)
            if is_max:
                code = f"torch.relu({code})" if c == 0 else f"(torch.relu({code} - {c!r}) + {c!r})"
            else:
                code = f"-torch.relu(-{code})" if c == 0 else f"({c!r} - torch.relu({c!r} - {code}))"
        return code
    if isinstance(expr, sp.Function) and type(expr) in _FUNCTIONS:
        return f"{_FUNCTIONS[type(expr)]}({', '.join(to_torch_source(a) for a in expr.args)})"
    raise ValueError(f"no PyTorch translation for {type(expr).__name__} in {expr}")


def to_torch_function(expr: sp.Expr, symbols: Sequence[sp.Symbol]) -> Callable[..., torch.Tensor]:
    """A function of tensors named like `symbols` (positional) evaluating `expr` elementwise."""
    args = ", ".join(s.name for s in symbols)
    source = f"lambda {args}: {to_torch_source(expr)}"
    return eval(source, dict(_HELPERS))  # noqa: S307 - the source is generated from sympy above
