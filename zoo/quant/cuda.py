"""CuPy kernels for quantize, dequantize and fake-quantize of every `zoo.quant.formats.Format`.

`zoo.quant.formats` (with `zoo.quant.minifloat`) is the specification: on a GPU these kernels
give bitwise the same codes, scales and values as that reference run on the same GPU. A matrix is
(rows, K), contiguous; a group is `group` consecutive elements of a row (the whole row for
"channel" and "tensor"); rows are padded with zeros to whole groups, as `formats.as_groups` does.

Launch layout. A *team* of `team` threads (a power of two) quantizes one group:

  * every thread loads up to 16 elements of the group as 16-byte vectors (4 floats or 8 halves
    each; lane l takes vectors l, l + team, ...: consecutive lanes read consecutive vectors) and
    keeps them in registers, so x is read from memory once;
  * the team reduces max|x| (or min and max, for asymmetric ints) with warp shuffles, or with
    warp shuffles and shared memory when the team is a whole block (long rows, "channel");
  * every lane derives the group's scale itself (cheaper than broadcasting it), and the team
    writes its elements (fake-quantized values, or codes, 4-bit ones packed two per byte) and
    lane 0 the scale and zero point.

The team size gives each thread about 16 elements: a group of 16 is one thread, 128 is 8
threads, a row of 4096 a block of 256 (more elements per thread cost registers, and so
occupancy). Teams of up to 32 threads are packed into blocks of 256; a row too long for the
registers of 512 threads is read twice (the second time mostly from L2). Blocks loop over the
groups (a grid-stride loop). The 16-byte vector path is taken when rows and groups start on
16-byte boundaries, scalar loads otherwise (e.g. K = 9). Dequantize uses the same layout
without the reduction.

Per-tensor scales (granularity "tensor", and NVFP4's float32 tensor scale) need the whole
tensor's statistics first: `zoo_quant_stats_*` is a grid-stride reduction in which each block
combines max|x|, -min(x, 0) and max(x, 0) in registers and shared memory and then issues one
atomicMax per statistic on its float bits (the order of non-negative floats is that of their
bits, NaN included, so NaN propagates like torch.amax); the group kernel then reads them.

Bitwise parity needs the reference's exact float32 operations, in its order: the element is
multiplied by 1/scale (torchao's convention), and a division of a tensor by a Python number,
which PyTorch's CUDA kernels compute as a multiplication by the number's float32 reciprocal
(aten/src/ATen/native/cuda/BinaryDivTrueKernel.cu), is computed that way here too. (PyTorch on
the CPU divides, so the CPU reference's scales can differ from the GPU's in the last bit.)
Non-finite inputs: a NaN makes the scale of its group (of the tensor, per tensor) NaN, except
E8M0 scales, as in the reference; infinities are not matched.

Unsupported, with a ValueError for the caller to fall back to the reference: other dtypes,
empty or non-2-d inputs, integer formats with non-float32 scales or more than 8 bits, and
quantize (fake_quantize is fine) of 4-bit codes in odd groups, where two groups share a byte.

The element math is written as `__host__ __device__` functions so that tests run the same C on a
CPU; tests/test_quant_kernels.py also runs the kernels themselves on a thread emulation of CUDA.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from zoo.kernels import runtime
from zoo.kernels.cuda_codegen import DTYPES, PRELUDE, THREADS
from zoo.quant.formats import Format, Quantized

ELEMENTS = 16  # elements a thread keeps in registers: ZOO_QUANT_ELEMENTS below
MAX_TEAM = 512  # the widest team (a whole block): ZOO_QUANT_MAX_THREADS below

# Scale kinds: how a group's scale is chosen and stored (the order matters: kinds up to
# ZOO_FP_SCALE store float32 scales).
INT_SYM, INT_ASYM, FP_SCALE, E8M0_SCALE, E4M3_SCALE = range(5)

KERNELS = r"""
// ---- quantization: zoo.quant.minifloat and zoo.quant.formats in C ---------------------------
#define ZOO_QUANT_ELEMENTS 16  // per thread, in registers (4 vectors of floats, 2 of halves)
#define ZOO_QUANT_MAX_THREADS 512
#define ZOO_SCALE_EPS 1.1920928955078125e-07f  // float32's eps, formats.SCALE_EPS
#define ZOO_SMALLEST_NORMAL 1.1754943508222875e-38f  // 2^-126, formats.SMALLEST_NORMAL

// quant_cuda.scale_kind; kinds up to ZOO_FP_SCALE store float32 scales
enum { ZOO_INT_SYM, ZOO_INT_ASYM, ZOO_FP_SCALE, ZOO_E8M0_SCALE, ZOO_E4M3_SCALE };

__host__ __device__ __forceinline__ unsigned int zoo_bits(float v) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(v);
#else
    unsigned int u;
    __builtin_memcpy(&u, &v, sizeof u);
    return u;
#endif
}
__host__ __device__ __forceinline__ float zoo_from_bits(unsigned int u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float v;
    __builtin_memcpy(&v, &u, sizeof v);
    return v;
#endif
}
// 2^k for -126 <= k <= 127 (a normal float), exactly; cheaper than ldexpf.
__host__ __device__ __forceinline__ float zoo_pow2(int k) {
    return zoo_from_bits((unsigned int)(k + 127) << 23);
}
// min / max that propagate NaN, like torch.amin, torch.amax and clamp.
__host__ __device__ __forceinline__ float zoo_min_nan(float a, float b) {
    return (a < b || a != a) ? a : b;
}
__host__ __device__ __forceinline__ float zoo_max_nan(float a, float b) {
    return (a > b || a != a) ? a : b;
}
__host__ __device__ __forceinline__ float zoo_clamp(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);  // NaN stays NaN
}
__host__ __device__ __forceinline__ float zoo_clamp_eps(float v) {
    return v < ZOO_SCALE_EPS ? ZOO_SCALE_EPS : v;
}
__host__ __device__ __forceinline__ float zoo_clamp_min(float v, float floor) {
    return v < floor ? floor : v;  // NaN stays NaN
}

