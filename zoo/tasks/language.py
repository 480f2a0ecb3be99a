"""Language modelling as a training task: next-token prediction on a tokenized text corpus.

Training draws `steps_per_epoch` batches of random windows per "epoch" (a fixed count, so an
epoch is a checkpoint and validation interval, not a pass over the corpus), from a generator
seeded by (seed, epoch): a resumed run draws the same windows as an uninterrupted one.
Evaluation reads a whole split once, in non-overlapping windows, and reports the mean loss per
token, next-token accuracy, perplexity and bits per byte (comparable across tokenizers).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.build import build_model
from zoo.data.images import epoch_seed
from zoo.data.text.streams import (
    IGNORE_INDEX,
    TokenSplit,
    bits_per_byte,
    perplexity,
    prepare_token_streams,
    random_windows,
    sequential_windows,
)
from zoo.runs.config import TrainConfig


class RandomWindowBatches:
    """`steps` batches of random (x, y) windows per epoch, reproducible from (seed, epoch)."""

    def __init__(self, split: TokenSplit, batch_size: int, block_size: int, steps: int,
                 seed: int, device: torch.device):
        self.split, self.batch_size, self.block_size = split, batch_size, block_size
        self.steps, self.seed, self.device = steps, seed, device

    def __len__(self) -> int:
        return self.steps

    def epoch(self, k: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, k))
        for _ in range(self.steps):
            yield random_windows(self.split, self.batch_size, self.block_size, generator,
                                 device=self.device)


class LanguageModeling:
    unit = "tokens"  # what throughput counts

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config, self.device = config, device
        self.streams = prepare_token_streams(config.dataset, config.tokenizer)

    def build(self) -> nn.Module:
        config = self.config
        return build_model(
            config.arch, vocab_size=self.streams.vocab_size, block_size=config.block_size,
            act=config.act, init=config.init, quant=config.quant, seed=config.seed,
            act_params=config.act_params, init_params=config.init_params,
            quant_params=config.quant_params, arch_params=config.arch_params,
            calibration_batch=self.calibration_batch)

    def calibration_batch(self) -> torch.Tensor:
        """What data-dependent inits and quantizers calibrate on: the first training windows."""
        return self._first_windows("train")

    def calibration_description(self) -> str:
        windows = self.calibration_batch()
        return f"the first {windows.shape[0]} training windows of {windows.shape[1]} tokens"

    def train_batches(self) -> RandomWindowBatches:
        c = self.config
        return RandomWindowBatches(self.streams.train, c.batch_size, c.block_size,
                                   c.steps_per_epoch, c.seed, self.device)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, -2), y.flatten(),
                               label_smoothing=self.config.label_smoothing)

    @staticmethod
    def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits.detach().argmax(dim=-1) == y).sum()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, autocast: bool,
                 keep_predictions: bool = False) -> dict[str, Any]:
        """The whole split once: every token but the first predicted exactly once."""
        tokens = self.streams.split(split)
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for x, y in sequential_windows(tokens, self.config.batch_size, self.config.block_size,
                                       device=self.device):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float().flatten(0, -2), y.flatten(),
                                        reduction="sum", ignore_index=IGNORE_INDEX)
            correct += (logits.argmax(dim=-1) == y).sum()  # padding (-100) never matches
        model.train(was_training)
        mean = loss_sum.item() / tokens.targets
        return {"loss": mean, "acc": correct.item() / tokens.targets,
                "bpb": bits_per_byte(mean, tokens.targets, tokens.bytes),
                "ppl": perplexity(mean) if mean < 700 else math.inf}

    def _first_windows(self, split: str, windows: int | None = None) -> torch.Tensor:
        x, _ = next(sequential_windows(self.streams.split(split),
                                       windows or self.config.batch_size,
                                       self.config.block_size, device=self.device))
        return x

    def diagnostics_input(self) -> torch.Tensor:
        return self._first_windows("validation", windows=16)

    def describe(self) -> str:
        s = self.streams
        return (f"{self.config.dataset} ({s.train.tokens:,} train / {s.validation.tokens:,} val "
                f"/ {s.test.tokens:,} test tokens, {self.config.tokenizer} tokenizer, vocab "
                f"{s.vocab_size:,})")

    def run_summary(self) -> dict[str, Any]:
        s = self.streams
        data = {"tokenizer": self.config.tokenizer, "vocab": s.vocab_size}
        for name in ("train", "validation", "test"):
            split = s.split(name)
            data.update({f"{name}_tokens": split.tokens, f"{name}_bytes": split.bytes})
        # when and how fast this machine tokenized is not part of what the data is
        volatile = ("splits", "prepare_seconds", "prepared_at")
        return {"data": data, "data_spec": {k: v for k, v in s.meta.items() if k not in volatile}}

    def final_metrics(self, model: nn.Module, autocast: bool) -> tuple[dict[str, Any], None]:
        test = self.evaluate(model, "test", autocast)
        return {f"test_{key}": value for key, value in test.items()}, None
