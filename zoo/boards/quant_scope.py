"""What a quant board's formats quantize in each architecture, read from the model itself rather
than claimed: the layers zoo's quantization targets by default (`zoo.quant.apply.target_layers`:
every nn.Linear and nn.Conv2d), the first and the last of them, and whether the model's output
layer is one of them. gpt2's is not: its head multiplies by the token embedding's weight (tied),
and embeddings stay float.

The model is built on PyTorch's meta device (shapes without memory or arithmetic), so this takes
milliseconds even for a large model. Which layers are quantized does not depend on the data set,
only their sizes do, so a small stand-in shape is enough.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.build import build_model
from zoo.errors import ZooError
from zoo.quant.apply import target_layers
from zoo.registry.kinds import takes_text

IMAGE_SHAPE = {"image_size": (32, 32), "channels": 3, "num_classes": 10}
TEXT_SHAPE = {"vocab_size": 256}
TARGETS = "nn.Linear and nn.Conv2d"  # what `target_layers` selects


@dataclass(frozen=True)
class QuantScope:
    layers: tuple[str, ...]  # the layers quantized by default, in module order
    output: str | None  # the model's output layer (timm's `get_classifier`), if it names one
    output_kind: str  # its class name
    # when its weight is another module's (tied weights): that module's name and class
    tied_to: str | None
    tied_kind: str

    def describe(self) -> str:
        """One line for the board, e.g. "8 layers (every nn.Linear and nn.Conv2d), from
        `blocks.0.attn.qkv` to `blocks.1.mlp.fc2`; the output layer `lm_head` is not one: ..."."""
        if not self.layers:
            return f"none: the model has no {TARGETS}"
        count = "1 layer" if len(self.layers) == 1 else f"{len(self.layers)} layers"
        span = (f"`{self.layers[0]}`" if len(self.layers) == 1 else
                f"from `{self.layers[0]}` to `{self.layers[-1]}`")
        text = f"{count} (every {TARGETS}), {span}"
        if self.output is None:
            return f"{text}; the model names no output layer"
        if self.output in self.layers:
            return f"{text}; the output layer `{self.output}` is one of them"
        if self.tied_to is not None:
            return (f"{text}; the output layer `{self.output}` is not one: it reuses the weight "
                    f"of the {self.tied_kind} `{self.tied_to or 'model'}` (tied weights), which "
                    "stays float32")
        return (f"{text}; the output layer `{self.output}` ({self.output_kind}) is not one: it "
                "stays float32")


def quant_scope(arch: str, arch_params: Mapping[str, Any] | None) -> QuantScope | None:
    """The default quantization scope of `arch` built with `arch_params`; None when the model
    cannot be built here (an arch from a plugin that is not loaded, options it refuses)."""
    shape = TEXT_SHAPE if _is_text(arch) else IMAGE_SHAPE
    try:
        with torch.device("meta"):
            model = build_model(arch, arch_params=dict(arch_params or {}), **shape)
    # the scope line only describes: a model this process cannot build (or build on the meta
    # device) leaves it unknown, and must not stop the boards
    except (ZooError, TypeError, ValueError, RuntimeError, NotImplementedError):
        return None
    return scope_of(model)


def scope_of(model: nn.Module) -> QuantScope:
    layers = tuple(name for name, _ in target_layers(model))
    classifier = getattr(model, "get_classifier", None)
    head = classifier() if callable(classifier) else None
    names = {id(module): name for name, module in model.named_modules()}
    output = names.get(id(head)) if isinstance(head, nn.Module) else None
    tied_to, owner = _tied_weight(model, head, output)
    return QuantScope(layers, output, type(head).__name__, tied_to, owner)


def _tied_weight(model: nn.Module, head: Any, output: str | None) -> tuple[str | None, str]:
    """(name, class) of the module whose own parameter `head.weight` is, when that module is
    not the head itself: a weight shared with another layer."""
    weight = getattr(head, "weight", None)
    if output is None or not isinstance(weight, torch.Tensor):
        return None, ""
    for module_name, module in model.named_modules():
        if module_name == output or module_name.startswith(output + "."):
            continue
        for param in module.parameters(recurse=False):
            if param is weight:
                return module_name, type(module).__name__
    return None, ""


def _is_text(arch: str) -> bool:
    try:
        return takes_text(arch)
    except ZooError:  # not registered here: `quant_scope` then says it cannot tell
        return False