// minifloat.round_to: the nearest value of a format with `man_bits` mantissa bits, smallest
// normal binade 2^min_normal_exp and largest value max_value; ties to even; saturating.
__host__ __device__ __forceinline__ float zoo_round_minifloat(float x, int man_bits,
                                                              int min_normal_exp,
                                                              float max_value) {
    float mag = fabsf(x);
    mag = mag > max_value ? max_value : mag;  // saturate first (NaN stays NaN)
    // floor(log2(mag)) from the float32 exponent field; 0 and float32 subnormals come out at
    // -127 and join the format's subnormals, whose step is that of the smallest normal binade
    int binade = (int)(zoo_bits(mag) >> 23) - 127;
    binade = binade < min_normal_exp ? min_normal_exp : binade;
    const int shift = man_bits - binade;  // one step of the grid is 2^-shift
    // both products are exact: rintf does the only rounding, as torch.round in round_to
    float r = rintf(mag * zoo_pow2(shift)) * zoo_pow2(-shift);
    r = r > max_value ? max_value : r;
    return copysignf(r, x);
}

// minifloat.encode of a value on the format's grid (what zoo_round_minifloat returns; encode
// takes nothing else), read off its float32 fields.
__host__ __device__ __forceinline__ unsigned int zoo_encode_grid(float q, int exp_bits,
                                                                 int man_bits, int bias) {
    const unsigned int u = zoo_bits(q);
    const int binade = (int)((u >> 23) & 0xffu) - 127;
    unsigned int body;
    if (binade < 1 - bias)  // a subnormal of the format, or zero: count steps of 2^(1-bias-man)
        body = (unsigned int)(fabsf(q) * zoo_pow2(man_bits + bias - 1));
    else
        body = ((unsigned int)(binade + bias) << man_bits)
               | ((u >> (23 - man_bits)) & ((1u << man_bits) - 1u));
    return ((u >> 31) << (exp_bits + man_bits)) | body;
}

// minifloat.decode
__host__ __device__ __forceinline__ float zoo_decode_minifloat(unsigned int code, int exp_bits,
                                                               int man_bits, int bias) {
    const float mantissa = (float)(code & ((1u << man_bits) - 1u));
    const int exp_field = (int)((code >> man_bits) & ((1u << exp_bits) - 1u));
    const float fraction = mantissa * zoo_pow2(-man_bits);
    const float significand = exp_field > 0 ? 1.0f + fraction : fraction;
    const float magnitude = significand * zoo_pow2(exp_field > 0 ? exp_field - bias : 1 - bias);
    return ((code >> (exp_bits + man_bits)) & 1u) ? -magnitude : magnitude;
}

// minifloat.e8m0_exponent: floor(log2(amax)) - emax_elem in [-127, 127]; -127 for a zero block.
__host__ __device__ __forceinline__ int zoo_e8m0_exponent(float amax, int max_exp) {
    if (!(amax > 0.0f)) return -127;
    int exponent;
    frexpf(amax, &exponent);
    const int shared = exponent - 1 - max_exp;
    return shared < -127 ? -127 : (shared > 127 ? 127 : shared);
}

// The integer element of formats._elements: round(x * (1/s)) (+ zero point), clamped.
__host__ __device__ __forceinline__ float zoo_round_int(float x, float inverse, float zero,
                                                        bool asym, float qmin, float qmax) {
    float q = rintf(x * inverse);
    if (asym) q += zero;  // only then: a symmetric -0 stays -0, as in the reference
    return zoo_clamp(q, qmin, qmax);
}

// torch.where(scale > 0, 1.0 / scale, 0)
__host__ __device__ __forceinline__ float zoo_inverse(float scale) {
    return scale > 0.0f ? 1.0f / scale : 0.0f;
}

struct ZooFormat {
    int kind, bits;  // a ZOO_*_SCALE kind; bits of an element
    float clip, qmin, qmax;  // qmin, qmax: ints only
    float int_scale_floor;  // formats.Format.scale_floor of an integer format
    int exp_bits, man_bits, bias, min_normal_exp, max_exp;  // minifloats only
    float max_value;
};

__host__ __device__ inline ZooFormat zoo_format(int kind, int bits, float clip, int qmin,
                                                int qmax, int exp_bits, int man_bits, int bias,
                                                float max_value) {
    ZooFormat f;
    f.kind = kind;
    f.bits = bits;
    f.clip = clip;
    f.qmin = (float)qmin;
    f.qmax = (float)qmax;
    f.int_scale_floor = bits == 8 ? ZOO_SCALE_EPS : ZOO_SMALLEST_NORMAL;
    f.exp_bits = exp_bits;
    f.man_bits = man_bits;
    f.bias = bias;
    f.min_normal_exp = 1 - bias;
    f.max_exp = (int)((zoo_bits(max_value) >> 23) & 0xffu) - 127;  // floor(log2(max_value))
    f.max_value = max_value;
    return f;
}

struct ZooScale {
    float scale, inverse, zero;  // zero: the asymmetric zero point, as a float
    unsigned int code;  // the stored E8M0 / E4M3 scale code
};

// NVFP4's tensor scale: amax * clip / (448 * max_value), clamped at eps.
__host__ __device__ __forceinline__ float zoo_tensor_scale(const ZooFormat& f, float amax) {
    return zoo_clamp_eps((amax * f.clip) * (1.0f / (448.0f * f.max_value)));
}

