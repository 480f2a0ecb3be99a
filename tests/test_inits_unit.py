"""The unit_scaling init (Unit Scaling / u-muP through Graphcore's unit-scaling library): every
weight layer becomes a unit-scaled one with N(0, 1) weights, activations and gradients start at
unit scale, and the optimizer gets u-muP's per-tensor learning-rate multipliers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import unit_scaling as uu
from torch import nn

from zoo.build import build_model
from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.registry import INITS
from zoo.registry.inits_unit import UnitScaledConv2d, unit_lr_scale

DIGITS = dict(image_size=(8, 8), channels=1, num_classes=10)
ARCHS = {"vit": "gelu", "resnet": "relu", "kat": "rational"}


def build(arch="vit", init="unit_scaling", seed=0):
    return build_model(arch, act=ARCHS[arch], init=init, seed=seed,
                       calibration_batch=lambda: torch.randn(64, 1, 8, 8), **DIGITS)


def weight_layers(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def unit_var(x: torch.Tensor) -> bool:
    return 0.5 <= x.var().item() <= 2


@pytest.mark.parametrize("arch", ARCHS)
def test_every_linear_and_conv_becomes_unit_scaled_with_standard_normal_weights(arch):
    plain, unit = weight_layers(build(arch, "default")), weight_layers(build(arch))
    assert len(unit) == len(plain) > 0
    for before, after in zip(plain, unit):
        assert type(after) in (uu.Linear, uu.LinearReadout, UnitScaledConv2d)
        assert after.weight.shape == before.weight.shape
        assert (after.bias is None) == (before.bias is None)
        if after.bias is not None:
            assert torch.all(after.bias == 0)
        w, n = after.weight.detach(), after.weight.numel()
        assert abs(w.mean().item()) < 5 / math.sqrt(n)  # 5 standard errors
        assert abs(w.std().item() - 1) < 5 / math.sqrt(2 * n)
    assert [type(m) for m in unit].count(uu.LinearReadout) == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_the_classifier_is_the_u_mup_readout_scaled_by_one_over_fan_in(arch):
    model = build(arch)
    head = model.get_classifier()
    assert type(head) is uu.LinearReadout and head.out_features == 10
    x = torch.randn(4, head.in_features)
    torch.testing.assert_close(head(x), F.linear(x, head.weight, head.bias) / head.in_features)


@pytest.mark.parametrize("arch", ARCHS)
def test_what_the_rule_does_not_touch_keeps_the_architecture_default(arch):
    default, unit = build(arch, "default", seed=5), build(arch, seed=5)
    replaced = {name for name, m in unit.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    kept = {k: v for k, v in unit.state_dict().items() if k.rsplit(".", 1)[0] not in replaced}
    assert kept  # norms (and pos_embed, cls_token for the ViTs)
    for key, value in kept.items():
        assert torch.equal(value, default.state_dict()[key]), key


def test_unit_scaled_layers_keep_unit_variance_forward_and_backward():
    """512 N(0, 1) inputs through a stack: each layer's output is unit-variance, and so is the
    input gradient for a N(0, 1) output gradient (square layers, where the library's default
    constraint is unit in both directions)."""
    torch.manual_seed(0)
    stack = [uu.Linear(256, 256), uu.Linear(256, 256), uu.Linear(256, 256)]
    x = torch.randn(512, 256, requires_grad=True)
    h = x
    for layer in stack:
        h_in = h
        h = layer(h_in)
        assert unit_var(h_in) and unit_var(h)
    (grad,) = torch.autograd.grad(h, x, torch.randn_like(h))
    assert unit_var(grad)

    conv = UnitScaledConv2d(32, 32, 3, padding=1)
    x = torch.randn(512, 32, 8, 8, requires_grad=True)
    y = conv(x)
    (grad,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert unit_var(y) and unit_var(grad)


@pytest.mark.parametrize("layer, shape", [
    (lambda: uu.Linear(128, 512, constraint=None), (512, 128)),
    (lambda: UnitScaledConv2d(16, 64, 3, stride=2, padding=1, constraint=None), (512, 16, 8, 8)),
])
def test_unconstrained_layers_have_unit_input_gradients_even_when_they_widen(layer, shape):
    torch.manual_seed(0)
    layer = layer()
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    (grad,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert unit_var(y) and unit_var(grad)


def test_the_default_constraint_scales_input_gradients_like_the_output():
    """The library's default for hidden layers ("to_output_scale"): backward uses the forward
    scale 1/sqrt(fan_in), so a widening layer's input gradient has variance fan_out / fan_in."""
    torch.manual_seed(0)
    layer = uu.Linear(64, 256)
    x = torch.randn(512, 64, requires_grad=True)
    y = layer(x)
    (grad,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert grad.var().item() == pytest.approx(256 / 64, rel=0.1)


CONVS = [
    dict(in_channels=6, out_channels=8, kernel_size=(3, 2), stride=(2, 1), padding=1, groups=2),
    dict(in_channels=3, out_channels=5, kernel_size=3, padding="same", dilation=2,
         padding_mode="reflect"),
    dict(in_channels=4, out_channels=4, kernel_size=2, stride=2, padding="valid"),
]


@pytest.mark.parametrize("options", CONVS)
@pytest.mark.parametrize("constraint", ["to_output_scale", None])
def test_unit_scaled_conv2d_is_conv2d_over_sqrt_fan_in_with_documented_gradient_scales(
        options, constraint):
    torch.manual_seed(0)
    conv = UnitScaledConv2d(**options, bias=True, constraint=constraint).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(3, options["in_channels"], 9, 7, dtype=torch.float64, requires_grad=True)
    plain = nn.Conv2d(**options).double()
    plain.load_state_dict(conv.state_dict())

    fan_in = options["in_channels"] // options.get("groups", 1) * conv.weight[0, 0].numel()
    y, reference = conv(x), plain(x)
    torch.testing.assert_close(y, reference / math.sqrt(fan_in), rtol=1e-12, atol=0)

    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    plain_grads = torch.autograd.grad(reference, (x, plain.weight, plain.bias), g)
    kernel, stride = conv.weight[0, 0].numel(), math.prod(conv.stride)
    input_scale = (1 / math.sqrt(fan_in) if constraint else
                   math.sqrt(stride * conv.groups / (conv.out_channels * kernel)))
    positions = y[:, 0].numel()  # batch x output pixels
    for got, want, scale in zip(grads, plain_grads, (input_scale, *[positions ** -0.5] * 2)):
        torch.testing.assert_close(got, want * scale, rtol=1e-12, atol=1e-15)


def test_param_lr_scale_is_u_mup_adam_rule():
    apply = INITS.get("unit_scaling").create()
    assert apply.param_lr_scale is unit_lr_scale
    vit = build("vit")
    mlp = vit.blocks[0].mlp
    assert unit_lr_scale(mlp.fc1.weight) == pytest.approx(64 ** -0.5)
    assert unit_lr_scale(mlp.fc2.weight) == pytest.approx(mlp.fc2.in_features ** -0.5)
    assert unit_lr_scale(vit.patch_embed.proj.weight) == pytest.approx((1 * 2 * 2) ** -0.5)
    for readout_or_untouched in (vit.head.weight, vit.head.bias, mlp.fc1.bias, vit.pos_embed,
                                 vit.cls_token, vit.norm.weight):
        assert unit_lr_scale(readout_or_untouched) == 1.0
    conv = build("resnet").layer2[0].conv1  # 4-d weight: fan_in = 32 channels x 3 x 3
    assert unit_lr_scale(conv.weight) == pytest.approx((32 * 9) ** -0.5)
    assert unit_lr_scale(copy.deepcopy(vit).blocks[0].mlp.fc1.weight) == pytest.approx(1 / 8)


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_under_the_seed_and_finite_on_digits(arch):
    first, again, other = build(arch, seed=3), build(arch, seed=3), build(arch, seed=4)
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.get_classifier().weight, other.get_classifier().weight)
    out = first(torch.randn(64, 1, 8, 8))
    assert out.shape == (64, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in first.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ["vit", "kat"])
def test_every_hidden_layer_of_a_vit_keeps_the_scale_of_its_input(arch):
    """In the model: each hidden layer's output second moment matches its input's (the readout
    divides it by fan_in)."""
    model, moments = build(arch), {}
    hooks = [m.register_forward_hook(
        lambda mod, i, o: moments.__setitem__(mod, (i[0].square().mean(), o.square().mean())))
        for m in weight_layers(model)]
    with torch.no_grad():
        model(torch.randn(512, 1, 8, 8))
    for h in hooks:
        h.remove()
    for layer, (m_in, m_out) in moments.items():
        ratio = (m_out / m_in).item()
        if type(layer) is uu.LinearReadout:
            ratio *= layer.in_features
        assert 0.5 <= ratio <= 2, layer


def test_layers_it_cannot_scale_are_a_one_line_error():
    apply = INITS.get("unit_scaling").create()
    for model in (nn.Sequential(nn.Conv1d(2, 2, 3), nn.Linear(2, 2)),
                  nn.Sequential(nn.MultiheadAttention(4, 2), nn.Linear(4, 2))):
        with pytest.raises(ZooError, match="unit_scaling handles nn.Linear and nn.Conv2d"):
            apply(model, BuildContext(act="relu", seed=0))
