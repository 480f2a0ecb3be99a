"""`quant-<dataset>-<arch>.md`: what each quantization format costs a trained model.

One section per training protocol. Within it, for every (activation, init) with quantized
results: the float model's row, then one row per format evaluated after training (PTQ, from
`zoo eval --quant` / `zoo quant-sweep`) and per format trained with (QAT, `zoo train --qat`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

from zoo.harness.leaderboard import (DASH, GENERATED_NOTE, _cell, _churn, _group, _metric_values,
                                     _protocol_block, _variant, format_mean, format_mean_std,
                                     format_percent, leaderboard_filename)
from zoo.harness.results import RunRecord, is_ptq

QUANT_NOTE = (
    "PTQ rows quantize each seed's trained float model and evaluate it on the test split in the "
    "same process as the float model; the difference to float is averaged over those pairs. "
    "QAT rows are runs trained with the format in their forward pass (straight-through "
    "gradients); their difference is against the mean of the float runs. Every nn.Linear and "
    "nn.Conv2d is quantized (first and last layers included) unless the quant's parameters say "
    "otherwise; embeddings, norms and biases stay float32. Bits per weight count the codes, "
    "scales and zero points of the quantized layers' weights; model size is the quantized "
    "weights at their storage size plus every other stored tensor (float32). Mean ± sample std "
    "(n − 1) over seeds."
)


def quant_boards(runs: Iterable[RunRecord], predictions: Mapping[str, list[int]]) -> dict[str, str]:
    """{file name: markdown} for every (dataset, arch) with PTQ or QAT results."""
    runs = [run for run in runs if run.status == "completed"]
    boards = _group(runs, lambda run: (run.dataset, run.arch))
    pages = {}
    for (dataset, arch), board_runs in sorted(boards.items()):
        if any(_mode(run) != "float" for run in board_runs):
            pages["quant-" + leaderboard_filename(dataset, arch)] = quant_markdown(
                dataset, arch, board_runs, predictions)
    return pages


def quant_markdown(dataset: str, arch: str, runs: list[RunRecord],
                   predictions: Mapping[str, list[int]]) -> str:
    lines = [f"# Quantization: {dataset} / {arch}", "", GENERATED_NOTE, "", QUANT_NOTE]
    for pid, protocol_runs in sorted(_group(runs, lambda run: run.protocol_id).items()):
        if any(_mode(run) != "float" for run in protocol_runs):
            lines += ["", *_section(dataset, pid, protocol_runs, predictions)]
    return "\n".join(lines) + "\n"


def _signed(text: str) -> str:
    """'+0.12 ± 0.21' / '-0.12 ± 0.21'; a mean that rounds to zero is '+0.00', never '-0.00'."""
    if text.startswith(DASH):
        return text
    mean, _, rest = text.partition(" ")
    if float(mean) == 0:
        mean = mean.lstrip("-")
    return f"{mean if mean.startswith('-') else '+' + mean} {rest}"


def _mode(run: RunRecord) -> str:
    if is_ptq(run):
        return "PTQ"
    return "QAT" if (run.config.get("config") or {}).get("qat") else "float"


def _section(dataset: str, pid: str, runs: list[RunRecord],
             predictions: Mapping[str, list[int]]) -> list[str]:
    cells = _group(runs, lambda run: _variant(run)[:2])  # (act, init) -> runs
    # only the (act, init) pairs that were quantized: their float runs are the baselines
    runs = sorted((run for cell in cells.values() if any(_mode(r) != "float" for r in cell)
                   for run in cell), key=lambda run: run.run_id)
    language = any("test_bpb" in run.metrics for run in runs)
    metric, unit, delta_unit, scale, digits = (
        ("test_bpb", "test bpb", "Δ bpb", 1.0, 4) if language else
        ("test_acc", "test acc (%)", "Δ acc (pp)", 100.0, 2))
    lines = [f"## Protocol `{pid}`", ""]
    lines += _protocol_block(dataset, runs, runs)
    calibrations = sorted({run.config.get("calibration") for run in runs if is_ptq(run)} - {None})
    if calibrations:
        lines.append(f"- **PTQ calibration:** {'; '.join(calibrations)}")
    lines += ["", f"| act | init | quant | mode | {unit} | {delta_unit} | churn (%) | bits / weight "
                  f"| model size (KiB) | n seeds |",
              "|:---|:---|:---|:---|---:|---:|---:|---:|---:|---:|"]
    for (act, init), cell_runs in sorted(_group(runs, lambda run: _variant(run)[:2]).items()):
        floats = [run for run in cell_runs if _mode(run) == "float" and run.quant == "none"]
        float_mean = statistics.mean(_metric_values(floats, metric)) if floats else None
        rows = []
        for (quant, mode), group in _group(cell_runs, lambda r: (_variant(r)[2], _mode(r))).items():
            values = _metric_values(group, metric)
            if mode == "PTQ":
                delta = [run.metrics[metric] - run.metrics[f"float_{metric}"] for run in group
                         if f"float_{metric}" in run.metrics]
                delta_text = _signed(format_mean_std(delta, scale=scale, digits=digits))
            elif mode == "QAT" and float_mean is not None and values:
                delta_text = f"{(statistics.mean(values) - float_mean) * scale:+.{digits}f}"
            else:
                delta_text = DASH
            if mode == "float":  # float32; the size PTQ measured includes buffers (BatchNorm's)
                measured = _metric_values(cell_runs, "float_bytes")
                bits = [32.0]
                size = [b / 1024 for b in measured] if measured else \
                    [4 * p / 1024 for p in _metric_values(group, "params")]
            else:
                bits = _metric_values(group, "bits_per_weight")
                size = [b / 1024 for b in _metric_values(group, "model_bytes")]
            row = [_cell(act), _cell(init), _cell(quant), mode,
                   format_mean_std(values, scale=scale, digits=digits), delta_text,
                   format_percent(_churn(group, predictions)),
                   format_mean(bits, digits=3), format_mean(size, digits=1), str(len(group))]
            best = statistics.mean(values) if values else float("inf")
            order = ({"float": 0, "PTQ": 1, "QAT": 2}[mode], best if language else -best, quant)
            rows.append((order, "| " + " | ".join(row) + " |"))
        lines += [row for _, row in sorted(rows)]
    return lines

