"""What every board reads from the run records: runs grouped by a key, a run's variant (act,
init, quant with their parameters), its finite metrics, the churn of a variant's seeds, and
whether runs are language models.

Shared by every kind of board, so that a variant or a metric means the same thing on each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from zoo.boards.formatting import format_value
from zoo.registry.kinds import LANGUAGE
from zoo.runs.lr_tuning import lr_scale
from zoo.runs.results import RunRecord
from zoo.train import diagnostics


def group(runs: Iterable[RunRecord], key: Callable[[RunRecord], Any]
          ) -> dict[Any, list[RunRecord]]:
    """{key(run): runs}, each list in the order of `runs`."""
    groups: dict[Any, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def metric(run: RunRecord, key: str) -> float | None:
    """The run's metric `key` if it is a finite number, else None."""
    value = run.metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def metric_values(runs: Iterable[RunRecord], key: str) -> list[float]:
    """The finite values of metric `key`, in run order; runs without it left out."""
    return [v for v in (metric(run, key) for run in runs) if v is not None]


def variant(run: RunRecord) -> tuple[str, str, str]:
    """(act, init, quant), each with the parameters the run set, e.g. `gelu(backward_bits=2)`:
    runs that differ in a parameter are different variants. A run at a tuned learning rate
    (`zoo sweep --tune-lr`) is its own variant too: `gelu · lr x0.5`."""
    act, init, quant = base_variant(run)
    scale = lr_scale(run)
    return (act if scale == 1 else f"{act} · lr x{scale:g}", init, quant)


def base_variant(run: RunRecord) -> tuple[str, str, str]:
    """`variant` whatever the learning rate."""
    train_config = run.config.get("config") or {}  # the TrainConfig, as the trainer stores it
    return tuple(_with_params(name, train_config.get(f"{kind}_params"))
                 for kind, name in (("act", run.act), ("init", run.init), ("quant", run.quant)))


def _with_params(name: str, params: Any) -> str:
    if not isinstance(params, Mapping) or not params:
        return name
    def show(value: Any) -> str:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return f"{value:g}" if is_number else format_value(value)

    return f"{name}({', '.join(f'{k}={show(params[k])}' for k in sorted(params))})"


def churn(runs: Iterable[RunRecord], predictions: Mapping[str, list[int]]) -> float | None:
    """Mean pairwise test-set disagreement of the runs that stored predictions."""
    stored = [predictions[run.run_id] for run in sorted(runs, key=lambda r: r.run_id)
              if run.run_id in predictions]
    if len({len(p) for p in stored}) > 1:
        return None  # different test sets: not comparable
    return diagnostics.churn(stored)


def is_language_model(runs: Iterable[RunRecord]) -> bool:
    """Language-model runs (their stamped kind): bits per byte instead of accuracy."""
    return any(run.kind == LANGUAGE for run in runs)


def protocol_name(runs: Iterable[RunRecord]) -> str | None:
    """The name stamped on the runs of one section (one protocol id, arch and data set)."""
    return next((run.protocol_name for run in sorted(runs, key=lambda run: run.run_id)), None)
