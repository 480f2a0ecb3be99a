"""What an init or quant variant may need to know about the run it is applied in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class BuildContext:
    act: str
    seed: int
    # A batch of training inputs, for data-dependent variants (LSUV init, quant calibration).
    calibration_batch: Optional[Callable[[], torch.Tensor]] = None
    # Reads the latest model weights of a zoo run folder (None before its first checkpoint):
    # how weight_selection takes a stored run as its source. zoo.build passes the run store's
    # reader, so that inits never depend on how runs are kept.
    run_weights: Optional[Callable[[Path], Optional[dict[str, torch.Tensor]]]] = None
