"""Fused CUDA kernels for the group-rational activation (zoo.kernels.rational).

The tensor is viewed as (outer, channels, inner): inner = 1 for channels-last activations
(B, N, C) and H*W for NCHW maps. The channels of group g form one contiguous chunk of length
chunk = channels / groups * inner in every outer row, so the launch grid is 2-d:
blockIdx.y is the group and the blocks along x stride over that group's elements. Every thread
therefore uses one group's 10 coefficients, kept in registers, and in the backward accumulates
their 10 gradients in registers too. Each block reduces them (warp shuffles + shared memory) to
one partial per coefficient, written to partials[group, block, 10]; the host sums the blocks.
There is no atomic at all: this is what makes KAT trainable at ViT speed (FlashKAT measured the
atomic-per-element original 100x slower).

`rational_grads` is the same backward math in PyTorch, so a CPU machine checks the formulas the
kernel uses against autograd.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from zoo.kernels import runtime
from zoo.kernels.cuda_codegen import DTYPES, PRELUDE, THREADS
from zoo.kernels.rational import group_rational

N_COEFFS = 10  # a0..a5, b1..b4

KERNELS = r"""
// ---- group-rational: (a0 + ... + a5 x^5) / (1 + |b1| |x| + ... + |b4| |x|^4), Horner
struct ZooRational {
    float a[6], b[4];  // b holds |b|
    __device__ __forceinline__ ZooRational(const float* coef_a, const float* coef_b, int g) {
        #pragma unroll
        for (int k = 0; k < 6; ++k) a[k] = coef_a[g * 6 + k];
        #pragma unroll
        for (int k = 0; k < 4; ++k) b[k] = fabsf(coef_b[g * 4 + k]);
    }
    __device__ __forceinline__ float p(float x) const {
        return ((((a[5] * x + a[4]) * x + a[3]) * x + a[2]) * x + a[1]) * x + a[0];
    }
    __device__ __forceinline__ float dp(float x) const {
        return (((5.0f * a[5] * x + 4.0f * a[4]) * x + 3.0f * a[3]) * x + 2.0f * a[2]) * x + a[1];
    }
    // Q - 1 and dQ/d|x|
    __device__ __forceinline__ float q1(float ax) const {
        return (((b[3] * ax + b[2]) * ax + b[1]) * ax + b[0]) * ax;
    }
    __device__ __forceinline__ float dq(float ax) const {
        return ((4.0f * b[3] * ax + 3.0f * b[2]) * ax + 2.0f * b[1]) * ax + b[0];
    }
};

// Element t of group g's chunks -> its index in the (outer, channels, inner) tensor.
__device__ __forceinline__ long long zoo_group_index(long long t, long long chunk, long long row,
                                                     int g) {
    const long long o = t / chunk;
    return o * row + g * chunk + (t - o * chunk);
}

template <typename T>
__device__ __forceinline__ void zoo_rational_fwd(const T* __restrict__ xs, T* __restrict__ ys,
                                                 const float* __restrict__ coef_a,
                                                 const float* __restrict__ coef_b,
                                                 long long outer, long long chunk, long long row) {
    const int g = blockIdx.y;
    const ZooRational r(coef_a, coef_b, g);
    const long long m = outer * chunk;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < m;
         t += (long long)blockDim.x * gridDim.x) {
        const long long i = zoo_group_index(t, chunk, row, g);
        const float x = zoo_load(xs[i]);
        ys[i] = zoo_store<T>(r.p(x) / (1.0f + r.q1(fabsf(x))));
    }
}

template <typename T>
__device__ __forceinline__ void zoo_rational_bwd(const T* __restrict__ xs,
                                                 const T* __restrict__ gys, T* __restrict__ gxs,
                                                 const float* __restrict__ coef_a,
                                                 const float* __restrict__ coef_b,
                                                 float* __restrict__ partials,
                                                 long long outer, long long chunk, long long row) {
    const int g = blockIdx.y;
    const ZooRational r(coef_a, coef_b, g);
    float acc[10];
    #pragma unroll
    for (int k = 0; k < 10; ++k) acc[k] = 0.0f;
    const long long m = outer * chunk;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < m;
         t += (long long)blockDim.x * gridDim.x) {
        const long long i = zoo_group_index(t, chunk, row, g);
        const float x = zoo_load(xs[i]);
        const float gy = zoo_load(gys[i]);
        const float ax = fabsf(x);
        const float sx = x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
        const float inv_q = 1.0f / (1.0f + r.q1(ax));
        const float value = r.p(x) * inv_q;
        // dR/dx = (P' - R Q') / Q with Q' = sign(x) dQ/d|x|
        gxs[i] = zoo_store<T>(gy * (r.dp(x) - value * sx * r.dq(ax)) * inv_q);
        // dR/da_k = x^k / Q;  dR/d|b_k| = -R |x|^k / Q  (sign(b_k) is applied on the host)
        float w = gy * inv_q, power = 1.0f;
        #pragma unroll
        for (int k = 0; k < 6; ++k) { acc[k] += w * power; power *= x; }
        w = -gy * value * inv_q;
        power = ax;
        #pragma unroll
        for (int k = 0; k < 4; ++k) { acc[6 + k] += w * power; power *= ax; }
    }
    __shared__ float shared[32];
    float* out = partials + ((long long)g * gridDim.x + blockIdx.x) * 10;
    #pragma unroll
    for (int k = 0; k < 10; ++k) {
        const float total = zoo_block_sum(acc[k], shared);
        if (threadIdx.x == 0) out[k] = total;
    }
}
"""


def _entry_points() -> str:
    out = ""
    for suffix, ctype in DTYPES.items():
        out += f"""
