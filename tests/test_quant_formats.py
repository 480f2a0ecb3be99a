"""Number formats: the reference quantizers are exact where a standard exists (PyTorch's FP8
casts, torchao's int8/int4 affine quantization, the OCP MX and NVFP4 layouts), store what they
claim, and round-trip."""

from __future__ import annotations

import warnings

import pytest
import torch

from zoo.quant import formats
from zoo.quant.formats import FP8_E4M3, FP8_E5M2, INT8_CHANNEL, MXFP4, NVFP4, Format, int_group
from zoo.quant.minifloat import (
    E1M2,
    E2M1,
    E3M0,
    E4M3,
    E5M2,
    decode,
    e8m0_exponent,
    encode,
    round_to,
)

ALL_FORMATS = {
    "int8 channel": INT8_CHANNEL, "int8 tensor": Format("int", 8, "tensor"),
    "int4 g32": int_group(4, 32), "int4 g128 asym": int_group(4, 128, False),
    "int4 g64 tensor asym": Format("int", 4, "tensor", symmetric=False),
    "int4 g9": int_group(4, 9), "fp8 e4m3": FP8_E4M3, "fp8 e5m2 tensor": Format("e5m2", 8, "tensor"),
    "mxfp4": MXFP4, "nvfp4": NVFP4, "e1m2 clip": Format("e1m2", 4, "channel", clip=0.7),
    "e3m0 tensor": Format("e3m0", 4, "tensor"),
}


def weights(rows=48, k=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, k, generator=g) * 0.05
    w[3, 7] = 2.0  # an outlier
    w[5] = 0.0  # an all-zero row
    w[6, :40] = torch.rand(40, generator=g)  # a one-signed stretch (asymmetric groups)
    return w


# --- minifloats ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, dtype", [(E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)])
def test_minifloat_rounding_equals_pytorchs_fp8_casts(fmt, dtype):
    x = torch.cat([torch.randn(200_000) * s for s in (1e-3, 1, 30, 1e3)])
    x = torch.cat([x, fmt.grid(), -fmt.grid(), (fmt.grid()[1:] + fmt.grid()[:-1]) / 2])  # ties
    clipped = x.clamp(-fmt.max_value, fmt.max_value)
    torch.testing.assert_close(round_to(x, fmt), clipped.to(dtype).float(), rtol=0, atol=0)
    rounded = round_to(x, fmt)
    assert torch.equal(encode(rounded, fmt), rounded.to(dtype).view(torch.uint8).int())


def test_fp4_grids_are_the_published_ones():
    assert E2M1.grid().tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert E1M2.grid().tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]
    assert E3M0.grid().tolist() == [0, 0.25, 0.5, 1, 2, 4, 8, 16]


@pytest.mark.parametrize("fmt", [E2M1, E1M2, E3M0, E4M3, E5M2])
def test_every_code_decodes_and_encodes_back(fmt):
    codes = torch.arange(2 ** fmt.bits)
    values = decode(codes, fmt)
    finite = values.isfinite() & (values.abs() <= fmt.max_value)
    assert torch.equal(encode(values[finite], fmt), codes[finite].int())
    assert torch.equal(round_to(values[finite], fmt), values[finite])


def test_e2m1_rounds_half_to_even_and_saturates():
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0, -0.25, -5.0])
    assert round_to(x, E2M1).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -0.0, -4.0]


def test_mx_shared_exponent_puts_the_block_maximum_in_the_top_binade():
    amax = torch.tensor([6.0, 7.9, 8.0, 0.3, 0.0])
    # floor(log2 amax) - 2 (E2M1's largest binade is 4 = 2^2); a zero block gets the smallest
    assert e8m0_exponent(amax, E2M1).tolist() == [0, 0, 1, -4, -127]


