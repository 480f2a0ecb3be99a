"""Number formats for weights and activations, and their PyTorch reference quantizers.

A tensor is quantized as a 2-d matrix (rows, K): a weight's rows are its output channels (a
convolution's (out, in * kh * kw)), an activation's rows are its tokens. Scales are shared by
the whole tensor, by each row ("channel": per output channel for weights, per token for
activations), or by each group of `group_size` consecutive elements of a row. Rows are padded
with zeros to a whole number of groups; zeros change no scale (symmetric scales use |x|, and the
asymmetric range always contains 0).

Integer formats follow torchao's affine conventions exactly (`choose_qparams_affine`,
`quantize_affine`), so zoo's dequantized weights equal torchao's:
  symmetric:  s = max|x| / ((qmax - qmin) / 2),  q = clamp(round(x * (1/s)), qmin, qmax)
  asymmetric: s = (max(x, 0) - min(x, 0)) / (qmax - qmin),  z = clamp(qmin - round(min(x,0) / s)),
              q = clamp(round(x * (1/s)) + z, qmin, qmax),  x^ = (q - z) s
with signed ranges [-2^(b-1), 2^(b-1) - 1] and scales clamped from below at torchao's floor
(`Format.scale_floor`): float32's eps for int8, float32's smallest normal for other widths.
Floating-point formats scale max|x| onto the element's largest value (FP8 with a float32
scale), or use block scales: MXFP4 (block 32, E8M0 power-of-two scale, OCP MX v1.0) and NVFP4
(block 16, E4M3 scale times one float32 scale per tensor).

`zoo.quant.cuda` implements every format as CuPy kernels; this module is their ground
truth and the CPU path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F

from zoo.quant.minifloat import (
    E4M3,
    E5M2,
    E8M0_BIAS,
    FP4_VARIANTS,
    MiniFloat,
    decode,
    e8m0_exponent,
    encode,
    round_to,
)

# The smallest scale (an all-zero group's). torchao 0.18 floors int8 at float32's eps
# (Int8Tensor.from_hp passes eps=torch.finfo(torch.float32).eps) and its other integer widths at
# float32's smallest normal (choose_qparams_affine's default for a float32 input, which
# IntxWeightOnlyConfig and IntxFakeQuantizer's symmetric groups use). Float formats: eps.
SCALE_EPS = torch.finfo(torch.float32).eps
SMALLEST_NORMAL = torch.finfo(torch.float32).smallest_normal
GRANULARITIES = ("tensor", "channel", "group")


@dataclass(frozen=True)
class Format:
    """How one tensor is stored: element type, who shares a scale, how scales are stored."""

    element: str  # "int" or one of the minifloat names (e4m3, e5m2, e2m1, e1m2, e3m0)
    bits: int
    granularity: str = "channel"
    group_size: int = 0  # for granularity "group"
    symmetric: bool = True  # int only
    scale_format: str = "fp32"  # "fp32", "e8m0" (MX) or "e4m3" (NVFP4, with a float32 tensor scale)
    clip: float = 1.0  # scale max|x| * clip onto the largest value (LLM-FP4 searches it)

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, not {self.granularity!r}")
        if self.granularity == "group" and self.group_size < 1:
            raise ValueError("a group granularity needs group_size >= 1")
        if self.element != "int" and self.minifloat.bits != self.bits:
            raise ValueError(f"{self.element} has {self.minifloat.bits} bits, not {self.bits}")

    @property
    def is_int(self) -> bool:
        return self.element == "int"

    @property
    def minifloat(self) -> MiniFloat:
        return {"e4m3": E4M3, "e5m2": E5M2, **FP4_VARIANTS}[self.element]

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def scale_floor(self) -> float:
        """What scales are clamped at from below: torchao's floor for the integer width."""
        return SMALLEST_NORMAL if self.is_int and self.bits != 8 else SCALE_EPS

    def group_for(self, k: int) -> int:
        """Elements per scale in a row of length k (a group larger than the row is the row, as
        torchao does)."""
        if self.granularity == "group":
            return min(self.group_size, k)
        return k

    def describe(self) -> str:
        element = f"int{self.bits}" if self.is_int else f"fp{self.bits}-{self.element}"
        where = {"tensor": "per tensor", "channel": "per channel",
                 "group": f"groups of {self.group_size}"}[self.granularity]
        extra = "" if self.symmetric or not self.is_int else ", asymmetric"
        scale = "" if self.scale_format == "fp32" else f", {self.scale_format} scales"
        return f"{element}, {where}{extra}{scale}"