// formats.choose_scales for one group, from its amax = max|x|, low = min(x, 0) and
// high = max(x, 0) (the whole tensor's for per-tensor formats). A division by a Python number
// in the reference is a multiplication by the float32 reciprocal here, as on PyTorch's CUDA.
__host__ __device__ inline ZooScale zoo_group_scale(const ZooFormat& f, float amax, float low,
                                                    float high, float tensor_scale) {
    ZooScale s;
    s.zero = 0.0f;
    s.code = 0u;
    const float a = amax * f.clip;
    switch (f.kind) {
    case ZOO_INT_SYM:
        s.scale = zoo_clamp_min(a * (1.0f / ((f.qmax - f.qmin) * 0.5f)), f.int_scale_floor);
        break;
    case ZOO_INT_ASYM:  // the reference ignores clip here
        s.scale = zoo_clamp_min((high - low) * (1.0f / (f.qmax - f.qmin)), f.int_scale_floor);
        s.zero = zoo_clamp(f.qmin - rintf(low / s.scale), f.qmin, f.qmax);
        break;
    case ZOO_FP_SCALE:
        s.scale = zoo_clamp_eps(a * (1.0f / f.max_value));
        break;
    case ZOO_E8M0_SCALE: {
        const int e = zoo_e8m0_exponent(a, f.max_exp);
        s.scale = ldexpf(1.0f, e);
        s.code = (unsigned int)(e + 127);
        break;
    }
    default: {  // ZOO_E4M3_SCALE: an E4M3 block scale times the float32 tensor scale
        const float block = zoo_round_minifloat(a * (1.0f / f.max_value) / tensor_scale, 3, -6,
                                                448.0f);
        s.scale = block * tensor_scale;
        // the stored code, as formats.quantize: scale / tensor_scale may be a float32 step off
        // the E4M3 grid, so it is rounded back onto it before encoding
        s.code = zoo_encode_grid(zoo_round_minifloat(s.scale / tensor_scale, 3, -6, 448.0f), 4, 3,
                                 7);
        break;
    }
    }
    s.inverse = zoo_inverse(s.scale);
    return s;
}

// The scale formats.dequantize multiplies by, from a stored E8M0 / E4M3 code.
__host__ __device__ __forceinline__ float zoo_scale_of_code(int kind, unsigned int code,
                                                            float tensor_scale) {
    if (kind == ZOO_E8M0_SCALE) return ldexpf(1.0f, (int)code - 127);
    return zoo_decode_minifloat(code, 4, 3, 7) * tensor_scale;
}

// formats._elements: the element on the format's grid (an integer for ints).
template <bool IS_INT>
__host__ __device__ __forceinline__ float zoo_element(float x, const ZooFormat& f,
                                                      const ZooScale& s) {
    if constexpr (IS_INT)
        return zoo_round_int(x, s.inverse, s.zero, f.kind == ZOO_INT_ASYM, f.qmin, f.qmax);
    else
        return zoo_round_minifloat(x * s.inverse, f.man_bits, f.min_normal_exp, f.max_value);
}

// formats._dequantize_groups
__host__ __device__ __forceinline__ float zoo_dequantize_value(float q, bool asym, float scale,
                                                               float zero) {
    return asym ? (q - zero) * scale : q * scale;
}

template <bool IS_INT>
__host__ __device__ __forceinline__ float zoo_fake_value(float x, const ZooFormat& f,
                                                         const ZooScale& s) {
    return zoo_dequantize_value(zoo_element<IS_INT>(x, f, s), f.kind == ZOO_INT_ASYM, s.scale,
                                s.zero);
}

// The code formats.quantize stores (before nibble packing): an int8 byte, q - qmin for int4,
// the minifloat's bits.
template <bool IS_INT>
__host__ __device__ __forceinline__ unsigned int zoo_code(float x, const ZooFormat& f,
                                                          const ZooScale& s) {
    const float q = zoo_element<IS_INT>(x, f, s);
    if constexpr (IS_INT)
        return f.bits == 4 ? (unsigned int)(int)(q - f.qmin)
                           : (unsigned int)(unsigned char)(signed char)(int)q;
    else
        return zoo_encode_grid(q, f.exp_bits, f.man_bits, f.bias) & 0xffu;
}

// The element value formats.dequantize decodes from a code.
template <bool IS_INT>
__host__ __device__ __forceinline__ float zoo_code_value(unsigned int code, const ZooFormat& f) {
    if constexpr (IS_INT)
        return f.bits == 4 ? (float)code + f.qmin : (float)(signed char)(unsigned char)code;
    else
        return zoo_decode_minifloat(code, f.exp_bits, f.man_bits, f.bias);
}

// ---- kernels ----------------------------------------------------------------------------------

template <int N> struct alignas(N) ZooBytes { unsigned char b[N]; };

// Elements [start, start + V) of a group of which `valid` are real; zeros past them (the
// padding of formats.as_groups).
template <typename T>
__device__ __forceinline__ ZooVec<T, 16 / sizeof(T)> zoo_load_chunk(const T* __restrict__ src,
                                                                   int start, int valid,
                                                                   bool vector_ok) {
    constexpr int V = 16 / sizeof(T);
    ZooVec<T, V> v;
    if (vector_ok && start + V <= valid) {
        v = *reinterpret_cast<const ZooVec<T, V>*>(src + start);
    } else {
        #pragma unroll
        for (int e = 0; e < V; ++e)
            v.v[e] = start + e < valid ? src[start + e] : zoo_store<T>(0.0f);
    }
    return v;
}

