"""Putting a method into a model: which layers (every nn.Linear and nn.Conv2d by default, minus a
skip filter, with per-layer overrides), their calibration inputs, the swap to quantized layers,
and the size report (bits per weight including scales, model bytes)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.quant.layers import QUANTIZABLE, LayerScheme, QuantConv2d, QuantLinear, quantized

CALIBRATION_ROWS = 4096  # feature rows kept per linear layer
CALIBRATION_MAPS = 64  # input maps kept per convolution


def target_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every linear layer and convolution, in module order (quantized ones included)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def parse_skip(skip: str) -> list[str]:
    return [item.strip() for item in str(skip or "").split(",") if item.strip()]


def parse_override(override: str) -> list[tuple[str, str]]:
    """'head:int8-wo,blocks.0.*:none' -> [(pattern, quant name)]."""
    pairs = []
    for item in parse_skip(override):
        pattern, sep, quant = item.rpartition(":")
        if not sep or not pattern or not quant:
            raise ZooError(f"override {item!r}: write PATTERN:QUANT, e.g. head:int8-wo")
        pairs.append((pattern, quant))
    return pairs


def _matches(name: str, pattern: str, names: list[str]) -> bool:
    if pattern == "first":
        return name == names[0]
    if pattern == "last":
        return name == names[-1]
    return fnmatch.fnmatchcase(name, pattern)


def plan(model: nn.Module, method: Any, skip: str = "", override: str = "",
         method_for: Optional[Callable[[str], Any]] = None) -> dict[str, Any]:
    """{layer name: the method quantizing it, or None to keep it float}."""
    names = [name for name, _ in target_layers(model)]
    if not names:
        raise ZooError("the model has no linear or convolution layer to quantize")
    patterns = parse_skip(skip)
    overrides = parse_override(override)
    for pattern in patterns + [p for p, _ in overrides]:
        if pattern not in ("first", "last") and not any(fnmatch.fnmatchcase(n, pattern)
                                                        for n in names):
            raise ZooError(f"no layer matches {pattern!r}; layers are {', '.join(names[:6])}"
                           f"{', ...' if len(names) > 6 else ''}")
    chosen: dict[str, Any] = {}
    for name in names:
        chosen[name] = None if any(_matches(name, p, names) for p in patterns) else method
        for pattern, quant in overrides:  # the last matching override wins
            if _matches(name, pattern, names):
                chosen[name] = None if quant == "none" else method_for(quant)
    return chosen


@torch.no_grad()
def calibration_inputs(model: nn.Module, layers: list[str], batch: torch.Tensor,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """What each named layer receives when the model runs on `batch` (a sample of it)."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)

    def hook_for(name):
        def hook(module, args):
            x = args[0].detach()
            if isinstance(module, nn.Linear):
                x = x.reshape(-1, x.shape[-1])
                if x.shape[0] > CALIBRATION_ROWS:
                    keep = torch.randperm(x.shape[0], generator=generator)[:CALIBRATION_ROWS]
                    x = x[keep.to(x.device)]
            else:
                x = x[:CALIBRATION_MAPS]
            captured[name] = x.float()
        return hook

    handles = [modules[name].register_forward_pre_hook(hook_for(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        model(batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return captured


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@dataclass
class QuantSummary:
    quantized: dict[str, str] = field(default_factory=dict)  # layer -> scheme description
    kept_float: dict[str, str] = field(default_factory=dict)  # layer -> why


def quantize_model(model: nn.Module, method: Any, *, skip: str = "", override: str = "",
                   calibration: Optional[Callable[[], torch.Tensor]] = None, seed: int = 0,
                   method_for: Optional[Callable[[str], Any]] = None) -> QuantSummary:
    """Swap the chosen layers for quantized ones, in place."""
    if any(isinstance(m, (QuantLinear, QuantConv2d)) for m in model.modules()):
        raise ZooError("the model is already quantized")
    chosen = plan(model, method, skip, override, method_for)
    calibrated = [n for n, m in chosen.items() if m is not None and m.needs_calibration]
    inputs: dict[str, torch.Tensor] = {}
    if calibrated:
        if calibration is None:
            raise ZooError("this quantization method needs calibration data")
        inputs = calibration_inputs(model, calibrated, calibration(), seed)
    modules = dict(model.named_modules())
    summary = QuantSummary()
    for name, layer_method in chosen.items():
        if layer_method is None:
            summary.kept_float[name] = "skipped"
            continue
        scheme = layer_method.scheme(modules[name], inputs.get(name))
        if isinstance(scheme, str):
            summary.kept_float[name] = scheme
            continue
        _replace(model, name, quantized(modules[name], scheme))
        summary.quantized[name] = scheme.describe()
    model.zoo_quant_summary = summary
    return summary


# --- size report ------------------------------------------------------------------------------

def size_report(model: nn.Module) -> dict[str, Any]:
    """Bits per quantized weight (codes + scales + zero points, averaged over the quantized
    layers' weights) and the model's size in bytes: quantized weights at their storage size,
    everything else in the state dict (biases, norms, embeddings, float layers, stored rotation
    matrices) at its dtype's size."""
    quantized_bits, quantized_weights, other_bytes = 0, 0, 0
    stored_weights = set()
    for module in model.modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            scheme: LayerScheme = module.scheme
            quantized_bits += scheme.weight_bits(module.weight.shape)
            quantized_weights += module.weight.numel()
            stored_weights.add(id(module.weight))
    seen = set(stored_weights)
    state = model.state_dict(keep_vars=True)
    for tensor in state.values():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            other_bytes += tensor.numel() * tensor.element_size()
    float_tensors = {id(t): t for name, t in state.items() if ".scheme." not in f".{name}"}
    float_bytes = sum(t.numel() * t.element_size() for t in float_tensors.values())
    return {
        "bits_per_weight": quantized_bits / quantized_weights if quantized_weights else None,
        "model_bytes": int(quantized_bits // 8 + other_bytes),
        "float_bytes": int(float_bytes),
        "quantized_weights": quantized_weights,
        "quantized_layers": sum(isinstance(m, (QuantLinear, QuantConv2d))
                                for m in model.modules()),
    }
