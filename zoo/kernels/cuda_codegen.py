"""CUDA C for the fused forward and backward kernels of an `ElementwiseFormula`.

One source per formula, three dtypes each (float, half, bfloat16; math always in float):

    zoo_<name>_fwd_<dtype>(const T* x, T* y, const float* params, long long n)
    zoo_<name>_bwd_<dtype>(const T* x, const T* grad_y, T* grad_x, const float* params,
                           float* param_partials, long long n)

The backward also computes the gradient of every parameter: each thread accumulates in
registers, the block reduces with warp shuffles and shared memory, and one partial per block and
parameter is written to `param_partials[block * P + k]`; the host sums those (a second, tiny
reduction). There is no global atomic per element.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.codegen.ast import float32, real
from sympy.codegen.rewriting import create_expand_pow_optimization, optimize

from zoo.kernels.formula import ElementwiseFormula

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
__device__ __forceinline__ float zoo_step(float v) { return v > 0.0f ? 1.0f : 0.0f; }
// Overflow-free forms, matching torch.sigmoid and torch.nn.functional.softplus (threshold 20).
__device__ __forceinline__ float zoo_sigmoid(float v) {
    return v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
}
__device__ __forceinline__ float zoo_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

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
_USER_FUNCTIONS = {"sigmoid": "zoo_sigmoid", "softplus": "zoo_softplus"}


def c_expression(expr: sp.Expr) -> str:
    """Single-precision C for `expr`: float literals and float functions (expf, not exp)."""
    expr = optimize(sp.N(expr), [_expand_small_powers])  # x**2 -> x*x; pi -> 3.14159...F
    code = sp.ccode(expr, type_aliases={real: float32}, user_functions=_USER_FUNCTIONS)
    code = re.sub(r"\bHeaviside\(([^,()]+), 0\)", r"zoo_step(\1)", code)
    if "Heaviside" in code:  # a nested argument the pattern above did not catch
        code = sp.ccode(expr.replace(sp.Heaviside, lambda a, *_: sp.Function("zoo_step")(a)),
                        type_aliases={real: float32}, user_functions=_USER_FUNCTIONS)
    return code


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
    """Kernels for one formula (without the shared prelude)."""
    name = formula.name.replace("-", "_")
    params = formula.params
    unpack = "".join(f"    const float {p.name} = params[{i}];\n" for i, p in enumerate(params))
    value = {r: e for r, e in formula.pieces().items() if e is not None}
    derivs = formula.derivatives
    grad_x = _guarded(formula, {r: d["x"] for r, d in derivs.items()}, "dydx")
    param_lines = "".join(
        f"            {{ float g; {_guarded(formula, {r: d[p.name] for r, d in derivs.items()}, 'g')}\n"
        f"              acc[{i}] += gy * g; }}\n" for i, p in enumerate(params))
    n_acc = max(1, len(params))
    body = f"""
// ---- {formula.name}: {formula.formula_text()}
template <typename T>
__device__ __forceinline__ void {name}_fwd(const T* __restrict__ xs, T* __restrict__ ys,
                                          const float* __restrict__ params, long long n) {{
{unpack}    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {{
        const float x = zoo_load(xs[i]);
        float y;
        {_guarded(formula, value, "y")}
        ys[i] = zoo_store<T>(y);
    }}
}}

template <typename T>
__device__ __forceinline__ void {name}_bwd(const T* __restrict__ xs, const T* __restrict__ gys,
                                          T* __restrict__ gxs, const float* __restrict__ params,
                                          float* __restrict__ partials, long long n) {{
{unpack}    float acc[{n_acc}] = {{0.0f}};
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {{
        const float x = zoo_load(xs[i]);
        const float gy = zoo_load(gys[i]);
        float dydx;
        {grad_x}
        gxs[i] = zoo_store<T>(gy * dydx);
{param_lines}    }}
"""
    if params:
        body += f"""    __shared__ float shared[32];
    for (int k = 0; k < {len(params)}; ++k) {{
        const float total = zoo_block_sum(acc[k], shared);
        if (threadIdx.x == 0) partials[blockIdx.x * {len(params)} + k] = total;
    }}
"""
    else:
        body += "    (void)acc; (void)partials;\n"
    body += "}\n"
    for suffix, ctype in DTYPES.items():
        body += f"""
extern "C" __global__ void zoo_{name}_fwd_{suffix}(const {ctype}* xs, {ctype}* ys,
                                                 const float* params, long long n) {{
    {name}_fwd<{ctype}>(xs, ys, params, n);
}}
extern "C" __global__ void zoo_{name}_bwd_{suffix}(const {ctype}* xs, const {ctype}* gys,
                                                 {ctype}* gxs, const float* params,
                                                 float* partials, long long n) {{
    {name}_bwd<{ctype}>(xs, gys, gxs, params, partials, n);
}}
"""
    return body


def module_source(formulas) -> str:
    """One compilation unit with every formula's kernels."""
    return PRELUDE + "".join(cuda_source(f) for f in formulas)


def kernel_name(formula: ElementwiseFormula, direction: str, suffix: str) -> str:
    return f"zoo_{formula.name.replace('-', '_')}_{direction}_{suffix}"