template <typename T>
__device__ __forceinline__ void zoo_store_chunk(T* __restrict__ dst, int start, int valid,
                                                bool vector_ok,
                                                const ZooVec<T, 16 / sizeof(T)>& v) {
    constexpr int V = 16 / sizeof(T);
    if (vector_ok && start + V <= valid) {
        *reinterpret_cast<ZooVec<T, V>*>(dst + start) = v;
    } else {
        #pragma unroll
        for (int e = 0; e < V; ++e)
            if (start + e < valid) dst[start + e] = v.v[e];
    }
}

// Stores the codes of elements [start, start + V) of a group (of `group`, padding included)
// whose first element is element `first` of its padded row. 4-bit codes: element 2i in the low
// nibble of byte i (formats.pack_nibbles); `first + start` is even, so each thread owns whole
// bytes; a row of odd length ends with a zero high nibble.
template <int V>
__device__ __forceinline__ void zoo_store_codes(unsigned char* __restrict__ row_codes,
                                                long long first, int start, int group,
                                                bool vector_ok, int bits,
                                                const unsigned int* code) {
    const int n = group - start < V ? group - start : V;
    const long long at = first + start;
    if (bits == 4) {
        ZooBytes<V / 2> out;
        #pragma unroll
        for (int p = 0; p < V / 2; ++p)
            out.b[p] = (unsigned char)((2 * p < n ? code[2 * p] : 0u)
                                       | (2 * p + 1 < n ? code[2 * p + 1] << 4 : 0u));
        unsigned char* dst = row_codes + at / 2;
        if (vector_ok && n == V) {
            *reinterpret_cast<ZooBytes<V / 2>*>(dst) = out;
        } else {
            #pragma unroll
            for (int p = 0; p < V / 2; ++p)
                if (2 * p < n) dst[p] = out.b[p];
        }
    } else {
        ZooBytes<V> out;
        #pragma unroll
        for (int e = 0; e < V; ++e) out.b[e] = (unsigned char)code[e];
        if (vector_ok && n == V) {
            *reinterpret_cast<ZooBytes<V>*>(row_codes + at) = out;
        } else {
            #pragma unroll
            for (int e = 0; e < V; ++e)
                if (e < n) row_codes[at + e] = out.b[e];
        }
    }
}

// The codes of elements [start, start + V) of a group (only those below `valid` are read).
template <int V>
__device__ __forceinline__ void zoo_load_codes(const unsigned char* __restrict__ row_codes,
                                               long long first, int start, int valid,
                                               bool vector_ok, int bits, unsigned int* code) {
    const long long at = first + start;
    const bool vector = vector_ok && start + V <= valid;
    if (bits == 4) {
        if (vector) {
            const ZooBytes<V / 2> in =
                *reinterpret_cast<const ZooBytes<V / 2>*>(row_codes + at / 2);
            #pragma unroll
            for (int p = 0; p < V / 2; ++p) {
                code[2 * p] = in.b[p] & 15u;
                code[2 * p + 1] = in.b[p] >> 4;
            }
        } else {  // any parity: codes from formats.quantize may have odd groups
            #pragma unroll
            for (int e = 0; e < V; ++e) {
                const unsigned int byte = start + e < valid ? row_codes[(at + e) / 2] : 0u;
                code[e] = ((at + e) & 1) ? byte >> 4 : byte & 15u;
            }
        }
    } else {
        if (vector) {
            const ZooBytes<V> in = *reinterpret_cast<const ZooBytes<V>*>(row_codes + at);
            #pragma unroll
            for (int e = 0; e < V; ++e) code[e] = in.b[e];
        } else {
            #pragma unroll
            for (int e = 0; e < V; ++e) code[e] = start + e < valid ? row_codes[at + e] : 0u;
        }
    }
}

// max|x| (as float bits: non-negative floats order as their bits, NaN above infinity), low and
// high over a team of `team` consecutive threads (a power of two); every thread of the team gets
// the result. A team wider than a warp is the whole block.
__device__ __forceinline__ void zoo_team_reduce(unsigned int& amax, float& low, float& high,
                                                int team) {
    for (int offset = (team < 32 ? team : 32) >> 1; offset > 0; offset >>= 1) {
        amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
        low = zoo_min_nan(low, __shfl_xor_sync(0xffffffffu, low, offset));
        high = zoo_max_nan(high, __shfl_xor_sync(0xffffffffu, high, offset));
    }
    if (team > 32) {
        __shared__ unsigned int shared_amax[32];
        __shared__ float shared_low[32], shared_high[32];
        const int warp = threadIdx.x >> 5;
        if ((threadIdx.x & 31) == 0) {
            shared_amax[warp] = amax;
            shared_low[warp] = low;
            shared_high[warp] = high;
        }
        __syncthreads();
        amax = shared_amax[0];
        low = shared_low[0];
        high = shared_high[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w) {
            amax = max(amax, shared_amax[w]);
            low = zoo_min_nan(low, shared_low[w]);
            high = zoo_max_nan(high, shared_high[w]);
        }
        __syncthreads();  // the shared arrays are reused by the next group
    }
}

__device__ __forceinline__ void zoo_accumulate(float v, bool asym, unsigned int& amax,
                                               float& low, float& high) {
    if (asym) {
        low = zoo_min_nan(low, v);
        high = zoo_max_nan(high, v);
    } else {
        amax = max(amax, zoo_bits(v) & 0x7fffffffu);
    }
}

