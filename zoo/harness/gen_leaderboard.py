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
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.harness.atomic import atomic_write
from zoo.harness.board_files import GEN_COLUMNS, files_line, gen_records, text_files
from zoo.harness.gen_rows import GenRow, GenSection, gen_sections
from zoo.harness.leaderboard import (DASH, GENERATED_NOTE, _cell, _group, _not_completed_block,
                                     _protocol_block, format_count, format_list,
                                     format_mean, format_mean_std)
from zoo.harness.results import RunRecord, is_ptq

if TYPE_CHECKING:
    from zoo.harness.board_plots import Plot

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
    "completed runs are averaged. The grid is the lowest seed's (column j: class j)."
)
TABLE_HEADER = (
    "| act | init | quant | FID ↓ | precision | recall | class consistency (%) "
    "| test token loss | n seeds | params | images/s | raster images/s | speedup | samples |\n"
    "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
)


def is_generator(run: RunRecord) -> bool:
    """A generator's own run (its post-training-quantized evaluations are not board rows)."""
    return not is_ptq(run) and ("gen_protocol" in run.metrics or "dependencies" in run.config)


def board_name(dataset: str) -> str:
    """`var-<dataset>.md`, with characters unsafe in file names replaced by `_`."""
    return "var-" + re.sub(r"[^A-Za-z0-9._-]+", "_", dataset) + ".md"


def board_stem(dataset: str) -> str:
    """`var-<dataset>`: the board's name without `.md`, shared by its CSV, JSON and the folder of
    its plots and sample grids."""
    return board_name(dataset)[:-3]


def grid_name(dataset: str, run_id: str) -> str:
    """Where a run's sample grid goes, relative to the leaderboard folder."""
    return f"{board_stem(dataset)}/{run_id}.png"


def plot_name(section: GenSection) -> str:
    """`var-<dataset>/<arch>-<protocol id>.png`; never a grid's name (run ids end in a seed and
    a hash)."""
    return f"{board_stem(section.dataset)}/{section.arch}-{section.pid}.png"


def generation_boards(runs: Iterable[RunRecord]
                      ) -> tuple[dict[str, str], dict[str, Path], dict[str, Plot]]:
    """({file name: text}, {grid file name: the run's samples.png}, {plot file name: plot}) for
    every data set with completed generator runs: `var-<dataset>.md`, its `.csv` and `.json`,
    and one plot per section, all drawn from the same `gen_rows` sections."""
    from zoo.harness.board_plots import write_generation_png

    runs = [run for run in runs if is_generator(run) and run.status != "running"]
    pages: dict[str, str] = {}
    grids: dict[str, Path] = {}
    plots: dict[str, Plot] = {}
    for dataset, board_runs in sorted(_group(runs, lambda run: run.dataset).items()):
        if not any(run.status == "completed" for run in board_runs):
            continue
        sections = gen_sections(dataset, board_runs)
        pages.update(text_files(board_stem(dataset), generation_markdown(dataset, sections),
                                gen_records(sections), GEN_COLUMNS))
        plots.update({plot_name(section): (write_generation_png, section)
                      for section in sections if section.rows})
        by_id = {run.run_id: run for run in board_runs}
        for row in (row for section in sections for row in section.rows):
            grids[grid_name(dataset, row.grid_run_id)] = \
                Path(by_id[row.grid_run_id].run_dir) / "samples.png"
    return pages, grids, plots


def generation_markdown(dataset: str, sections: list[GenSection]) -> str:
    lines = [f"# {dataset} / image generation", "", GENERATED_NOTE, "", GEN_NOTE, "",
             files_line(board_stem(dataset))]
    for section in sections:
        lines += ["", *_section(section)]
    return "\n".join(lines) + "\n"


def _section(section: GenSection) -> list[str]:
    runs, completed = list(section.runs), section.completed
    lines = [f"## {section.arch}, protocol `{section.pid}`", ""]
    lines += _protocol_block(section.dataset, runs, completed)
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
    lines += _not_completed_block(runs)
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
        *(_cell(name) for name in row.variant),
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
        f'<img src="{grid_name(dataset, row.grid_run_id)}" alt="{_cell(row.variant[0])} samples" '
        f'width="240">',
    ]
    return "| " + " | ".join(cells) + " |"


def copy_grids(grids: dict[str, Path], out_dir: Path) -> list[str]:
    """Copy each run's samples.png beside the boards; returns the names of grids that are
    neither at hand nor already there (a board naming them would show a broken image)."""
    missing = []
    for name, source in sorted(grids.items()):
        target = Path(out_dir) / name
        if source.is_file():
            atomic_write(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
        elif not target.is_file():
            missing.append(name)
    return missing
