"""Which task a run is, decided once from its config: text corpora train language models,
generator archs (VAR) image generators, everything else image classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.registry.kinds import GENERATE, LANGUAGE
from zoo.runs.config import TrainConfig
from zoo.tasks.classify import ImageClassification
from zoo.tasks.generate import ImageGeneration
from zoo.tasks.language import LanguageModeling
from zoo.train.task import Task
from zoo.train.trainer import Trainer


def task_for(config: TrainConfig, device: torch.device, out: str | Path = "runs",
             show_progress: bool = True) -> Task:
    """The task of the run; `out` is the runs folder (generators keep their tokenizers beside
    the runs)."""
    kind = config.kind()
    if kind == GENERATE:
        return ImageGeneration(config, device, out, show_progress)
    if kind == LANGUAGE:
        return LanguageModeling(config, device)
    return ImageClassification(config, device)


def make_trainer(config: TrainConfig, **options: Any) -> Trainer:
    """A trainer for the run's own task: how everything above the trainer starts a run.
    `options` are Trainer's (out, device, compile, show_progress, labels)."""
    return Trainer(config, make_task=task_for, **options)
