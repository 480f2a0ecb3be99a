"""The rows of a generation board section, as numbers.

One `GenSection` per (data set, arch, protocol) of image generators; one `GenRow` per variant
(act, init, quant) with its completed seeds' metrics. The markdown table, the CSV/JSON files and
the plot are all drawn from these objects, so they cannot disagree.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from zoo.harness import board_stats
from zoo.harness.leaderboard import _group, _metric_values, _variant
from zoo.harness.results import RunRecord


@dataclass(frozen=True)
class GenRow:
    variant: tuple[str, str, str]  # (act, init, quant), each with its parameters
    seeds: tuple[int, ...]
    fid: tuple[float, ...]  # per seed, like every metric here (seeds without it left out)
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    class_consistency: tuple[float, ...]  # in %
    test_loss: tuple[float, ...]
    params: tuple[float, ...]
    images_per_s: tuple[float, ...]
    # against the raster-order baseline timed in the same process; empty for the baseline
    # itself (timed against itself) and for runs that did not time it
    raster_images_per_s: tuple[float, ...]
    speedup: tuple[float, ...]
    grid_run_id: str  # the run whose sample grid the row shows: the lowest seed's

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def fid_ci95(self) -> tuple[float, float] | None:
        return board_stats.ci95(self.fid)

    @property
    def label(self) -> str:
        return " / ".join(self.variant)


@dataclass(frozen=True)
class GenSection:
    dataset: str
    arch: str
    pid: str
    name: str | None  # the named protocol this hash is, if any
    rows: tuple[GenRow, ...]  # lowest mean FID first
    runs: tuple[RunRecord, ...]  # every finished run of the section, by run id

    @property
    def completed(self) -> list[RunRecord]:
        return [run for run in self.runs if run.status == "completed"]


def gen_sections(dataset: str, runs: list[RunRecord]) -> list[GenSection]:
    """One section per (arch, protocol id) of a data set's finished generator runs, sorted."""
    from zoo.harness.protocols import protocol_name_for

    sections = []
    by_section = _group(runs, lambda run: (run.arch, run.protocol_id))
    for (arch, pid), section_runs in sorted(by_section.items()):
        section_runs = sorted(section_runs, key=lambda run: run.run_id)
        completed = [run for run in section_runs if run.status == "completed"]
        keyed = [_row(variant, group) for variant, group in _group(completed, _variant).items()]
        rows = tuple(row for _, row in sorted(keyed, key=lambda item: item[0]))
        sections.append(GenSection(dataset, arch, pid, protocol_name_for(pid, arch, dataset),
                                   rows, tuple(section_runs)))
    return sections


def _row(variant: tuple[str, str, str], runs: list[RunRecord]) -> tuple[tuple, GenRow]:
    """(sort key: lowest mean FID first, row)."""
    from zoo.harness.gen_task import BASELINE_ARCH

    runs = sorted(runs, key=lambda run: (run.seed, run.run_id))
    fid = _metric_values(runs, "fid")
    speedup = _metric_values(runs, "speedup_vs_raster")
    timed = runs[0].arch != BASELINE_ARCH and bool(speedup)
    row = GenRow(
        variant=variant, seeds=tuple(run.seed for run in runs), fid=tuple(fid),
        precision=tuple(_metric_values(runs, "precision")),
        recall=tuple(_metric_values(runs, "recall")),
        class_consistency=tuple(100 * v for v in _metric_values(runs, "class_consistency")),
        test_loss=tuple(_metric_values(runs, "test_loss")),
        params=tuple(_metric_values(runs, "params")),
        images_per_s=tuple(_metric_values(runs, "images_per_s")),
        raster_images_per_s=tuple(_metric_values(runs, "raster_images_per_s")) if timed else (),
        speedup=tuple(speedup) if timed else (),
        grid_run_id=runs[0].run_id,
    )
    return ((0, statistics.mean(fid), variant) if fid else (1, 0.0, variant)), row
