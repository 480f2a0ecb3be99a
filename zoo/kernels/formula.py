"""Elementwise activations declared once, as a formula.

    ElementwiseFormula("golu", "x * exp(-exp(-x))", domain=(-20, None), below="0")

From the one declaration come: the PyTorch reference (the specification), the derivative with
respect to x and to every parameter (sympy), and the CUDA source of the fused forward and
backward kernels (`zoo.kernels.cuda_codegen`). They cannot drift apart because none of them is
written by hand.

Kinks (Max, Min): the derivative there is the one from the left, PyTorch's convention for relu,
leaky_relu, elu and selu at 0 (`zoo.kernels.kinks`), in the reference, the printed derivatives
and the kernels alike.

Numerical guards: where a formula overflows far from the origin (exp(-x) at x = -1e4), the
declaration names a `domain` and the simple asymptotic forms `below` / `above` that hold outside
it. Inside the domain the formula is evaluated at a clamped x, so no branch ever produces inf or
NaN, and the gradient of the unused branch is an exact 0 instead of 0 * inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import sympy as sp
import torch

from zoo.kernels.kinks import X, kink_diff
from zoo.kernels.torch_code import to_torch_function


class sigmoid(sp.Function):
    """1 / (1 + exp(-v)), evaluated in a form that never overflows (torch.sigmoid, and its CUDA
    twin in the kernels)."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)


class softplus(sp.Function):
    """log(1 + exp(v)), evaluated stably (linear above 20, like torch's softplus)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class asin_clip(sp.Function):
    """asin of v clipped to [-1, 1]: asin(v) for |v| <= 1, sign(v) pi / 2 outside (VeLU's
    arcsine term). Its derivative is 1 / sqrt(1 - v^2) inside and exactly 0 outside and at
    |v| = 1 (Heaviside(0) = 0), never the 0 * inf = NaN that asin(Min(Max(v, -1), 1)) gives."""

    def fdiff(self, argindex=1):
        v = self.args[0]
        inside = sp.Heaviside(1 - sp.Abs(v), 0)
        return inside / sp.sqrt(sp.Max(1 - v**2, 0) + 1 - inside)


FUNCTIONS = {"sigmoid": sigmoid, "softplus": softplus, "asin_clip": asin_clip}


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    learnable: bool = False
    doc: str = ""


def _heaviside_zero_at_zero(expr: sp.Expr) -> sp.Expr:
    # A step a formula writes itself, Heaviside(v), is sympy's 1/2 at 0: make it 0, as torch's
    # relu. (The steps of Max and Min already carry the value at 0 of zoo.kernels.kinks.)
    return expr.replace(lambda e: isinstance(e, sp.Heaviside) and e.args[1] == sp.S.Half,
                        lambda e: sp.Heaviside(e.args[0], 0))


class ElementwiseFormula:
    def __init__(self, name: str, expr: str, params: Sequence[Param] = (),
                 domain: tuple[float | None, float | None] | None = None,
                 below: str | None = None, above: str | None = None):
        self.name = name
        self.text = expr
        self.params = tuple(params)
        self.symbols = {p.name: sp.Symbol(p.name, real=True) for p in self.params}
        names = {"x": X, **FUNCTIONS, **self.symbols}
        self.expr = sp.sympify(expr, locals=names)
        self.lo, self.hi = domain if domain else (None, None)
        if (self.lo is None) != (below is None) or (self.hi is None) != (above is None):
            raise ValueError(f"{name}: each domain bound needs its asymptotic form (below/above)")
        self.below = sp.sympify(below, locals=names) if below is not None else None
        self.above = sp.sympify(above, locals=names) if above is not None else None
        known = {X, *self.symbols.values()}
        unknown = (self.expr.free_symbols | _free(self.below) | _free(self.above)) - known
        if unknown:
            raise ValueError(f"{name}: unknown symbols {sorted(map(str, unknown))}")

    # --- symbolic pieces ------------------------------------------------------------------------
    @property
    def param_symbols(self) -> list[sp.Symbol]:
        return [self.symbols[p.name] for p in self.params]

    @property
    def learnable(self) -> list[Param]:
        return [p for p in self.params if p.learnable]

    def pieces(self) -> dict[str, sp.Expr | None]:
        """value and derivatives for each region: core (inside the domain), below, above."""
        return {"core": self.expr, "below": self.below, "above": self.above}

    @cached_property
    def derivatives(self) -> dict[str, dict[str, sp.Expr]]:
        """region -> {"x": d/dx, param name: d/dparam}; at a kink, the derivative from the left."""
        out = {}
        for region, expr in self.pieces().items():
            if expr is None:
                continue
            wrt = {"x": X, **self.symbols}
            # powsimp: |u|^d sign(u) / |u| becomes |u|^(d-1) sign(u), finite at u = 0
            out[region] = {k: sp.powsimp(_heaviside_zero_at_zero(kink_diff(expr, s)))
                           for k, s in wrt.items()}
        return out

    def formula_text(self) -> str:
        text = self.text
        if self.lo is not None:
            text += f"; {self.below} for x < {self.lo}"
        if self.hi is not None:
            text += f"; {self.above} for x > {self.hi}"
        return text

    # --- PyTorch -------------------------------------------------------------------------------
    @cached_property
    def _functions(self):
        symbols = [X, *self.param_symbols]
        value = {r: to_torch_function(e, symbols) for r, e in self.pieces().items() if e is not None}
        grads = {r: {k: to_torch_function(e, symbols) for k, e in d.items()}
                 for r, d in self.derivatives.items()}
        return value, grads

    def reference(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        """The specification: the formula with its guards, differentiable by autograd."""
        value, _ = self._functions
        return self._guarded(value, x, params)

    def derivative(self, x: torch.Tensor, *params: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sympy derivatives evaluated with torch: what the CUDA backward computes, checkable
        against autograd of `reference` on a CPU."""
        _, grads = self._functions
        keys = ["x", *(p.name for p in self.params)]
        return {k: self._guarded({r: g[k] for r, g in grads.items()}, x, params) for k in keys}

    def _guarded(self, functions, x, params) -> torch.Tensor:
        # A Python float becomes a tensor of x's dtype directly (a fill, no host-device copy):
        # exact in float64, where a float32 tensor of it would have rounded it first.
        params = [torch.full((), p, dtype=x.dtype, device=x.device) if isinstance(p, (int, float))
                  else torch.as_tensor(p, dtype=x.dtype, device=x.device) for p in params]
        # x clamped into the domain, the bounds included in it: autograd passes x's gradient
        # at lo and hi (clamp's backward does not, in recent PyTorch)
        inside = x
        if self.lo is not None:
            inside = torch.where(x < self.lo, self.lo, inside)
        if self.hi is not None:
            inside = torch.where(x > self.hi, self.hi, inside)
        out = _like(functions["core"](inside, *params), x)
        if self.lo is not None:
            out = torch.where(x < self.lo, _like(functions["below"](x, *params), x), out)
        if self.hi is not None:
            out = torch.where(x > self.hi, _like(functions["above"](x, *params), x), out)
        return out


def _free(expr: sp.Expr | None) -> set:
    return set() if expr is None else expr.free_symbols


def _like(value, x: torch.Tensor) -> torch.Tensor:
    """Constants (a derivative of 1 or 0) broadcast to x's shape."""
    if isinstance(value, torch.Tensor) and value.shape == x.shape:
        return value
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand_as(x)
