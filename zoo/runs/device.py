"""The device a run asks for (`--device auto|cpu|cuda|cuda:N`), checked against this machine,
and whether a planned allocation fits in its free memory."""

from __future__ import annotations

import os

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


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` now (None where the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux
        return None


def ensure_fits(nbytes: int, device: torch.device, what: str) -> None:
    """Refuse, before allocating, work whose tensors would not fit in `device`'s free memory
    (an out-of-memory kill loses the output and can take the machine's other jobs with it)."""
    free = free_memory(device)
    if free is not None and nbytes > free:
        raise ZooError(f"{what} needs about {nbytes / 2**30:.1f} GiB, more than the "
                       f"{free / 2**30:.1f} GiB free on {device}; choose a smaller size")
