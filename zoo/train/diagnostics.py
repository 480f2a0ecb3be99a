"""What training does to a network, recorded in a run's metrics every epoch.

- relative weight change ||W - W0|| / ||W0|| per weight matrix: near 0 is lazy (kernel-regime)
  learning, of order 1 is rich (feature) learning;
- massive activations: the largest magnitude in the residual stream against its median, per
  block ("Massive Activations in Large Language Models", Sun et al. 2024);
- the effective rank of the penultimate features (the classifier's input) on validation data.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.models.structure import residual_blocks


def effective_rank(matrix: torch.Tensor) -> float:
    """Roy & Vetterli (2007): exp of the entropy of the normalized singular values, a number
    between 1 and min(shape) (0 for the zero matrix, NaN for a non-finite one). Weights with more
    than two dimensions are read as (out, rest), as a convolution acts on a flattened patch."""
    matrix = matrix.detach().reshape(matrix.shape[0], -1).to("cpu", torch.float64)
    if not torch.isfinite(matrix).all():
        return math.nan  # the SVD would fail; a weight that is already inf or NaN has no spectrum
    s = torch.linalg.svdvals(matrix)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(-(p * p.log()).sum().item())


def weight_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter with two or more dimensions (linear, conv, embedding weights), by name."""
    return {name: p for name, p in model.named_parameters() if p.ndim >= 2}


def initial_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weight matrices, for `relative_weight_change` later."""
    return {name: p.detach().to("cpu", copy=True) for name, p in weight_matrices(model).items()}


def relative_weight_change(model: nn.Module, initial: dict[str, torch.Tensor]) -> dict[str, float]:
    """||W - W0|| / ||W0|| (Frobenius) per weight matrix; NaN where W0 is zero (ZerO's or
    zero_residual's zero layers have no scale to be relative to)."""
    change = {}
    for name, weight in weight_matrices(model).items():
        if name not in initial:
            continue
        w0 = initial[name].to(weight.device, torch.float32)
        norm0 = w0.norm().item()
        delta = (weight.detach().float() - w0).norm().item()
        change[name] = delta / norm0 if norm0 > 0 else math.nan
    return change


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    names = {id(module): name for name, module in model.named_modules()}
    return [(names[id(block)], block) for block in residual_blocks(model)]


def _classifier(model: nn.Module) -> nn.Module:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        raise ValueError(f"{type(model).__name__} has no classifier to read features from")
    return head


@torch.no_grad()
def activation_diagnostics(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
                           autocast: bool = False) -> dict[str, object]:
    """Massive activations (on the first batch) and the effective rank of the penultimate
    features (on all of `x`), in eval mode."""
    was_training = model.training
    model.eval()
    blocks, features, peaks = _blocks(model), [], {}

    def record_peak(name):
        def hook(module, inputs, output):
            if name in peaks:  # only the first batch: the ratio is a per-batch statistic
                return
            magnitude = output.detach().float().abs().flatten()
            median = magnitude.median().item()
            peaks[name] = magnitude.max().item() / median if median > 0 else math.inf
        return hook

    hooks = [block.register_forward_hook(record_peak(name)) for name, block in blocks]
    def record_features(module, inputs):
        h = inputs[0].detach().float()
        # one row per example, or per token for a language model's (B, T, C) input
        features.append(h.reshape(-1, h.shape[-1]).cpu())

    hooks.append(_classifier(model).register_forward_pre_hook(record_features))
    try:
        for start in range(0, len(x), batch_size):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
                model(x[start:start + batch_size])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    feats = torch.cat(features)
    worst = max(peaks, key=peaks.get)
    return {
        "massive_activation": peaks[worst],  # max |h| / median |h| of the worst block
        "massive_activation_block": worst,
        "massive_activation_per_block": peaks,
        # centred, so a constant offset shared by all examples does not count as a direction
        "feature_rank": effective_rank(feats - feats.mean(dim=0)),
        "feature_dim": feats.shape[1],
    }


def churn(predictions: list[list[int]]) -> float | None:
    """Mean pairwise disagreement: the fraction of examples two runs classify differently,
    averaged over all pairs ("Smooth activations and reproducibility in deep networks",
    Shamir et al. 2020). None with fewer than two runs."""
    if len(predictions) < 2:
        return None
    if len({len(p) for p in predictions}) != 1:
        raise ValueError("churn needs predictions for the same examples")
    stacked = torch.tensor(predictions)
    pairs = [(i, j) for i in range(len(stacked)) for j in range(i + 1, len(stacked))]
    return sum((stacked[i] != stacked[j]).float().mean().item() for i, j in pairs) / len(pairs)
