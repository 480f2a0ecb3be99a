"""Late composition: build the architecture with the activation injected, then apply the init,
then the quantization; then check that no nonlinearity other than the requested one is left."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from zoo.errors import ZooError, one_line
from zoo.models.activation import Activation
from zoo.models.context import BuildContext
from zoo.registry import ACTS, ARCHS, INITS, QUANTS
from zoo.registry.archs import default_act
from zoo.runs.rundir import stored_model_weights


def act_layer_for(name: str, **params) -> Callable[..., Activation]:
    """A constructor with the signature architectures expect: `act_layer()` or
    `act_layer(inplace=True)`; each call builds a fresh module."""
    entry = ACTS.get(name)

    def make(inplace: bool = False, **overrides) -> Activation:
        # An architecture may override a parameter per layer (KAT starts its first rational
        # layer as the identity); everything else comes from the user's --act-param.
        return entry.create(inplace=inplace, **{**params, **overrides})

    make.__name__ = f"zoo_{name}"
    make.act_name = name  # type: ignore[attr-defined]
    return make


def build_model(
    arch: str,
    *,
    act: str | None = None,
    init: str = "default",
    quant: str = "none",
    seed: int = 0,
    act_params: dict[str, Any] | None = None,
    init_params: dict[str, Any] | None = None,
    quant_params: dict[str, Any] | None = None,
    arch_params: dict[str, Any] | None = None,
    calibration_batch=None,
    **data_shape: Any,
) -> nn.Module:
    """`data_shape` is what the architecture's factory needs to know about the data: image_size,
    channels and num_classes for image models, vocab_size and block_size for language models."""
    arch_entry = ARCHS.get(arch)
    act = act or default_act(arch)
    ACTS.get(act)  # fail on an unknown name before any work
    init_fn = INITS.get(init).create(**(init_params or {}))
    quant_fn = QUANTS.get(quant).create(**(quant_params or {}))

    torch.manual_seed(seed)
    try:
        if "image_size" in data_shape:
            data_shape["image_size"] = tuple(data_shape["image_size"])
        model = arch_entry.create(
            act_layer=act_layer_for(act, **(act_params or {})),
            **data_shape,
            **(arch_params or {}),
        )
    except TypeError as exc:  # an unknown size option for this architecture
        raise ZooError(f"cannot build {arch}: {exc}") from exc
    except (ValueError, RuntimeError, AssertionError, ZeroDivisionError) as exc:
        if not arch_params:  # the recipe's own sizes failed: a bug, not a user's mistake
            raise
        options = " ".join(f"{k}={v}" for k, v in arch_params.items())
        raise ZooError(f"cannot build {arch} with --arch-param {options}: {one_line(exc)}") \
            from exc
    ctx = BuildContext(act=act, seed=seed, calibration_batch=calibration_batch,
                       run_weights=stored_model_weights)
    init_fn(model, ctx)
    model = quant_fn(model, ctx) or model
    check_activations(model, act)
    return model


def _is_nonlinearity(module: nn.Module) -> bool:
    """Activation modules from torch.nn or timm; softmax-like normalizers are not counted."""
    if isinstance(module, Activation):
        return True
    cls = type(module)
    if cls.__name__ in {"Softmax", "Softmin", "LogSoftmax", "Softmax2d", "MultiheadAttention"}:
        return False
    return cls.__module__ == "torch.nn.modules.activation" or (
        cls.__module__.startswith("timm.layers.activations")
    )


def check_activations(model: nn.Module, act: str) -> int:
    """Every nonlinearity in `model` must be the zoo activation `act` (timm has had sub-modules
    that ignored `act_layer`). Returns how many there are."""
    found = 0
    for name, module in model.named_modules():
        if not _is_nonlinearity(module):
            continue
        if not isinstance(module, Activation) or module.act_name != act:
            kind = module.act_name if isinstance(module, Activation) else type(module).__name__
            raise ZooError(f"activation leak: {name or 'model'} uses {kind}, not the requested {act}")
        found += 1
    if found == 0:
        raise ZooError(f"the model has no {act} activation: the architecture ignored act_layer")
    return found


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
