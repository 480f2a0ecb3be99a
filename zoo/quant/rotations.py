"""Orthogonal rotations of a layer's input features: randomized Hadamard (QuaRot), random
orthogonal (Haar, by QR), and ResQ's PCA basis."""

from __future__ import annotations

import torch
from scipy.linalg import hadamard


def largest_power_of_two_dividing(n: int) -> int:
    return n & -n


def randomized_hadamard(n: int, generator: torch.Generator) -> torch.Tensor:
    """diag(random signs) . H / sqrt(b): H is Sylvester's Hadamard matrix of size n when n is a
    power of two, otherwise block-diagonal with blocks of the largest power of two dividing n
    (so a 1-channel input gets the identity up to sign)."""
    block = largest_power_of_two_dividing(n)
    h = torch.as_tensor(hadamard(block), dtype=torch.float64) / block ** 0.5
    blocks = torch.block_diag(*([h] * (n // block)))
    signs = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    return (signs[:, None] * blocks).float()


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian, signs fixed by R's diagonal)."""
    if n == 0:
        return torch.zeros(0, 0)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def principal_basis(inputs: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of the inputs' second-moment matrix, columns in order of decreasing
    variance: projecting onto the first k columns keeps the most energy any k directions can."""
    x = inputs.double()
    moment = x.T @ x / max(1, x.shape[0])
    values, vectors = torch.linalg.eigh(moment)
    return vectors[:, values.argsort(descending=True)].float()
