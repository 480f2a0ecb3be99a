"""Training diagnostics: weight change (rich vs lazy), massive activations, the effective rank of
penultimate features, and churn across seeds; each checked on a case with a known answer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo.build import build_model
from zoo.train.diagnostics import (
    activation_diagnostics,
    churn,
    initial_weights,
    relative_weight_change,
)


class Block(nn.Module):
    """A residual block as zoo finds them (attn.proj and mlp.fc2)."""

    def __init__(self, dim, spike=0.0):
        super().__init__()
        self.attn, self.mlp = nn.Module(), nn.Module()
        self.attn.proj, self.mlp.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.spike = spike

    def forward(self, x):
        out = x + self.mlp.fc2(self.attn.proj(x))
        if self.spike:
            out = out.clone()
            out[0, 0] = self.spike  # one huge entry in the residual stream
        return out


class Tiny(nn.Module):
    def __init__(self, dim=16, spike=0.0, rank=None):
        super().__init__()
        self.blocks = nn.Sequential(Block(dim), Block(dim, spike))
        self.rank = rank
        self.head = nn.Linear(dim, 3)

    def get_classifier(self):
        return self.head

    def forward(self, x):
        x = self.blocks(x)
        if self.rank is not None:  # squeeze the features onto `rank` directions
            x = torch.cat([x[:, : self.rank], torch.zeros_like(x[:, self.rank:])], dim=1)
        return self.head(x)


def test_weight_change_is_the_relative_frobenius_distance_from_step_zero():
    model = Tiny()
    w0 = initial_weights(model)
    with torch.no_grad():
        model.head.weight.mul_(1.5)  # ||1.5 W - W|| / ||W|| = 0.5
        model.blocks[0].attn.proj.weight.add_(1.0)
    change = relative_weight_change(model, w0)
    assert change["head.weight"] == pytest.approx(0.5, rel=1e-6)
    assert change["blocks.1.mlp.fc2.weight"] == 0.0
    expected = math.sqrt(16 * 16) / w0["blocks.0.attn.proj.weight"].norm().item()
    assert change["blocks.0.attn.proj.weight"] == pytest.approx(expected, rel=1e-5)
    assert "head.bias" not in change  # 1-d parameters are not weight matrices


def test_a_weight_that_starts_at_zero_has_no_relative_change():
    model = Tiny()
    with torch.no_grad():
        model.head.weight.zero_()
    w0 = initial_weights(model)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    assert math.isnan(relative_weight_change(model, w0)["head.weight"])


def test_initial_weights_are_a_copy_not_a_view():
    model = Tiny()
    w0 = initial_weights(model)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    assert relative_weight_change(model, w0)["head.weight"] > 0


def test_a_planted_outlier_shows_as_a_massive_activation_in_its_block():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    found = activation_diagnostics(Tiny(spike=1e4), x)
    assert found["massive_activation_block"] == "blocks.1"
    assert found["massive_activation"] > 1000
    assert found["massive_activation_per_block"]["blocks.0"] < 20  # Gaussian-ish: max/median small


def test_the_feature_rank_sees_features_squeezed_onto_few_directions():
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    full = activation_diagnostics(Tiny(), x)["feature_rank"]
    squeezed = activation_diagnostics(Tiny(rank=2), x)["feature_rank"]
    assert 1.0 <= squeezed <= 2.0 + 1e-6
    assert full > 8  # random features spread over most of the 16 directions


def test_diagnostics_run_on_every_architecture_and_leave_the_mode_alone():
    x = torch.randn(32, 1, 8, 8)
    for arch, act in (("vit", "gelu"), ("resnet", "relu"), ("kat", "rational")):
        model = build_model(arch, act=act, image_size=(8, 8), channels=1, num_classes=10)
        model.train()
        found = activation_diagnostics(model, x, batch_size=10)
        assert model.training
        assert found["massive_activation"] >= 1 and found["feature_rank"] >= 1


def test_churn_is_the_mean_pairwise_disagreement():
    a, b, c = [0, 1, 2, 3], [0, 1, 2, 0], [1, 1, 2, 0]
    # a-b disagree on 1/4, a-c on 2/4, b-c on 1/4
    assert churn([a, b, c]) == pytest.approx((0.25 + 0.5 + 0.25) / 3)
    assert churn([a, a]) == 0.0
    assert churn([a]) is None
    with pytest.raises(ValueError):
        churn([a, [0, 1]])
