"""Initializations that take their weights from another, trained model.

`weight_selection` (Xu et al., "Initializing Models with Larger Ones") initializes a small model
with a subset of a larger trained model's weights:

1. layer selection, first-N: the small model's block i takes the source's block i
   (timm ViT `blocks.{i}.`, ResNet `layer{k}.{i}.`);
2. component mapping: a tensor takes the source tensor of the same name;
3. element selection, uniform: along every dimension where the source is larger (L > S), take S
   evenly spaced indices. As in the authors' code, that is every (L/S)-th index when S divides
   L, else round(linspace(0, L-1, S)). The indices depend only on (L, S), so a hidden unit that
   is kept in one layer is kept in every layer that reads or writes it (the paper's
   "consistency"): the selected network is a sub-network of the source, not a random mix.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.registry.core import INITS

USAGE = ("--init-param source=PATH, PATH a zoo run directory or a .safetensors/.pt/.pth "
         "checkpoint of a larger trained model")
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
# Names that start with a block index: the first-N layer selection acts on these prefixes.
_BLOCK = re.compile(r"^(blocks\.\d+|layer\d+\.\d+)\.")
# timm's fused attention input projection: rows are [q; k; v], each D wide.
_QKV = re.compile(r"(^|\.)qkv\.(weight|bias)$")


def evenly_spaced(large: int, small: int) -> torch.Tensor:
    """The `small` indices of `large` that uniform selection keeps."""
    if large % small == 0:
        return torch.arange(small) * (large // small)
    return torch.linspace(0, large - 1, small).round().long()


def select_elements(name: str, source: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Uniform element selection of `source` down to `shape`; ZooError where it cannot."""
    if source.ndim != len(shape) or any(s > l for s, l in zip(shape, source.shape)):
        raise ZooError(f"weight_selection cannot map {name}: the source's is "
                       f"{tuple(source.shape)}, this model's {tuple(shape)} (the source must be "
                       "at least as large in every dimension)")
    if _QKV.search(name) and source.shape[0] % 3 == 0 and shape[0] % 3 == 0:
        # Select within q, k and v separately, so that each keeps the same hidden units.
        thirds = select_elements("", source.reshape(3, -1, *source.shape[1:]),
                                 torch.Size((3, shape[0] // 3, *shape[1:])))
        return thirds.reshape(shape)
    for dim, (large, small) in enumerate(zip(source.shape, shape)):
        if small < large:
            source = source.index_select(dim, evenly_spaced(large, small))
    return source


def load_source_state(path: Path, ctx: BuildContext) -> dict[str, torch.Tensor]:
    """The state_dict in a zoo run directory (read by `ctx.run_weights`) or a checkpoint file,
    on the CPU."""
    if path.is_dir():
        if ctx.run_weights is None:
            raise ZooError(f"weight_selection source {path} is a run folder, and this model is "
                           "built without a reader of run folders (build it with zoo.build)")
        state = ctx.run_weights(path)
        if state is None:
            raise ZooError(f"weight_selection source {path} has no checkpoint yet "
                           "(is the run started?)")
        return state
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch.load raise many types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ZooError(f"weight_selection source {path} is unreadable ({first})") from None
    if isinstance(state, dict):  # training scripts often wrap the weights
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ZooError(f"weight_selection source {path} does not hold a state_dict of tensors")
    return state


def _check_source_path(source) -> Path:
    if not isinstance(source, str):  # the CLI turns a number-like value into a float
        raise ZooError(f"weight_selection source must be a path, got {source!r}")
    if not source.strip():
        raise ZooError(f"weight_selection needs a source: {USAGE}")
    path = Path(source).expanduser()
    if not path.exists():
        raise ZooError(f"weight_selection source {path} does not exist ({USAGE})")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ZooError(f"weight_selection source {path} is a folder but not a zoo run directory "
                       "(no config.json)")
    if path.is_file() and path.suffix not in _CHECKPOINT_SUFFIXES:
        raise ZooError(f"weight_selection source {path}: unknown checkpoint type "
                       f"'{path.suffix}' (use {', '.join(_CHECKPOINT_SUFFIXES)} or a run "
                       "directory)")
    return path


def _classifier_name(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)  # timm models have it
    head = get() if callable(get) else None
    return next((name for name, module in model.named_modules() if module is head), None)


def _check_classes(model: nn.Module, target: dict, state: dict) -> None:
    """A classifier can only be selected from one with the same classes."""
    head = _classifier_name(model)
    key = f"{head}.weight" if head else None
    if key in target and key in state and state[key].ndim == target[key].ndim:
        theirs, ours = state[key].shape[0], target[key].shape[0]
        if theirs != ours:
            raise ZooError(f"weight_selection: the source has {theirs} classes, this run has "
                           f"{ours}; pick a source trained on the same data set")


@INITS.register(
    "weight_selection",
    formula="small tensor = the source's tensor of the same name (block i from block i), at "
            "evenly spaced indices along every larger dimension: every (L/S)-th index, else "
            "round(linspace(0, L-1, S)); q, k, v selected separately",
    paper=("Initializing Models with Larger Ones", "2311.18823"),
    touches="every parameter and buffer with a counterpart in the source: weights, biases, "
            "normalization layers and their running statistics, position embeddings, class "
            "token, classifier",
    keeps="tensors the source lacks (e.g. an activation's own parameters): the architecture's "
          "default",
    note="source=PATH: a zoo run directory or a .safetensors/.pt checkpoint of a model of the "
         "same architecture, at least as wide and deep, trained on the same classes; mapped "
         "tensors come from it, so the seed does not change them",
    requires=("source",),
)
def weight_selection(source: str = ""):
    """Initialize from a subset of a larger trained model's weights."""
    path = _check_source_path(source)  # before any work, so `zoo train` fails at once

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        state = load_source_state(path, ctx)
        target = model.state_dict()
        _check_classes(model, target, state)
        source_blocks = {m.group(1) for name in state if (m := _BLOCK.match(name))}
        mapped = 0
        with torch.no_grad():
            for name, tensor in target.items():
                block = _BLOCK.match(name)
                if block and block.group(1) not in source_blocks:
                    raise ZooError(f"weight_selection: the source has no {block.group(1)} for "
                                   f"{name}: it must be at least as deep as this model")
                if name in state:
                    tensor.copy_(select_elements(name, state[name], tensor.shape))
                    mapped += 1
        if mapped == 0:
            raise ZooError(f"weight_selection: no tensor of this model is in {path} (is it a "
                           "checkpoint of the same architecture?)")

    return apply
