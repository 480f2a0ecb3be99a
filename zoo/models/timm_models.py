"""Image classifiers built with `timm.create_model`, sized for small data sets.

timm's defaults assume 224x224 ImageNet; here the image size, channels and classes come from the
data set, and the patch size (ViT) or stem (ResNet) is derived from the image size so that an 8x8
digit still leaves the model a few positions to work with.
"""

from __future__ import annotations

from typing import Callable

import timm
from torch import nn


def vit_patch_size(image_side: int, max_grid: int = 8) -> int:
    """The smallest patch (at least 2 pixels) that divides the image side into at most
    `max_grid` patches: 8 -> 2 (4x4 grid), 28 -> 4 (7x7), 32 -> 4 (8x8), 224 -> 28 (8x8)."""
    for patch in range(2, image_side + 1):
        if image_side % patch == 0 and image_side // patch <= max_grid:
            return patch
    return image_side


def small_vit(
    *,
    image_size: tuple[int, int],
    channels: int,
    num_classes: int,
    act_layer: Callable[..., nn.Module],
    embed_dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    patch_size: int | None = None,
    drop_path_rate: float = 0.0,
    mlp_layer: type[nn.Module] | None = None,
) -> nn.Module:
    height, width = image_size
    patch = patch_size or vit_patch_size(min(height, width))
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=(height, width),
        patch_size=patch,
        in_chans=channels,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        drop_path_rate=drop_path_rate,
        act_layer=act_layer,
        **({"mlp_layer": mlp_layer} if mlp_layer is not None else {}),
    )


class KATMlp(nn.Module):
    """KAT's GR-KAN MLP: rational -> fc1 -> rational -> fc2. The first rational starts as the
    identity, the second as GELU, so at initialization the block computes the ViT's own MLP
    (up to the GELU fit's error)."""

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act_layer: Callable[..., nn.Module] = None,
                 bias: bool = True, drop: float = 0.0, **_timm_options):
        super().__init__()
        hidden_features = hidden_features or in_features
        self.act1 = act_layer(init="identity")
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act2 = act_layer(init="gelu")
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x):
        return self.fc2(self.drop(self.act2(self.fc1(self.act1(x)))))


def small_kat(*, act_layer: Callable[..., nn.Module], **vit_options) -> nn.Module:
    """The `vit` with every MLP replaced by GR-KAN layers (Kolmogorov-Arnold Transformer)."""
    from zoo.errors import ZooError

    if getattr(act_layer, "act_name", None) != "rational":
        raise ZooError("kat is built from group-rational layers: use --act rational (its default)")
    return small_vit(act_layer=act_layer, mlp_layer=KATMlp, **vit_options)


def small_resnet(
    *,
    image_size: tuple[int, int],
    channels: int,
    num_classes: int,
    act_layer: Callable[..., nn.Module],
    layers: tuple[int, ...] = (1, 1, 1, 1),
    widths: tuple[int, ...] = (32, 64, 128, 256),
) -> nn.Module:
    model = timm.create_model(
        "resnet18",
        pretrained=False,
        layers=tuple(layers),
        channels=tuple(widths),
        in_chans=channels,
        num_classes=num_classes,
        act_layer=act_layer,
    )
    # ImageNet's stem (7x7 stride-2 conv + max-pool) would shrink a 28x28 image to 7x7 and an
    # 8x8 one to 2x2 before the first block; small images get a 3x3 stride-1 stem instead.
    if min(image_size) < 64:
        model.conv1 = nn.Conv2d(channels, model.bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model