INT8_CHANNEL = Format("int", 8)
FP8_E4M3 = Format("e4m3", 8)
FP8_E5M2 = Format("e5m2", 8)
MXFP4 = Format("e2m1", 4, "group", 32, scale_format="e8m0")
NVFP4 = Format("e2m1", 4, "group", 16, scale_format="e4m3")


def int_group(bits: int, group_size: int, symmetric: bool = True) -> Format:
    return Format("int", bits, "group", group_size, symmetric)


@dataclass
class Quantized:
    """A quantized matrix: element codes (4-bit codes packed two per byte, low nibble first),
    one scale per group, zero points for asymmetric ints, and the float32 tensor scale of NVFP4.
    `shape` is the original (rows, K); codes cover the padded rows."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: Optional[torch.Tensor]
    tensor_scale: Optional[torch.Tensor]
    shape: tuple[int, int]
    fmt: Format

    def storage_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.codes, self.scale, self.zero_point, self.tensor_scale) if t is not None)


# --- layout --------------------------------------------------------------------------------

def as_groups(x: torch.Tensor, fmt: Format) -> tuple[torch.Tensor, int]:
    """(rows, groups, group) float32 view of the 2-d x, zero-padded to whole groups, and the
    group size. A per-tensor format is one group per row here; its scale is shared afterwards."""
    if x.ndim != 2:
        raise ValueError(f"quantize a 2-d matrix, not shape {tuple(x.shape)}")
    rows, k = x.shape
    group = fmt.group_for(k)
    padded = math.ceil(k / group) * group
    x = F.pad(x.float(), (0, padded - k))
    return x.view(rows, padded // group, group), group


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes < 16, shape (..., n) -> (..., ceil(n/2)): element 2i in the low nibble."""
    if codes.shape[-1] % 2:
        codes = F.pad(codes, (0, 1))
    codes = codes.to(torch.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)[..., :n]


# --- scales ----------------------------------------------------------------------------------

def _amax(groups: torch.Tensor, fmt: Format) -> torch.Tensor:
    amax = groups.abs().amax(dim=-1)
    if fmt.granularity == "tensor":
        amax = amax.amax().expand_as(amax)
    return amax


def choose_scales(groups: torch.Tensor, fmt: Format):
    """(scale, zero_point, tensor_scale) for (rows, groups, group) values. `scale` is the float32
    value each element is multiplied by; for NVFP4 it already includes the tensor scale."""
    if fmt.is_int and not fmt.symmetric:
        low = groups.amin(dim=-1).clamp(max=0)
        high = groups.amax(dim=-1).clamp(min=0)
        if fmt.granularity == "tensor":
            low, high = low.amin().expand_as(low), high.amax().expand_as(high)
        scale = ((high - low) / float(fmt.qmax - fmt.qmin)).clamp(min=fmt.scale_floor)
        zero = (fmt.qmin - torch.round(low / scale)).clamp(fmt.qmin, fmt.qmax)
        return scale, zero, None
    amax = _amax(groups, fmt) * fmt.clip
    if fmt.is_int:
        return (amax / ((fmt.qmax - fmt.qmin) / 2)).clamp(min=fmt.scale_floor), None, None
    element = fmt.minifloat
    if fmt.scale_format == "e8m0":
        return torch.ldexp(torch.ones_like(amax), e8m0_exponent(amax, element)), None, None
    if fmt.scale_format == "e4m3":
        # Two levels: the tensor scale maps the largest block scale onto E4M3's range.
        tensor_scale = (amax.amax() / (E4M3.max_value * element.max_value)).clamp(min=SCALE_EPS)
        block = round_to(amax / element.max_value / tensor_scale, E4M3)
        return block * tensor_scale, None, tensor_scale
    return (amax / element.max_value).clamp(min=SCALE_EPS), None, None


# --- reference quantizers ----------------------------------------------------------------------

def _elements(groups: torch.Tensor, scale: torch.Tensor, zero, fmt: Format) -> torch.Tensor:
    """Element values on the format's grid (ints for int formats), before dequantization."""
    inverse = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale)).unsqueeze(-1)
    if fmt.is_int:
        q = torch.round(groups * inverse)
        if zero is not None:
            q = q + zero.unsqueeze(-1)
        return q.clamp(fmt.qmin, fmt.qmax)
    return round_to(groups * inverse, fmt.minifloat)


