"""`inits.md`: the initialization x activation grid, with its cells as CSV and JSON and one
plot per grid.

One `GridSection` per (data set, arch, protocol) where some activation was trained with two or
more initializations (unquantized); one `GridCell` per (activation, initialization) of its
table. The markdown tables, the CSV/JSON files and the plot are all drawn from these objects, so
they cannot disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.boards import records
from zoo.boards import stats as board_stats
from zoo.boards.files import (
    SECTION_KEYS,
    board_stem,
    files_line,
    interval_fields,
    section_keys,
    stored_part,
    text_files,
)
from zoo.boards.formatting import DASH, format_mean, format_mean_std, format_number
from zoo.boards.markdown import GENERATED_NOTE, cell_text, protocol_block
from zoo.boards.plots import GroupedBars, Plot, write_grouped_png
from zoo.runs.results import RunRecord

INIT_GRID_FILE = "inits.md"
INIT_GRID_STEM = INIT_GRID_FILE[:-3]  # its CSV, JSON and plot folder share the name
INIT_GRID_NOTE = (
    "Every activation trained with at least two initializations under one protocol (without "
    "quantization) is a column; rows are the initializations, best mean accuracy over the "
    "columns first. Cells are mean ± sample std (n − 1) over seeds, with (n=k) where fewer "
    "seeds completed than in the protocol and the count of diverged seeds where any diverged. "
    "Churn: mean pairwise disagreement of seeds' test predictions. Weight change: "
    "‖W − W0‖ / ‖W0‖ after training, median over the weight matrices, mean over seeds (near 0: "
    "lazy, order 1: rich). Feature rank: effective rank of the penultimate features on the "
    "validation set, mean over seeds. Massive activation: largest |h| / median |h| in the "
    "residual stream of the worst block, mean over seeds. The 95% CI of a cell's accuracy (in "
    f"the plot, the CSV and the JSON) is {board_stats.interval_method(board_stats.PERCENT)}."
)

GRID_COLUMNS = (*SECTION_KEYS, "act", "init", "metric", "n", "mean", "std", "ci95_low",
                "ci95_high", "best", "diverged", "churn", "weight_change", "feature_rank",
                "massive_activation", "seeds")


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
        return board_stats.ci95(self.accuracy, board_stats.PERCENT)


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
    finished = [run for run in runs
                if run.status != "running" and records.variant(run)[2] == "none"]
    by_board = records.group(finished, lambda r: (r.dataset, r.arch, r.protocol_id))
    boards = {}
    for key, board_runs in by_board.items():
        inits_of = records.group(board_runs, lambda run: records.variant(run)[0])
        acts = {act for act, group in inits_of.items()
                if len({records.variant(run)[1] for run in group}) >= 2}
        if acts:
            boards[key] = [run for run in board_runs if records.variant(run)[0] in acts]
    return boards


def grid_sections(runs: Iterable[RunRecord],
                  predictions: Mapping[str, list[int]]) -> list[GridSection]:
    return [_build_section(dataset, arch, pid, board_runs, predictions)
            for (dataset, arch, pid), board_runs in sorted(grid_boards(runs).items())]


def _build_section(dataset: str, arch: str, pid: str, runs: list[RunRecord],
                   predictions: Mapping[str, list[int]]) -> GridSection:
    groups = records.group(runs, lambda run: records.variant(run)[:2])  # (act, init) -> runs
    acts = sorted({act for act, _ in groups})
    inits = sorted({init for _, init in groups})
    completed = [run for run in runs if run.status == "completed"]

    def done(act, init):
        return sorted((run for run in groups.get((act, init), []) if run.status == "completed"),
                      key=lambda run: (run.seed, run.run_id))

    def acc(act, init):  # fractions, as stored: the order and the best cell are ranked on them
        return records.metric_values(done(act, init), "test_acc")

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
            churn = records.churn(runs_done, predictions)
            cells.append(GridCell(
                act=act, init=init, seeds=tuple(run.seed for run in runs_done),
                accuracy=tuple(100 * v for v in acc(act, init)),
                diverged=sum(run.status == "diverged" for run in groups.get((act, init), [])),
                best=best.get(act) == init, churn=None if churn is None else 100 * churn,
                weight_change=tuple(records.metric_values(runs_done, "weight_change_median")),
                feature_rank=tuple(records.metric_values(runs_done, "feature_rank")),
                massive_activation=tuple(records.metric_values(runs_done,
                                                               "massive_activation"))))
    return GridSection(dataset, arch, pid, records.protocol_name(runs), tuple(acts),
                       tuple(order), len({run.seed for run in completed}), tuple(cells),
                       tuple(sorted(runs, key=lambda run: run.run_id)))


# -- the board's files -----------------------------------------------------------------------


def init_grid_files(runs: Iterable[RunRecord], predictions: Mapping[str, list[int]]
                    ) -> tuple[dict[str, str], dict[str, Plot]]:
    """({file name: text}, {plot file name: plot}): `inits.md`, `inits.csv`, `inits.json` and
    one plot per grid in `inits/`, all drawn from the same sections; nothing when no activation
    was run with two initializations."""
    sections = grid_sections(runs, predictions)
    if not sections:
        return {}, {}
    pages = text_files(INIT_GRID_STEM, _grid_markdown(sections), grid_records(sections),
                       GRID_COLUMNS)
    return pages, {_plot_name(section): (write_grouped_png, _grid_plot(section))
                   for section in sections}


def init_grid_markdown(runs: Iterable[RunRecord],
                       predictions: Mapping[str, list[int]]) -> str | None:
    """`inits.md`: one activation x initialization grid per (data set, arch, protocol); None
    when no activation was run with two initializations."""
    sections = grid_sections(runs, predictions)
    return _grid_markdown(sections) if sections else None


def _plot_name(section: GridSection) -> str:
    """`inits/<dataset>-<arch>-<protocol id>.png`, relative to the leaderboard folder."""
    stem = board_stem(section.dataset, section.arch)
    return f"{INIT_GRID_STEM}/{stem}-{stored_part(section.pid, 'protocol id')}.png"


# -- markdown --------------------------------------------------------------------------------


def _grid_markdown(sections: list[GridSection]) -> str:
    lines = ["# Initialization × activation", "", GENERATED_NOTE, "", INIT_GRID_NOTE, "",
             files_line(INIT_GRID_STEM, "cell")]
    for section in sections:
        lines += ["", *_grid_section(section)]
    return "\n".join(lines) + "\n"


def _grid_section(section: GridSection) -> list[str]:
    def accuracy(cell: GridCell) -> str:
        text = format_mean_std(cell.accuracy, scale=1.0) if cell.accuracy else DASH
        if cell.best:
            text = f"**{text}**"
        if cell.accuracy and cell.n < section.seeds:
            text += f" (n={cell.n})"
        if cell.diverged:
            text += f", {cell.diverged} diverged"
        return text

    def mean_of(key: str, digits: int) -> Callable[[GridCell], str]:
        return lambda cell: format_mean(getattr(cell, key), digits=digits)

    runs = list(section.runs)
    completed = [run for run in runs if run.status == "completed"]
    lines = [f"## {section.dataset} / {section.arch}, protocol `{section.pid}`", ""]
    lines += protocol_block(section.dataset, runs, completed)
    for title, text in (("Test accuracy (%)", accuracy),
                        ("Churn (%)", lambda cell: format_number(cell.churn, 2)),
                        ("Weight change ‖W − W0‖ / ‖W0‖", mean_of("weight_change", 3)),
                        ("Feature rank", mean_of("feature_rank", 1)),
                        ("Massive activation (max / median)", mean_of("massive_activation", 1))):
        lines += ["", f"### {title}", "",
                  "| init | " + " | ".join(cell_text(a) for a in section.acts) + " |",
                  "|:---|" + "---:|" * len(section.acts)]
        lines += ["| " + " | ".join([cell_text(init), *(text(section.cell(act, init))
                                                         for act in section.acts)]) + " |"
                  for init in section.inits]
        if text is accuracy:
            alt = (f"{section.dataset} / {section.arch}, protocol {section.name or section.pid}: "
                   f"test accuracy per initialization and activation with 95% CIs")
            lines += ["", f"![{alt}]({_plot_name(section)})"]
    return lines


# -- CSV and JSON ----------------------------------------------------------------------------


def grid_records(sections: Sequence[GridSection]) -> list[dict[str, Any]]:
    """One dict per cell of the init grids, by section, then row (init), then column (act)."""
    out = []
    for section in sections:
        for cell in section.cells:
            out.append({
                **section_keys(section), "act": cell.act, "init": cell.init,
                "metric": "test_acc_percent", "n": cell.n, "mean": cell.mean,
                "std": board_stats.std(cell.accuracy), **interval_fields("ci95", cell.ci95),
                "best": cell.best, "diverged": cell.diverged, "churn": cell.churn,
                "weight_change": board_stats.mean(cell.weight_change),
                "feature_rank": board_stats.mean(cell.feature_rank),
                "massive_activation": board_stats.mean(cell.massive_activation),
                "seeds": list(cell.seeds),
            })
    return out


# -- the plot --------------------------------------------------------------------------------


def _grid_plot(section: GridSection) -> GroupedBars:
    """Bars of test accuracy per initialization (table order), one colour per activation, with
    their 95% CIs."""
    groups = [{cell.act: (cell.mean, cell.ci95) for cell in section.cells
               if cell.init == init and cell.mean is not None} for init in section.inits]
    title = (f"{section.dataset} / {section.arch}: test accuracy (%) per initialization, mean and "
             f"95% CI over seeds")
    return GroupedBars(title, "test accuracy (%); no error bar with fewer than two seeds",
                       list(section.inits), list(section.acts), groups)