extern "C" __global__ void zoo_rational_fwd_{suffix}(const {ctype}* xs, {ctype}* ys,
        const float* coef_a, const float* coef_b, long long outer, long long chunk,
        long long row) {{
    zoo_rational_fwd<{ctype}>(xs, ys, coef_a, coef_b, outer, chunk, row);
}}
extern "C" __global__ void zoo_rational_bwd_{suffix}(const {ctype}* xs, const {ctype}* gys,
        {ctype}* gxs, const float* coef_a, const float* coef_b, float* partials,
        long long outer, long long chunk, long long row) {{
    zoo_rational_bwd<{ctype}>(xs, gys, gxs, coef_a, coef_b, partials, outer, chunk, row);
}}
"""
    return out


SOURCE = PRELUDE + KERNELS + _entry_points()


def _module():
    return runtime.compiled(SOURCE, hashlib.sha256(SOURCE.encode()).hexdigest())


def _layout(x: torch.Tensor, groups: int, channel_dim: int) -> tuple[int, int, int]:
    """(outer, chunk, row) of the (outer, channels, inner) view of contiguous x."""
    channel_dim %= x.ndim
    channels = x.shape[channel_dim]
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} equal groups")
    inner = int(np.prod(x.shape[channel_dim + 1:], dtype=np.int64))
    outer = int(np.prod(x.shape[:channel_dim], dtype=np.int64))
    return outer, channels // groups * inner, channels * inner


def _blocks(elements_per_group: int, groups: int, device: torch.device) -> int:
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = (elements_per_group + THREADS - 1) // THREADS
    return max(1, min(wanted, max(1, sms * 8 // groups)))


def _launch(name: str, x: torch.Tensor, blocks: int, groups: int, args) -> None:
    cupy = runtime.cupy_or_none()
    kernel = _module().get_function(f"zoo_rational_{name}_{runtime.SUFFIX[x.dtype]}")
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(x.device).cuda_stream)
    with cupy.cuda.Device(x.device.index), stream:
        kernel((blocks, groups), (THREADS,), args)


def _ptr(t: torch.Tensor):
    return np.uint64(t.data_ptr())


def forward(x, a, b, channel_dim):
    groups = a.shape[0]
    outer, chunk, row = _layout(x, groups, channel_dim)
    y = torch.empty_like(x)
    if x.numel():
        _launch("fwd", x, _blocks(outer * chunk, groups, x.device), groups,
                (_ptr(x), _ptr(y), _ptr(a), _ptr(b), np.int64(outer), np.int64(chunk),
                 np.int64(row)))
    return y


def backward(x, grad_y, a, b, channel_dim):
    groups = a.shape[0]
    outer, chunk, row = _layout(x, groups, channel_dim)
    grad_x = torch.empty_like(x)
    blocks = _blocks(outer * chunk, groups, x.device)
    partials = torch.zeros((groups, blocks, N_COEFFS), device=x.device, dtype=torch.float32)
    if x.numel():
        _launch("bwd", x, blocks, groups,
                (_ptr(x), _ptr(grad_y), _ptr(grad_x), _ptr(a), _ptr(b), _ptr(partials),
                 np.int64(outer), np.int64(chunk), np.int64(row)))
    sums = partials.sum(dim=1)
    return grad_x, sums[:, :6], sums[:, 6:] * torch.sign(b)


class _FusedGroupRational(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, b, channel_dim):
        x = x.contiguous()
        a32, b32 = a.detach().float().contiguous(), b.detach().float().contiguous()
        ctx.save_for_backward(x, a32, b32)
        ctx.channel_dim, ctx.dtypes = channel_dim, (a.dtype, b.dtype)
        return forward(x, a32, b32, channel_dim)

    @staticmethod
    def backward(ctx, grad_y):
        x, a32, b32 = ctx.saved_tensors
        grad_x, grad_a, grad_b = backward(x, grad_y.contiguous().to(x.dtype), a32, b32,
                                          ctx.channel_dim)
        return grad_x, grad_a.to(ctx.dtypes[0]), grad_b.to(ctx.dtypes[1]), None


def apply_group_rational(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                         channel_dim: int = -1) -> torch.Tensor:
    """The fused kernel for CUDA tensors (with CuPy), the PyTorch reference elsewhere; half
    precision is computed in float32 either way."""
    if runtime.can_launch(x):
        return _FusedGroupRational.apply(x, a, b, channel_dim)
    compute = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return group_rational(compute, a, b, channel_dim=channel_dim).to(x.dtype)


def rational_grads(x, grad_y, a, b):
    """(grad_x, grad_a, grad_b) of one group, with exactly the kernel's formulas (for tests)."""
    ax, bb = x.abs(), b.abs()
    p = sum(a[k] * x**k for k in range(6))
    dp = sum(k * a[k] * x ** (k - 1) for k in range(1, 6))
    q = 1 + sum(bb[k - 1] * ax**k for k in range(1, 5))
    dq = sum(k * bb[k - 1] * ax ** (k - 1) for k in range(1, 5))
    value = p / q
    grad_x = grad_y * (dp - value * torch.sign(x) * dq) / q
    grad_a = torch.stack([(grad_y * x**k / q).sum() for k in range(6)])
    grad_b = torch.stack([(-grad_y * value * ax**k / q).sum() for k in range(1, 5)])
    return grad_x, grad_a, grad_b * torch.sign(b)
