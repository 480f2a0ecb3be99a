"""The cells of the initialization x activation grid (`inits.md`), as numbers.

One `GridSection` per (data set, arch, protocol) where some activation was trained with two or
more initializations (unquantized); one `GridCell` per (activation, initialization) of its
table. The markdown tables, the CSV/JSON files and the plot are all drawn from these objects, so
they cannot disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zoo.harness import board_stats
from zoo.harness.leaderboard import _churn, _group, _metric_values, _variant
from zoo.harness.results import RunRecord


@dataclass(frozen=True)
class GridCell:
    act: str
    init: str
    seeds: tuple[int, ...]  # of the completed runs
    accuracy: tuple[float, ...]  # test accuracy per completed run, in %
    diverged: int
    best: bool  # the best mean accuracy of its activation's column
    churn: float | None  # in %
    weight_change: tuple[float, ...]  # per completed run, like the next two
    feature_rank: tuple[float, ...]
    massive_activation: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.accuracy)

    @property
    def mean(self) -> float | None:
        return board_stats.mean(self.accuracy)

    @property
    def ci95(self) -> tuple[float, float] | None:
        return board_stats.ci95(self.accuracy)


@dataclass(frozen=True)
class GridSection:
    dataset: str
    arch: str
    pid: str
    name: str | None  # the named protocol this hash is, if any
    acts: tuple[str, ...]  # the columns, sorted
    inits: tuple[str, ...]  # the rows: best mean accuracy over the columns first
    seeds: int  # distinct seeds of the completed runs: fewer in a cell is shown as (n=k)
    cells: tuple[GridCell, ...]  # every (act, init), by row then column
    runs: tuple[RunRecord, ...]

    def cell(self, act: str, init: str) -> GridCell:
        return self.cells[self.inits.index(init) * len(self.acts) + self.acts.index(act)]


def grid_boards(runs: Iterable[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    """(dataset, arch, protocol id) -> the finished unquantized runs of the activations trained
    with two or more initializations there (the grid's columns)."""
    finished = [run for run in runs if run.status != "running" and _variant(run)[2] == "none"]
    boards = {}
    for key, board_runs in _group(finished, lambda r: (r.dataset, r.arch, r.protocol_id)).items():
        inits_of = _group(board_runs, lambda run: _variant(run)[0])
        acts = {act for act, group in inits_of.items()
                if len({_variant(run)[1] for run in group}) >= 2}
        if acts:
            boards[key] = [run for run in board_runs if _variant(run)[0] in acts]
    return boards


def grid_sections(runs: Iterable[RunRecord],
                  predictions: Mapping[str, list[int]]) -> list[GridSection]:
    return [_section(dataset, arch, pid, board_runs, predictions)
            for (dataset, arch, pid), board_runs in sorted(grid_boards(runs).items())]


def _section(dataset: str, arch: str, pid: str, runs: list[RunRecord],
             predictions: Mapping[str, list[int]]) -> GridSection:
    from zoo.harness.protocols import protocol_name_for

    groups = _group(runs, lambda run: _variant(run)[:2])  # (act, init) -> runs
    acts = sorted({act for act, _ in groups})
    inits = sorted({init for _, init in groups})
    completed = [run for run in runs if run.status == "completed"]

    def done(act, init):
        return sorted((run for run in groups.get((act, init), []) if run.status == "completed"),
                      key=lambda run: (run.seed, run.run_id))

    def acc(act, init):  # fractions, as stored: the order and the best cell are ranked on them
        return _metric_values(done(act, init), "test_acc")

    def mean_acc(init):
        values = [v for act in acts for v in acc(act, init)]
        return statistics.mean(values) if values else -1.0

    order = sorted(inits, key=lambda init: (-mean_acc(init), init))
    best = {act: max((statistics.mean(acc(act, init)), init) for init in inits if acc(act, init))[1]
            for act in acts if any(acc(act, init) for init in inits)}
    cells = []
    for init in order:
        for act in acts:
            runs_done = done(act, init)
            churn = _churn(runs_done, predictions)
            cells.append(GridCell(
                act=act, init=init, seeds=tuple(run.seed for run in runs_done),
                accuracy=tuple(100 * v for v in acc(act, init)),
                diverged=sum(run.status == "diverged" for run in groups.get((act, init), [])),
                best=best.get(act) == init, churn=None if churn is None else 100 * churn,
                weight_change=tuple(_metric_values(runs_done, "weight_change_median")),
                feature_rank=tuple(_metric_values(runs_done, "feature_rank")),
                massive_activation=tuple(_metric_values(runs_done, "massive_activation"))))
    return GridSection(dataset, arch, pid, protocol_name_for(pid, arch, dataset), tuple(acts),
                       tuple(order), len({run.seed for run in completed}), tuple(cells),
                       tuple(sorted(runs, key=lambda run: run.run_id)))
