"""Built-in quantization variants. An entry's factory returns `apply(model, ctx) -> model`.

Only the float baseline exists yet; the formats of the quantization issue register here.
"""

from __future__ import annotations

from torch import nn

from zoo.models.context import BuildContext
from zoo.registry import QUANTS


@QUANTS.register("none", summary="no quantization: the float model", formula="W")
def none():
    def apply(model: nn.Module, ctx: BuildContext) -> nn.Module:
        return model

    return apply