// The whole tensor's statistics (for "tensor" granularity and NVFP4's tensor scale):
// stats[0] = max|x|, stats[1] = -min(x, 0), stats[2] = max(x, 0), as float bits, zeroed by the
// caller; one atomicMax per block and statistic.
template <typename T>
__device__ __forceinline__ void zoo_quant_stats(const T* __restrict__ x, long long n,
                                                bool vector_ok, bool asym,
                                                unsigned int* __restrict__ stats) {
    constexpr int V = 16 / sizeof(T);
    unsigned int amax = 0u;
    float low = 0.0f, high = 0.0f;
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long n_vec = vector_ok ? n / V : 0;
    for (long long i = start; i < n_vec; i += stride) {
        const ZooVec<T, V> v = reinterpret_cast<const ZooVec<T, V>*>(x)[i];
        #pragma unroll
        for (int e = 0; e < V; ++e) zoo_accumulate(zoo_load(v.v[e]), asym, amax, low, high);
    }
    for (long long i = n_vec * V + start; i < n; i += stride)
        zoo_accumulate(zoo_load(x[i]), asym, amax, low, high);
    zoo_team_reduce(amax, low, high, blockDim.x);
    if (threadIdx.x == 0) {
        atomicMax(stats, amax);
        if (asym) {  // fabsf: NaN with its sign bit cleared, the largest non-negative bits
            atomicMax(stats + 1, zoo_bits(fabsf(0.0f - low)));
            atomicMax(stats + 2, zoo_bits(fabsf(high)));
        }
    }
}

// Fake-quantizes (FAKE) or quantizes the (rows, k) matrix x, one group per team (see the module
// docstring). Groups are numbered t = row * groups_per_row + j. Quantize writes the codes of the
// padded rows, one scale (and zero point) per group or, per tensor, one in all, and NVFP4's
// tensor scale.
template <typename T, bool IS_INT, bool FAKE>
__device__ __forceinline__ void zoo_quant_groups(
        const T* __restrict__ x, T* __restrict__ y, unsigned char* __restrict__ codes,
        void* __restrict__ scales, signed char* __restrict__ zeros,
        float* __restrict__ tensor_scale_out, const unsigned int* __restrict__ stats,
        long long n_groups, int k, int group, int groups_per_row, int team, bool vector_ok,
        bool per_tensor, const ZooFormat f) {
    constexpr int V = 16 / sizeof(T);
    constexpr int C = ZOO_QUANT_ELEMENTS / V;  // vectors per thread and pass
    const int lane = threadIdx.x & (team - 1);
    const int teams_per_block = blockDim.x / team;
    const int n_chunks = (group + V - 1) / V;  // vectors in a padded group
    const bool cached = !per_tensor && n_chunks <= team * C;  // else the second pass reloads
    const bool asym = f.kind == ZOO_INT_ASYM;
    const long long padded = (long long)groups_per_row * group;
    const long long code_row = f.bits == 4 ? (padded + 1) / 2 : padded;
    float tensor_scale = 0.0f;
    if (f.kind == ZOO_E4M3_SCALE) {
        tensor_scale = zoo_tensor_scale(f, zoo_from_bits(stats[0]));
        if (!FAKE && blockIdx.x == 0 && threadIdx.x == 0) *tensor_scale_out = tensor_scale;
    }
    // The loop bound is the same for the whole block (shuffles and barriers need every thread);
    // teams past the last group load nothing and store nothing.
    for (long long first = (long long)blockIdx.x * teams_per_block; first < n_groups;
         first += (long long)gridDim.x * teams_per_block) {
        const long long t = first + threadIdx.x / team;
        const bool active = t < n_groups;
        const long long row = t / groups_per_row;
        const int j = (int)(t - row * groups_per_row);
        const int valid = active ? min(group, k - j * group) : 0;  // the rest is padding
        const long long offset = row * k + (long long)j * group;
        ZooVec<T, V> cache[C];
        float amax, low, high;
        if (per_tensor) {
            amax = zoo_from_bits(stats[0]);
            low = 0.0f - zoo_from_bits(stats[1]);
            high = zoo_from_bits(stats[2]);
        } else {
            unsigned int amax_bits = 0u;
            low = 0.0f;  // min(x, 0) and max(x, 0): the padding zeros count, as in the reference
            high = 0.0f;
            for (int base = 0; base < n_chunks; base += team * C) {
                #pragma unroll
                for (int c = 0; c < C; ++c) {
                    const int chunk = base + c * team + lane;
                    if (chunk < n_chunks) {
                        cache[c] = zoo_load_chunk(x + offset, chunk * V, valid, vector_ok);
                        #pragma unroll
                        for (int e = 0; e < V; ++e)
                            zoo_accumulate(zoo_load(cache[c].v[e]), asym, amax_bits, low, high);
                    }
                }
            }
            zoo_team_reduce(amax_bits, low, high, team);
            amax = zoo_from_bits(amax_bits);
        }
        const ZooScale s = zoo_group_scale(f, amax, low, high, tensor_scale);
        if (!FAKE && active && lane == 0 && (!per_tensor || t == 0)) {
            const long long at = per_tensor ? 0 : t;
            if (!per_tensor && f.kind > ZOO_FP_SCALE)
                static_cast<unsigned char*>(scales)[at] = (unsigned char)s.code;
            else
                static_cast<float*>(scales)[at] = s.scale;
            if (asym) zeros[at] = (signed char)(int)s.zero;
        }
        for (int base = 0; base < n_chunks; base += team * C) {
            #pragma unroll
            for (int c = 0; c < C; ++c) {
                const int chunk = base + c * team + lane;
                if (chunk >= n_chunks) continue;
                const ZooVec<T, V> in =
                    cached ? cache[c] : zoo_load_chunk(x + offset, chunk * V, valid, vector_ok);
                if constexpr (FAKE) {
                    ZooVec<T, V> out;
                    #pragma unroll
                    for (int e = 0; e < V; ++e)
                        out.v[e] = zoo_store<T>(zoo_fake_value<IS_INT>(zoo_load(in.v[e]), f, s));
                    zoo_store_chunk(y + offset, chunk * V, valid, vector_ok, out);
                } else if (active) {
                    unsigned int code[V];
                    #pragma unroll
                    for (int e = 0; e < V; ++e) code[e] = zoo_code<IS_INT>(zoo_load(in.v[e]), f, s);
                    zoo_store_codes<V>(codes + row * code_row, (long long)j * group, chunk * V,
                                       group, vector_ok, f.bits, code);
                }
            }
        }
    }
}

