"""What an init or quant variant may need to know about the run it is applied in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class BuildContext:
    act: str
    seed: int
    # A batch of training inputs, for data-dependent variants (LSUV init, quant calibration).
    calibration_batch: Optional[Callable[[], torch.Tensor]] = None
