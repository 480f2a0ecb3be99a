"""sympy expression -> a PyTorch function, by printing Python source that calls torch ops.

Only the functions activation formulas use are supported; anything else fails at declaration time
(not in the middle of a training run) with the name of the unsupported function.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import sympy as sp
import torch

from zoo.kernels.kinks import X, constant_wins_ties, kink_diff, left_above

_FUNCTIONS = {
    sp.exp: "torch.exp", sp.log: "torch.log", sp.tanh: "torch.tanh", sp.sin: "torch.sin",
    sp.cos: "torch.cos", sp.atan: "torch.atan", sp.asin: "torch.asin", sp.erf: "torch.erf",
    sp.erfc: "torch.erfc", sp.Abs: "torch.abs", sp.sign: "torch.sign", sp.cosh: "torch.cosh",
    sp.sinh: "torch.sinh",
}


def _step(a: torch.Tensor) -> torch.Tensor:
    """Heaviside step with H(0) = 0, the convention of PyTorch's own relu gradient."""
    return (a > 0).to(a.dtype)


def _step_closed(a: torch.Tensor) -> torch.Tensor:
    """Heaviside step with H(0) = 1."""
    return (a >= 0).to(a.dtype)


def _is_left_above(a, da, b, db, tie) -> torch.Tensor:
    """zoo.kernels.kinks.left_above as a bool tensor."""
    a, da, b, db = (torch.as_tensor(v) for v in (a, da, b, db))
    return (a > b) | ((a == b) & ((da < db) | ((da == db) & bool(tie))))


def _left_above(a, da, b, db, tie) -> torch.Tensor:
    above = _is_left_above(a, da, b, db, tie)
    return above.to(torch.result_type(torch.as_tensor(a), torch.as_tensor(b)))


def _closed_bound(v: torch.Tensor, c: float, larger: bool) -> torch.Tensor:
    """max(v, c) (larger) or min(v, c) with v the branch at v = c, where autograd passes v's
    gradient. (clamp's backward is no help: whether it passes the gradient at the bound has
    changed between PyTorch versions.)"""
    return torch.where(v >= c if larger else v <= c, v, c)


def _left_extreme(larger: bool, *pairs) -> torch.Tensor:
    """Max (larger) or Min of the (value, slope) pairs, by the rule of zoo.kernels.kinks: the
    result is the argument that holds just left of x, so autograd differentiates that one."""
    value, slope = pairs[0]
    for other, other_slope in pairs[1:]:
        # a later argument takes over only where it is strictly ahead: the earlier wins a full tie
        take = (_is_left_above(other, other_slope, value, slope, False) if larger
                else _is_left_above(value, slope, other, other_slope, False))
        value, slope = torch.where(take, other, value), torch.where(take, other_slope, slope)
    return value


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


_HELPERS = {"torch": torch, "_step": _step, "_step_closed": _step_closed,
            "_closed_bound": _closed_bound, "_left_above": _left_above,
            "_left_extreme": _left_extreme, "_asin_clip": _asin_clip, "_gamma": _gamma}


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
        step = "_step_closed" if expr.args[1] == 1 else "_step"
        return f"{step}({to_torch_source(expr.args[0])})"
    if isinstance(expr, left_above):
        return f"_left_above({', '.join(to_torch_source(a) for a in expr.args)})"
    if isinstance(expr, (sp.Max, sp.Min)):
        return _kink_source(expr)
    if isinstance(expr, sp.Function) and type(expr) in _FUNCTIONS:
        return f"{_FUNCTIONS[type(expr)]}({', '.join(to_torch_source(a) for a in expr.args)})"
    raise ValueError(f"no PyTorch translation for {type(expr).__name__} in {expr}")


def _kink_source(expr: sp.Max | sp.Min) -> str:
    """Max or Min whose autograd derivative at a tie is the derivative from the left
    (zoo.kernels.kinks), written with the op whose backward gives that side."""
    is_max = isinstance(expr, sp.Max)
    constant_wins = constant_wins_ties(expr)
    if constant_wins is not None:  # Max(c, v) or Min(c, v), v with a constant slope
        c = float(next(a for a in expr.args if a.is_number))
        v = to_torch_source(next(a for a in expr.args if not a.is_number))
        if not constant_wins:
            return f"_closed_bound({v}, {c!r}, {is_max})"
        # relu's backward passes none at 0: max(v, c) = relu(v - c) + c, min = c - relu(c - v)
        if is_max:
            return f"torch.relu({v})" if c == 0 else f"(torch.relu({v} - {c!r}) + {c!r})"
        return f"-torch.relu(-{v})" if c == 0 else f"({c!r} - torch.relu({c!r} - {v}))"
    pairs = ", ".join(f"({to_torch_source(a)}, {to_torch_source(kink_diff(a, X))})"
                      for a in expr.args)
    return f"_left_extreme({is_max}, {pairs})"


def to_torch_function(expr: sp.Expr, symbols: Sequence[sp.Symbol]) -> Callable[..., torch.Tensor]:
    """A function of tensors named like `symbols` (positional) evaluating `expr` elementwise."""
    args = ", ".join(s.name for s in symbols)
    source = f"lambda {args}: {to_torch_source(expr)}"
    return eval(source, dict(_HELPERS))  # noqa: S307 - the source is generated from sympy above
