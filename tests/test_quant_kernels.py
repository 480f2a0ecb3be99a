"""The quantization kernels (zoo.quant.cuda) against the PyTorch reference
(zoo.quant.formats, zoo.quant.minifloat): bitwise equality is expected everywhere.

Without a GPU:
  * the CUDA source is compiled with nvcc and every entry point is checked;
  * its `__host__ __device__` math (rounding, codes, scales, the per-group pipeline) runs in a
    host program whose output is compared with the reference;
  * the kernels themselves (their loops, indexing, packing, reductions and the Python side's
    launch arguments) run on a CPU emulation of the CUDA features they use;
  * the launch layouts and output shapes are checked against the reference's outputs.
The reference is evaluated there with the GPU's division by a Python number (see
cuda_scalar_division). On a GPU with CuPy the kernels are compared with the reference run on
the same GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess

import numpy as np
import pytest
import torch

from zoo.kernels import runtime
from zoo.quant import cuda as quant_cuda
from zoo.quant import formats
from zoo.quant.formats import FP8_E4M3, FP8_E5M2, INT8_CHANNEL, MXFP4, NVFP4, Format, int_group
from zoo.quant.minifloat import E4M3, E5M2, FP4_VARIANTS, decode, e8m0_exponent, encode, round_to

GPU = torch.cuda.is_available() and runtime.cupy_or_none() is not None
MINIFLOATS = {"e4m3": E4M3, "e5m2": E5M2, **FP4_VARIANTS}


def int_bits(t: torch.Tensor) -> torch.Tensor:
    """The bits of a float tensor, as integers (so -0.0 != 0.0)."""
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


def assert_bitwise(got: torch.Tensor, want: torch.Tensor, what: str = "") -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, \
        f"{what}: {got.dtype} {tuple(got.shape)} != {want.dtype} {tuple(want.shape)}"
    if got.is_floating_point():
        nan = got.isnan()
        assert torch.equal(nan, want.isnan()), f"{what}: NaN at different places"
        got, want = int_bits(got.masked_fill(nan, 0)), int_bits(want.masked_fill(nan, 0))
    differ = (got != want).nonzero()
    assert differ.numel() == 0, (f"{what}: {len(differ)} of {got.numel()} differ, first at "
                                 f"{differ[0].tolist()}: {got[tuple(differ[0])]} != "
                                 f"{want[tuple(differ[0])]}")


@contextlib.contextmanager
def cuda_scalar_division():
    """Evaluate the reference on the CPU as PyTorch's CUDA kernels do: `tensor / number`
    multiplies by the number's float32 reciprocal there (BinaryDivTrueKernel.cu) and divides on
    the CPU, which moves most scales by an ulp. The kernels follow the GPU."""
    divide = torch.Tensor.__truediv__

    def cuda_like(self, other):
        if isinstance(other, (int, float)) and self.dtype == torch.float32:
            return self * float(np.float32(1.0) / np.float32(other))
        return divide(self, other)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "__truediv__", cuda_like)
        yield


# --- the host program: the kernels' C math on the CPU ----------------------------------------

HOST_MAIN = r"""
#include <cstdio>
static float F(unsigned int u) { return zoo_from_bits(u); }
static unsigned int B(float v) { return zoo_bits(v); }

