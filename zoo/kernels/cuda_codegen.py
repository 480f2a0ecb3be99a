"""CUDA C for the fused forward and backward kernels of an `ElementwiseFormula`.

One source per formula, three dtypes each (float, half, bfloat16; math always in float):

    zoo_<name>_fwd_<dtype>(const T* x, T* y, const float* params, long long n, int vectorized)
    zoo_<name>_bwd_<dtype>(const T* x, const T* grad_y, T* grad_x, const float* params,
                           float* param_partials, long long n, int vectorized)

`vectorized` (every pointer 16-byte aligned) turns on 16-byte loads and stores.

The backward also computes the gradient of every learnable parameter: each thread accumulates in
registers, the block reduces with warp shuffles and shared memory, and one partial per block and
learnable parameter is written to `param_partials[block * L + k]`; the host sums those (a second, tiny
reduction). There is no global atomic per element.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.ast import float32, real
from sympy.codegen.rewriting import create_expand_pow_optimization, optimize

from zoo.kernels.formula import ElementwiseFormula
from zoo.kernels.kinks import left_above

THREADS = 256
DTYPES = {"f32": "float", "f16": "__half", "bf16": "__nv_bfloat16"}

PRELUDE = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>

__device__ __forceinline__ float zoo_load(float v) { return v; }
__device__ __forceinline__ float zoo_load(__half v) { return __half2float(v); }
__device__ __forceinline__ float zoo_load(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T zoo_store(float v);
template <> __device__ __forceinline__ float zoo_store<float>(float v) { return v; }
template <> __device__ __forceinline__ __half zoo_store<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 zoo_store<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
// 16 bytes of T: one vectorized load or store.
template <typename T, int V> struct alignas(16) ZooVec { T v[V]; };

__host__ __device__ __forceinline__ float zoo_step(float v) { return v > 0.0f ? 1.0f : 0.0f; }
__host__ __device__ __forceinline__ float zoo_step_closed(float v) { return v >= 0.0f ? 1.0f : 0.0f; }
// zoo.kernels.kinks.left_above: 1 where a > b just left of x (a tie goes to the smaller slope)
__host__ __device__ __forceinline__ float zoo_left_above(float a, float da, float b, float db,
                                                         float tie) {
    if (a != b) return a > b ? 1.0f : 0.0f;
    if (da != db) return da < db ? 1.0f : 0.0f;
    return tie;
}
// Overflow-free forms, matching torch.sigmoid and torch.nn.functional.softplus (threshold 20).
__host__ __device__ __forceinline__ float zoo_sigmoid(float v) {
    return v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
}
__host__ __device__ __forceinline__ float zoo_softplus(float v) {
    return v > 20.0f ? v : log1pf(expf(v));
}
// asin of v clipped to [-1, 1] (zoo.kernels.formula.asin_clip).
__host__ __device__ __forceinline__ float zoo_asin_clip(float v) {
    return asinf(fminf(fmaxf(v, -1.0f), 1.0f));
}
// polygamma(n, v) for n = 0 only, the digamma function (the derivative of gamma is
// gamma * digamma): reflection below 1/2, recurrence up to 6, then the asymptotic series.
__host__ __device__ __forceinline__ float zoo_polygamma(float n, float v) {
    (void)n;
    float result = 0.0f;
    if (v < 0.5f) {
        result -= 3.14159265358979f / tanf(3.14159265358979f * v);
        v = 1.0f - v;
    }
    for (int i = 0; i < 8 && v < 6.0f; ++i) { result -= 1.0f / v; v += 1.0f; }
    const float r = 1.0f / (v * v);
    return result + logf(v) - 0.5f / v
           - r * (1.0f / 12.0f - r * (1.0f / 120.0f - r * (1.0f / 252.0f)));
}

// Sum of `value` over the block; the result is valid in thread 0.
__device__ __forceinline__ float zoo_block_sum(float value, float* shared) {
    for (int offset = 16; offset > 0; offset >>= 1)
        value += __shfl_down_sync(0xffffffffu, value, offset);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = value;
    __syncthreads();
    value = (threadIdx.x < (blockDim.x >> 5)) ? shared[lane] : 0.0f;
    if (warp == 0)
        for (int offset = 16; offset > 0; offset >>= 1)
            value += __shfl_down_sync(0xffffffffu, value, offset);
    __syncthreads();  // `shared` is reused by the next call
    return value;
}
"""

