"""Architectures x activations x inits: built by timm, composed late, and leak-checked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.build import build_model, check_activations
from zoo.errors import ZooError
from zoo.models.activation import Activation
from zoo.models.timm_models import vit_patch_size
from zoo.registry import ACTS, ARCHS, INITS

DIGITS = dict(image_size=(8, 8), channels=1, num_classes=10)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
@pytest.mark.parametrize("act", ACTS.names())
def test_every_arch_takes_every_activation_and_uses_only_it(arch, act):
    model = build_model(arch, act=act, **DIGITS)
    assert check_activations(model, act) > 0
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_architectures_are_sized_from_the_data_set():
    model = build_model("vit", act="gelu", image_size=(28, 28), channels=3, num_classes=7)
    assert model.patch_embed.patch_size == (4, 4)
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 7)
    resnet = build_model("resnet", act="relu", image_size=(28, 28), channels=3, num_classes=7)
    assert resnet(torch.randn(2, 3, 28, 28)).shape == (2, 7)


def test_patch_size_leaves_a_small_grid():
    assert [vit_patch_size(s) for s in (8, 28, 32, 224)] == [2, 4, 4, 28]


def test_the_default_activation_is_the_architectures_own():
    assert check_activations(build_model("vit", **DIGITS), "gelu") > 0
    assert check_activations(build_model("resnet", **DIGITS), "relu") > 0


def test_resnet_calls_act_layer_with_inplace_and_gets_a_zoo_activation():
    model = build_model("resnet", act="golu", **DIGITS)
    assert isinstance(model.act1, Activation) and model.act1.inplace is True


def test_a_leaked_default_activation_is_caught():
    model = build_model("vit", act="golu", **DIGITS)
    model.blocks[1].mlp.act = nn.GELU()  # what a sub-module ignoring act_layer looks like
    with pytest.raises(ZooError, match=r"activation leak: blocks\.1\.mlp\.act uses GELU, not the requested golu"):
        check_activations(model, "golu")


def test_a_different_zoo_activation_is_also_a_leak():
    model = build_model("resnet", act="golu", **DIGITS)
    model.act1 = ACTS.get("relu").create()
    with pytest.raises(ZooError, match="act1 uses relu"):
        check_activations(model, "golu")


def test_a_model_without_the_requested_activation_is_refused():
    with pytest.raises(ZooError, match="no golu activation"):
        check_activations(nn.Sequential(nn.Linear(2, 2)), "golu")


def test_the_same_seed_builds_the_same_weights():
    a = build_model("vit", act="golu", seed=3, **DIGITS).state_dict()
    b = build_model("vit", act="golu", seed=3, **DIGITS).state_dict()
    c = build_model("vit", act="golu", seed=4, **DIGITS).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_unknown_arch_option_is_a_one_line_error():
    with pytest.raises(ZooError, match="cannot build vit"):
        build_model("vit", arch_params={"wings": 2}, **DIGITS)


# --- initializations ----------------------------------------------------------------------------

def _linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_orthogonal_init_gives_orthonormal_weight_rows_or_columns():
    model = build_model("vit", act="gelu", init="orthogonal", **DIGITS)
    for layer in _linears(model):
        w = layer.weight.detach().double()
        small = min(w.shape)
        gram = w @ w.T if w.shape[0] == small else w.T @ w
        assert torch.allclose(gram, torch.eye(small, dtype=w.dtype), atol=1e-5)
        assert torch.count_nonzero(layer.bias) == 0


def test_kaiming_init_has_variance_two_over_fan_in():
    model = build_model("resnet", act="relu", init="kaiming", **DIGITS)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 20000]
    for conv in convs:
        fan_in = conv.weight[0].numel()
        assert conv.weight.var().item() == pytest.approx(2 / fan_in, rel=0.1)


def test_xavier_init_stays_within_the_glorot_bound():
    model = build_model("vit", act="gelu", init="xavier", **DIGITS)
    for layer in _linears(model):
        fan_out, fan_in = layer.weight.shape
        assert layer.weight.abs().max().item() <= (6 / (fan_in + fan_out)) ** 0.5 + 1e-7


def test_inits_leave_normalization_layers_alone():
    model = build_model("vit", act="gelu", init="orthogonal", **DIGITS)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(torch.all(n.weight == 1) and torch.all(n.bias == 0) for n in norms)


def test_bad_init_options_are_refused():
    with pytest.raises(ZooError, match="kaiming takes mode"):
        INITS.get("kaiming").create(mode="sideways")


def test_every_arch_states_its_paper_and_training_recipe():
    for entry in ARCHS:
        assert entry.paper and entry.extra["recipe"]["epochs"] > 0
