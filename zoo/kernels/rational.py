"""The group-rational activation of KAT's GR-KAN layers, and its initial coefficients.

    R(x) = P(x) / Q(x),  P(x) = a0 + a1 x + ... + a5 x^5,
                         Q(x) = 1 + |b1| |x| + |b2| |x|^2 + |b3| |x|^3 + |b4| |x|^4

with (a, b) shared by each of `groups` equal slices of the channels. Both polynomials are
evaluated by Horner's rule. |b_i| keeps Q >= 1, so R has no poles.

The initial coefficients were fitted for exactly this formula (`fit_coefficients`: linearized
least squares, then L-BFGS on the true mean squared error over 4001 points of [-3, 3], with
restarts); a test re-checks each fit (MSE < 1e-4). KAT's published GELU initialization does not
fit its own formula (MSE about 0.149), so it is not used here.
"""

from __future__ import annotations

import torch

# name -> (a0..a5, b1..b4); MSE on [-3, 3]: identity 0, gelu 6.6e-7, silu 9.0e-14.
INITS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "identity": ((0.0, 1.0, 0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)),
    "gelu": ((-0.001003686806, 0.4986349894, 0.4061351639, 0.1086878418, 0.01076941481,
              0.0004815384632),
             (0.0001266601783, 0.2103723681, 0.005054470387, 1.684214648e-13)),
    "silu": ((4.412811832e-07, 0.5000010961, 0.2499972828, 0.05325185415, 0.005796370054,
              0.000274316348),
             (5.484693084e-06, 0.1064990943, 1.601223051e-06, 0.0005484354104)),
}
TARGETS = {"identity": lambda x: x, "gelu": torch.nn.functional.gelu,
           "silu": torch.nn.functional.silu}


def rational(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """R(x) with coefficients broadcast against x: a[..., 6], b[..., 4] (last dim = degree)."""
    p = a[..., 5]
    for k in (4, 3, 2, 1, 0):
        p = p * x + a[..., k]
    ax, bb = x.abs(), b.abs()
    q = bb[..., 3]
    for k in (2, 1, 0):
        q = q * ax + bb[..., k]
    return p / (1 + q * ax)


def group_rational(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                   channel_dim: int = -1) -> torch.Tensor:
    """Channels of `x` along `channel_dim` split into a.shape[0] equal groups; group g uses
    a[g], b[g]."""
    groups = a.shape[0]
    channel_dim = channel_dim % x.ndim
    channels = x.shape[channel_dim]
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} equal groups")
    moved = x.movedim(channel_dim, -1)
    split = moved.reshape(*moved.shape[:-1], groups, channels // groups)
    # (groups, 1, degree) broadcasts against (..., groups, channels_per_group)
    y = rational(split, a[:, None, :].to(x.dtype), b[:, None, :].to(x.dtype))
    return y.reshape(moved.shape).movedim(-1, channel_dim)


def fit_coefficients(target, restarts: int = 12, seed: int = 0):
    """(a, b, mse) fitting R to `target` on [-3, 3] in float64 (how INITS was produced)."""
    x = torch.linspace(-3, 3, 4001, dtype=torch.float64)
    y = target(x)

    def mse(a, b):
        return ((rational(x, a, b) - y) ** 2).mean()

    def refine(a0, b0, rounds):
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        opt = torch.optim.LBFGS([a, b], max_iter=2000, tolerance_grad=1e-15,
                                tolerance_change=1e-18, history_size=50,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = mse(a, b)
            loss.backward()
            return loss

        for _ in range(rounds):
            opt.step(closure)
        return a.detach(), b.detach().abs(), mse(a, b).item()

    # Linearized start: P(x) - y * sum_i c_i |x|^i = y is linear in (a, c).
    design = torch.stack([x**k for k in range(6)] + [-y * x.abs() ** k for k in range(1, 5)], 1)
    solution = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    best = refine(solution[:6], solution[6:].abs(), 5)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        a0 = torch.randn(6, generator=generator, dtype=torch.float64) * 0.3
        b0 = torch.rand(4, generator=generator, dtype=torch.float64) * 0.5
        candidate = refine(a0, b0, 8)
        if candidate[2] < best[2]:
            best = candidate
    return best
