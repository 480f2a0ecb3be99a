"""Where a model's residual branches are, found from its structure: what inits (LIR, zero-init of
the branch ends) and training diagnostics both need, for timm's ResNets and ViTs and zoo's GPT-2."""

from __future__ import annotations

from torch import nn

from zoo.errors import ZooError


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks in forward order: transformer blocks (with `attn` and `mlp`) and
    ResNet blocks (with `conv1` and a last BatchNorm)."""
    blocks = [m for m in model.modules() if _branch_end(m) is not None]
    if not blocks:
        raise ZooError(f"no residual blocks found in {type(model).__name__}")
    return blocks


def _branch_end(block: nn.Module) -> list[nn.Module] | None:
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    if attn is not None and mlp is not None and hasattr(attn, "proj") and hasattr(mlp, "fc2"):
        return [attn.proj, mlp.fc2]
    for name in ("bn3", "bn2"):  # bottleneck blocks end in bn3, basic blocks in bn2
        if hasattr(block, "conv1") and isinstance(getattr(block, name, None), nn.BatchNorm2d):
            return [getattr(block, name)]
    return None


def residual_branch_ends(model: nn.Module) -> list[nn.Module]:
    """The last layer of every residual branch: attn.proj and mlp.fc2 of transformer blocks, the
    last norm of ResNet blocks (what timm's zero_init_last zeroes)."""
    return [end for block in residual_blocks(model) for end in _branch_end(block)]
