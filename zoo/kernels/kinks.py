"""The derivative of a formula where a Max or Min switches branch: the derivative from the left.

At a kink x0 every zoo derivative is the one-sided derivative for x -> x0 from below: x0 belongs
to the branch that holds just left of it. That is PyTorch's convention for its piecewise
activations at 0, which all put x = 0 in their x <= 0 branch: relu'(0) = 0,
leaky_relu'(0) = slope, elu'(0) = alpha, selu'(0) = scale * alpha.

Which argument of Max(a, b) holds just left of x0 follows from the values, then the slopes: if
a = b at x0, the argument with the smaller slope d/dx is the larger one just left of x0 (for
Min, the one with the larger slope is the smaller one). When the slopes are equal too, the
earlier argument (sympy's order) wins. The slopes come from this same rule, so nested Max and
Min follow it as well.

The rule lives here once. The printed derivatives (`kink_diff`), the PyTorch reference
(`zoo.kernels.torch_code`, through which autograd differentiates) and the CUDA kernels
(`zoo.kernels.cuda_codegen`) all follow it, so they agree at the kinks, not only between them.
"""

from __future__ import annotations

import sympy as sp

X = sp.Symbol("x", real=True)


class left_above(sp.Function):
    """left_above(a, da, b, db, tie): 1 where a > b just left of x, else 0: a > b, or a == b and
    da < db (da, db: the slopes d/dx); `tie` (0 or 1) where also da == db. With constant slopes
    it is a Heaviside step whose value at a == b is decided once, here."""

    @classmethod
    def eval(cls, a, da, b, db, tie):
        if da.is_number and db.is_number:
            at_tie = 1 if da < db else (0 if da > db else tie)
            return sp.Heaviside(a - b, at_tie)
        return None

    def fdiff(self, argindex=1):
        return sp.S.Zero  # a step: zero wherever it is differentiable


def _winner(args: tuple, i: int, larger: bool) -> sp.Expr:
    """1 where args[i] is the argument Max (larger) or Min holds just left of x."""
    slopes = [sp.diff(a, X) for a in args]
    weight = sp.S.One
    for j, other in enumerate(args):
        if j == i:
            continue
        tie = 1 if i < j else 0  # the earlier argument wins a complete tie
        if larger:
            weight *= left_above(args[i], slopes[i], other, slopes[j], tie)
        else:
            weight *= left_above(other, slopes[j], args[i], slopes[i], tie)
    return weight


class _LeftMax(sp.Function):
    """Max whose derivative is that of the argument holding just left of x."""

    def fdiff(self, argindex=1):
        return _winner(self.args, argindex - 1, larger=True)


class _LeftMin(sp.Function):
    """Min whose derivative is that of the argument holding just left of x."""

    def fdiff(self, argindex=1):
        return _winner(self.args, argindex - 1, larger=False)


def kink_diff(expr: sp.Expr, symbol: sp.Symbol) -> sp.Expr:
    """d expr / d symbol with every Max and Min differentiated by the rule above: in place of
    sympy's Heaviside(a - Max(others)), whose value at a tie is sympy's 1/2."""
    marked = expr.replace(sp.Max, _LeftMax).replace(sp.Min, _LeftMin)
    return sp.diff(marked, symbol).replace(_LeftMax, sp.Max).replace(_LeftMin, sp.Min)


def constant_wins_ties(expr: sp.Expr) -> bool | None:
    """For Max(c, v) or Min(c, v), c a number and v with a constant non-zero slope: whether c is
    the branch at v = c (True), or v is (False). None for any other Max or Min."""
    constants = [a for a in expr.args if a.is_number]
    if len(expr.args) != 2 or len(constants) != 1:
        return None
    (v,) = [a for a in expr.args if not a.is_number]
    slope = kink_diff(v, X)
    if not slope.is_number or slope == 0:
        return None
    # just left of the tie, v is below c if it rises (slope > 0): Max holds c there, Min holds v
    rising = bool(slope > 0)
    return rising if isinstance(expr, sp.Max) else not rising