# --- quantizers --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_FORMATS)
def test_fake_quantize_is_dequantize_of_quantize(name):
    fmt, w = ALL_FORMATS[name], weights()
    stored = formats.quantize(w, fmt)
    torch.testing.assert_close(formats.dequantize(stored), formats.fake_quantize(w, fmt),
                               rtol=0, atol=0)
    assert stored.storage_bytes() * 8 == formats.storage_bits(tuple(w.shape), fmt)


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_zeros_stay_zero(name):
    assert torch.all(formats.fake_quantize(weights(), ALL_FORMATS[name])[5] == 0)


@pytest.mark.parametrize("fmt", [FP8_E4M3, FP8_E5M2, MXFP4], ids=["e4m3", "e5m2", "mxfp4"])
def test_float_formats_are_idempotent(fmt):
    """Their scales map the maximum onto the grid, so quantizing twice changes nothing (the
    symmetric int convention, max / 7.5, is not: the maximum rounds to 8 and clamps to 7)."""
    once = formats.fake_quantize(weights(), fmt)
    torch.testing.assert_close(formats.fake_quantize(once, fmt), once, rtol=0, atol=0)


def test_symmetric_int_error_is_at_most_half_a_step():
    w = weights()
    fmt = int_group(4, 32)
    groups, _ = formats.as_groups(w, fmt)
    scale = groups.abs().amax(-1, keepdim=True) / 7.5
    error = (formats.as_groups(formats.fake_quantize(w, fmt), fmt)[0] - groups).abs()
    assert torch.all(error <= scale / 2 + 1e-7)


def test_four_bit_codes_are_packed_two_per_byte():
    w = weights(rows=8, k=64)
    stored = formats.quantize(w, int_group(4, 32))
    assert stored.codes.dtype == torch.uint8 and stored.codes.shape == (8, 32)
    codes = torch.randint(0, 16, (3, 9), dtype=torch.uint8)
    assert torch.equal(formats.unpack_nibbles(formats.pack_nibbles(codes), 9), codes)


def test_mxfp4_and_nvfp4_store_their_scales_in_eight_bits():
    w = weights(rows=8, k=64)
    mx = formats.quantize(w, MXFP4)
    assert mx.scale.dtype == torch.uint8 and mx.scale.shape == (8, 2)
    nv = formats.quantize(w, NVFP4)
    assert nv.scale.dtype == torch.uint8 and nv.scale.shape == (8, 4) and nv.tensor_scale.numel() == 1
    # bits per weight: 4 + 8/32 and 4 + 8/16 (+ one float32 per tensor)
    assert formats.storage_bits((8, 64), MXFP4) / 512 == 4.25
    assert formats.storage_bits((8, 64), NVFP4) == 512 * 4.5 + 32


def test_fp4_block_scales_track_their_blocks():
    """A block of tiny values next to a block of large ones keeps its precision: with MXFP4's
    power-of-two scales, E2M1 grid values times any power of two are stored exactly."""
    grid = torch.cat([E2M1.grid(), -E2M1.grid()]).repeat(2)[:32]
    w = torch.cat([grid * 2.0 ** -12, grid * 2.0 ** 5]).unsqueeze(0)
    torch.testing.assert_close(formats.fake_quantize(w, MXFP4), w, rtol=0, atol=0)
    nv = formats.fake_quantize(w, NVFP4)
    assert torch.all((nv == 0) == (w == 0))  # the tiny block is not flushed to zero
    torch.testing.assert_close(nv, w, rtol=0.25, atol=0)


# --- parity with torchao ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def torchao():
    module = pytest.importorskip("torchao")
    if module.__version__ != "0.18.0":
        pytest.skip(f"parity is pinned to torchao 0.18.0, found {module.__version__}")
    return module


def test_int8_weight_only_equals_torchaos(torchao):
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    w = weights(rows=64, k=256)
    model = torch.nn.Sequential(torch.nn.Linear(256, 64, bias=False))
    model[0].weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(model, Int8WeightOnlyConfig())
    torch.testing.assert_close(formats.fake_quantize(w, INT8_CHANNEL),
                               model[0].weight.dequantize(), rtol=0, atol=0)


