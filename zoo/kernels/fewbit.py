"""Few-bit backward for elementwise activations ("Few-Bit Backward: Quantized Gradients of
Activation Functions for Memory Footprint Reduction", Novikov et al., arXiv 2202.00441).

The backward pass of y = f(x) needs only f'(x). Instead of saving x (16 or 32 bits an element),
the forward saves a `bits`-bit code: the index of the interval x falls into, for the optimal
piecewise-constant approximation of f' with 2^bits levels. The backward multiplies the incoming
gradient by that interval's level.

"Optimal" follows the paper: minimize the expected squared error of the derivative,
integral (f'(x) - q(x))^2 p(x) dx, with p the standard normal density (pre-activations after a
normalization layer), over piecewise-constant q with 2^bits pieces. Given the interval bounds, each
level is the p-weighted mean of f' over its interval; the bounds are found exactly on a fine grid
by dynamic programming (`optimal_piecewise_constant`).

Codes are stored as `bits` bit planes packed eight elements per byte, so a tensor of n elements
costs ceil(n / 8) * bits bytes whatever the bit width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

BITS = (1, 2, 3, 4)
GRID_HALF_WIDTH = 8.0  # the grid covers [-8, 8]; p(8) = 5e-15, the tails carry no weight
GRID_STEP = 0.01


@dataclass(frozen=True)
class PiecewiseConstant:
    """q(x) = levels[i] for boundaries[i-1] < x <= boundaries[i] (open-ended first and last)."""

    boundaries: tuple[float, ...]  # increasing, len = len(levels) - 1
    levels: tuple[float, ...]
    weighted_mse: float  # E_p[(f'(x) - q(x))^2] on the grid

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        codes = torch.bucketize(x, torch.tensor(self.boundaries, dtype=x.dtype, device=x.device))
        return torch.tensor(self.levels, dtype=x.dtype, device=x.device)[codes]


def grid_edges() -> np.ndarray:
    """Cell edges over [-8, 8], integer multiples of GRID_STEP (so 0 is exactly an edge)."""
    cells = round(GRID_HALF_WIDTH / GRID_STEP)
    return np.arange(-cells, cells + 1) * GRID_STEP


def optimal_piecewise_constant(derivative, pieces: int) -> PiecewiseConstant:
    """The p-weighted least-squares piecewise-constant fit of `derivative` (a function of a
    float64 tensor) with at most `pieces` pieces, exact on a grid of cells of width GRID_STEP.

    dp[k][j] = the least error covering cells 0..j-1 with k pieces; the cost of one piece over
    cells i..j-1 is its weighted variance, S2 - S1^2 / W from prefix sums, so each step is a
    minimum over an (n+1) x (n+1) matrix.
    """
    edges = grid_edges()
    mids = (edges[:-1] + edges[1:]) / 2
    values = derivative(torch.from_numpy(mids)).double().numpy()
    weights = np.exp(-mids**2 / 2) / math.sqrt(2 * math.pi) * GRID_STEP
    n = len(mids)
    w = np.concatenate([[0.0], np.cumsum(weights)])
    s1 = np.concatenate([[0.0], np.cumsum(weights * values)])
    s2 = np.concatenate([[0.0], np.cumsum(weights * values**2)])
    with np.errstate(divide="ignore", invalid="ignore"):
        total_w = w[None, :] - w[:, None]  # [i, j]: cells i..j-1
        cost = (s2[None, :] - s2[:, None]) - (s1[None, :] - s1[:, None]) ** 2 / total_w
    # Far in the upper tail, differences of cumulative sums cancel to 0 / 0: such pieces carry
    # no weight, so they cost nothing.
    cost = np.maximum(np.nan_to_num(cost, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    cost = np.where(np.triu(np.ones((n + 1, n + 1), dtype=bool), k=1), cost, np.inf)

    best = cost[0].copy()  # one piece over cells 0..j-1
    choices = []
    for _ in range(pieces - 1):
        candidates = best[:, None] + cost  # last piece starts at cell i
        start = np.argmin(candidates, axis=0)
        improved = candidates[start, np.arange(n + 1)]
        # An extra piece that does not really help (round-off) is not used.
        keep = improved < best - 1e-12 * max(1.0, float(w[n] * values.var()))
        choices.append(np.where(keep, start, -1))
        best = np.where(keep, improved, best)

    cuts, j = [], n  # walk back from the full grid
    for choice in reversed(choices):
        if choice[j] > 0:
            cuts.append(int(choice[j]))
            j = int(choice[j])
    bounds = [0, *sorted(cuts), n]
    levels = [float(np.average(values[a:b], weights=weights[a:b]))
              for a, b in zip(bounds[:-1], bounds[1:])]
    total = float(best[n]) / w[n]
    return PiecewiseConstant(tuple(float(edges[c]) for c in bounds[1:-1]),
                             tuple(float(v) for v in levels), total)


@lru_cache(maxsize=None)
def approximation_for(formula, params: tuple[float, ...], bits: int) -> PiecewiseConstant:
    """The derivative of `formula` at fixed parameter values, approximated with 2^bits levels."""
    def derivative(x):
        return formula.derivative(x, *(torch.tensor(p, dtype=torch.float64) for p in params))["x"]

    return optimal_piecewise_constant(derivative, 2**bits)


# --- bit-plane packing --------------------------------------------------------------------------

_PLACE = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes < 2^bits (any shape) -> (bits, ceil(n / 8)) uint8."""
    flat = codes.reshape(-1)
    flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % 8))
    shifts = torch.arange(bits, dtype=torch.uint8, device=codes.device)[:, None]
    planes = (flat[None, :] >> shifts) & 1
    place = _PLACE.to(codes.device)
    return (planes.view(bits, -1, 8) * place).sum(dim=-1, dtype=torch.uint8)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    place = _PLACE.to(packed.device)
    planes = (packed[..., None] & place) != 0  # (bits, n/8, 8)
    weights = (1 << torch.arange(bits, device=packed.device, dtype=torch.uint8))[:, None]
    codes = (planes.reshape(bits, -1).to(torch.uint8) * weights).sum(dim=0, dtype=torch.uint8)
    return codes[:numel]


class FewBitBackward(torch.autograd.Function):
    """y = forward_fn(x); saves only the packed codes of x's interval."""

    @staticmethod
    def forward(ctx, x, forward_fn, approximation: PiecewiseConstant, bits: int):
        with torch.no_grad():
            y = forward_fn(x)
            bounds = torch.tensor(approximation.boundaries, dtype=torch.float32, device=x.device)
            codes = torch.bucketize(x.float() if x.dtype != torch.float64 else x,
                                    bounds.to(torch.float64 if x.dtype == torch.float64
                                              else torch.float32)).to(torch.uint8)
        ctx.save_for_backward(pack(codes, bits))
        ctx.bits, ctx.shape, ctx.levels = bits, x.shape, approximation.levels
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (packed,) = ctx.saved_tensors
        codes = unpack(packed, ctx.bits, grad_y.numel()).long()
        levels = torch.tensor(ctx.levels, dtype=grad_y.dtype, device=grad_y.device)
        return grad_y * levels[codes].view(ctx.shape), None, None, None