def _dequantize_groups(q: torch.Tensor, scale: torch.Tensor, zero) -> torch.Tensor:
    if zero is not None:
        q = q - zero.unsqueeze(-1)
    return q * scale.unsqueeze(-1)


def fake_quantize(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """dequantize(quantize(x)) in one pass, in x's dtype and shape (x is 2-d)."""
    groups, _ = as_groups(x, fmt)
    scale, zero, _ = choose_scales(groups, fmt)
    out = _dequantize_groups(_elements(groups, scale, zero, fmt), scale, zero)
    return out.flatten(1)[:, : x.shape[1]].to(x.dtype)


def quantize(x: torch.Tensor, fmt: Format) -> Quantized:
    groups, _ = as_groups(x, fmt)
    scale, zero, tensor_scale = choose_scales(groups, fmt)
    q = _elements(groups, scale, zero, fmt).flatten(1)
    if fmt.is_int:
        codes = (q - fmt.qmin).to(torch.uint8) if fmt.bits == 4 else q.to(torch.int8)
    else:
        codes = encode(q, fmt.minifloat).to(torch.uint8)
    if fmt.bits == 4:
        codes = pack_nibbles(codes)
    stored_scale = scale
    if fmt.granularity == "tensor":
        stored_scale = scale.reshape(-1)[:1]
    elif fmt.scale_format == "e8m0":
        stored_scale = (e8m0_exponent_of(scale) + E8M0_BIAS).to(torch.uint8)
    elif fmt.scale_format == "e4m3":
        # scale / tensor_scale can land one float32 step below the E4M3 block scale it came
        # from, and `encode` expects a grid value: round back onto the grid first.
        stored_scale = encode(round_to(scale / tensor_scale, E4M3), E4M3).to(torch.uint8)
    if zero is not None:
        zero = zero.to(torch.int8)
        if fmt.granularity == "tensor":
            zero = zero.reshape(-1)[:1]
    return Quantized(codes, stored_scale, zero, tensor_scale if fmt.scale_format == "e4m3"
                     else None, tuple(x.shape), fmt)


def e8m0_exponent_of(scale: torch.Tensor) -> torch.Tensor:
    _, exponent = torch.frexp(scale)
    return exponent - 1


def dequantize(qt: Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    fmt = qt.fmt
    rows, k = qt.shape
    group = fmt.group_for(k)
    padded = math.ceil(k / group) * group
    codes = qt.codes
    if fmt.bits == 4:
        codes = unpack_nibbles(codes, padded)
    if fmt.is_int:
        q = codes.float() + (fmt.qmin if fmt.bits == 4 else 0)
    else:
        q = decode(codes.to(torch.int32), fmt.minifloat)
    q = q.view(rows, padded // group, group)
    scale = qt.scale
    if fmt.granularity == "tensor":
        scale = scale.float().expand(rows, 1)
    elif fmt.scale_format == "e8m0":
        scale = torch.ldexp(torch.ones(scale.shape, device=scale.device),
                            scale.to(torch.int32) - E8M0_BIAS)
    elif fmt.scale_format == "e4m3":
        scale = decode(scale.to(torch.int32), E4M3) * qt.tensor_scale
    zero = None
    if qt.zero_point is not None:
        zero = qt.zero_point.float().expand(scale.shape) if fmt.granularity == "tensor" \
            else qt.zero_point.float()
    return _dequantize_groups(q, scale, zero).flatten(1)[:, :k].to(dtype)


def storage_bits(shape: tuple[int, int], fmt: Format) -> int:
    """Bits a (rows, K) matrix takes in this format: codes, scales and zero points (what
    `quantize` stores; equals `Quantized.storage_bytes() * 8` up to nibble padding)."""
    rows, k = shape
    group = fmt.group_for(k)
    groups_per_row = math.ceil(k / group)
    padded = groups_per_row * group
    code_bytes = rows * math.ceil(padded * fmt.bits / 8)
    if fmt.granularity == "tensor":
        n_scales = 1
    else:
        n_scales = rows * groups_per_row
    scale_bits = 8 if fmt.scale_format in ("e8m0", "e4m3") else 32
    bits = code_bytes * 8 + n_scales * scale_bits
    if fmt.is_int and not fmt.symmetric:
        bits += n_scales * 8
    if fmt.scale_format == "e4m3":
        bits += 32
    return bits


def with_clip(fmt: Format, clip: float) -> Format:
    return replace(fmt, clip=clip)
