"""The formula engine: one declaration -> reference, derivatives and CUDA kernels that agree.

On a CPU machine the CUDA source is still compiled with nvcc, and the derivatives the kernels
compute (printed from the same sympy expressions) are checked against autograd of the reference;
on a GPU with CuPy the kernels themselves are compared with the reference.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import ZooError
from zoo.kernels import runtime
from zoo.kernels.cuda_codegen import module_source
from zoo.kernels.formula import ElementwiseFormula
from zoo.registry import ACTS
from zoo.registry.acts import FORMULAS
from zoo.tools.kernel_bench import NATIVE  # the built-in activations that have a PyTorch op

NAMES = sorted(FORMULAS)
GPU = torch.cuda.is_available() and runtime.cupy_or_none() is not None
# PyTorch's op for each such activation at zoo's defaults (swish: its default beta = 1 is silu)
TORCH_OPS = {**NATIVE, "swish": F.silu}


def sample(n=257, dtype=torch.float64, spread=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=g, dtype=dtype) * 2 - 1) * spread


def kinks(formula: ElementwiseFormula) -> torch.Tensor:
    """0 and +-each parameter's default, in float64: where the catalogue's Max and Min switch
    branch at their defaults (relu's 0, smelu's +-beta, soft_threshold's +-tau, tropical's six
    lines that all meet at 0, ...), and some smooth points."""
    points = {0.0, *(v for p in formula.params for v in (p.default, -p.default))}
    return torch.tensor(sorted(points), dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_sympy_derivatives_equal_autograd_of_the_reference(name):
    formula = FORMULAS[name]
    act = ACTS.get(name).create().double()
    x = torch.cat([sample(), torch.tensor([-1e4, -50.0, 50.0, 1e4], dtype=torch.float64)])
    x.requires_grad_(True)
    params = [getattr(act, p.name) for p in formula.params]
    for p in params:
        p.requires_grad_(True)
    y = formula.reference(x, *params)
    grads = torch.autograd.grad(y.sum(), [x, *params])
    printed = formula.derivative(x.detach(), *[p.detach() for p in params])
    torch.testing.assert_close(printed["x"], grads[0], rtol=1e-9, atol=1e-12)
    for p, autograd_grad in zip(formula.params, grads[1:]):
        torch.testing.assert_close(printed[p.name].sum(), autograd_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_at_a_kink_the_derivative_is_the_one_from_the_left(name):
    """PyTorch's convention (relu'(0) = 0, elu'(0) = alpha: x = 0 takes the x <= 0 branch),
    for every formula and in both derivatives: autograd of the reference and the printed one
    the kernels compute. Against a one-sided difference from the left, second order:
    (3 f(x) - 4 f(x - h) + f(x - 2h)) / 2h, off by about h^2 f'(3) / 3. The learnable
    parameters' derivatives follow the same branch (tropical's at its six-line tie)."""
    formula = FORMULAS[name]
    params = [torch.tensor(p.default, dtype=torch.float64, requires_grad=p.learnable)
              for p in formula.params]
    x, h = kinks(formula), 1e-6
    with torch.no_grad():
        f = [formula.reference(x - k * h, *params) for k in range(3)]
    from_the_left = (3 * f[0] - 4 * f[1] + f[2]) / (2 * h)
    xg = x.clone().requires_grad_()
    learnable = [v for v, p in zip(params, formula.params) if p.learnable]
    autograd = torch.autograd.grad(formula.reference(xg, *params).sum(), [xg, *learnable])
    torch.testing.assert_close(autograd[0], from_the_left, rtol=1e-6, atol=1e-6)
    printed = formula.derivative(x, *(v.detach() for v in params))
    torch.testing.assert_close(printed["x"], autograd[0], rtol=1e-12, atol=1e-12)
    for p, grad in zip(formula.learnable, autograd[1:]):
        torch.testing.assert_close(printed[p.name].sum(), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in NAMES if FORMULAS[n].learnable])
def test_float64_gradcheck_of_learnable_parameters(name):
    formula = FORMULAS[name]
    x = sample(64).requires_grad_()
    params = [torch.tensor(p.default + 0.1, dtype=torch.float64, requires_grad=True)
              for p in formula.params]
    assert torch.autograd.gradcheck(lambda x, *ps: formula.reference(x, *ps), (x, *params))


def test_learnable_parameters_train_and_fixed_ones_do_not():
    swish = ACTS.get("swish").create()
    elu = ACTS.get("elu").create(alpha=0.5)
    assert [n for n, _ in swish.named_parameters()] == ["beta"]
    assert list(elu.parameters()) == [] and elu.alpha.item() == 0.5
    swish(torch.randn(10)).sum().backward()
    assert swish.beta.grad is not None and swish.beta.grad.item() != 0


def test_an_unknown_parameter_is_a_one_line_error():
    with pytest.raises(ZooError, match="swish has no parameter gamma .its parameters: beta."):
        ACTS.get("swish").create(gamma=2.0)


def test_a_declaration_with_an_unknown_symbol_is_refused():
    with pytest.raises(ValueError, match="unknown symbols"):
        ElementwiseFormula("bad", "x * y")
    with pytest.raises(ValueError, match="needs its asymptotic form"):
        ElementwiseFormula("bad", "exp(x)", domain=(None, 10))


def test_guards_give_exact_zeros_far_outside_the_domain():
    golu = FORMULAS["golu"]
    x = torch.tensor([-1e4, -21.0], requires_grad=True)
    golu.reference(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros(2))
    assert torch.equal(golu.derivative(x.detach())["x"], torch.zeros(2))


def test_every_formula_is_a_registered_activation_with_its_formula_text():
    for name, formula in FORMULAS.items():
        entry = ACTS.get(name)
        assert entry.formula == formula.formula_text()
        assert entry.defaults == {p.name: p.default for p in formula.params}


# Points where the generated C is run on the host: a spread around 0, the kinks of the
# catalogue at its defaults (0 from both sides, +-0.5, +-1), the guards' bounds (+-10, -20) and
# softplus's threshold (20), and the guarded far range.
HOST_POINTS = [float(v) for v in sample(97, dtype=torch.float32)] + [
    -1e4, -50.0, -20.5, -20.0, -10.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 10.0, 20.0, 20.5, 50.0,
    1e4]


def host_program() -> str:
    """The module source plus a main() that prints, for every formula and point, the generated
    value, d/dx and d/dparam of each learnable parameter, evaluated by the same __host__ __device__ functions the kernels
    call."""
    lines = ["#include <cstdio>", module_source(FORMULAS.values()), "int main() {",
             f"    const float xs[] = {{{', '.join(f'{v!r}f' for v in HOST_POINTS)}}};"]
    for name in NAMES:
        formula = FORMULAS[name]
        values = ", ".join(f"{float(p.default)!r}f" for p in formula.params) or "0.0f"
        n = max(1, len(formula.params))
        lines += [
            f"    {{ const float p[] = {{{values}}};",
            f"      for (float x : xs) {{ float acc[{n}] = {{0.0f}};",
            f"        const float y = {name}_value(x, p), g = {name}_grad(x, 1.0f, p, acc);",
            f'        printf("{name} %.9g %.9g", y, g);',
            f'        for (int k = 0; k < {len(formula.learnable)}; ++k) printf(" %.9g", acc[k]);',
            '        printf("\\n"); } }',
        ]
    return "\n".join(lines + ["    return 0;", "}"])


@pytest.fixture(scope="module")
def nvcc_build(tmp_path_factory):
    """The generated CUDA of every formula, compiled by nvcc into a host executable."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    folder = tmp_path_factory.mktemp("nvcc")
    source, binary = folder / "zoo_activations.cu", folder / "zoo_activations"
    source.write_text(host_program())
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_80", str(source), "-o", str(binary)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return binary


