"""Small floating-point element formats (FP8 E4M3/E5M2, FP4 E2M1, LLM-FP4's E1M2/E3M0, E8M0
scales): round-to-nearest-even onto the format's grid, and the bit codes.

A value x already divided by its scale is rounded as the hardware casts do: find its binade
2^e (never below the smallest normal one, which gives the subnormals), round x / 2^(e - m) to the
nearest integer with ties to even, and saturate at the largest finite value instead of
overflowing. `zoo.quant.cuda` runs the same steps in C (`zoo_round_minifloat`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MiniFloat:
    name: str
    exp_bits: int
    man_bits: int
    bias: int
    max_value: float  # the largest finite value (E4M3FN stops at 448, E5M2 at 57344)

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def min_normal_exp(self) -> int:
        return 1 - self.bias

    @property
    def max_exp(self) -> int:
        """floor(log2(max_value)): the exponent of the largest binade (MX's emax_elem)."""
        return int(torch.tensor(self.max_value).log2().floor())

    def grid(self) -> torch.Tensor:
        """Every non-negative finite value, ascending (for tests and searches)."""
        codes = torch.arange(2 ** (self.bits - 1), dtype=torch.int32)
        values = decode(codes, self)
        return values[values.isfinite() & (values <= self.max_value)].unique()


def _ocp(name: str, exp_bits: int, man_bits: int) -> MiniFloat:
    """A format with no infinities or NaNs: every exponent code is a binade (FP4 and FP6 of the
    OCP MX spec; also LLM-FP4's E1M2 and E3M0)."""
    bias = 2 ** (exp_bits - 1) - 1
    top = 2 ** exp_bits - 1 - bias
    return MiniFloat(name, exp_bits, man_bits, bias, 2.0 ** top * (2 - 2.0 ** -man_bits))


E4M3 = MiniFloat("e4m3", 4, 3, 7, 448.0)
E5M2 = MiniFloat("e5m2", 5, 2, 15, 57344.0)
E2M1 = _ocp("e2m1", 2, 1)  # 0, 0.5, 1, 1.5, 2, 3, 4, 6
E1M2 = _ocp("e1m2", 1, 2)  # 0, 0.5, ..., 3.5: uniform, an int grid in a float's clothes
E3M0 = _ocp("e3m0", 3, 0)  # 0, 0.25, 0.5, 1, 2, 4, 8, 16 (powers of two)
FP4_VARIANTS = {"e1m2": E1M2, "e2m1": E2M1, "e3m0": E3M0}


def round_to(x: torch.Tensor, fmt: MiniFloat) -> torch.Tensor:
    """x rounded to the nearest value of `fmt` (ties to even), saturating at +-max_value.
    Computed in float32 (every step is exact there except the final rounding)."""
    x = x.float()
    magnitude = x.abs().clamp(max=fmt.max_value)
    _, exponent = torch.frexp(magnitude)  # magnitude = m * 2^exponent, m in [0.5, 1)
    binade = (exponent - 1).clamp(min=fmt.min_normal_exp)
    step = torch.ldexp(torch.ones_like(magnitude), binade - fmt.man_bits)
    rounded = torch.round(magnitude / step) * step
    return torch.copysign(rounded.clamp(max=fmt.max_value), x)


def encode(values: torch.Tensor, fmt: MiniFloat) -> torch.Tensor:
    """Bit codes (int32: sign, exponent, mantissa) of values already on the grid."""
    values = values.float()
    magnitude = values.abs()
    _, exponent = torch.frexp(magnitude)
    binade = (exponent - 1).clamp(min=fmt.min_normal_exp)
    subnormal = magnitude < 2.0 ** fmt.min_normal_exp
    exp_field = torch.where(subnormal, torch.zeros_like(binade), binade + fmt.bias)
    mantissa = torch.ldexp(magnitude, fmt.man_bits - binade)  # integer: 2^m * significand
    mantissa = torch.where(subnormal, mantissa, mantissa - 2 ** fmt.man_bits)
    sign = torch.signbit(values).to(torch.int32)  # -0 keeps its sign, as the casts do
    return ((sign << (fmt.exp_bits + fmt.man_bits)) | (exp_field.to(torch.int32) << fmt.man_bits)
            | mantissa.to(torch.int32))


def decode(codes: torch.Tensor, fmt: MiniFloat) -> torch.Tensor:
    """float32 values of bit codes (the inverse of `encode`)."""
    codes = codes.to(torch.int32)
    mantissa = (codes & (2 ** fmt.man_bits - 1)).float()
    exp_field = (codes >> fmt.man_bits) & (2 ** fmt.exp_bits - 1)
    sign = (codes >> (fmt.exp_bits + fmt.man_bits)) & 1
    normal = exp_field > 0
    significand = torch.where(normal, 1 + mantissa * 2.0 ** -fmt.man_bits,
                              mantissa * 2.0 ** -fmt.man_bits)
    binade = torch.where(normal, exp_field - fmt.bias, torch.full_like(exp_field,
                                                                      fmt.min_normal_exp))
    magnitude = torch.ldexp(significand, binade)
    return torch.where(sign.bool(), -magnitude, magnitude)


# --- E8M0: the MX block scale, a bare power of two ------------------------------------------

E8M0_BIAS = 127


def e8m0_exponent(amax: torch.Tensor, element: MiniFloat) -> torch.Tensor:
    """The OCP MX shared exponent floor(log2(amax)) - emax_elem, clamped to E8M0's range; a
    zero block gets the smallest scale."""
    _, exponent = torch.frexp(amax.float())
    shared = exponent - 1 - element.max_exp
    shared = torch.where(amax > 0, shared, torch.full_like(shared, -E8M0_BIAS))
    return shared.clamp(-E8M0_BIAS, E8M0_BIAS)
