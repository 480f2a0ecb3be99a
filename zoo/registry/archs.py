"""Built-in architectures. A factory takes the data set's shape (image_size, channels,
num_classes) and an `act_layer` constructor, plus its own size options.

`default_act` is the activation the architecture was published with; `recipe` holds the training
defaults `zoo train` uses when a flag is not given, and `dataset_recipes` what changes for one
data set (a flag still wins over both).
"""

from __future__ import annotations

from zoo.models.gpt2 import small_gpt2
from zoo.models.timm_models import small_kat, small_resnet, small_vit
from zoo.models.var import small_var
from zoo.registry.core import ARCHS
from zoo.registry.options import AT_LEAST_ONE, DROP_RATE, POSITIVE

FALLBACK_ACT = "relu"  # for an arch registered without a default_act


def default_act(arch: str) -> str:
    """The activation `arch` was published with: what a run uses when none is named."""
    return ARCHS.get(arch).extra.get("default_act", FALLBACK_ACT)


# Fashion-MNIST, the whole set (55000 / 5000 / 10000), in about 4 minutes of one CPU thread
# (the `quick` protocol; `full` trains longer). Measured choices, see README "Recipes".
# ResNet-8 in He et al.'s CIFAR shape (16-32-64, one BasicBlock per stage), the stem at stride
# 2 (14x14 to the first stage: 4.5x cheaper than full resolution on a CPU); SGD with Nesterov
# momentum and a one-cycle (linear) schedule, flips and 1-pixel shifts, flip test-time
# augmentation, as in fast CIFAR-10 recipes (airbench).
RESNET_FASHION_MNIST = {
    "epochs": 6, "batch_size": 128, "optimizer": "sgd", "lr": 0.3, "weight_decay": 5e-4,
    "schedule": "linear", "warmup_epochs": 0.9, "label_smoothing": 0.1, "aug_shift": 1,
    "aug_flip": True, "tta_flip": True,
    "arch_params": {"layers": [1, 1, 1], "widths": [16, 32, 64], "stem_stride": 2},
}
# ViT: 7x7 patches (a 4x4 grid: 3x cheaper than 4x4 patches, and on this budget more epochs
# beat finer patches), AdamW, flips and flip test-time augmentation. 10 epochs: 6 fell short of
# 88% (87.61 ± 0.09%, the retired protocol `quick-v2`).
VIT_FASHION_MNIST = {
    "epochs": 10, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 0.3,
    "label_smoothing": 0.1, "aug_flip": True, "tta_flip": True,
    "arch_params": {"patch_size": 7},
}

# Bounds of the size options (`--arch-param`), checked before a model is built.
VIT_OPTION_RANGES = {"embed_dim": AT_LEAST_ONE, "depth": AT_LEAST_ONE, "num_heads": AT_LEAST_ONE,
                     "patch_size": AT_LEAST_ONE, "mlp_ratio": POSITIVE,
                     "drop_path_rate": DROP_RATE}
TRANSFORMER_OPTION_RANGES = {"n_layer": AT_LEAST_ONE, "n_head": AT_LEAST_ONE,
                             "n_embd": AT_LEAST_ONE, "mlp_ratio": POSITIVE,
                             "dropout": DROP_RATE, "cond_drop": DROP_RATE}

ARCHS.register(
    "vit",
    summary="Vision Transformer (timm), sized for small images: dim 64, depth 4, 4 heads",
    paper=("An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
           "2010.11929"),
    tags=("image", "transformer", "timm"),
    default_act="gelu",
    # Picked among a few settings on digits (3 seeds): 1257 images overfit a ViT fast, hence strong
    # weight decay and label smoothing.
    recipe={"epochs": 50, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.3, "warmup_epochs": 2,
            "label_smoothing": 0.1},
    dataset_recipes={"fashion-mnist": VIT_FASHION_MNIST},
    option_ranges=VIT_OPTION_RANGES,
)(small_vit)

ARCHS.register(
    "resnet",
    summary="ResNet (timm BasicBlock), one block per stage, widths 32-256, 3x3 stem",
    paper=("Deep Residual Learning for Image Recognition", "1512.03385"),
    tags=("image", "cnn", "timm"),
    default_act="relu",
    recipe={"epochs": 15, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 1},
    dataset_recipes={"fashion-mnist": RESNET_FASHION_MNIST},
)(small_resnet)

