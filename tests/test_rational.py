"""KAT's group-rational activation: the formula, its fitted initializations, groups, and `kat`."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from zoo.build import build_model, check_activations
from zoo.errors import ZooError
from zoo.kernels import runtime
from zoo.kernels.rational import INITS, TARGETS, fit_coefficients, group_rational, rational
from zoo.kernels.rational_cuda import SOURCE, rational_grads
from zoo.models.activation import GroupRational

GPU = torch.cuda.is_available() and runtime.cupy_or_none() is not None
GRID = torch.linspace(-3, 3, 4001, dtype=torch.float64)


@pytest.mark.parametrize("init", sorted(INITS))
def test_each_initialization_fits_its_target_on_minus_3_to_3(init):
    a, b = (torch.tensor(c, dtype=torch.float64) for c in INITS[init])
    mse = ((rational(GRID, a, b) - TARGETS[init](GRID)) ** 2).mean().item()
    assert mse < 1e-4


def test_the_formula_is_p5_over_one_plus_abs_b_abs_x_powers():
    a = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    b = torch.tensor([-0.5, 0.25, -0.125, 0.0625], dtype=torch.float64)
    for x in (-2.0, -0.3, 0.0, 1.7):
        p = sum(a[k].item() * x**k for k in range(6))
        q = 1 + sum(abs(b[i - 1].item()) * abs(x) ** i for i in range(1, 5))
        assert rational(torch.tensor(x, dtype=torch.float64), a, b).item() == pytest.approx(p / q)


def test_fitting_reproduces_a_good_initialization():
    a, b, mse = fit_coefficients(TARGETS["silu"], restarts=0)
    assert mse < 1e-4
    # and off the points it was fitted on
    between = torch.linspace(-2.95, 2.95, 97, dtype=torch.float64)
    assert ((rational(between, a, b) - TARGETS["silu"](between)) ** 2).mean().item() < 1e-4


def test_float64_gradcheck_in_input_and_coefficients():
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    a = (torch.randn(4, 6, dtype=torch.float64) * 0.3).requires_grad_()
    b = (torch.randn(4, 4, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(group_rational, (x, a, b))


def test_each_group_of_channels_uses_its_own_coefficients():
    layer = GroupRational(groups=4, init="identity")
    x = torch.randn(2, 3, 16)
    with torch.no_grad():
        layer.a[2, 1] = 3.0  # group 2 (channels 8..11) now computes 3x
    y = layer(x)
    assert torch.allclose(y[..., 8:12], 3 * x[..., 8:12])
    assert torch.allclose(y[..., :8], x[..., :8]) and torch.allclose(y[..., 12:], x[..., 12:])


def test_nchw_maps_are_grouped_along_channels():
    layer = GroupRational(groups=2, init="identity")
    with torch.no_grad():
        layer.a[1, 1] = 2.0
    x = torch.randn(2, 4, 3, 3)
    y = layer(x)
    assert torch.allclose(y[:, 2:], 2 * x[:, 2:]) and torch.allclose(y[:, :2], x[:, :2])


def test_bad_options_are_one_line_errors():
    with pytest.raises(ZooError, match="rational init must be one of"):
        GroupRational(init="tanh")
    with pytest.raises(ZooError, match="groups must be a positive whole number"):
        GroupRational(groups=0)
    with pytest.raises(ValueError, match="do not split into 8 equal groups"):
        GroupRational(groups=8)(torch.randn(2, 12))


def test_kat_is_the_vit_with_group_rational_mlps_starting_as_identity_then_gelu():
    kat = build_model("kat", image_size=(8, 8), channels=1, num_classes=10)
    assert check_activations(kat, "rational") == 2 * len(kat.blocks)
    mlp = kat.blocks[0].mlp
    assert (mlp.act1.init, mlp.act2.init) == ("identity", "gelu")
    x = torch.randn(5, 64)
    vit_mlp = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))
    assert torch.allclose(mlp(x), vit_mlp, atol=0.05)  # the GELU fit's error, through fc2


def test_kat_refuses_other_activations():
    with pytest.raises(ZooError, match="use --act rational"):
        build_model("kat", act="gelu", image_size=(8, 8), channels=1, num_classes=10)


# --- the fused kernel: its math on CPU, its source through nvcc, the kernel itself on a GPU ---

def test_the_kernels_backward_formulas_equal_autograd_of_the_reference():
    x = torch.cat([torch.randn(500, dtype=torch.float64) * 3,
                   torch.tensor([0.0, -1e4, 1e4], dtype=torch.float64)])
    grad_y = torch.randn_like(x)
    a = (torch.randn(6, dtype=torch.float64) * 0.3).requires_grad_()
    b = torch.tensor([0.3, -0.2, 0.0, -0.05], dtype=torch.float64, requires_grad=True)
    xr = x.clone().requires_grad_()
    expected = torch.autograd.grad(rational(xr, a, b), [xr, a, b], grad_y)
    for mine, theirs in zip(rational_grads(x, grad_y, a.detach(), b.detach()), expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_the_group_rational_cuda_source_compiles_with_nvcc(tmp_path):
    source = tmp_path / "zoo_rational.cu"
    source.write_text(SOURCE)
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_80", "-c", str(source), "-o",
                             str(tmp_path / "r.o")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    symbols = subprocess.run(["nm", str(tmp_path / "r.o")], capture_output=True, text=True).stdout
    for name in ("fwd", "bwd"):
        for dtype in ("f32", "f16", "bf16"):
            assert f"zoo_rational_{name}_{dtype}" in symbols


@pytest.mark.skipif(not GPU, reason="needs CUDA and CuPy")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,groups", [((2, 5, 64), 8), ((3, 16, 5, 7), 4), ((1, 0, 8), 8),
                                          ((4097, 96), 8)])
def test_kernel_matches_reference_forward_and_backward(dtype, shape, groups):
    layer = GroupRational(groups=groups, init="gelu").cuda()
    with torch.no_grad():  # distinct coefficients per group, some b negative
        layer.a.add_(torch.randn_like(layer.a) * 0.05)
        layer.b.mul_(torch.where(torch.rand_like(layer.b) < 0.5, -1.0, 1.0))
    x = (torch.randn(shape, device="cuda") * 3).to(dtype)
    x_ker = x.clone().requires_grad_()
    x_ref = x.float().requires_grad_()
    y_ker = layer(x_ker)
    y_ref = group_rational(x_ref, layer.a, layer.b, channel_dim=1 if x.ndim == 4 else -1)
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}[dtype]
    assert y_ker.dtype == dtype
    torch.testing.assert_close(y_ker.float(), y_ref, rtol=tol, atol=tol)
    grad = torch.randn_like(y_ref)
    ker = torch.autograd.grad(y_ker, [x_ker, layer.a, layer.b], grad.to(dtype))
    ref = torch.autograd.grad(y_ref, [x_ref, layer.a, layer.b], grad)
    torch.testing.assert_close(ker[0].float(), ref[0], rtol=tol, atol=tol)
    for k, r in zip(ker[1:], ref[1:]):  # sums over many elements: relative to their scale
        torch.testing.assert_close(k, r, rtol=2e-3, atol=2e-3 * r.abs().max().item() + 1e-4)