// formats.dequantize into the (rows, k) y, one group per team (no reduction: teams leave the
// loop on their own).
template <typename T, bool IS_INT>
__device__ __forceinline__ void zoo_dequant_groups(
        const unsigned char* __restrict__ codes, const void* __restrict__ scales,
        const signed char* __restrict__ zeros, const float* __restrict__ tensor_scale_in,
        T* __restrict__ y, long long n_groups, int k, int group, int groups_per_row, int team,
        bool vector_ok, bool per_tensor, const ZooFormat f) {
    constexpr int V = 16 / sizeof(T);
    const int lane = threadIdx.x & (team - 1);
    const int teams_per_block = blockDim.x / team;
    const bool asym = f.kind == ZOO_INT_ASYM;
    const long long padded = (long long)groups_per_row * group;
    const long long code_row = f.bits == 4 ? (padded + 1) / 2 : padded;
    const bool coded_scale = !per_tensor && f.kind > ZOO_FP_SCALE;
    const float tensor_scale = coded_scale && f.kind == ZOO_E4M3_SCALE ? *tensor_scale_in : 0.0f;
    for (long long t = (long long)blockIdx.x * teams_per_block + threadIdx.x / team; t < n_groups;
         t += (long long)gridDim.x * teams_per_block) {
        const long long row = t / groups_per_row;
        const int j = (int)(t - row * groups_per_row);
        const int valid = min(group, k - j * group);
        const long long at = per_tensor ? 0 : t;
        const float scale = coded_scale
            ? zoo_scale_of_code(f.kind, static_cast<const unsigned char*>(scales)[at], tensor_scale)
            : static_cast<const float*>(scales)[at];
        const float zero = asym ? (float)zeros[at] : 0.0f;
        T* dst = y + row * k + (long long)j * group;
        for (int chunk = lane; chunk * V < valid; chunk += team) {
            unsigned int code[V];
            zoo_load_codes<V>(codes + row * code_row, (long long)j * group, chunk * V, valid,
                              vector_ok, f.bits, code);
            ZooVec<T, V> out;
            #pragma unroll
            for (int e = 0; e < V; ++e)
                out.v[e] = zoo_store<T>(
                    zoo_dequantize_value(zoo_code_value<IS_INT>(code[e], f), asym, scale, zero));
            zoo_store_chunk(dst, chunk * V, valid, vector_ok, out);
        }
    }
}
"""

# Arguments shared by every group kernel: layout, then the format (zoo_format's parameters).
_LAYOUT_PARAMS = ("long long n_groups, int k, int group, int groups_per_row, int team, "
                  "int vector_ok, int per_tensor")
_FORMAT_PARAMS = ("int kind, int bits, float clip, int qmin, int qmax, int exp_bits, "
                  "int man_bits, int bias, float max_value")
_FORMAT_ARGS = "zoo_format(kind, bits, clip, qmin, qmax, exp_bits, man_bits, bias, max_value)"
_LAYOUT_ARGS = "n_groups, k, group, groups_per_row, team, vector_ok != 0, per_tensor != 0"


def kernel_name(op: str, fmt_or_int, suffix: str) -> str:
    """zoo_quant_{fake|codes}_{int|float}_<dtype>, zoo_dequant_{int|float}_<dtype> and
    zoo_quant_stats_<dtype> (`fmt_or_int` is a Format, a bool is_int, or None for stats)."""
    if op == "stats":
        return f"zoo_quant_stats_{suffix}"
    is_int = fmt_or_int.is_int if isinstance(fmt_or_int, Format) else bool(fmt_or_int)
    element = "int" if is_int else "float"
    prefix = "zoo_dequant" if op == "dequant" else f"zoo_quant_{op}"
    return f"{prefix}_{element}_{suffix}"


def _entry_points() -> str:
    out = ""
    for suffix, ctype in DTYPES.items():
        out += f"""
extern "C" __global__ void __launch_bounds__(256) zoo_quant_stats_{suffix}(
        const {ctype}* x, long long n, int vector_ok, int asym, unsigned int* stats) {{
    zoo_quant_stats<{ctype}>(x, n, vector_ok != 0, asym != 0, stats);
}}
"""
        for element, is_int in (("int", "true"), ("float", "false")):
            for op, fake in (("fake", "true"), ("codes", "false")):
                out += f"""
extern "C" __global__ void __launch_bounds__(ZOO_QUANT_MAX_THREADS)
zoo_quant_{op}_{element}_{suffix}(
        const {ctype}* x, {ctype}* y, unsigned char* codes, void* scales, signed char* zeros,
        float* tensor_scale, const unsigned int* stats, {_LAYOUT_PARAMS}, {_FORMAT_PARAMS}) {{
    zoo_quant_groups<{ctype}, {is_int}, {fake}>(x, y, codes, scales, zeros, tensor_scale, stats,
        {_LAYOUT_ARGS}, {_FORMAT_ARGS});
}}
"""
            out += f"""
