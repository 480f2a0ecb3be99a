"""Built-in quantization variants. An entry's factory returns `apply(model, ctx) -> model`.

Every entry quantizes every nn.Linear and nn.Conv2d of the model (see zoo.quant.apply), with
two parameters of its own:
  skip      comma-separated layers kept float: `first`, `last` or fnmatch patterns
            (`--quant-param skip=first,last`, `skip=head,blocks.0.*`)
  override  comma-separated PATTERN:QUANT pairs giving some layers another entry
            (`--quant-param override=head:int8-wo,patch_embed.proj:none`)
The formats and methods themselves live in zoo.quant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.quant.apply import quantize_model
from zoo.quant.formats import FP8_E4M3, FP8_E5M2, MXFP4, NVFP4, Format
from zoo.quant.methods import (
    LLMFP4,
    ResQ,
    WeightActivation,
    WeightOnly,
    int_weight_only,
    per_channel_int,
)
from zoo.registry.core import QUANTS

PLACEMENT = {"skip": "", "override": ""}


@QUANTS.register("none", summary="no quantization: the float model", formula="W")
def none():
    def apply(model: nn.Module, ctx: BuildContext) -> nn.Module:
        return model

    return apply


@dataclass
class QuantRecipe:
    """A method plus where it goes; calling it quantizes a model in place."""

    method: Any
    skip: str = ""
    override: str = ""

    def __call__(self, model: nn.Module, ctx: BuildContext) -> nn.Module:
        quantize_model(model, self.method, skip=self.skip, override=self.override,
                       calibration=ctx.calibration_batch, seed=ctx.seed, method_for=method_of)
        return model


def method_of(name: str) -> Any:
    """The method of another entry, at its defaults (for per-layer overrides)."""
    recipe = QUANTS.get(name).create()
    if not isinstance(recipe, QuantRecipe):
        raise ZooError(f"quant {name} cannot be used as a per-layer override")
    return recipe.method


def _register(name: str, make: Callable[..., Any], *, summary: str, formula: str,
              paper=None, defaults: dict[str, Any] | None = None, tags=()) -> None:
    def factory(skip: str = "", override: str = "", **params: Any) -> QuantRecipe:
        try:
            method = make(**params)
        except TypeError as exc:
            raise ZooError(f"bad --quant-param for {name}: {exc}") from None
        return QuantRecipe(method, skip=skip, override=override)

    QUANTS.register(name, summary=summary, formula=formula, paper=paper,
                    defaults={**PLACEMENT, **(defaults or {})}, tags=tags)(factory)


# --- weight-only, round to nearest -----------------------------------------------------------

_register("int8-wo", lambda: int_weight_only(8),
          summary="int8 weights, a symmetric scale per output channel (torchao "
                  "Int8WeightOnlyConfig)",
          formula="s = max|W_o| / 127.5, q = clamp(round(W / s), -128, 127)",
          tags=("weight-only", "int"))

for _group in (32, 64, 128):
    _register(f"int4-g{_group}", lambda group=_group: int_weight_only(4, group),
              summary=f"int4 weights, a symmetric scale per group of {_group} inputs (torchao "
                      "IntxFakeQuantizeConfig(torch.int4, group_size))",
              formula="s = max|W_g| / 7.5, q = clamp(round(W / s), -8, 7)",
              tags=("weight-only", "int"))
    _register(f"int4-g{_group}-asym", lambda group=_group: int_weight_only(4, group, False),
              summary=f"int4 weights, an asymmetric scale and zero point per group of {_group}",
              formula="s = (max(W_g,0) - min(W_g,0)) / 15, z = -8 - round(min / s), "
                      "q = clamp(round(W / s) + z, -8, 7)",
              tags=("weight-only", "int"))

for _fmt, _label in ((FP8_E4M3, "e4m3"), (FP8_E5M2, "e5m2")):
    _register(f"fp8-{_label}", lambda fmt=_fmt: WeightOnly(fmt),
              summary=f"FP8 {_label.upper()} weights, a float32 scale per output channel",
              formula="s = max|W_o| / max_fp8, W^ = round_fp8(W / s) s",
              tags=("weight-only", "fp"))
    _register(f"fp8-{_label}-tensor",
              lambda fmt=_fmt: WeightOnly(Format(fmt.element, 8, "tensor")),
              summary=f"FP8 {_label.upper()} weights, one float32 scale per tensor",
              formula="s = max|W| / max_fp8, W^ = round_fp8(W / s) s",
              tags=("weight-only", "fp"))

_register("mxfp4", lambda: WeightOnly(MXFP4),
          summary="MXFP4: FP4 E2M1 weights in blocks of 32 sharing a power-of-two E8M0 scale",
          formula="X = 2^(floor(log2 max|W_b|) - 2), W^ = round_e2m1(W / X) X",
          paper=("OCP Microscaling Formats (MX) Specification v1.0", None),
          tags=("weight-only", "fp"))
_register("nvfp4", lambda: WeightOnly(NVFP4),
          summary="NVFP4: FP4 E2M1 weights in blocks of 16 with an E4M3 scale, times a float32 "
                  "scale per tensor",
          formula="g = max|W| / (448 * 6), s_b = round_e4m3(max|W_b| / 6 / g), "
                  "W^ = round_e2m1(W / (s_b g)) s_b g",
          paper=("NVIDIA NVFP4 (Blackwell) format", None), tags=("weight-only", "fp"))

# --- weights and activations -----------------------------------------------------------------

_register("w8a8", lambda: WeightActivation(per_channel_int(8), per_channel_int(8)),
          summary="int8 weights per output channel, int8 activations with a dynamic scale per "
                  "token",
          formula="x^ = round(x / s_t) s_t, s_t = max|x_t| / 127.5",
          paper=("LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale",
                 "2208.07339"), tags=("weight-activation", "int"))
_register("w4a4-hadamard",
          lambda seed=0: WeightActivation(per_channel_int(4), per_channel_int(4), hadamard=True,
                                          seed=seed),
          summary="randomized Hadamard rotation of every layer's input features, then int4 "
                  "weights per channel and int4 activations per token",
          formula="y = Q4(x D H) Q4(W D H)^T",
          paper=("QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs", "2404.00456"),
          defaults={"seed": 0}, tags=("weight-activation", "int", "rotation"))
_register("resq", lambda high_fraction=0.125, high_bits=8, low_bits=4, seed=0:
          ResQ(float(high_fraction), int(high_bits), int(low_bits), int(seed)),
          summary="PCA basis of calibration inputs: the highest-variance 1/8 of directions in 8 "
                  "bits, the rest in 4, a random rotation inside each subspace",
          formula="R = U blockdiag(R_8, R_4), y = Q(x R) Q(W R)^T",
          paper=("ResQ: Mixed-Precision Quantization of Large Language Models with Low-Rank "
                 "Residuals", "2412.14363"),
          defaults={"high_fraction": 0.125, "high_bits": 8, "low_bits": 4, "seed": 0},
          tags=("weight-activation", "int", "rotation", "calibrated"))
_register("llm-fp4", lambda: LLMFP4(),
          summary="FP4 weights (per channel) and activations (per tensor); exponent bits "
                  "(E1M2/E2M1/E3M0) and clipping searched per layer on calibration data, "
                  "per-channel activation ranges moved into the weights",
          formula="x / s, W s; argmin over (format, clip) of |Q(x) Q(W)^T - x W^T|^2",
          paper=("LLM-FP4: 4-Bit Floating-Point Quantized Transformers", "2310.16836"),
          tags=("weight-activation", "fp", "calibrated"))

# What `zoo quant-sweep` evaluates by default, in the leaderboard's order.
SWEEP = ("int8-wo", "int4-g32", "int4-g64", "int4-g128", "int4-g32-asym", "int4-g128-asym",
         "fp8-e4m3", "fp8-e4m3-tensor", "fp8-e5m2", "fp8-e5m2-tensor", "mxfp4", "nvfp4", "w8a8",
         "w4a4-hadamard", "resq", "llm-fp4")