def test_generated_cuda_source_compiles_with_nvcc(nvcc_build):
    symbols = subprocess.run(["nm", str(nvcc_build)], capture_output=True, text=True).stdout
    for name in NAMES:
        for direction in ("fwd", "bwd"):
            for dtype in ("f32", "f16", "bf16"):
                assert f"zoo_{name}_{direction}_{dtype}" in symbols


def test_generated_c_computes_the_reference_on_the_host(nvcc_build):
    """The same C the kernels run, executed on the CPU in float32, against the float64
    reference: a printing or guard bug shows up without a GPU."""
    output = subprocess.run([str(nvcc_build)], capture_output=True, text=True, check=True).stdout
    rows: dict[str, list[list[float]]] = {}
    for line in output.splitlines():
        name, *numbers = line.split()
        rows.setdefault(name, []).append([float(v) for v in numbers])
    x = torch.tensor(HOST_POINTS, dtype=torch.float64)
    for name in NAMES:
        formula = FORMULAS[name]
        got = torch.tensor(rows[name], dtype=torch.float64)
        params = [torch.tensor(float(p.default), dtype=torch.float64) for p in formula.params]
        derivative = formula.derivative(x, *params)
        expected = [formula.reference(x, *params), derivative["x"],
                    *(derivative[p.name] for p in formula.learnable)]
        for column, want in enumerate(expected):
            torch.testing.assert_close(got[:, column], want, rtol=2e-4, atol=2e-4,
                                       msg=lambda m: f"{name}, column {column}: {m}")