extern "C" __global__ void __launch_bounds__(ZOO_QUANT_MAX_THREADS)
zoo_dequant_{element}_{suffix}(
        const unsigned char* codes, const void* scales, const signed char* zeros,
        const float* tensor_scale, {ctype}* y, {_LAYOUT_PARAMS}, {_FORMAT_PARAMS}) {{
    zoo_dequant_groups<{ctype}, {is_int}>(codes, scales, zeros, tensor_scale, y,
        {_LAYOUT_ARGS}, {_FORMAT_ARGS});
}}
"""
    return out


SOURCE = PRELUDE + KERNELS + _entry_points()
ENTRY_POINTS = tuple(
    [kernel_name("stats", None, s) for s in DTYPES]
    + [kernel_name(op, is_int, s) for s in DTYPES for is_int in (True, False)
       for op in ("fake", "codes", "dequant")])


# --- formats and layouts (pure Python: tested on any machine) ----------------------------------

def scale_kind(fmt: Format) -> int:
    """The kernels' ZOO_*_SCALE kind of `fmt`; ValueError for what they do not implement."""
    if fmt.is_int:
        if fmt.scale_format != "fp32":
            raise ValueError(f"{fmt.describe()}: integer formats take float32 scales")
        if not 2 <= fmt.bits <= 8:
            raise ValueError(f"{fmt.describe()}: integer codes of 2 to 8 bits only")
        return INT_SYM if fmt.symmetric else INT_ASYM
    if fmt.scale_format not in ("fp32", "e8m0", "e4m3"):
        raise ValueError(f"unknown scale format {fmt.scale_format!r}")
    return {"fp32": FP_SCALE, "e8m0": E8M0_SCALE, "e4m3": E4M3_SCALE}[fmt.scale_format]


def format_args(fmt: Format) -> tuple:
    """The kernels' format arguments (zoo_format's parameters, in order)."""
    if fmt.is_int:
        exp_bits = man_bits = bias = 0
        max_value = 1.0  # unused
    else:
        mf = fmt.minifloat
        exp_bits, man_bits, bias, max_value = mf.exp_bits, mf.man_bits, mf.bias, mf.max_value
    return (np.int32(scale_kind(fmt)), np.int32(fmt.bits), np.float32(fmt.clip),
            np.int32(fmt.qmin), np.int32(fmt.qmax), np.int32(exp_bits), np.int32(man_bits),
            np.int32(bias), np.float32(max_value))


@dataclass(frozen=True)
class Layout:
    """How a (rows, k) matrix is split into groups and the groups onto threads."""

    rows: int
    k: int
    group: int  # elements per scale (the whole row for "channel" and "tensor")
    groups_per_row: int
    team: int  # threads per group: a power of two; above 32, the whole block
    threads: int  # per block

    @property
    def n_groups(self) -> int:
        return self.rows * self.groups_per_row

    def vector_ok(self, element_size: int, *tensors: torch.Tensor) -> np.int32:
        """1 when rows and groups start on 16-byte boundaries (the 16-byte vector path)."""
        shape_ok = (self.k * element_size) % 16 == 0 and (self.group * element_size) % 16 == 0
        return np.int32(shape_ok and bool(runtime._aligned(*tensors)))

    def args(self, fmt: Format, vector_ok) -> tuple:
        return (np.int64(self.n_groups), np.int32(self.k), np.int32(self.group),
                np.int32(self.groups_per_row), np.int32(self.team), vector_ok,
                np.int32(fmt.granularity == "tensor"))


