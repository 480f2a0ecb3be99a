"""What a run trains on, behind one interface the trainer uses: image classification here,
language modelling in `zoo.tasks.language`, image generation in `zoo.tasks.generate`.

A task loads its data onto the device, builds the model for it, yields training minibatches per
epoch (the same ones on resume), computes the loss, evaluates a split, and says what goes into
the run's config and final metrics. The trainer owns everything else: optimizer, schedule,
checkpoints, resume, diagnostics, results database.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.build import build_model
from zoo.data.images import (
    ImageTensors,
    ShiftFlip,
    ShuffledBatches,
    black_level,
    eval_batches,
    load_dataset,
    to_device_tensors,
)
from zoo.runs.config import TrainConfig

# --- image classification ---------------------------------------------------------------------

# A sweep worker trains run after run on the same data: it keeps the last data set it loaded
# (its device tensors, which training never modifies) instead of reading the files again.
_kept: dict[tuple, ImageTensors] | None = None


def keep_loaded_data(enabled: bool = True) -> None:
    """Called once in a sweep's worker processes (not in `zoo train`, where a data set is
    loaded once anyway, and where its files may change between calls)."""
    global _kept
    _kept = {} if enabled else None


def load_data(config: TrainConfig, device: torch.device) -> ImageTensors:
    key = (config.dataset, config.train_subset, config.eval_subset, str(device))
    if _kept is not None and key in _kept:
        return _kept[key]
    limit = {"train": config.train_subset} if config.train_subset else {}
    if config.eval_subset:
        limit.update(validation=config.eval_subset, test=config.eval_subset)
    data = to_device_tensors(load_dataset(config.dataset), config.dataset, device, limit=limit)
    if _kept is not None:
        _kept.clear()  # one data set at a time: bounded memory
        _kept[key] = data
    return data


def build_for(config: TrainConfig, data: ImageTensors) -> nn.Module:
    spec = data.spec
    return build_model(
        config.arch, image_size=spec.image_size, channels=spec.channels,
        num_classes=spec.num_classes, act=config.act, init=config.init, quant=config.quant,
        seed=config.seed, act_params=config.act_params, init_params=config.init_params,
        quant_params=config.quant_params, arch_params=config.arch_params,
        calibration_batch=lambda: calibration_images(config, data),
    )


def calibration_images(config: TrainConfig, data: ImageTensors) -> torch.Tensor:
    """What data-dependent inits and quantizers calibrate on: the first training batch."""
    return data.train[0][: config.batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
             autocast: bool = False, keep_predictions: bool = False,
             tta_flip: bool = False) -> dict[str, Any]:
    """Mean loss and accuracy; with `keep_predictions`, also every example's predicted class
    (for churn across seeds); with `tta_flip`, of the mean logits of each image and its mirror
    (test-time augmentation)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    predictions = []
    for xb, yb in eval_batches(x, y, batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(xb)
            if tta_flip:
                logits = (logits + model(xb.flip(3))) / 2
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        predicted = logits.argmax(dim=1)
        correct += (predicted == yb).sum()
        if keep_predictions:
            predictions.append(predicted.cpu())
    model.train(was_training)
    n = max(1, len(y))
    found = {"loss": loss_sum.item() / n, "acc": correct.item() / n}
    if keep_predictions:
        found["predictions"] = torch.cat(predictions).tolist() if predictions else []
    return found


class ImageClassification:
    """Images -> classes, the whole data set held on the device."""

    unit = "samples"  # what throughput counts

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config, self.device = config, device
        self.data = load_data(config, device)

    def build(self) -> nn.Module:
        # channels-last convolutions: oneDNN on CPUs and tensor cores on GPUs both run them
        # faster (ResNet-8 on one CPU thread: 1.4x); the math is the same
        return build_for(self.config, self.data).to(memory_format=torch.channels_last)

    def calibration_batch(self) -> torch.Tensor:
        return calibration_images(self.config, self.data)

    def calibration_description(self) -> str:
        return f"the first {len(self.calibration_batch())} training images"

    def train_batches(self) -> ShuffledBatches:
        config = self.config
        augment = ShiftFlip(config.aug_shift, config.aug_flip, black_level(self.data.spec))
        return ShuffledBatches(*self.data.train, config.batch_size, config.seed, augment=augment)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)

    @staticmethod
    def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits.detach().argmax(dim=-1) == y).sum()

    def evaluate(self, model: nn.Module, split: str, autocast: bool,
                 keep_predictions: bool = False) -> dict[str, Any]:
        return evaluate(model, *self.data.split(split), autocast=autocast,
                        keep_predictions=keep_predictions, tta_flip=self.config.tta_flip)

    def diagnostics_input(self) -> torch.Tensor:
        return self.data.validation[0]

    def describe(self) -> str:
        sizes = self.data.spec.sizes
        return (f"{self.config.dataset} ({sizes['train']} train / {sizes['validation']} val / "
                f"{sizes['test']} test)")

    def run_summary(self) -> dict[str, Any]:
        """What config.json records about the data (what defines comparability)."""
        spec = self.data.spec
        height, width = spec.image_size
        return {"data": {"image": f"{height}x{width}x{spec.channels}",
                         "classes": spec.num_classes, **spec.sizes},
                "data_spec": asdict(spec)}

    def final_metrics(self, model: nn.Module, autocast: bool) -> tuple[dict[str, Any], list[int]]:
        """Test metrics, and the test predictions (for churn across seeds)."""
        test = self.evaluate(model, "test", autocast, keep_predictions=True)
        return {"test_acc": test["acc"], "test_loss": test["loss"]}, test["predictions"]
