"""What the trainer needs from a task, declared once: the tasks in `zoo.tasks` (classification,
language modelling, image generation) implement it, and whoever starts a run hands the trainer a
`MakeTask` that builds the task of its config. The trainer owns everything else: optimizer,
schedule, checkpoints, resume, diagnostics, results database."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sized

import torch
from torch import nn

from zoo.runs.config import TrainConfig


class Batches(Sized, Protocol):
    """Training minibatches: the same ones for the same epoch, so a resumed run repeats them."""

    def epoch(self, k: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...


class Task(Protocol):
    unit: str  # what throughput counts: "samples", "tokens"

    def build(self) -> nn.Module:
        """The run's model, built from its config for this data (init and quantization applied)."""

    def train_batches(self) -> Batches: ...

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """How many predictions of the batch are right (a 0-d tensor, summed on the device)."""

    def evaluate(self, model: nn.Module, split: str, autocast: bool,
                 keep_predictions: bool = False) -> dict[str, Any]:
        """Mean `loss` and `acc` (and what else the task measures) on a split."""

    def diagnostics_input(self) -> torch.Tensor:
        """The validation inputs the per-epoch diagnostics read activations from."""

    def describe(self) -> str:
        """One line for the progress display: the data and its sizes."""

    def run_summary(self) -> dict[str, Any]:
        """What config.json records about the data and the frozen dependencies."""

    def final_metrics(self, model: nn.Module, autocast: bool) -> tuple[dict[str, Any], Any]:
        """Test metrics, and the test predictions where the task keeps them (else None)."""


# config, device, runs folder, show progress -> the run's task
MakeTask = Callable[[TrainConfig, torch.device, Path, bool], Task]