_expand_small_powers = create_expand_pow_optimization(6)
_USER_FUNCTIONS = {"sigmoid": "zoo_sigmoid", "softplus": "zoo_softplus",
                   "asin_clip": "zoo_asin_clip", "polygamma": "zoo_polygamma",
                   **{name: name for name in ("zoo_step", "zoo_step_closed", "zoo_left_above")}}


def _as_c_steps(expr: sp.Expr) -> sp.Expr:
    """Steps as the prelude's functions: Heaviside(v, 1) -> zoo_step_closed (1 at 0), any other
    Heaviside -> zoo_step (0 at 0), left_above -> zoo_left_above (zoo.kernels.kinks)."""
    def step(e):
        name = "zoo_step_closed" if e.args[1] == 1 else "zoo_step"
        return sp.Function(name)(e.args[0])

    expr = expr.replace(lambda e: isinstance(e, sp.Heaviside), step)
    return expr.replace(left_above, sp.Function("zoo_left_above"))


def c_expression(expr: sp.Expr) -> str:
    """Single-precision C for `expr`: float literals and float functions (expf, not exp)."""
    expr = optimize(sp.N(_as_c_steps(expr)), [_expand_small_powers])  # x**2 -> x*x; pi -> 3.14F
    return sp.ccode(expr, type_aliases={real: float32}, user_functions=_USER_FUNCTIONS)


def _guarded(formula: ElementwiseFormula, exprs: dict[str, sp.Expr], target: str) -> str:
    """`target = ...;` choosing the region; the core is evaluated only inside the domain."""
    lines = []
    if formula.lo is not None:
        lines.append(f"if (x < {float(formula.lo)!r}f) {{ {target} = {c_expression(exprs['below'])}; }}")
    if formula.hi is not None:
        prefix = "else " if lines else ""
        lines.append(f"{prefix}if (x > {float(formula.hi)!r}f) {{ {target} = {c_expression(exprs['above'])}; }}")
    core = f"{target} = {c_expression(exprs['core'])};"
    lines.append(f"else {{ {core} }}" if lines else core)
    return "\n            ".join(lines)