def test_generated_c_equals_pytorchs_ops_at_zero_and_at_boundaries(nvcc_build):
    """The kernels' math, in float32 on the host, against PyTorch's own op for every built-in
    activation that has one: values and slopes, with PyTorch's slope at the kink (elu'(0) =
    alpha, ...). Float32 functions (expf, erff) and PyTorch's differ by a few units in the last
    place, relative to terms of order 1."""
    output = subprocess.run([str(nvcc_build)], capture_output=True, text=True, check=True).stdout
    rows: dict[str, list[list[float]]] = {}
    for line in output.splitlines():
        name, *numbers = line.split()
        rows.setdefault(name, []).append([float(v) for v in numbers[:2]])
    for name, op in TORCH_OPS.items():
        x = torch.tensor(HOST_POINTS, dtype=torch.float32, requires_grad=True)
        y = op(x)
        (slope,) = torch.autograd.grad(y.sum(), x)
        got = torch.tensor(rows[name], dtype=torch.float32)
        ulps = 8 * torch.finfo(torch.float32).eps
        torch.testing.assert_close(got[:, 0], y.detach(), rtol=ulps, atol=ulps,
                                   msg=lambda m: f"{name} value: {m}")
        torch.testing.assert_close(got[:, 1], slope, rtol=ulps, atol=ulps,
                                   msg=lambda m: f"{name} slope: {m}")


def test_without_cuda_the_reference_runs():
    assert not runtime.can_launch(torch.randn(3))


# --- on a GPU: the kernels against the reference ---------------------------------------------

TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2),
             torch.bfloat16: (2e-2, 2e-2)}


@pytest.mark.skipif(not GPU, reason="needs CUDA and CuPy")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", [(0,), (1,), (1000,), (33, 65), (4, 8, 257)])
def test_kernel_matches_reference_forward_and_backward(name, dtype, shape):
    formula = FORMULAS[name]
    act = ACTS.get(name).create().cuda()
    x = (torch.randn(shape, device="cuda") * 3).to(dtype)
    if len(shape) > 1:
        x = x.transpose(0, -1)  # non-contiguous input
    x_ref = x.detach().float().requires_grad_()
    x_ker = x.detach().requires_grad_()
    params = [getattr(act, p.name) for p in formula.params]
    y_ref = formula.reference(x_ref, *[p.float() for p in params])
    y_ker = act(x_ker)
    assert runtime.can_launch(x_ker) and y_ker.dtype == dtype
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(y_ker.float(), y_ref, rtol=rtol, atol=atol)
    grad = torch.randn_like(y_ref)
    ref_grads = torch.autograd.grad(y_ref, [x_ref, *params], grad, allow_unused=True)
    ker_grads = torch.autograd.grad(y_ker, [x_ker, *params], grad.to(dtype), allow_unused=True)
    torch.testing.assert_close(ker_grads[0].float(), ref_grads[0], rtol=rtol, atol=atol)
    for ref_g, ker_g, p in zip(ref_grads[1:], ker_grads[1:], formula.params):
        if p.learnable:
            torch.testing.assert_close(ker_g.float(), ref_g.float(), rtol=1e-3, atol=1e-3)
