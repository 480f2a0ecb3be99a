"""`var-<dataset>.md`: image generators (var, and its raster-order baseline rar) per activation.

One section per (arch, training protocol). Each row: FID, precision and recall in the feature
space of zoo's classifier for the data set, class consistency, the test token loss, sampling
speed against the raster-order baseline of the same size (measured in the same process), and the
sample grid of the row's lowest seed. Grids are copied from the runs' `samples.png` into
`<leaderboards>/var-<dataset>/` when the run folders are at hand; the markdown only names them,
so it depends on the database alone. Beside the board: its rows as CSV and JSON, and one plot
per section (FID with its 95% CI per row) in the same folder as the grids.
"""

from __future__ import annotations

import re
import shutil
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.boards import records
from zoo.boards import stats as board_stats
from zoo.boards.files import (
    SECTION_KEYS,
    files_line,
    interval_fields,
    mean_std_fields,
    param_count,
    section_keys,
    stored_part,
    text_files,
)
from zoo.boards.formatting import DASH, format_count, format_list, format_mean, format_mean_std
from zoo.boards.markdown import GENERATED_NOTE, cell_text, not_completed_block, protocol_block
from zoo.boards.plots import GroupedBars, Plot, write_grouped_png
from zoo.registry.kinds import GENERATE
from zoo.runs.files import atomic_write, inside
from zoo.runs.results import RunRecord, is_ptq
from zoo.tasks.generate import BASELINE_ARCH

GEN_NOTE = (
    "FID, precision and recall (k = 3, Kynkäänniemi et al. 2019) are computed in the penultimate "
    "features of zoo's classifier for the data set (named with its sha256 below; Inception "
    "weights are not available offline, so these numbers are comparable with each other, not "
    "with published Inception FIDs). The real-data floor is the FID of as many real training "
    "images against the same reference: what a perfect generator would score at this sample "
    "count. Class consistency: that classifier's accuracy on the samples for their conditioning "
    "class. Test token loss: cross-entropy per token on the test images' tokens. Images/s: "
    "sampling one batch with guidance, against the raster-order transformer of the same size "
    "on the same device in the same process. Mean ± sample std (n − 1) over seeds; only "
    "completed runs are averaged. The 95% CI of FID (in the plot, the CSV and the JSON) is "
    f"{board_stats.interval_method()}. The grid is the lowest seed's (column j: class j)."
)
TABLE_HEADER = (
    "| act | init | quant | FID ↓ | precision | recall | class consistency (%) "
    "| test token loss | n seeds | params | images/s | raster images/s | speedup | samples |\n"
    "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
)

GEN_COLUMNS = (*SECTION_KEYS, "act", "init", "quant", "n", "fid_mean", "fid_std", "fid_ci95_low",
               "fid_ci95_high", "precision_mean", "precision_std", "recall_mean", "recall_std",
               "class_consistency_mean", "class_consistency_std", "test_loss_mean",
               "test_loss_std", "params", "images_per_s", "raster_images_per_s", "speedup",
               "samples", "seeds")


def is_generator(run: RunRecord) -> bool:
    """A generator's own run (its post-training-quantized evaluations are not board rows)."""
    return not is_ptq(run) and run.kind == GENERATE


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
    sections = []
    by_section = records.group(runs, lambda run: (run.arch, run.protocol_id))
    for (arch, pid), section_runs in sorted(by_section.items()):
        section_runs = sorted(section_runs, key=lambda run: run.run_id)
        completed = [run for run in section_runs if run.status == "completed"]
        by_variant = records.group(completed, records.variant)
        keyed = [_build_row(variant, group) for variant, group in by_variant.items()]
        rows = tuple(row for _, row in sorted(keyed, key=lambda item: item[0]))
        sections.append(GenSection(dataset, arch, pid, records.protocol_name(section_runs),
                                   rows, tuple(section_runs)))
    return sections


def _build_row(variant: tuple[str, str, str], runs: list[RunRecord]) -> tuple[tuple, GenRow]:
    """(sort key: lowest mean FID first, row)."""
    runs = sorted(runs, key=lambda run: (run.seed, run.run_id))
    fid = records.metric_values(runs, "fid")
    speedup = records.metric_values(runs, "speedup_vs_raster")
    timed = runs[0].arch != BASELINE_ARCH and bool(speedup)
    row = GenRow(
        variant=variant, seeds=tuple(run.seed for run in runs), fid=tuple(fid),
        precision=tuple(records.metric_values(runs, "precision")),
        recall=tuple(records.metric_values(runs, "recall")),
        class_consistency=tuple(100 * v
                                for v in records.metric_values(runs, "class_consistency")),
        test_loss=tuple(records.metric_values(runs, "test_loss")),
        params=tuple(records.metric_values(runs, "params")),
        images_per_s=tuple(records.metric_values(runs, "images_per_s")),
        raster_images_per_s=(tuple(records.metric_values(runs, "raster_images_per_s"))
                             if timed else ()),
        speedup=tuple(speedup) if timed else (),
        grid_run_id=runs[0].run_id,
    )
    return ((0, statistics.mean(fid), variant) if fid else (1, 0.0, variant)), row


