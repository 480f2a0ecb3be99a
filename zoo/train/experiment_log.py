"""Experiment logs a run can write besides its own files, for the tools people already browse
runs with: TensorBoard (`--log tensorboard`, through `torch.utils.tensorboard`) and Weights &
Biases (`--log wandb`; `WANDB_MODE=offline` works without a network).

Per step: the training loss, the learning rate and the throughput (examples, or tokens, per
second). Per epoch: every number of the epoch's row in metrics.jsonl (validation metrics,
diagnostics). Off by default, and then nothing here runs: no import, no `.item()` per step.
Logs live in the run folder (`<run>/logs/tensorboard`, `<run>/logs/wandb`), so
`tensorboard --logdir runs` shows every run, and a resumed run appends to its own log.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Protocol

from zoo.errors import ZooError

LOGGERS = ("tensorboard", "wandb")


class ExperimentLog(Protocol):
    def step(self, step: int, values: dict[str, float]) -> None: ...

    def epoch(self, step: int, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of an epoch's row, named `epoch/<key>` (dicts, such as the weight
    change per matrix, become `epoch/<key>/<name>`)."""
    scalars = {}
    for key, value in row.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for name, number in items:
            if isinstance(number, (int, float)) and not isinstance(number, bool) \
                    and math.isfinite(number):
                scalars[f"epoch/{key}" + (f"/{name}" if name else "")] = float(number)
    return scalars


class TensorBoardLog:
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ZooError("--log tensorboard needs the tensorboard package: pip install "
                           "'zoo-bench[log]' (or tensorboard)") from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def step(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"train/{name}", value, step)

    def epoch(self, step: int, row: dict[str, Any]) -> None:
        for name, value in epoch_scalars(row).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    def __init__(self, folder: Path, run_id: str, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise ZooError("--log wandb needs the wandb package: pip install 'zoo-bench[wandb]' "
                           "(set WANDB_MODE=offline to log without an account)") from None
        folder.mkdir(parents=True, exist_ok=True)
        # console="off": zoo's progress bar and messages stay zoo's (wandb would wrap stdout)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "zoo"), name=run_id,
                              id=run_id, resume="allow", dir=str(folder), config=config,
                              reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True))

    def step(self, step: int, values: dict[str, float]) -> None:
        self.run.log({f"train/{name}": value for name, value in values.items()}, step=step)

    def epoch(self, step: int, row: dict[str, Any]) -> None:
        self.run.log(epoch_scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


def open_log(kind: str | None, run_folder: Path, run_id: str,
             config: dict[str, Any]) -> ExperimentLog | None:
    """The experiment log `kind` names for the run in `run_folder` (None: no log)."""
    if kind is None:
        return None
    if kind == "tensorboard":
        return TensorBoardLog(run_folder / "logs" / "tensorboard")
    if kind == "wandb":
        return WandbLog(run_folder / "logs" / "wandb", run_id, config)
    raise ZooError(f"--log must be one of {', '.join(LOGGERS)}, got {kind}")