def cuda_source(formula: ElementwiseFormula) -> str:
    """Kernels for one formula (without the shared prelude).

    The math of one element lives in two `__host__ __device__` functions, `<name>_value` and
    `<name>_grad`, so that a CPU test can run exactly the generated C. The kernels are grid-stride
    loops over 16-byte vectors (4 floats or 8 halves) when every pointer is 16-byte aligned, then
    over the remaining elements one by one.
    """
    name = formula.name.replace("-", "_")
    params = formula.params
    unpack = "".join(f"    const float {p.name} = params[{i}];\n" for i, p in enumerate(params))
    value = {r: e for r, e in formula.pieces().items() if e is not None}
    derivs = formula.derivatives
    grad_x = _guarded(formula, {r: d["x"] for r, d in derivs.items()}, "dydx")
    # Only learnable parameters get a gradient (a fixed one's may not even be finite: d|x|^d/dd
    # at x = 0).
    learnable = [p for p in params if p.learnable]
    param_lines = "".join(
        f"    {{ float g; {_guarded(formula, {r: d[p.name] for r, d in derivs.items()}, 'g')}\n"
        f"      acc[{i}] += gy * g; }}\n" for i, p in enumerate(learnable))
    n_params, n_learnable = len(params), len(learnable)
    n_acc = max(1, n_params)
    load_params = (f"    float p[{n_acc}];\n"
                   f"    for (int k = 0; k < {n_params}; ++k) p[k] = params[k];\n")
    body = f"""
// ---- {formula.name}: {formula.formula_text()}
__host__ __device__ __forceinline__ float {name}_value(const float x, const float* params) {{
{unpack}    float y;
    {_guarded(formula, value, "y")}
    return y;
}}

// gy * dy/dx; adds gy * dy/dparam to acc[k] for the k-th learnable parameter
__host__ __device__ __forceinline__ float {name}_grad(const float x, const float gy,
                                                      const float* params, float* acc) {{
{unpack}    float dydx;
    {grad_x}
{param_lines}    (void)acc;
    return gy * dydx;
}}

template <typename T>
__device__ __forceinline__ void {name}_fwd(const T* __restrict__ xs, T* __restrict__ ys,
                                          const float* __restrict__ params, long long n,
                                          int vectorized) {{
{load_params}    constexpr int V = 16 / sizeof(T);
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long n_vec = vectorized ? n / V : 0;
    for (long long i = start; i < n_vec; i += stride) {{
        ZooVec<T, V> xv = reinterpret_cast<const ZooVec<T, V>*>(xs)[i], yv;
        #pragma unroll
        for (int k = 0; k < V; ++k) yv.v[k] = zoo_store<T>({name}_value(zoo_load(xv.v[k]), p));
        reinterpret_cast<ZooVec<T, V>*>(ys)[i] = yv;
    }}
    for (long long i = n_vec * V + start; i < n; i += stride)
        ys[i] = zoo_store<T>({name}_value(zoo_load(xs[i]), p));
}}

template <typename T>
__device__ __forceinline__ void {name}_bwd(const T* __restrict__ xs, const T* __restrict__ gys,
                                          T* __restrict__ gxs, const float* __restrict__ params,
                                          float* __restrict__ partials, long long n,
                                          int vectorized) {{
{load_params}    float acc[{n_acc}];
    for (int k = 0; k < {n_acc}; ++k) acc[k] = 0.0f;
    constexpr int V = 16 / sizeof(T);
    const long long start = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long n_vec = vectorized ? n / V : 0;
    for (long long i = start; i < n_vec; i += stride) {{
        ZooVec<T, V> xv = reinterpret_cast<const ZooVec<T, V>*>(xs)[i];
        ZooVec<T, V> gv = reinterpret_cast<const ZooVec<T, V>*>(gys)[i], out;
        #pragma unroll
        for (int k = 0; k < V; ++k)
            out.v[k] = zoo_store<T>({name}_grad(zoo_load(xv.v[k]), zoo_load(gv.v[k]), p, acc));
        reinterpret_cast<ZooVec<T, V>*>(gxs)[i] = out;
    }}
    for (long long i = n_vec * V + start; i < n; i += stride)
        gxs[i] = zoo_store<T>({name}_grad(zoo_load(xs[i]), zoo_load(gys[i]), p, acc));
"""
    if learnable:
        body += f"""    __shared__ float shared[32];
    for (int k = 0; k < {n_learnable}; ++k) {{
        const float total = zoo_block_sum(acc[k], shared);
        if (threadIdx.x == 0) partials[blockIdx.x * {n_learnable} + k] = total;
    }}
"""
    else:
        body += "    (void)partials;\n"
    body += "}\n"
    for suffix, ctype in DTYPES.items():
        body += f"""
extern "C" __global__ void zoo_{name}_fwd_{suffix}(const {ctype}* xs, {ctype}* ys,
                                                 const float* params, long long n,
                                                 int vectorized) {{
    {name}_fwd<{ctype}>(xs, ys, params, n, vectorized);
}}
extern "C" __global__ void zoo_{name}_bwd_{suffix}(const {ctype}* xs, const {ctype}* gys,
                                                 {ctype}* gxs, const float* params,
                                                 float* partials, long long n, int vectorized) {{
    {name}_bwd<{ctype}>(xs, gys, gxs, params, partials, n, vectorized);
}}
"""
    return body


def module_source(formulas) -> str:
    """One compilation unit with every formula's kernels."""
    return PRELUDE + "".join(cuda_source(f) for f in formulas)


def kernel_name(formula: ElementwiseFormula, direction: str, suffix: str) -> str:
    return f"zoo_{formula.name.replace('-', '_')}_{direction}_{suffix}"