# -- the board's files and markdown ----------------------------------------------------------


def board_name(dataset: str) -> str:
    """`var-<dataset>.md`, with characters unsafe in file names replaced by `_`."""
    return "var-" + re.sub(r"[^A-Za-z0-9._-]+", "_", dataset) + ".md"


def generation_stem(dataset: str) -> str:
    """`var-<dataset>`: the board's name without `.md`, shared by its CSV, JSON and the folder of
    its plots and sample grids."""
    return board_name(dataset)[:-3]


def grid_name(dataset: str, run_id: str) -> str:
    """Where a run's sample grid goes, relative to the leaderboard folder."""
    return f"{generation_stem(dataset)}/{stored_part(run_id, 'run id')}.png"


def plot_name(section: GenSection) -> str:
    """`var-<dataset>/<arch>-<protocol id>.png`; never a grid's name (run ids end in a seed and
    a hash)."""
    arch, pid = stored_part(section.arch, "arch"), stored_part(section.pid, "protocol id")
    return f"{generation_stem(section.dataset)}/{arch}-{pid}.png"


def generation_boards(runs: Iterable[RunRecord]
                      ) -> tuple[dict[str, str], dict[str, Path], dict[str, Plot]]:
    """({file name: text}, {grid file name: the run's samples.png}, {plot file name: plot}) for
    every data set with completed generator runs: `var-<dataset>.md`, its `.csv` and `.json`,
    and one plot per section, all drawn from the same sections."""
    runs = [run for run in runs if is_generator(run) and run.status != "running"]
    pages: dict[str, str] = {}
    grids: dict[str, Path] = {}
    plots: dict[str, Plot] = {}
    for dataset, board_runs in sorted(records.group(runs, lambda run: run.dataset).items()):
        if not any(run.status == "completed" for run in board_runs):
            continue
        sections = gen_sections(dataset, board_runs)
        pages.update(text_files(generation_stem(dataset), generation_markdown(dataset, sections),
                                gen_records(sections), GEN_COLUMNS))
        plots.update({plot_name(section): (write_grouped_png, _generation_plot(section))
                      for section in sections if section.rows})
        by_id = {run.run_id: run for run in board_runs}
        for row in (row for section in sections for row in section.rows):
            grids[grid_name(dataset, row.grid_run_id)] = \
                Path(by_id[row.grid_run_id].run_dir) / "samples.png"
    return pages, grids, plots


def generation_markdown(dataset: str, sections: list[GenSection]) -> str:
    lines = [f"# {dataset} / image generation", "", GENERATED_NOTE, "", GEN_NOTE, "",
             files_line(generation_stem(dataset))]
    for section in sections:
        lines += ["", *_section_lines(section)]
    return "\n".join(lines) + "\n"


def _section_lines(section: GenSection) -> list[str]:
    runs, completed = list(section.runs), section.completed
    lines = [f"## {section.arch}, protocol `{section.pid}`", ""]
    lines += protocol_block(section.dataset, runs, completed)
    lines += _dependencies_block(completed)
    lines.append("")
    if section.rows:
        lines.append(TABLE_HEADER)
        lines += [_table_row(section.dataset, row) for row in section.rows]
        alt = (f"{section.dataset} / {section.arch}, protocol {section.name or section.pid}: FID "
               f"per variant with 95% CIs")
        lines += ["", f"![{alt}]({plot_name(section)})"]
    else:
        lines.append("No run of this protocol completed.")
    lines += not_completed_block(runs)
    return lines


def _dependencies_block(runs: list[RunRecord]) -> list[str]:
    """The tokenizer, the feature network and the sampling settings behind the numbers."""
    if not runs:
        return []
    tokenizers = format_list(_tokenizer_text(run) for run in runs)
    nets = format_list(_feature_net_text(run.metrics.get("gen_protocol") or {}) for run in runs)
    sampling = format_list(_sampling_text(run.metrics.get("gen_protocol") or {}) for run in runs)
    return [f"- **Tokenizer:** {tokenizers}",
            f"- **Sampling:** {sampling}",
            f"- **Feature network:** {nets}"]


