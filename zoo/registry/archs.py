"""Built-in architectures. A factory takes the data set's shape (image_size, channels,
num_classes) and an `act_layer` constructor, plus its own size options.

`default_act` is the activation the architecture was published with; `recipe` holds the training
defaults `zoo train` uses when a flag is not given.
"""

from __future__ import annotations

from zoo.models.timm_models import small_kat, small_resnet, small_vit
from zoo.registry import ARCHS

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
)(small_vit)

ARCHS.register(
    "resnet",
    summary="ResNet (timm BasicBlock), one block per stage, widths 32-256, 3x3 stem",
    paper=("Deep Residual Learning for Image Recognition", "1512.03385"),
    tags=("image", "cnn", "timm"),
    default_act="relu",
    recipe={"epochs": 15, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "warmup_epochs": 1},
)(small_resnet)

ARCHS.register(
    "kat",
    summary="Kolmogorov-Arnold Transformer: the vit with GR-KAN (group-rational) MLPs",
    paper=("Kolmogorov-Arnold Transformer", "2409.10594"),
    tags=("image", "transformer", "timm", "kan"),
    default_act="rational",
    recipe={"epochs": 50, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.3, "warmup_epochs": 2,
            "label_smoothing": 0.1},
)(small_kat)


def _gpt2(**options):
    from zoo.models.gpt2 import small_gpt2  # imported on use: `zoo list` stays fast

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
)(_gpt2)
