"""Image classifiers built with `timm.create_model`, sized for small data sets.

timm's defaults assume 224x224 ImageNet; here the image size, channels and classes come from the
data set, and the patch size (ViT) or stem (ResNet) is derived from the image size so that an 8x8
digit still leaves the model a few positions to work with.
"""

from __future__ import annotations

from typing import Callable

import timm
from timm.models.resnet import BasicBlock
from torch import nn

from zoo.errors import ZooError


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
    global_pool: str = "token",
    mlp_layer: type[nn.Module] | None = None,
) -> nn.Module:
    """timm's ViT. `global_pool="avg"` classifies the mean of the patch tokens, with no class
    token (as in timm's `vit_*_gap` models)."""
    if global_pool not in ("token", "avg"):
        raise ZooError(f"vit's global_pool must be token or avg, got {global_pool}")
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
        global_pool=global_pool,
        class_token=global_pool == "token",
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
    if getattr(act_layer, "act_name", None) != "rational":
        raise ZooError("kat is built from group-rational layers: use --act rational (its default)")
    return small_vit(act_layer=act_layer, mlp_layer=KATMlp, **vit_options)


class StagedResNet(nn.Module):
    """A ResNet of timm's BasicBlocks with any number of stages, for small images: a 3x3
    stem at full resolution, stages that halve the resolution and take the next width (a 1x1
    convolution + BatchNorm on the shortcut where the shape changes), global average pooling
    and a linear head. With three stages of widths 16-32-64 it is He et al.'s CIFAR ResNet
    family (ResNet-8 with one block per stage, ResNet-20 with three). timm's `ResNet` class
    hard-codes four stages; the blocks, their init and the head interface are timm's.
    """

    def __init__(self, *, channels: int, num_classes: int, act_layer: Callable[..., nn.Module],
                 layers: tuple[int, ...], widths: tuple[int, ...], stem_stride: int = 1,
                 strides: tuple[int, ...] | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, widths[0], kernel_size=3, stride=stem_stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = act_layer(inplace=True)
        stages, inplanes = [], widths[0]
        strides = strides or (1,) + (2,) * (len(widths) - 1)
        for blocks, planes, stride in zip(layers, widths, strides):
            stage = []
            for block in range(blocks):
                downsample = None
                if block == 0 and (stride != 1 or inplanes != planes):
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                        nn.BatchNorm2d(planes))
                stage.append(BasicBlock(inplanes, planes, stride=stride if block == 0 else 1,
                                        downsample=downsample, act_layer=act_layer))
                inplanes = planes
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.num_features = inplanes
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for module in self.modules():  # timm's ResNet.init_weights
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if hasattr(module, "zero_init_last"):
                module.zero_init_last()

    def forward_features(self, x):
        return self.stages(self.act1(self.bn1(self.conv1(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def small_resnet(
    *,
    image_size: tuple[int, int],
    channels: int,
    num_classes: int,
    act_layer: Callable[..., nn.Module],
    layers: tuple[int, ...] = (1, 1, 1, 1),
    widths: tuple[int, ...] = (32, 64, 128, 256),
    stem_stride: int = 1,
    strides: tuple[int, ...] | None = None,
) -> nn.Module:
    """timm's ResNet with BasicBlocks. Four stages (the default, widths 32-256) are timm's own
    `ResNet` with a 64-wide stem; any other number of stages is a `StagedResNet` (the CIFAR
    family: `layers=(1, 1, 1), widths=(16, 32, 64)` is ResNet-8). `strides` (default 1, then
    2 for every later stage) and `stem_stride` set where the resolution halves: `strides=(2, 2,
    2)` keeps only the stem at full resolution, for about a quarter of the cost."""
    layers, widths = tuple(int(n) for n in layers), tuple(int(w) for w in widths)
    if len(layers) != len(widths) or not layers or min(layers) < 1 or min(widths) < 1:
        raise ZooError(f"resnet needs as many stages in layers {layers} as in widths {widths}, "
                       "each at least 1")
    strides = None if strides is None else tuple(int(s) for s in strides)
    if stem_stride not in (1, 2) or (strides and (len(strides) != len(layers)
                                                 or not set(strides) <= {1, 2})):
        raise ZooError(f"resnet's stem_stride and strides (one per stage) must be 1 or 2, got "
                       f"{stem_stride} and {strides}")
    if len(layers) != 4:
        return StagedResNet(channels=channels, num_classes=num_classes, act_layer=act_layer,
                            layers=layers, widths=widths, stem_stride=stem_stride,
                            strides=strides)
    if stem_stride != 1 or strides is not None:
        raise ZooError("stem_stride and strides are options of resnets with other than four "
                       "stages (four are timm's own ResNet)")
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
