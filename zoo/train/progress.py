"""The training progress bar (rich): steps, loss, accuracy, elapsed time and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    def __init__(self, label: str, total_steps: int, enabled: bool = True,
                 console: Console | None = None, unit: str = "samples"):
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}  "
                       "{task.fields[rate]:,.0f} " + unit + "/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self._task = self._progress.add_task(label, total=total_steps, loss=float("nan"), acc=0.0,
                                             rate=0.0)
        self._epoch_start = 0

    def __enter__(self) -> "TrainingProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance_to(self, completed_steps: int) -> None:
        """On resume: the steps done by an earlier process are shown as done."""
        self._epoch_start = completed_steps
        self._progress.update(self._task, completed=completed_steps)

    def update(self, step_in_epoch: int, steps_per_epoch: int, loss: float, acc: float,
               rate: float = 0.0) -> None:
        """`rate`: examples (or tokens) per second so far in this epoch."""
        self._progress.update(self._task, completed=self._epoch_start + step_in_epoch,
                              loss=loss, acc=acc, rate=rate)
        if step_in_epoch == steps_per_epoch:
            self._epoch_start += steps_per_epoch

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)

    def log_epoch(self, row: dict, epochs: int) -> None:
        if self.enabled:
            self._progress.console.print(
                f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.2%}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}")
