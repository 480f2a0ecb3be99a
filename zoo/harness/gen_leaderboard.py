"""`var-<dataset>.md`: image generators (var, and its raster-order baseline rar) per activation.

One section per (arch, training protocol). Each row: FID, precision and recall in the feature
space of zoo's classifier for the data set, class consistency, the test token loss, sampling
speed against the raster-order baseline of the same size (measured in the same process), and the
sample grid of the row's lowest seed. Grids are copied from the runs' `samples.png` into
`<leaderboards>/var-<dataset>/` when the run folders are at hand; the markdown only names them,
so it depends on the database alone.
"""

from __future__ import annotations

import re
import shutil
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo.harness.atomic import atomic_write
from zoo.harness.leaderboard import (DASH, GENERATED_NOTE, _cell, _group, _metric_values,
                                     _not_completed_block, _protocol_block, _variant,
                                     format_count, format_list, format_mean, format_mean_std)
from zoo.harness.results import RunRecord, is_ptq

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


def grid_name(dataset: str, run: RunRecord) -> str:
    """Where a run's sample grid goes, relative to the leaderboard folder."""
    return f"{board_name(dataset)[:-3]}/{run.run_id}.png"


def generation_boards(runs: Iterable[RunRecord]) -> tuple[dict[str, str], dict[str, Path]]:
    """({file name: markdown}, {grid file name: the run's samples.png}) for every data set with
    completed generator runs."""
    runs = [run for run in runs if is_generator(run) and run.status != "running"]
    pages, grids = {}, {}
    for dataset, board_runs in sorted(_group(runs, lambda run: run.dataset).items()):
        if not any(run.status == "completed" for run in board_runs):
            continue
        pages[board_name(dataset)] = generation_markdown(dataset, board_runs)
        for run in _grid_runs(board_runs):
            grids[grid_name(dataset, run)] = Path(run.run_dir) / "samples.png"
    return pages, grids


def generation_markdown(dataset: str, runs: list[RunRecord]) -> str:
    lines = [f"# {dataset} / image generation", "", GENERATED_NOTE, "", GEN_NOTE]
    sections = _group(runs, lambda run: (run.arch, run.protocol_id))
    for (arch, pid), section in sorted(sections.items()):
        lines += ["", *_section(dataset, arch, pid, sorted(section, key=lambda r: r.run_id))]
    return "\n".join(lines) + "\n"


def _section(dataset: str, arch: str, pid: str, runs: list[RunRecord]) -> list[str]:
    completed = [run for run in runs if run.status == "completed"]
    lines = [f"## {arch}, protocol `{pid}`", ""]
    lines += _protocol_block(dataset, runs, completed)
    lines += _dependencies_block(completed)
    lines.append("")
    if completed:
        rows = [_row(dataset, variant, group) for variant, group in
                _group(completed, _variant).items()]
        lines.append(TABLE_HEADER)
        lines += [row for _, row in sorted(rows)]
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


def _grid_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """The lowest seed of every (arch, protocol, variant): the run whose grid a row shows."""
    completed = [run for run in runs if run.status == "completed"]
    groups = _group(completed, lambda run: (run.arch, run.protocol_id, _variant(run)))
    return [min(group, key=lambda run: (run.seed, run.run_id)) for group in groups.values()]


def _row(dataset: str, variant: tuple[str, str, str], runs: list[RunRecord]) -> tuple[Any, str]:
    """(sort key, markdown row): lowest mean FID first."""
    fid = _metric_values(runs, "fid")
    grid = min(runs, key=lambda run: (run.seed, run.run_id))
    cells = [
        *(_cell(name) for name in variant),
        format_mean_std(fid, scale=1.0, digits=2),
        format_mean_std(_metric_values(runs, "precision"), scale=1.0, digits=3),
        format_mean_std(_metric_values(runs, "recall"), scale=1.0, digits=3),
        format_mean_std(_metric_values(runs, "class_consistency")),
        format_mean_std(_metric_values(runs, "test_loss"), scale=1.0, digits=4),
        str(len(runs)),
        format_count(_metric_values(runs, "params")),
        format_mean(_metric_values(runs, "images_per_s")),
        *_baseline_speed(runs),
        # HTML for a display width: digits' grids are 91 pixels wide
        f'<img src="{grid_name(dataset, grid)}" alt="{_cell(variant[0])} samples" width="240">',
    ]
    sort_key = (0, statistics.mean(fid), variant) if fid else (1, 0.0, variant)
    return sort_key, "| " + " | ".join(cells) + " |"


def _baseline_speed(runs: list[RunRecord]) -> list[str]:
    """Raster images/s and the speedup; — for the baseline itself (it was timed against
    itself)."""
    from zoo.harness.gen_task import BASELINE_ARCH

    speedup = _metric_values(runs, "speedup_vs_raster")
    if runs[0].arch == BASELINE_ARCH or not speedup:
        return [DASH, DASH]
    return [format_mean(_metric_values(runs, "raster_images_per_s")),
            format_mean(speedup, digits=2) + "×"]


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