// One command per line on stdin, one line of hex float bits (or integers) out; see the tests.
int main() {
    char op[4];
    while (scanf("%3s", op) == 1) {
        if (op[0] == 'R') {  // R man_bits min_normal_exp max_value x
            int man, min_normal;
            unsigned int max_value, x;
            if (scanf("%d %d %x %x", &man, &min_normal, &max_value, &x) != 4) return 1;
            printf("%08x\n", B(zoo_round_minifloat(F(x), man, min_normal, F(max_value))));
        } else if (op[0] == 'G' || op[0] == 'D') {  // exp man bias value|code
            int e, m, b;
            unsigned int v;
            if (scanf("%d %d %d %x", &e, &m, &b, &v) != 4) return 1;
            printf("%08x\n", op[0] == 'G' ? zoo_encode_grid(F(v), e, m, b)
                                           : B(zoo_decode_minifloat(v, e, m, b)));
        } else if (op[0] == 'M') {  // M max_exp amax
            int max_exp;
            unsigned int amax;
            if (scanf("%d %x", &max_exp, &amax) != 2) return 1;
            printf("%d\n", zoo_e8m0_exponent(F(amax), max_exp));
        } else if (op[0] == 'I') {  // I x scale zero asym qmin qmax
            unsigned int x, scale, zero;
            int asym, qmin, qmax;
            if (scanf("%x %x %x %d %d %d", &x, &scale, &zero, &asym, &qmin, &qmax) != 6) return 1;
            printf("%08x\n", B(zoo_round_int(F(x), zoo_inverse(F(scale)), F(zero), asym != 0,
                                             (float)qmin, (float)qmax)));
        } else if (op[0] == 'Q') {  // Q <zoo_format args> tensor_amax n x_1 .. x_n: one group
            int kind, bits, qmin, qmax, e, m, b, n;
            unsigned int clip, max_value, tensor_amax;
            if (scanf("%d %d %x %d %d %d %d %d %x %x %d", &kind, &bits, &clip, &qmin, &qmax, &e,
                      &m, &b, &max_value, &tensor_amax, &n) != 11 || n > 4096) return 1;
            const ZooFormat f = zoo_format(kind, bits, F(clip), qmin, qmax, e, m, b, F(max_value));
            static float xs[4096];
            float amax = 0.0f, low = 0.0f, high = 0.0f;
            for (int i = 0; i < n; ++i) {
                unsigned int u;
                if (scanf("%x", &u) != 1) return 1;
                xs[i] = F(u);
                amax = zoo_max_nan(amax, fabsf(xs[i]));
                low = zoo_min_nan(low, xs[i]);
                high = zoo_max_nan(high, xs[i]);
            }
            const float ts = kind == ZOO_E4M3_SCALE ? zoo_tensor_scale(f, F(tensor_amax)) : 0.0f;
            const ZooScale s = zoo_group_scale(f, amax, low, high, ts);
            const bool is_int = kind <= ZOO_INT_ASYM;
            const float stored =
                kind > ZOO_FP_SCALE ? zoo_scale_of_code(kind, s.code, ts) : s.scale;
            printf("%08x %08x %08x %u", B(s.scale), B(s.zero), B(ts), s.code);
            for (int i = 0; i < n; ++i) {
                const float fake = is_int ? zoo_fake_value<true>(xs[i], f, s)
                                          : zoo_fake_value<false>(xs[i], f, s);
                const unsigned int code = is_int ? zoo_code<true>(xs[i], f, s)
                                                 : zoo_code<false>(xs[i], f, s);
                const float q = is_int ? zoo_code_value<true>(code, f)
                                       : zoo_code_value<false>(code, f);
                printf(" %08x %u %08x", B(fake), code,
                       B(zoo_dequantize_value(q, kind == ZOO_INT_ASYM, stored, s.zero)));
            }
            printf("\n");
        } else {
            return 1;
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def nvcc_build(tmp_path_factory):
    """quant_cuda.SOURCE plus HOST_MAIN, compiled by nvcc into a host executable."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    folder = tmp_path_factory.mktemp("nvcc")
    source, binary = folder / "zoo_quant.cu", folder / "zoo_quant"
    source.write_text(quant_cuda.SOURCE + HOST_MAIN)
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_80", str(source), "-o", str(binary)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return binary


def run_host(binary, commands: list[str]) -> list[str]:
    result = subprocess.run([str(binary)], input="\n".join(commands) + "\n", capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == len(commands)
    return lines


def hexes(t: torch.Tensor) -> list[str]:
    return [f"{v & 0xFFFFFFFF:08x}" for v in t.float().reshape(-1).view(torch.int32).tolist()]


def floats(words: list[str]) -> torch.Tensor:
    return torch.from_numpy(np.array([int(w, 16) for w in words], dtype=np.uint32)
                            .view(np.float32).copy())


def test_the_source_compiles_with_nvcc_and_has_every_entry_point(nvcc_build):
    symbols = subprocess.run(["nm", str(nvcc_build)], capture_output=True, text=True).stdout
    assert len(quant_cuda.ENTRY_POINTS) == 21
    for name in quant_cuda.ENTRY_POINTS:
        assert name in symbols, name


def _log_uniform(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return sign * torch.exp2(torch.rand(n, generator=g) * (hi - lo) + lo)


def rounding_points(fmt) -> torch.Tensor:
    """Grid values, the ties halfway between them and their float32 neighbours, subnormals,
    values past the largest (saturation), float32 subnormals, zeros, infinities, NaN, and a
    log-uniform spread; with both signs."""
    grid = fmt.grid()
    ties = (grid[1:] + grid[:-1]) / 2
    inf = torch.tensor(float("inf"))
    smallest = grid[1].item()
    special = torch.tensor([smallest / 2, smallest / 4, 1.5 * smallest, fmt.max_value * 1.01,
                            fmt.max_value * 1.0625, fmt.max_value * 2, 1e30, 3.4e38, 1e-40, 1e-45,
                            2.0**-126, 0.0, float("inf")])
    positive = torch.cat([grid, ties, torch.nextafter(ties, inf), torch.nextafter(ties, -inf),
                          special, _log_uniform(3000, -30, 20, seed=fmt.bits).abs()])
    return torch.cat([positive, -positive, torch.tensor([float("nan")])])


@pytest.mark.parametrize("name", sorted(MINIFLOATS))
def test_rounding_and_codes_equal_the_minifloat_reference(nvcc_build, name):
    fmt = MINIFLOATS[name]
    x = rounding_points(fmt)
    commands = [f"R {fmt.man_bits} {fmt.min_normal_exp} {hexes(torch.tensor(fmt.max_value))[0]} {h}"
                for h in hexes(x)]
    rounded = round_to(x, fmt)
    assert_bitwise(floats(run_host(nvcc_build, commands)), rounded, f"{name} round_to")
    # codes of the rounded values (encode takes values on the grid), signed zeros included
    on_grid = rounded[~rounded.isnan()]
    fields = f"{fmt.exp_bits} {fmt.man_bits} {fmt.bias}"
    got = [int(w, 16) for w in run_host(nvcc_build, [f"G {fields} {h}" for h in hexes(on_grid)])]
    assert got == encode(on_grid, fmt).tolist(), f"{name} encode"
    # decoding every code
    codes = torch.arange(2**fmt.bits, dtype=torch.int32)
    got = floats(run_host(nvcc_build, [f"D {fields} {c:08x}" for c in codes.tolist()]))
    assert_bitwise(got, decode(codes, fmt), f"{name} decode")


def test_e8m0_exponents_equal_the_reference(nvcc_build):
    powers = torch.exp2(torch.arange(-149, 128, dtype=torch.float32))
    inf = torch.tensor(float("inf"))
    amax = torch.cat([powers, torch.nextafter(powers, inf), torch.nextafter(powers, -inf),
                      _log_uniform(2000, -149, 127, seed=1).abs(),
                      torch.tensor([0.0, -0.0, 1e-45, 3.4e38, 6.0, 5.99, 448.0, float("nan")])])
    for name, element in MINIFLOATS.items():
        commands = [f"M {element.max_exp} {h}" for h in hexes(amax)]
        got = [int(v) for v in run_host(nvcc_build, commands)]
        assert got == e8m0_exponent(amax, element).tolist(), name


INT_FORMATS = {"int8": INT8_CHANNEL, "int8-asym": Format("int", 8, symmetric=False),
               "int4": Format("int", 4), "int4-asym": Format("int", 4, symmetric=False)}


@pytest.mark.parametrize("name", sorted(INT_FORMATS))
def test_integer_rounding_equals_the_reference(nvcc_build, name):
    """round(x / s) with ties to even (2.5 -> 2, 3.5 -> 4, -2.5 -> -2), the zero point, the
    clamp, and the sign of a zero."""
    fmt = INT_FORMATS[name]
    g = torch.Generator().manual_seed(2)
    ties = torch.arange(-20, 20) + 0.5
    x = torch.cat([ties, ties * 0.25, torch.tensor([-0.2, -0.0, 0.0, 0.2, 1e3, -1e3, 1e30]),
                   torch.randn(500, generator=g) * 50])
    scale = torch.cat([torch.ones(len(ties)), torch.full((len(ties),), 0.25), torch.ones(7),
                       torch.rand(500, generator=g) + 0.05])
    asym = not fmt.symmetric
    zero = (torch.randint(fmt.qmin, fmt.qmax + 1, x.shape, generator=g).float() if asym
            else torch.zeros_like(x))
    commands = [f"I {hx} {hs} {hz} {int(asym)} {fmt.qmin} {fmt.qmax}"
                for hx, hs, hz in zip(hexes(x), hexes(scale), hexes(zero))]
    got = floats(run_host(nvcc_build, commands))
    want = formats._elements(x.view(-1, 1, 1), scale.view(-1, 1), zero.view(-1, 1) if asym
                             else None, fmt).flatten()
    assert_bitwise(got, want, name)
    if not asym:  # the ties really are test points
        assert want[: len(ties)][ties.abs() == 2.5].tolist() == [-2.0, 2.0]


# Formats of the per-group pipeline test: every scale kind and element type.
GROUP_FORMATS = {
    "int8": INT8_CHANNEL, "int8-clip": Format("int", 8, clip=0.9),
    "int8-asym": Format("int", 8, symmetric=False), "int4": Format("int", 4),
    "int4-asym": Format("int", 4, symmetric=False), "int3": Format("int", 3),
    "e4m3": FP8_E4M3, "e5m2": FP8_E5M2, "e4m3-clip": dataclasses.replace(FP8_E4M3, clip=0.7),
    "mxfp4": MXFP4, "nvfp4": NVFP4, "mx-e4m3": Format("e4m3", 8, "group", 32,
                                                      scale_format="e8m0"),
    "nv-e1m2": Format("e1m2", 4, "group", 16, scale_format="e4m3"),
    "e2m1": Format("e2m1", 4), "e1m2-clip": Format("e1m2", 4, clip=0.8),
    "e3m0": Format("e3m0", 4),
}


def group_rows(n: int, seed: int = 0) -> torch.Tensor:
    """Rows that are each one group: ordinary, tiny, huge, zero, one-signed, with outliers,
    negative zeros and float32 subnormals. The tiny ones (1e-7, 1e-20, 1e-30) have int scales
    below float32's eps, where int8's floor (eps) and int4's (the smallest normal) differ."""
    g = torch.Generator().manual_seed(seed)
    magnitudes = [1e-3, 1.0, 7.0, 100.0, 1e4]
    rows = [torch.randn(n, generator=g) * m for m in magnitudes for _ in range(3)]
    rows += [torch.zeros(n), -torch.rand(n, generator=g) * 3, torch.rand(n, generator=g) * 3,
             torch.full((n,), -0.0), torch.randn(n, generator=g) * 1e-7,
             torch.randn(n, generator=g) * 1e-20, torch.randn(n, generator=g) * 1e-30,
             torch.randn(n, generator=g) * 1e-40, torch.randn(n, generator=g) * 1e30]
    outlier = torch.randn(n, generator=g)
    outlier[n // 3] = 3e3
    small_negatives = torch.randn(n, generator=g)
    small_negatives[::2] = -1e-6  # round to -0 (the sign of a zero is kept)
    steps = torch.arange(n) - n / 2.0  # integers and halves: ties for some scales
    rows += [outlier, small_negatives, steps, steps / 2]
    return torch.stack(rows)


@pytest.mark.parametrize("name", sorted(GROUP_FORMATS))
def test_group_pipeline_equals_the_reference(nvcc_build, name):
    """Statistics -> scale -> elements -> codes -> dequantized values of one group, by the C
    functions the kernels call, against formats.fake_quantize / quantize / dequantize (with the
    GPU's division by a number, see cuda_scalar_division)."""
    fmt = GROUP_FORMATS[name]
    n = fmt.group_size if fmt.granularity == "group" else 24
    x = group_rows(n)
    with cuda_scalar_division():
        fake = formats.fake_quantize(x, fmt)
        qt = formats.quantize(x, fmt)
        deq = formats.dequantize(qt)
    # zoo_format's arguments as the host program reads them: ints, and floats as their bits
    args = " ".join(hexes(torch.tensor(float(v)))[0] if isinstance(v, np.float32) else str(int(v))
                    for v in quant_cuda.format_args(fmt))
    tensor_amax = hexes(x.abs().amax())[0]
    lines = run_host(nvcc_build, [f"Q {args} {tensor_amax} {n} {' '.join(hexes(row))}"
                                  for row in x])
    head = [line.split()[:4] for line in lines]
    per_element = [line.split()[4:] for line in lines]  # fake, code, dequantized; per element
    got_fake = torch.stack([floats(w[0::3]) for w in per_element])
    got_codes = torch.tensor([[int(c) for c in w[1::3]] for w in per_element])
    got_deq = torch.stack([floats(w[2::3]) for w in per_element])
    assert_bitwise(got_fake, fake, f"{name} fake_quantize")
    assert_bitwise(got_deq, deq, f"{name} dequantize")
    codes = formats.unpack_nibbles(qt.codes, n) if fmt.bits == 4 else qt.codes.view(torch.uint8)
    assert torch.equal(got_codes, codes.long()), f"{name} codes"
    if fmt.scale_format == "fp32":
        assert_bitwise(floats([h[0] for h in head]).view(-1, 1), qt.scale, f"{name} scale")
    else:
        assert [int(h[3]) for h in head] == qt.scale.flatten().tolist(), f"{name} scale codes"
    if qt.zero_point is not None:
        assert floats([h[1] for h in head]).tolist() == qt.zero_point.flatten().float().tolist()
    if qt.tensor_scale is not None:
        assert_bitwise(floats([h[2] for h in head]), qt.tensor_scale.expand(len(x)),
                       f"{name} tensor scale")


def test_the_cpu_reference_is_not_the_gpus_without_the_division_rule():
    """Why cuda_scalar_division exists: on the CPU, int8 scales differ from the GPU's (which
    the kernels match) for most inputs. If this fails, formats.py has become device-independent
    and the rule can go."""
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    groups, _ = formats.as_groups(x, INT8_CHANNEL)
    cpu_scale = formats.choose_scales(groups, INT8_CHANNEL)[0]
    with cuda_scalar_division():
        gpu_scale = formats.choose_scales(groups, INT8_CHANNEL)[0]
    assert not torch.equal(cpu_scale, gpu_scale)


# --- the formats and inputs of the kernel tests (emulated, and on a GPU) -----------------------

KERNEL_FORMATS = {
    "int8-channel": INT8_CHANNEL, "int8-tensor": Format("int", 8, "tensor"),
    "int8-tensor-asym": Format("int", 8, "tensor", symmetric=False),
    "int4-g32": int_group(4, 32), "int4-g64": int_group(4, 64), "int4-g128": int_group(4, 128),
    "int4-g32-asym": int_group(4, 32, False), "int4-g64-asym": int_group(4, 64, False),
    "int4-g128-asym": int_group(4, 128, False),
    "int4-channel-asym": Format("int", 4, symmetric=False),
    "fp8-e4m3-channel": FP8_E4M3, "fp8-e5m2-channel": FP8_E5M2,
    "fp8-e4m3-tensor": Format("e4m3", 8, "tensor"), "fp8-e5m2-tensor": Format("e5m2", 8, "tensor"),
    "mxfp4": MXFP4, "nvfp4": NVFP4, "fp4-e1m2-clip": Format("e1m2", 4, "channel", clip=0.8),
    "fp4-e3m0-tensor": Format("e3m0", 4, "tensor"),
}
NAN_FORMATS = ["int8-channel", "int4-g32-asym", "fp8-e5m2-channel", "mxfp4", "nvfp4",
               "int8-tensor-asym"]
GPU_SHAPES = [(1, 16), (7, 200), (5, 9), (64, 256), (300, 4096)]
GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
gpu = pytest.mark.skipif(not GPU, reason="needs CUDA and CuPy")


def sample_matrix(shape, dtype, seed=0, device="cuda") -> torch.Tensor:
    """Rows of very different scales, an all-zero row, an all-negative row, negative zeros and
    huge outliers (within float16's range for float16)."""
    g = torch.Generator().manual_seed(seed)
    rows, k = shape
    x = torch.randn(shape, generator=g) * 10 ** (torch.rand(rows, 1, generator=g) * 4 - 2)
    outliers = torch.randint(0, x.numel(), (max(1, x.numel() // 500),), generator=g)
    x.view(-1)[outliers] *= 1e3
    if rows > 1:
        x[1] = 0.0
    if rows > 2:
        x[2] = -x[2].abs()
    if rows > 3:
        x[3, ::3] = -0.0
    if dtype == torch.float16:
        x = x.clamp(-6e4, 6e4)
    return x.to(dtype).to(device)


# --- the kernels themselves, emulated on the CPU ----------------------------------------------

# The CUDA features the kernels use, on the host: one block at a time, its threads as
# std::threads, __syncthreads and shuffles as barriers of the block (every thread of a block
# reaches them together in these kernels), __shared__ as static. Not a GPU (no warp
# divergence, memory model), but the kernels' own loops, indexing, packing and reductions run.
EMULATION_PRELUDE = r"""
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define __global__
#define __launch_bounds__(...)
#define __shared__ static
struct EmuDim { unsigned int x = 1, y = 1, z = 1; };
thread_local EmuDim threadIdx;
EmuDim blockIdx, blockDim, gridDim;
std::barrier<>* emu_barrier = nullptr;
uint32_t emu_slots[1024];
std::mutex emu_atomic;
void __syncthreads() { emu_barrier->arrive_and_wait(); }
template <typename T> T emu_exchange(T v, int from) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    emu_slots[threadIdx.x] = u;
    emu_barrier->arrive_and_wait();
    u = emu_slots[from];
    emu_barrier->arrive_and_wait();
    std::memcpy(&v, &u, 4);
    return v;
}
template <typename T> T __shfl_xor_sync(unsigned, T v, int offset) {
    return emu_exchange(v, threadIdx.x ^ offset);
}
template <typename T> T __shfl_down_sync(unsigned, T v, int offset) {
    const int from = threadIdx.x + offset;
    return emu_exchange(v, (from >> 5) == (int)(threadIdx.x >> 5) ? from : threadIdx.x);
}
unsigned int atomicMax(unsigned int* p, unsigned int v) {
    std::lock_guard<std::mutex> lock(emu_atomic);
    const unsigned int old = *p;
    if (v > old) *p = v;
    return old;
}
unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
int min(int a, int b) { return a < b ? a : b; }
template <typename F> void emu_launch(int blocks, int threads, F kernel) {
    gridDim.x = blocks;
    blockDim.x = threads;
    for (int b = 0; b < blocks; ++b) {
        blockIdx.x = b;
        std::barrier<> barrier(threads);
        emu_barrier = &barrier;
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([t, &kernel] { threadIdx.x = t; kernel(); });
        for (auto& thread : pool) thread.join();
    }
}
"""

# Reads the input matrix and launch parameters, then runs what quant_cuda does: the statistics
# kernel (if needed), fake_quantize, quantize, and dequantize of those codes, through the
# extern "C" entry points with the arguments in quant_cuda's order; writes every output.
EMULATION_MAIN = r"""
static std::vector<unsigned char> emu_read(const std::string& path) {
    std::vector<unsigned char> data;
    FILE* f = fopen(path.c_str(), "rb");
    for (int c; f && (c = fgetc(f)) != EOF;) data.push_back((unsigned char)c);
    if (f) fclose(f);
    return data;
}
static void emu_write(const std::string& path, const void* p, size_t n) {
    FILE* f = fopen(path.c_str(), "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}
static unsigned char* emu_alloc(size_t n) {  // 64-byte aligned, filled with garbage
    const size_t size = (n + 64 + 63) / 64 * 64;
    unsigned char* p = (unsigned char*)aligned_alloc(64, size);
    memset(p, 0xAB, size);
    return p;
}

struct EmuArgs {
    int offset, blocks, stats_needed, asym;
    long long code_bytes, n_scales, scale_bytes;
    long long n_groups;  // then quant_cuda's layout and format arguments, in its order
    int k, group, groups_per_row, team, vector_ok, per_tensor, kind, bits;
    unsigned int clip;
    int qmin, qmax, exp_bits, man_bits, bias;
    unsigned int max_value;
    int threads;
};

#define EMU_GROUP_ARGS(a) a.n_groups, a.k, a.group, a.groups_per_row, a.team, a.vector_ok, \
    a.per_tensor, a.kind, a.bits, zoo_from_bits(a.clip), a.qmin, a.qmax, a.exp_bits, \
    a.man_bits, a.bias, zoo_from_bits(a.max_value)

template <typename T, typename Stats, typename Group, typename Dequant>
void emu_run(const std::string& dir, const EmuArgs& a, Stats stats_kernel, Group fake_kernel,
             Group codes_kernel, Dequant dequant_kernel) {
    const std::vector<unsigned char> input = emu_read(dir + "/x.bin");
    const long long n = (long long)input.size() / sizeof(T);
    T* x = reinterpret_cast<T*>(emu_alloc(input.size() + 64)) + a.offset;
    T* y = reinterpret_cast<T*>(emu_alloc(input.size() + 64)) + a.offset;
    memcpy(x, input.data(), input.size());
    unsigned int stats[3] = {0u, 0u, 0u};
    if (a.stats_needed)
        emu_launch(a.blocks, 256, [&] { stats_kernel(x, n, a.offset == 0, a.asym, stats); });
    emu_launch(a.blocks, a.threads, [&] {
        fake_kernel(x, y, nullptr, nullptr, nullptr, nullptr, stats, EMU_GROUP_ARGS(a)); });
    emu_write(dir + "/fake.bin", y, input.size());
    unsigned char* codes = emu_alloc(a.code_bytes);
    unsigned char* scales = emu_alloc(a.n_scales * a.scale_bytes);
    signed char* zeros = (signed char*)emu_alloc(a.n_scales);
    float tensor_scale = -1.0f;
    emu_launch(a.blocks, a.threads, [&] {
        codes_kernel(x, nullptr, codes, scales, zeros, &tensor_scale, stats, EMU_GROUP_ARGS(a)); });
    emu_write(dir + "/codes.bin", codes, a.code_bytes);
    emu_write(dir + "/scale.bin", scales, a.n_scales * a.scale_bytes);
    emu_write(dir + "/zero_point.bin", zeros, a.n_scales);
    emu_write(dir + "/tensor_scale.bin", &tensor_scale, 4);
    memset(y, 0xCD, input.size());
    emu_launch(a.blocks, a.threads, [&] {
        dequant_kernel(codes, scales, zeros, &tensor_scale, y, EMU_GROUP_ARGS(a)); });
    emu_write(dir + "/dequantized.bin", y, input.size());
}

#define EMU_RUN(T, SUFFIX, ELEMENT) emu_run<T>(argv[1], a, zoo_quant_stats_##SUFFIX, \
    zoo_quant_fake_##ELEMENT##_##SUFFIX, zoo_quant_codes_##ELEMENT##_##SUFFIX, \
    zoo_dequant_##ELEMENT##_##SUFFIX)

int main(int argc, char** argv) {
    char dtype[8];
    EmuArgs a;
    if (argc != 2 || scanf("%7s %d %d %d %d %lld %lld %lld %lld %d %d %d %d %d %d %d %d %x "
                           "%d %d %d %d %d %x %d", dtype, &a.offset, &a.blocks, &a.stats_needed,
                           &a.asym, &a.code_bytes, &a.n_scales, &a.scale_bytes, &a.n_groups,
                           &a.k, &a.group, &a.groups_per_row, &a.team, &a.vector_ok,
                           &a.per_tensor, &a.kind, &a.bits, &a.clip, &a.qmin, &a.qmax,
                           &a.exp_bits, &a.man_bits, &a.bias, &a.max_value, &a.threads) != 25)
        return 2;
    const bool is_int = a.kind <= ZOO_INT_ASYM;
    const std::string t = dtype;
    if (t == "f32") is_int ? EMU_RUN(float, f32, int) : EMU_RUN(float, f32, float);
    else if (t == "f16") is_int ? EMU_RUN(__half, f16, int) : EMU_RUN(__half, f16, float);
    else is_int ? EMU_RUN(__nv_bfloat16, bf16, int) : EMU_RUN(__nv_bfloat16, bf16, float);
    return 0;
}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """quant_cuda.SOURCE as host C++ on the emulation above (nvcc drives the host compiler and
    supplies cuda_fp16.h)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    folder = tmp_path_factory.mktemp("emulator")
    source, binary = folder / "zoo_quant_emulated.cpp", folder / "zoo_quant_emulated"
    source.write_text(EMULATION_PRELUDE + quant_cuda.SOURCE + EMULATION_MAIN)
    result = subprocess.run(["nvcc", "-x", "c++", "-std=c++20", "-O1", "-w", str(source), "-o",
                             str(binary), "-lpthread"], capture_output=True, text=True, timeout=600)
    if result.returncode and "barrier" in result.stderr:
        pytest.skip("the host compiler has no C++20 <barrier>")
    assert result.returncode == 0, result.stderr[-3000:]
    return binary


def emulate(binary, folder, x: torch.Tensor, fmt: Format, blocks: int, offset: int = 0) -> dict:
    """What fake_quantize, quantize and dequantize(quantize) return, from the emulated kernels
    launched on `blocks` blocks, x starting `offset` elements past a 64-byte boundary."""
    lay = quant_cuda.layout(tuple(x.shape), fmt, x.dtype)
    specs = quant_cuda.quantized_specs(tuple(x.shape), fmt)
    vector_ok = np.int32(offset == 0 and lay.vector_ok(x.element_size()))
    words = [runtime.SUFFIX[x.dtype], offset, blocks,
             int(fmt.granularity == "tensor" or fmt.scale_format == "e4m3"),
             int(fmt.is_int and not fmt.symmetric),
             int(np.prod(specs["codes"][0])), int(np.prod(specs["scale"][0])),
             specs["scale"][1].itemsize]
    for v in (*lay.args(fmt, vector_ok), *quant_cuda.format_args(fmt)):  # the kernels' order
        words.append(hexes(torch.tensor(float(v)))[0] if isinstance(v, np.float32) else int(v))
    words.append(lay.threads)
    x.contiguous().view(torch.uint8).numpy().tofile(folder / "x.bin")
    result = subprocess.run([str(binary), str(folder)], input=" ".join(map(str, words)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    def read(name, dtype, shape):
        data = np.fromfile(folder / f"{name}.bin", dtype=np.uint8)
        return torch.from_numpy(data.copy()).view(dtype).view(shape)

    out = {"fake": read("fake", x.dtype, x.shape), "dequantized": read("dequantized", x.dtype,
                                                                        x.shape)}
    for name, spec in specs.items():
        out[name] = None if spec is None else read(name, spec[1], spec[0])
    return out


EMULATED = [(name, shape) for name in sorted(KERNEL_FORMATS)
            for shape in [(7, 200), (5, 9), (40, 256)]]


@pytest.mark.parametrize("name,shape", EMULATED, ids=str)
def test_emulated_kernels_equal_the_reference(emulator, tmp_path, name, shape):
    """The kernels' code on the CPU, every dtype, several blocks (the grid-stride loop and idle
    teams), against the reference with the GPU's division rule."""
    fmt = KERNEL_FORMATS[name]
    for dtype, blocks in [(torch.float32, 3), (torch.float16, 1), (torch.bfloat16, 2)]:
        x = sample_matrix(shape, dtype, device="cpu")
        got = emulate(emulator, tmp_path, x, fmt, blocks)
        check_against_reference(got, x, fmt, f"{name} {dtype}")


@pytest.mark.parametrize("name", ["int8-channel", "int4-channel-asym", "fp8-e4m3-channel",
                                  "int8-tensor-asym", "nvfp4", "mxfp4"])
def test_emulated_kernels_on_long_and_misaligned_rows(emulator, tmp_path, name):
    """Rows longer than a block's registers (read twice), and x off the 16-byte boundary (the
    scalar path)."""
    fmt = KERNEL_FORMATS[name]
    for shape, dtype, offset in [((3, 9000), torch.bfloat16, 0), ((2, 9000), torch.float32, 0),
                                 ((12, 256), torch.float32, 1), ((12, 256), torch.float16, 3)]:
        x = sample_matrix(shape, dtype, device="cpu")
        got = emulate(emulator, tmp_path, x, fmt, blocks=2, offset=offset)
        check_against_reference(got, x, fmt, f"{name} {shape} {dtype} offset {offset}")


def test_emulated_kernels_put_nan_where_the_reference_does(emulator, tmp_path):
    for name in NAN_FORMATS:
        x = sample_matrix((8, 256), torch.float32, device="cpu")
        x[5, 70] = float("nan")
        got = emulate(emulator, tmp_path, x, KERNEL_FORMATS[name], blocks=2)
        with cuda_scalar_division():
            assert_bitwise(got["fake"], formats.fake_quantize(x, KERNEL_FORMATS[name]), name)


def check_against_reference(got: dict, x: torch.Tensor, fmt: Format, what: str) -> None:
    with cuda_scalar_division():
        want_fake = formats.fake_quantize(x.float(), fmt).to(x.dtype)
        want = formats.quantize(x.float(), fmt)
        want_deq = formats.dequantize(want, x.dtype)
    assert_bitwise(got["fake"], want_fake, f"{what}: fake_quantize")
    for name in ("codes", "scale", "zero_point", "tensor_scale"):
        if getattr(want, name) is not None:
            assert_bitwise(got[name], getattr(want, name), f"{what}: {name}")
    assert_bitwise(got["dequantized"], want_deq, f"{what}: dequantize")
    # dequantize(quantize) is fake_quantize, up to the sign of zero (an int code has none)
    assert torch.equal(got["dequantized"], want_fake), f"{what}: dequantize(quantize)"


# --- layouts and argument checks (no GPU needed) ----------------------------------------------

LAYOUT_FORMATS = [INT8_CHANNEL, Format("int", 8, "tensor"), int_group(4, 32), int_group(4, 64),
                  int_group(4, 128, symmetric=False), Format("int", 4, "tensor", symmetric=False),
                  FP8_E4M3, Format("e5m2", 8, "tensor"), MXFP4, NVFP4,
                  Format("e2m1", 4, "tensor", scale_format="e4m3"),
                  Format("e1m2", 4, clip=0.8), Format("e3m0", 4, "tensor"), Format("int", 3)]
LAYOUT_SHAPES = [(1, 16), (7, 200), (5, 9), (64, 256), (3, 4096), (2, 20000), (4, 27)]


@pytest.mark.parametrize("fmt", LAYOUT_FORMATS, ids=lambda f: f.describe())
def test_output_specs_are_those_of_the_reference(fmt):
    for shape in LAYOUT_SHAPES:
        qt = formats.quantize(torch.randn(shape), fmt)
        specs = quant_cuda.quantized_specs(shape, fmt)
        for name, spec in specs.items():
            t = getattr(qt, name)
            assert (None if t is None else (tuple(t.shape), t.dtype)) == spec, (shape, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_layouts_cover_every_group_with_whole_warps(dtype):
    for fmt in LAYOUT_FORMATS:
        for shape in LAYOUT_SHAPES:
            lay = quant_cuda.layout(shape, fmt, dtype)
            assert lay.group == fmt.group_for(shape[1])
            assert lay.groups_per_row * lay.group >= shape[1] > (lay.groups_per_row - 1) * lay.group
            assert lay.team & (lay.team - 1) == 0 and lay.threads % lay.team == 0
            assert lay.threads % 32 == 0 and lay.threads <= quant_cuda.MAX_TEAM
            assert lay.team == lay.threads or lay.team <= 32
            # enough threads to hold a group in registers, unless the team is the widest
            fits = lay.team * quant_cuda.ELEMENTS >= lay.group
            assert fits or lay.team == quant_cuda.MAX_TEAM
            assert lay.team == 1 or (lay.team // 2) * quant_cuda.ELEMENTS < lay.group


def test_what_the_kernels_do_not_take_is_a_value_error():
    x = torch.randn(4, 27)
    with pytest.raises(ValueError, match="2-d"):
        quant_cuda.fake_quantize(torch.randn(2, 3, 4), INT8_CHANNEL)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        quant_cuda.fake_quantize(x.double(), INT8_CHANNEL)
    with pytest.raises(ValueError, match="empty"):
        quant_cuda.quantize(torch.randn(0, 8), INT8_CHANNEL)
    with pytest.raises(ValueError, match="float32 scales"):
        quant_cuda.fake_quantize(x, Format("int", 8, scale_format="e8m0"))
    with pytest.raises(ValueError, match="odd groups"):
        quant_cuda.quantize(x, int_group(4, 9))
    with pytest.raises(ValueError, match="CUDA"):
        quant_cuda.fake_quantize(x, int_group(4, 9))  # fake-quantizing odd groups is fine
    assert not quant_cuda.can_launch(x) and not quant_cuda.can_launch(x, INT8_CHANNEL)


def test_the_benchmark_runs_on_the_cpu_without_kernels():
    from zoo.tools.quant_bench import bench_quant, quant_bench_environment, quant_bench_markdown

    fmts = {"int8": INT8_CHANNEL, "nvfp4": NVFP4}
    rows = bench_quant(fmts, numel=2 * 4096, device="cpu", dtype=torch.float32,
                       min_run_time=0.01)
    assert [r["format"] for r in rows] == ["int8", "nvfp4"]
    for r in rows:
        assert r["shape"] == (2, 4096) and r["reference_gbps"] > 0 and r["copy_gbps"] > 0
        assert r["kernel_ms"] is None and r["bitwise"] is None
    markdown = quant_bench_markdown(rows, quant_bench_environment("cpu"))
    assert "float32 (2 x 4,096)" in markdown and "copy bandwidth" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| int8 ")]
    assert len(table) == 1 and table[0].count("—") == 5  # the kernel columns


# --- on a GPU: the kernels against the reference on the same GPU ------------------------------

def on_cpu(qt: formats.Quantized) -> formats.Quantized:
    """(formats.dequantize makes a CPU tensor for E8M0 scales: it runs on the CPU.)"""
    move = lambda t: None if t is None else t.cpu()  # noqa: E731
    return dataclasses.replace(qt, codes=qt.codes.cpu(), scale=qt.scale.cpu(),
                               zero_point=move(qt.zero_point), tensor_scale=move(qt.tensor_scale))


def assert_same_quantized(got: formats.Quantized, want: formats.Quantized, what: str) -> None:
    assert got.shape == want.shape and got.fmt == want.fmt
    for name in ("codes", "scale", "zero_point", "tensor_scale"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), f"{what}: {name}"
        if g is not None:
            assert_bitwise(g, w, f"{what}: {name}")


@gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(KERNEL_FORMATS))
def test_kernels_equal_the_reference_bitwise(name, shape, dtype):
    fmt = KERNEL_FORMATS[name]
    x = sample_matrix(shape, dtype)
    assert quant_cuda.can_launch(x, fmt)
    want_fake = formats.fake_quantize(x.float(), fmt).to(dtype)
    assert_bitwise(quant_cuda.fake_quantize(x, fmt), want_fake, f"{name} fake_quantize")
    want = formats.quantize(x.float(), fmt)
    got = quant_cuda.quantize(x, fmt)
    assert_same_quantized(got, want, f"{name} quantize")
    deq = quant_cuda.dequantize(got, dtype)
    assert_bitwise(deq.cpu(), formats.dequantize(on_cpu(want), dtype), f"{name} dequantize")
    # dequantize(quantize) is fake_quantize, up to the sign of zero (an int code has none)
    assert torch.equal(deq, want_fake), f"{name} dequantize(quantize) vs fake_quantize"


@gpu
@pytest.mark.parametrize("name", ["int8-channel", "int4-channel-asym", "fp8-e4m3-channel",
                                  "int8-tensor-asym", "nvfp4"])
@pytest.mark.parametrize("layout", ["transposed", "misaligned", "long-rows"])
def test_strides_alignment_and_rows_longer_than_the_registers(name, layout):
    """Non-contiguous input, a start off the 16-byte boundary (the scalar path), and rows
    read twice (longer than 512 threads x 16 elements)."""
    fmt = KERNEL_FORMATS[name]
    if layout == "transposed":
        x = sample_matrix((256, 48), torch.float32).t()
    elif layout == "misaligned":
        x = sample_matrix((1, 48 * 256 + 1), torch.float32).view(-1)[1:].view(48, 256)
    else:
        x = sample_matrix((3, 20000), torch.bfloat16)
    want = formats.fake_quantize(x.float(), fmt).to(x.dtype)
    assert_bitwise(quant_cuda.fake_quantize(x, fmt), want, f"{name} {layout}")
    assert_same_quantized(quant_cuda.quantize(x, fmt), formats.quantize(x.float(), fmt),
                          f"{name} {layout}")


@gpu
def test_dequantize_takes_the_references_codes_even_of_odd_groups():
    fmt = int_group(4, 9)  # two groups share a byte: the kernels' quantize refuses it
    x = sample_matrix((6, 27), torch.float32)
    qt = formats.quantize(x, fmt)
    want = formats.dequantize(on_cpu(qt), torch.bfloat16)
    assert_bitwise(quant_cuda.dequantize(qt, torch.bfloat16).cpu(), want, "odd groups")


@gpu
@pytest.mark.parametrize("name", NAN_FORMATS)
def test_nan_is_where_the_reference_puts_it(name):
    """A NaN makes its group's scale NaN (the tensor's, per tensor), except for E8M0 scales."""
    fmt = KERNEL_FORMATS[name]
    x = sample_matrix((8, 256), torch.float32)
    x[5, 70] = float("nan")
    got, want = quant_cuda.fake_quantize(x, fmt), formats.fake_quantize(x, fmt)
    assert got.isnan().any()
    assert_bitwise(got, want, f"{name} with a NaN")