ARCHS.register(
    "kat",
    summary="Kolmogorov-Arnold Transformer: the vit with GR-KAN (group-rational) MLPs",
    paper=("Kolmogorov-Arnold Transformer", "2409.10594"),
    tags=("image", "transformer", "timm", "kan"),
    default_act="rational",
    recipe={"epochs": 50, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.3, "warmup_epochs": 2,
            "label_smoothing": 0.1},
    dataset_recipes={"fashion-mnist": VIT_FASHION_MNIST},  # the vit's, MLPs aside
    option_ranges=VIT_OPTION_RANGES,
)(small_kat)


def _gpt2(**options):
    return small_gpt2(**options)


ARCHS.register(
    "gpt2",
    summary="GPT-2 (nanoGPT-style: SDPA attention, tied embeddings, GPT-2's init); sizes nano, "
            "tiny, mini, small (124M) through --arch-param size=NAME",
    paper=("Language Models are Unsupervised Multitask Learners", None),
    tags=("text", "transformer"),
    default_act="gelu_tanh",
    # nano on the embedded Shakespeare with bytes: a few minutes on a 2-core CPU. An "epoch" is
    # steps_per_epoch random windows (a checkpoint and a validation pass each).
    recipe={"dataset": "shakespeare", "tokenizer": "byte", "block_size": 128,
            "steps_per_epoch": 100, "epochs": 10, "batch_size": 32, "lr": 2e-3,
            "weight_decay": 0.1, "warmup_epochs": 1, "label_smoothing": 0.0,
            "arch_params": {"size": "nano"}},
    option_ranges=TRANSFORMER_OPTION_RANGES,
)(_gpt2)


def _generator(order: str):
    """A VAR transformer over the frozen `tokenizer` the task passes in (its scales, codebook
    and width fix the sequence the transformer models)."""

    def factory(*, tokenizer, image_size: tuple[int, int], channels, num_classes, act_layer,
                **options):
        model = small_var(image_size=image_size[0], channels=channels, num_classes=num_classes,
                          act_layer=act_layer, scales=tuple(tokenizer.scales),
                          codebook_size=tokenizer.codebook_size,
                          latent_channels=tokenizer.latent_channels, order=order, **options)
        model.attach_tokenizer(tokenizer)
        return model

    return factory


# Both train on Fashion-MNIST by default (28x28: a 7x7 latent, 1+4+9+16+25+49 = 104 tokens per
# image for var, 49 for rar); on a CPU an epoch of the tiny size takes minutes.
_GENERATOR_RECIPE = {"dataset": "fashion-mnist", "epochs": 10, "batch_size": 128, "lr": 1e-3,
                     "weight_decay": 0.05, "warmup_epochs": 1, "label_smoothing": 0.0,
                     "arch_params": {"size": "tiny"}}

ARCHS.register(
    "var",
    summary="VAR: class-conditional next-scale prediction over a multi-scale residual VQ "
            "tokenizer; block-causal attention, AdaLN class conditioning, classifier-free "
            "guidance; sizes nano, tiny, small through --arch-param size=NAME",
    paper=("Visual Autoregressive Modeling: Scalable Image Generation via Next-Scale "
           "Prediction", "2404.02905"),
    tags=("image", "generator", "transformer"),
    default_act="gelu",
    recipe={**_GENERATOR_RECIPE, "tokenizer": "msvq"},
    option_ranges=TRANSFORMER_OPTION_RANGES,
)(_generator("scale"))

ARCHS.register(
    "rar",
    summary="Raster-order autoregressive baseline for var: the same transformer predicting one "
            "token at a time over a single-scale VQ tokenizer (VQGAN-style)",
    paper=("Taming Transformers for High-Resolution Image Synthesis", "2012.09841"),
    tags=("image", "generator", "transformer"),
    default_act="gelu",
    recipe={**_GENERATOR_RECIPE, "tokenizer": "vq"},
    option_ranges=TRANSFORMER_OPTION_RANGES,
)(_generator("raster"))