def _check_matrix(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if len(shape) != 2:
        raise ValueError(f"quantize a 2-d matrix, not shape {tuple(shape)}")
    if dtype not in runtime.SUFFIX:
        raise ValueError(f"the kernels take float32, float16 or bfloat16, not {dtype}")
    if 0 in shape:
        raise ValueError(f"an empty matrix {tuple(shape)}")
    if shape[1] >= 2**31:
        raise ValueError(f"rows of {shape[1]} elements are too long")


def layout(shape: tuple[int, ...], fmt: Format, dtype: torch.dtype) -> Layout:
    """The launch layout for a matrix of `shape` and `dtype` in `fmt` (ValueError if the kernels
    do not take it)."""
    _check_matrix(shape, dtype)
    scale_kind(fmt)
    rows, k = shape
    group = fmt.group_for(k)
    groups_per_row = math.ceil(k / group)
    vec = 16 // dtype.itemsize
    wanted = math.ceil(math.ceil(group / vec) / (ELEMENTS // vec))  # ELEMENTS per thread
    team = min(MAX_TEAM, 1 << (wanted - 1).bit_length())
    return Layout(rows, k, group, groups_per_row, team, team if team > 32 else THREADS)


def quantized_specs(shape: tuple[int, int], fmt: Format) -> dict:
    """Shape and dtype of each tensor `formats.quantize` returns for a (rows, k) matrix
    (None where it returns None)."""
    rows, k = shape
    group = fmt.group_for(k)
    padded = math.ceil(k / group) * group
    per_tensor = fmt.granularity == "tensor"
    scales = (1,) if per_tensor else (rows, padded // group)
    if fmt.bits == 4:
        codes = ((rows, (padded + 1) // 2), torch.uint8)
    else:
        codes = ((rows, padded), torch.int8 if fmt.is_int else torch.uint8)
    coded = not per_tensor and fmt.scale_format in ("e8m0", "e4m3")
    asym = fmt.is_int and not fmt.symmetric
    return {"codes": codes, "scale": (scales, torch.uint8 if coded else torch.float32),
            "zero_point": (scales, torch.int8) if asym else None,
            "tensor_scale": ((), torch.float32) if fmt.scale_format == "e4m3" else None}


def _check_packing(lay: Layout, fmt: Format) -> None:
    if fmt.bits == 4 and lay.group % 2 and lay.groups_per_row > 1:
        # Two groups would share a byte: two teams writing one byte.
        raise ValueError(f"4-bit codes of odd groups ({lay.group}) are not packed by the kernels")


def can_launch(x: torch.Tensor, fmt: Format | None = None) -> bool:
    """The kernels run for a non-empty 2-d CUDA matrix of a supported dtype when CuPy is
    installed (runtime.can_launch), and, given `fmt`, when they implement it for x's shape."""
    if not runtime.can_launch(x):
        return False
    try:
        _check_matrix(tuple(x.shape), x.dtype)
        if fmt is not None:
            _check_packing(layout(tuple(x.shape), fmt, x.dtype), fmt)
    except ValueError:
        return False
    return True


# --- launching -------------------------------------------------------------------------------

_NULL = np.uint64(0)


def _module():
    return runtime.compiled(SOURCE, hashlib.sha256(SOURCE.encode()).hexdigest())


def _ptr(t: torch.Tensor | None):
    return _NULL if t is None else runtime._ptr(t)


def _blocks(units: int, threads: int, device: torch.device) -> int:
    # A few waves of full occupancy; the kernels loop (grid-stride) over the rest.
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(units, sms * (2048 // threads) * 4))


def _launch(name: str, device: torch.device, blocks: int, threads: int, args) -> None:
    cupy = runtime.cupy_or_none()
    kernel = _module().get_function(name)
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
    with cupy.cuda.Device(device.index), stream:
        kernel((blocks,), (threads,), args)


def _launch_groups(op: str, fmt: Format, lay: Layout, dtype: torch.dtype, device: torch.device,
                   pointers: tuple, vector_ok) -> None:
    blocks = _blocks(math.ceil(lay.n_groups / (lay.threads // lay.team)), lay.threads, device)
    _launch(kernel_name(op, fmt, runtime.SUFFIX[dtype]), device, blocks, lay.threads,
            (*pointers, *lay.args(fmt, vector_ok), *format_args(fmt)))


def _require_cuda(t: torch.Tensor) -> None:
    if not t.is_cuda:
        raise ValueError("the kernels take CUDA tensors")
    if runtime.cupy_or_none() is None:
        raise ValueError("the kernels need CuPy")


def _tensor_stats(x: torch.Tensor, fmt: Format) -> torch.Tensor | None:
    """zoo_quant_stats of x when fmt needs them (per-tensor scales, NVFP4's tensor scale)."""
    if fmt.granularity != "tensor" and fmt.scale_format != "e4m3":
        return None
    stats = torch.zeros(3, dtype=torch.int32, device=x.device)
    blocks = _blocks(math.ceil(x.numel() / (THREADS * 16 // x.element_size())), THREADS,
                     x.device)
    _launch(kernel_name("stats", None, runtime.SUFFIX[x.dtype]), x.device, blocks, THREADS,
            (runtime._ptr(x), np.int64(x.numel()), runtime._aligned(x),
             np.int32(fmt.is_int and not fmt.symmetric), runtime._ptr(stats)))
    return stats


def fake_quantize(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """formats.fake_quantize on the GPU: dequantize(quantize(x)) in x's dtype and shape."""
    lay = layout(tuple(x.shape), fmt, x.dtype)
    _require_cuda(x)
    x = x.contiguous()
    y = torch.empty_like(x)
    stats = _tensor_stats(x, fmt)
    _launch_groups("fake", fmt, lay, x.dtype, x.device,
                   (_ptr(x), _ptr(y), _NULL, _NULL, _NULL, _NULL, _ptr(stats)),
                   lay.vector_ok(x.element_size(), x, y))
    return y


def quantize(x: torch.Tensor, fmt: Format) -> Quantized:
    """formats.quantize on the GPU: the same codes, scales, zero points and tensor scale."""
    lay = layout(tuple(x.shape), fmt, x.dtype)
    _check_packing(lay, fmt)
    _require_cuda(x)
    x = x.contiguous()
    out = {name: None if spec is None else torch.empty(spec[0], dtype=spec[1], device=x.device)
           for name, spec in quantized_specs(tuple(x.shape), fmt).items()}
    stats = _tensor_stats(x, fmt)
    _launch_groups("codes", fmt, lay, x.dtype, x.device,
                   (_ptr(x), _NULL, _ptr(out["codes"]), _ptr(out["scale"]),
                    _ptr(out["zero_point"]), _ptr(out["tensor_scale"]), _ptr(stats)),
                   lay.vector_ok(x.element_size(), x, out["codes"]))
    return Quantized(out["codes"], out["scale"], out["zero_point"], out["tensor_scale"],
                     tuple(x.shape), fmt)


def dequantize(qt: Quantized, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """formats.dequantize on the GPU, of codes from either quantize."""
    fmt = qt.fmt
    lay = layout(tuple(qt.shape), fmt, dtype)
    _require_cuda(qt.codes)
    parts = {}
    for name, spec in quantized_specs(tuple(qt.shape), fmt).items():
        t = getattr(qt, name)
        got = None if t is None else (tuple(t.shape), t.dtype)
        if got != spec or (t is not None and t.device != qt.codes.device):
            raise ValueError(f"{name} of a {fmt.describe()} matrix {qt.shape} should be "
                             f"{spec}, not {got}")
        parts[name] = None if t is None else t.contiguous()
    y = torch.empty(qt.shape, dtype=dtype, device=qt.codes.device)
    _launch_groups("dequant", fmt, lay, dtype, y.device,
                   (_ptr(parts["codes"]), _ptr(parts["scale"]), _ptr(parts["zero_point"]),
                    _ptr(parts["tensor_scale"]), _ptr(y)),
                   lay.vector_ok(y.element_size(), y, parts["codes"]))
    return y