def _tokenizer_text(run: RunRecord) -> str:
    ref = (run.config.get("dependencies") or {}).get("tokenizer") or {}
    if not ref:
        return DASH
    recon = ", ".join(f"{v:.4f}" for v in ref.get("recon_mse_by_scales", []))
    return (f"`{ref.get('id')}` (sha256 {str(ref.get('sha256'))[:12]}, scales "
            f"{'-'.join(str(s) for s in ref.get('scales', []))}, validation MSE when decoding "
            f"1..K scales: {recon})")


def _sampling_text(p: dict[str, Any]) -> str:
    if not p:
        return DASH
    return (f"{p.get('samples')} samples ({p.get('samples_per_class')} per class), cfg "
            f"{p.get('cfg')}, top-k {p.get('top_k')}, top-p {p.get('top_p')}, temperature "
            f"{p.get('temperature')}, sampling seed {p.get('seed')}; reference: the "
            f"{p.get('reference')} split ({p.get('reference_images')} images); precision/recall "
            f"on {p.get('pr_samples')} vs {p.get('pr_samples')}")


def _feature_net_text(p: dict[str, Any]) -> str:
    net = p.get("feature_net") or {}
    if not net:
        return DASH
    return (f"`{net.get('id')}` ({net.get('arch')}·{net.get('act')}, {net.get('epochs')} "
            f"epochs, test accuracy {100 * net.get('test_acc', 0):.2f}%, sha256 "
            f"{str(net.get('sha256'))[:12]})")


def _table_row(dataset: str, row: GenRow) -> str:
    # the raster baseline's own row has no speedup: it was timed against itself
    speed = ([format_mean(row.raster_images_per_s), format_mean(row.speedup, digits=2) + "×"]
             if row.speedup else [DASH, DASH])
    cells = [
        *(cell_text(name) for name in row.variant),
        format_mean_std(row.fid, scale=1.0, digits=2),
        format_mean_std(row.precision, scale=1.0, digits=3),
        format_mean_std(row.recall, scale=1.0, digits=3),
        format_mean_std(row.class_consistency, scale=1.0),
        format_mean_std(row.test_loss, scale=1.0, digits=4),
        str(row.n),
        format_count(row.params),
        format_mean(row.images_per_s),
        *speed,
        # HTML for a display width: digits' grids are 91 pixels wide
        f'<img src="{grid_name(dataset, row.grid_run_id)}" '
        f'alt="{cell_text(row.variant[0])} samples" width="240">',
    ]
    return "| " + " | ".join(cells) + " |"


def copy_grids(grids: dict[str, Path], out_dir: Path) -> list[str]:
    """Copy each run's samples.png beside the boards; returns the names of grids that are
    neither at hand nor already there (a board naming them would show a broken image)."""
    missing = []
    for name, source in sorted(grids.items()):
        target = inside(out_dir, name)
        if source.is_file():
            atomic_write(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
        elif not target.is_file():
            missing.append(name)
    return missing


# -- CSV and JSON ----------------------------------------------------------------------------


def gen_records(sections: Sequence[GenSection]) -> list[dict[str, Any]]:
    """One dict per row of the generation board's tables, in table order."""
    out = []
    for section in sections:
        for row in section.rows:
            act, init, quant = row.variant
            out.append({
                **section_keys(section), "act": act, "init": init, "quant": quant, "n": row.n,
                **mean_std_fields("fid", row.fid), **interval_fields("fid_ci95", row.fid_ci95),
                **mean_std_fields("precision", row.precision),
                **mean_std_fields("recall", row.recall),
                **mean_std_fields("class_consistency", row.class_consistency),
                **mean_std_fields("test_loss", row.test_loss), "params": param_count(row.params),
                "images_per_s": board_stats.mean(row.images_per_s),
                "raster_images_per_s": board_stats.mean(row.raster_images_per_s),
                "speedup": board_stats.mean(row.speedup),
                "samples": grid_name(section.dataset, row.grid_run_id), "seeds": list(row.seeds),
            })
    return out


# -- the plot --------------------------------------------------------------------------------


def _generation_plot(section: GenSection) -> GroupedBars:
    """Bars of the mean FID per variant (table order, lowest first) with its 95% CI; the axis
    starts at 0."""
    rows = [row for row in section.rows if row.fid]
    title = (f"{section.dataset} / {section.arch}: FID (lower is better), mean and 95% CI over "
             f"seeds")
    return GroupedBars(title, "FID in zoo's classifier features; no error bar with one seed",
                       [row.label for row in rows], ["FID"],
                       [{"FID": (board_stats.mean(row.fid), row.fid_ci95)} for row in rows],
                       from_zero=True)
