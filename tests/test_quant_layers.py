"""Quantized layers and methods: rotations leave the float product unchanged, the straight-through
estimator passes gradients, each method does what its paper claims on data built to show it,
placement (skip, override) and the size report are exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.build import build_model
from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.quant import formats
from zoo.quant.apply import quantize_model, size_report, target_layers
from zoo.quant.formats import Format, int_group
from zoo.quant.layers import LayerScheme, Part, QuantConv2d, QuantLinear
from zoo.quant.methods import LLMFP4, ResQ, WeightActivation, WeightOnly, per_channel_int
from zoo.quant.rotations import principal_basis, random_orthogonal, randomized_hadamard
from zoo.registry import QUANTS
from zoo.registry.quants import SWEEP


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [1, 12, 64, 96])
def test_rotations_are_orthogonal(n):
    for rotation in (randomized_hadamard(n, generator()), random_orthogonal(n, generator())):
        torch.testing.assert_close(rotation @ rotation.T, torch.eye(n), atol=1e-5, rtol=0)
    basis = principal_basis(torch.randn(500, n, generator=generator()))
    torch.testing.assert_close(basis.T @ basis, torch.eye(n), atol=1e-5, rtol=0)


def test_principal_basis_orders_directions_by_variance():
    x = torch.randn(2000, 8, generator=generator()) * torch.tensor([1, 1, 9, 1, 1, 3, 1, 1.0])
    basis = principal_basis(x)
    assert basis[:, 0].abs().argmax() == 2 and basis[:, 1].abs().argmax() == 5


@pytest.mark.parametrize("layer", [nn.Linear(32, 16), nn.Conv2d(16, 8, 3, padding=1)],
                         ids=["linear", "conv"])
def test_rotation_and_smoothing_leave_the_float_product_unchanged(layer):
    channels = layer.weight.shape[1]
    scheme = LayerScheme([Part(channels, None)],
                         rotation=random_orthogonal(channels, generator()),
                         smooth=torch.rand(channels, generator=generator()) + 0.5)
    quantized = QuantLinear(layer, scheme) if isinstance(layer, nn.Linear) else \
        QuantConv2d(layer, scheme)
    x = torch.randn(4, 32) if isinstance(layer, nn.Linear) else torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(quantized(x), layer(x), atol=1e-5, rtol=1e-5)


def test_quantized_layers_keep_the_float_parameters_and_their_names():
    layer = nn.Linear(64, 8)
    quantized = QuantLinear(layer, WeightOnly(int_group(4, 32)).scheme(layer))
    assert quantized.weight is layer.weight and quantized.bias is layer.bias
    assert set(quantized.state_dict()) == {"weight", "bias"}


def test_straight_through_gradients_reach_the_float_weights():
    """d loss / d W is the gradient of the product at the quantized weight, passed straight
    through the rounding (and back through the rotation, R^T)."""
    torch.manual_seed(0)
    layer = nn.Linear(16, 4, bias=False)
    method = WeightActivation(per_channel_int(4), per_channel_int(8), hadamard=True)
    quantized = QuantLinear(layer, method.scheme(layer)).train()
    x = torch.randn(10, 16)
    grad_out = torch.randn(10, 4)
    quantized(x).backward(grad_out)
    rotation = quantized.scheme.rotation
    x_q = formats.fake_quantize(x @ rotation, per_channel_int(8))
    torch.testing.assert_close(layer.weight.grad, (grad_out.T @ x_q) @ rotation.T,
                               atol=1e-5, rtol=1e-5)


def test_weight_cache_follows_weight_updates():
    layer = nn.Linear(32, 8)
    quantized = QuantLinear(layer, WeightOnly(int_group(4, 32)).scheme(layer)).eval()
    x = torch.randn(3, 32)
    with torch.no_grad():
        before = quantized(x)
        layer.weight.mul_(2)
        after = quantized(x)
    torch.testing.assert_close(after - layer.bias, 2 * (before - layer.bias), atol=1e-5, rtol=0)


# --- the methods on data built to show their point ------------------------------------------

def outlier_inputs(n=1024, channels=64, seed=0):
    """Activations whose few channels are 50x larger than the rest (the LLM outlier pattern)."""
    x = torch.randn(n, channels, generator=generator(seed))
    x[:, :3] *= 50
    return x


def product_error(layer, x, method):
    quantized = QuantLinear(layer, method.scheme(layer, x))
    with torch.no_grad():
        return (quantized(x) - layer(x)).pow(2).mean().item() / layer(x).pow(2).mean().item()


def test_hadamard_rotation_rescues_4_bit_activations_with_outlier_channels():
    """QuaRot's point: rotated, the outliers spread over all channels and the per-token scale
    shrinks. (8-bit weights isolate the activations' share; with 4-bit weights the rotation
    also spreads weight error onto the outlier channels, where it is amplified.)"""
    layer = nn.Linear(64, 32)
    x = outlier_inputs()
    plain = WeightActivation(per_channel_int(8), per_channel_int(4))
    rotated = WeightActivation(per_channel_int(8), per_channel_int(4), hadamard=True)
    assert product_error(layer, x, rotated) < 0.5 * product_error(layer, x, plain)


def test_resq_keeps_the_high_variance_subspace_in_8_bits():
    layer = nn.Linear(64, 32)
    x = outlier_inputs()
    scheme = ResQ().scheme(layer, x)
    assert [part.width for part in scheme.parts] == [8, 56]
    assert [part.act.bits for part in scheme.parts] == [8, 4]
    rotated = WeightActivation(per_channel_int(4), per_channel_int(4), hadamard=True)
    assert product_error(layer, x, ResQ()) < 0.1 * product_error(layer, x, rotated)


def test_llm_fp4_search_beats_the_unsearched_fp4_format():
    layer = nn.Linear(64, 32)
    x = outlier_inputs()
    fixed = LLMFP4(elements=("e2m1",), clips=(1.0,))
    assert product_error(layer, x, LLMFP4()) <= product_error(layer, x, fixed)


def test_weight_only_formats_order_by_precision():
    layer = nn.Linear(256, 64)
    x = torch.randn(64, 256)
    errors = {name: product_error(layer, x, WeightOnly(fmt)) for name, fmt in
              {"int8": Format("int", 8), "fp8": Format("e4m3", 8), "int4-g32": int_group(4, 32),
               "int4-channel": Format("int", 4)}.items()}
    assert errors["int8"] < errors["fp8"] < errors["int4-g32"] < errors["int4-channel"]


# --- placement and size -----------------------------------------------------------------------

def small_vit(quant="none", **quant_params):
    x = torch.randn(16, 1, 8, 8, generator=generator())
    return build_model("vit", image_size=(8, 8), channels=1, num_classes=10, act="gelu",
                       quant=quant, quant_params=quant_params, calibration_batch=lambda: x), x


def test_every_linear_and_convolution_is_quantized_by_default():
    model, _ = small_vit("int4-g32")
    layers = target_layers(model)
    assert layers and all(isinstance(m, (QuantLinear, QuantConv2d)) for _, m in layers)


def test_skip_first_and_last_and_override_a_layer():
    model, _ = small_vit("int4-g32", skip="first,last", override="blocks.0.mlp.fc1:int8-wo")
    layers = dict(target_layers(model))
    names = list(layers)
    assert type(layers[names[0]]) is nn.Conv2d and type(layers[names[-1]]) is nn.Linear
    assert layers["blocks.0.mlp.fc1"].scheme.parts[0].weight.bits == 8
    assert layers["blocks.1.mlp.fc1"].scheme.parts[0].weight.bits == 4
    assert set(model.zoo_quant_summary.kept_float) == {names[0], names[-1]}


@pytest.mark.parametrize("params, message", [
    ({"skip": "nonexistent.*"}, "no layer matches"),
    ({"override": "head"}, "PATTERN:QUANT"),
    ({"override": "head:int9"}, "unknown quant"),
])
def test_bad_placement_fails_with_one_line(params, message):
    with pytest.raises(ZooError, match=message):
        small_vit("int4-g32", **params)


def test_size_report_counts_exactly_what_quantize_stores():
    model, _ = small_vit("nvfp4", skip="last")
    report = size_report(model)
    stored_bits, weights, other = 0, 0, 0
    for _, layer in target_layers(model):
        if isinstance(layer, QuantLinear | QuantConv2d):
            fmt = layer.scheme.parts[0].weight
            stored_bits += formats.quantize(layer.weight.detach().flatten(1), fmt).storage_bytes() * 8
            weights += layer.weight.numel()
    quantized_ids = {id(m.weight) for _, m in target_layers(model)
                     if isinstance(m, QuantLinear | QuantConv2d)}
    other = sum(t.numel() * 4 for t in model.state_dict(keep_vars=True).values()
                if id(t) not in quantized_ids)
    assert report["bits_per_weight"] == pytest.approx(stored_bits / weights)
    assert report["model_bytes"] == stored_bits // 8 + other
    assert report["float_bytes"] == sum(p.numel() * 4 for p in model.parameters())


def test_a_float_checkpoint_loads_into_the_quantized_model():
    float_model, x = small_vit()
    quantized, _ = small_vit("w8a8")
    quantized.load_state_dict(float_model.state_dict())
    with torch.no_grad():
        error = (quantized.eval()(x) - float_model.eval()(x)).abs().max().item()
    assert 0 < error < 0.1


@pytest.mark.parametrize("quant", SWEEP)
@pytest.mark.parametrize("arch", ["vit", "resnet", "gpt2"])
def test_every_format_builds_and_runs_on_every_architecture(arch, quant):
    if arch == "gpt2":
        x = torch.randint(0, 50, (2, 16), generator=generator())
        shape = {"vocab_size": 50, "block_size": 16}
    else:
        x = torch.randn(4, 1, 8, 8, generator=generator())
        shape = {"image_size": (8, 8), "channels": 1, "num_classes": 10}
    model = build_model(arch, quant=quant, calibration_batch=lambda: x, **shape).eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    report = size_report(model)
    assert report["model_bytes"] < report["float_bytes"] or quant == "resq"
    expected_bits = 8 if quant in ("int8-wo", "w8a8") or quant.startswith("fp8") else 4
    assert expected_bits <= report["bits_per_weight"] < expected_bits + 1.5


def test_unknown_quant_parameter_is_a_clear_error():
    with pytest.raises(ZooError, match="bad --quant-param for resq"):
        QUANTS.get("resq").create(high_bitz=8)


def test_calibrated_methods_need_calibration_data():
    model = build_model("vit", image_size=(8, 8), channels=1, num_classes=10)
    with pytest.raises(ZooError, match="calibration"):
        QUANTS.get("resq").create()(model, BuildContext(act="gelu", seed=0))


def test_a_model_is_quantized_once():
    model, _ = small_vit("int8-wo")
    with pytest.raises(ZooError, match="already quantized"):
        quantize_model(model, WeightOnly(Format("int", 8)))


def test_qat_gradients_flow_through_a_quantized_model():
    model, x = small_vit("w4a4-hadamard")
    loss = F.cross_entropy(model.train()(x), torch.arange(16) % 10)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads if g.ndim == 2)
