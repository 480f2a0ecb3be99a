"""`quant-<dataset>-<arch>.md`: what each quantization format costs a trained model.

One section per training protocol. Within it, for every (activation, init) with quantized
results: the float model's row, then one row per format evaluated after training (PTQ, from
`zoo eval --quant` / `zoo quant-sweep`) and per format trained with (QAT, `zoo train --qat`).
The rows are computed once (`quant_rows`); the markdown here, the CSV and JSON beside it
(`board_files`) and the plot of each section (`board_plots`) are all drawn from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from zoo.harness.board_files import (QUANT_COLUMNS, files_line, quant_records,
                                     text_files)
from zoo.harness.leaderboard import (DASH, GENERATED_NOTE, _cell, _group, _protocol_block,
                                     board_stem, format_mean, format_mean_std)
from zoo.harness.quant_rows import QuantRow, QuantSection, quant_sections
from zoo.harness.results import RunRecord

if TYPE_CHECKING:
    from zoo.harness.board_plots import Plot

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


def quant_files(runs: Iterable[RunRecord], predictions: Mapping[str, list[int]]
                ) -> tuple[dict[str, str], dict[str, Plot]]:
    """({file name: text}, {plot file name: plot}) for every (dataset, arch) with PTQ or QAT
    results: `quant-<dataset>-<arch>.md`, its `.csv` and `.json`, and one plot per protocol in
    `quant-<dataset>-<arch>/`, all drawn from the same `quant_rows` sections."""
    from zoo.harness.board_plots import write_quant_png

    runs = [run for run in runs if run.status == "completed"]
    pages: dict[str, str] = {}
    plots: dict[str, Plot] = {}
    boards = _group(runs, lambda run: (run.dataset, run.arch))
    for (dataset, arch), board_runs in sorted(boards.items()):
        sections = quant_sections(dataset, arch, board_runs, predictions)
        if not sections:
            continue
        pages.update(text_files(quant_stem(dataset, arch), quant_markdown(dataset, arch, sections),
                                quant_records(sections), QUANT_COLUMNS))
        plots.update({plot_name(section): (write_quant_png, section) for section in sections})
    return pages, plots


def quant_boards(runs: Iterable[RunRecord], predictions: Mapping[str, list[int]]) -> dict[str, str]:
    """{file name: text} of every quant board and its CSV and JSON (the plots aside)."""
    return quant_files(runs, predictions)[0]


def quant_stem(dataset: str, arch: str) -> str:
    """`quant-<dataset>-<arch>`: the board's name without `.md`, shared by its CSV, JSON and
    plot folder."""
    return "quant-" + board_stem(dataset, arch)


def plot_name(section: QuantSection) -> str:
    """`quant-<dataset>-<arch>/<protocol id>.png`, relative to the leaderboard folder."""
    return f"{quant_stem(section.dataset, section.arch)}/{section.pid}.png"


def quant_markdown(dataset: str, arch: str, sections: list[QuantSection]) -> str:
    lines = [f"# Quantization: {dataset} / {arch}", "", GENERATED_NOTE, "", QUANT_NOTE, "",
             files_line(quant_stem(dataset, arch))]
    for section in sections:
        lines += ["", *_section(section)]
    return "\n".join(lines) + "\n"


def _signed(text: str) -> str:
    """'+0.12 ± 0.21' / '-0.12 ± 0.21'; a mean that rounds to zero is '+0.00', never '-0.00'."""
    if text.startswith(DASH):
        return text
    mean, _, rest = text.partition(" ")
    if float(mean) == 0:
        mean = mean.lstrip("-")
    return f"{mean if mean.startswith('-') else '+' + mean} {rest}"


def _section(section: QuantSection) -> list[str]:
    unit, delta_unit = (("test bpb", "Δ bpb") if section.language else
                        ("test acc (%)", "Δ acc (pp)"))
    runs = list(section.runs)
    lines = [f"## Protocol `{section.pid}`", ""]
    lines += _protocol_block(section.dataset, runs, runs)
    if section.calibrations:
        lines.append(f"- **PTQ calibration:** {'; '.join(section.calibrations)}")
    lines += ["", f"| act | init | quant | mode | {unit} | {delta_unit} | churn (%) | bits / weight "
                  f"| model size (KiB) | n seeds |",
              "|:---|:---|:---|:---|---:|---:|---:|---:|---:|---:|"]
    lines += [_table_row(row, section.digits) for row in section.rows]
    alt = (f"{section.dataset} / {section.arch}, protocol {section.pid}: mean difference to "
           f"float per format")
    lines += ["", f"![{alt}]({plot_name(section)})"]
    return lines


def _table_row(row: QuantRow, digits: int) -> str:
    if row.mode == "PTQ":
        delta = _signed(format_mean_std(row.deltas, scale=1.0, digits=digits))
    elif row.mode == "QAT" and row.diff is not None:
        delta = f"{row.diff:+.{digits}f}"
    else:
        delta = DASH
    cells = [_cell(row.act), _cell(row.init), _cell(row.quant), row.mode,
             format_mean_std(row.values, scale=1.0, digits=digits), delta,
             DASH if row.churn is None else f"{row.churn:.2f}",
             format_mean(row.bits, digits=3), format_mean(row.size_kib, digits=1), str(row.n)]
    return "| " + " | ".join(cells) + " |"