@pytest.mark.parametrize("magnitudes", ["ordinary", "tiny"])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_symmetric_groups_equal_torchaos_fake_quantizer(torchao, group, magnitudes):
    from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer

    w = some_weights(magnitudes, group)
    theirs = IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int4, group_size=group,
                                                      is_symmetric=True))(w)
    torch.testing.assert_close(formats.fake_quantize(w, int_group(4, group)), theirs,
                               rtol=0, atol=0)


@pytest.mark.parametrize("magnitudes", ["ordinary", "tiny"])
@pytest.mark.parametrize("group", [32, 128])
def test_int4_asymmetric_groups_equal_torchaos_weight_only(torchao, group, magnitudes):
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_primitives import MappingType

    w = some_weights(magnitudes, group)
    model = torch.nn.Sequential(torch.nn.Linear(w.shape[1], w.shape[0], bias=False))
    model[0].weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group),
                                              mapping_type=MappingType.ASYMMETRIC))
    torch.testing.assert_close(formats.fake_quantize(w, int_group(4, group, False)),
                               model[0].weight.dequantize(), rtol=0, atol=0)


# Group magnitudes where the scale floor decides: int4 scales max|w| / 7.5 (symmetric) and
# (max - min) / 15 (asymmetric) fall below float32's eps (1.2e-7) from max|w| ~ 1e-6 down, and
# below float32's smallest normal (1.2e-38) only for the last two; 0: all-zero groups.
TINY_MAGNITUDES = (1.0, 1e-6, 1e-7, 3e-8, 1e-20, 1e-30, 1e-37, 0.0)


def tiny_groups(rows: int, k: int, group: int, seed: int = 0) -> torch.Tensor:
    """Weights whose consecutive groups cycle through TINY_MAGNITUDES (max|w| of a group is about
    its magnitude), so that every row holds each kind of group."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, k // group, group, generator=g)
    magnitude = torch.tensor(TINY_MAGNITUDES)[(torch.arange(rows)[:, None]
                                               + torch.arange(k // group)) % len(TINY_MAGNITUDES)]
    w = (w * magnitude[..., None]).reshape(rows, k)
    # the groups this is about: scales between the smallest normal and eps, and all-zero ones
    unfloored = w.view(rows, -1, group).abs().amax(-1) / 7.5
    assert ((unfloored < formats.SCALE_EPS) & (unfloored > formats.SMALLEST_NORMAL)).any()
    assert (unfloored == 0).any()
    return w


def some_weights(magnitudes: str, group: int) -> torch.Tensor:
    """"ordinary" weights, or "tiny" ones whose groups' scales fall to the floor (tiny_groups)."""
    return weights(rows=64, k=256) if magnitudes == "ordinary" else \
        tiny_groups(rows=16, k=512, group=group)


def test_int_scale_floors_are_torchaos():
    """torchao 0.18 floors int8 scales at float32's eps (Int8Tensor.from_hp), every other width
    at float32's smallest normal (choose_qparams_affine's default eps)."""
    assert INT8_CHANNEL.scale_floor == torch.finfo(torch.float32).eps
    for fmt in (int_group(4, 32), int_group(4, 32, False), Format("int", 3)):
        assert fmt.scale_floor == torch.finfo(torch.float32).smallest_normal
    zeros = torch.zeros(2, 64)
    assert formats.quantize(zeros, int_group(4, 32)).scale.unique().tolist() == \
        [torch.finfo(torch.float32).smallest_normal]


def test_int8_tiny_rows_equal_torchaos_weight_only(torchao):
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    w = tiny_groups(rows=16, k=256, group=256)  # a row is a group: int8 scales per channel
    model = torch.nn.Sequential(torch.nn.Linear(256, 16, bias=False))
    model[0].weight.data.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(model, Int8WeightOnlyConfig())
    torch.testing.assert_close(formats.fake_quantize(w, INT8_CHANNEL),
                               model[0].weight.dequantize(), rtol=0, atol=0)
