"""The device a run asks for (`--device auto|cpu|cuda|cuda:N`), checked against this machine."""

from __future__ import annotations

import torch

from zoo.errors import ZooError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ZooError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"device '{name}' was requested but CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ZooError(f"device '{name}' is not supported: use auto, cpu, cuda or cuda:N")
    return device
