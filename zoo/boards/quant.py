"""`quant-<dataset>-<arch>.md`: what each quantization format costs a trained model.

One `QuantSection` per training protocol with quantized results. Within it, for every (act,
init) that was quantized, one `QuantRow` per (quant, mode): the float model's row, then one row
per format evaluated after training (PTQ, from `zoo eval --quant` / `zoo quant-sweep`) and per
format trained with (QAT, `zoo train --qat`). The markdown table, the CSV and JSON beside it and
the plot of each section are all drawn from these objects, so they cannot disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
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
from zoo.boards.formatting import DASH, format_mean, format_mean_std
from zoo.boards.markdown import GENERATED_NOTE, cell_text, protocol_block
from zoo.boards.plots import Bar, GroupedBars, Plot, write_grouped_png
from zoo.boards.quant_scope import quant_scope
from zoo.runs.results import RunRecord, is_ptq

MODES = ("float", "PTQ", "QAT")  # the order of a pair's rows
QUANT_NOTE = (
    "PTQ rows quantize each seed's trained float model and evaluate it on the test split in the "
    "same process as the float model; the difference to float is averaged over those pairs. "
    "QAT rows are runs trained with the format in their forward pass (straight-through "
    "gradients); their difference is against the mean of the float runs. Every nn.Linear and "
    "nn.Conv2d is quantized unless the quant's parameters say otherwise (`skip`, `override`); "
    "embeddings, norms and biases stay float32, and so does an output layer that is neither, "
    "such as a head tied to the token embedding. Each section's **Quantized layers** line says "
    "what that is for its architecture, read from the model: how many layers, the first and the "
    "last, and whether the output layer is one of them. Bits per weight count the codes, scales "
    "and zero points of the quantized layers' weights; model size is the quantized weights at "
    "their storage size plus every other stored tensor (float32). Mean ± sample std (n − 1) over "
    "seeds. The 95% CI of a PTQ difference (in the plot, the CSV and the JSON) is "
    f"{board_stats.interval_method()}, over the per-seed pairs."
)
SCOPE_UNKNOWN = ("not known here: the architecture cannot be built in this process (a plugin "
                 "that is not loaded?)")

QUANT_COLUMNS = (*SECTION_KEYS, "act", "init", "quant", "mode", "metric", "n", "mean", "std",
                 "diff_vs_float", "diff_std", "diff_ci95_low", "diff_ci95_high", "pairs", "churn",
                 "bits_per_weight", "model_size_kib", "seeds")


@dataclass(frozen=True)
class QuantRow:
    act: str
    init: str
    quant: str  # with its parameters
    mode: str  # one of MODES
    seeds: tuple[int, ...]
    values: tuple[float, ...]  # the metric per run, in display units (% or bpb)
    # PTQ: each run's metric minus its own float model's, measured in the same process (paired)
    deltas: tuple[float, ...]
    diff: float | None  # mean difference to float: of `deltas` (PTQ), to the float mean (QAT)
    churn: float | None  # in %
    bits: tuple[float, ...]  # bits per weight per run (32 for float)
    size_kib: tuple[float, ...]  # model size per run

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def label(self) -> str:
        return f"{self.act} / {self.init}"

    @property
    def paired(self) -> bool:
        """Whether the difference to float has one value per seed (PTQ) rather than being a
        difference of means (QAT)."""
        return self.mode == "PTQ"


@dataclass(frozen=True)
class QuantSection:
    dataset: str
    arch: str
    pid: str
    name: str | None  # the named protocol (quick, full, smoke) this hash is, if any
    language: bool
    rows: tuple[QuantRow, ...]  # in table order: by (act, init), then float, PTQ, QAT
    runs: tuple[RunRecord, ...]  # the runs of the quantized (act, init) pairs, by run id
    calibrations: tuple[str, ...]
    scope: str  # which layers the formats quantize in this architecture (quant_scope)

    @property
    def metric(self) -> str:
        return "test_bpb" if self.language else "test_acc_percent"

    @property
    def digits(self) -> int:
        return 4 if self.language else 2


def mode(run: RunRecord) -> str:
    """How the run's model meets its quant: "PTQ" (quantized after training), "QAT" (trained
    with it) or "float"."""
    if is_ptq(run):
        return "PTQ"
    return "QAT" if (run.config.get("config") or {}).get("qat") else "float"


def quant_sections(dataset: str, arch: str, runs: list[RunRecord],
                   predictions: Mapping[str, list[int]]) -> list[QuantSection]:
    """One section per protocol of the completed runs of (dataset, arch) with quantized
    results, by protocol id."""
    by_protocol = records.group(runs, lambda run: run.protocol_id)
    return [_build_section(dataset, arch, pid, protocol_runs, predictions)
            for pid, protocol_runs in sorted(by_protocol.items())
            if any(mode(run) != "float" for run in protocol_runs)]


def _build_section(dataset: str, arch: str, pid: str, runs: list[RunRecord],
                   predictions: Mapping[str, list[int]]) -> QuantSection:
    def act_init(run: RunRecord) -> tuple[str, str]:
        return records.variant(run)[:2]

    cells = records.group(runs, act_init)  # (act, init) -> runs
    # only the (act, init) pairs that were quantized: their float runs are the baselines
    runs = sorted((run for cell in cells.values() if any(mode(r) != "float" for r in cell)
                   for run in cell), key=lambda run: run.run_id)
    language = records.is_language_model(runs)
    rows = []
    for (act, init), cell_runs in sorted(records.group(runs, act_init).items()):
        rows += _cell_rows(act, init, cell_runs, language, predictions)
    calibrations = sorted({run.config.get("calibration") for run in runs if is_ptq(run)} - {None})
    scope = quant_scope(arch, arch_params(runs[0]))  # one protocol, so one shape
    return QuantSection(dataset, arch, pid, records.protocol_name(runs), language,
                        tuple(rows), tuple(runs), tuple(calibrations),
                        scope.describe() if scope is not None else SCOPE_UNKNOWN)


def arch_params(run: RunRecord) -> dict[str, Any]:
    """The arch's size options the run was built with: its protocol's (older runs: its
    config's)."""
    stored = run.protocol.get("arch_params")
    if stored is None:
        stored = (run.config.get("config") or {}).get("arch_params")
    return dict(stored or {})


def _cell_rows(act: str, init: str, runs: list[RunRecord], language: bool,
               predictions: Mapping[str, list[int]]) -> list[QuantRow]:
    """The rows of one (act, init): float first, then PTQ and QAT, each best first."""
    metric, scale = ("test_bpb", 1.0) if language else ("test_acc", 100.0)
    floats = [run for run in runs if mode(run) == "float" and run.quant == "none"]
    float_mean = statistics.mean(records.metric_values(floats, metric)) if floats else None
    keyed = []
    by_format = records.group(runs, lambda r: (records.variant(r)[2], mode(r)))
    for (quant, kind), group in by_format.items():
        group = sorted(group, key=lambda run: (run.seed, run.run_id))
        values = records.metric_values(group, metric)
        deltas: list[float] = []
        diff = None
        if kind == "PTQ":
            pairs = [(records.metric(run, metric), records.metric(run, f"float_{metric}"))
                     for run in group]
            deltas = [(q - f) * scale for q, f in pairs if q is not None and f is not None]
            diff = board_stats.mean(deltas)
        elif kind == "QAT" and float_mean is not None and values:
            diff = (statistics.mean(values) - float_mean) * scale
        if kind == "float":  # float32; the size PTQ measured includes buffers (BatchNorm's)
            measured = records.metric_values(runs, "float_bytes")
            bits = [32.0]
            size = [b / 1024 for b in measured] if measured else \
                [4 * p / 1024 for p in records.metric_values(group, "params")]
        else:
            bits = records.metric_values(group, "bits_per_weight")
            size = [b / 1024 for b in records.metric_values(group, "model_bytes")]
        churn = records.churn(group, predictions)
        row = QuantRow(act=act, init=init, quant=quant, mode=kind,
                       seeds=tuple(run.seed for run in group),
                       values=tuple(v * scale for v in values), deltas=tuple(deltas), diff=diff,
                       churn=None if churn is None else 100 * churn, bits=tuple(bits),
                       size_kib=tuple(size))
        best = statistics.mean(values) if values else float("inf")
        keyed.append(((MODES.index(kind), best if language else -best, quant), row))
    return [row for _, row in sorted(keyed, key=lambda item: item[0])]


# -- the board's files and markdown ----------------------------------------------------------


def quant_files(runs: Iterable[RunRecord], predictions: Mapping[str, list[int]]
                ) -> tuple[dict[str, str], dict[str, Plot]]:
    """({file name: text}, {plot file name: plot}) for every (dataset, arch) with PTQ or QAT
    results: `quant-<dataset>-<arch>.md`, its `.csv` and `.json`, and one plot per protocol in
    `quant-<dataset>-<arch>/`, all drawn from the same sections."""
    runs = [run for run in runs if run.status == "completed"]
    pages: dict[str, str] = {}
    plots: dict[str, Plot] = {}
    boards = records.group(runs, lambda run: (run.dataset, run.arch))
    for (dataset, arch), board_runs in sorted(boards.items()):
        sections = quant_sections(dataset, arch, board_runs, predictions)
        if not sections:
            continue
        pages.update(text_files(quant_stem(dataset, arch), quant_markdown(dataset, arch, sections),
                                quant_records(sections), QUANT_COLUMNS))
        plots.update({plot_name(section): (write_grouped_png, _quant_plot(section))
                      for section in sections})
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
    return (f"{quant_stem(section.dataset, section.arch)}/"
            f"{stored_part(section.pid, 'protocol id')}.png")


def quant_markdown(dataset: str, arch: str, sections: list[QuantSection]) -> str:
    lines = [f"# Quantization: {dataset} / {arch}", "", GENERATED_NOTE, "", QUANT_NOTE, "",
             files_line(quant_stem(dataset, arch))]
    for section in sections:
        lines += ["", *_section_lines(section)]
    return "\n".join(lines) + "\n"


def signed_interval(text: str) -> str:
    """A difference "mean ± half-width" with its sign: '+0.12 ± 0.21' / '-0.12 ± 0.21'; a mean that rounds to zero is '+0.00', never '-0.00'."""
    if text.startswith(DASH):
        return text
    mean, _, rest = text.partition(" ")
    if float(mean) == 0:
        mean = mean.lstrip("-")
    return f"{mean if mean.startswith('-') else '+' + mean} {rest}"


def _section_lines(section: QuantSection) -> list[str]:
    unit, delta_unit = (("test bpb", "Δ bpb") if section.language else
                        ("test acc (%)", "Δ acc (pp)"))
    runs = list(section.runs)
    lines = [f"## Protocol `{section.pid}`", ""]
    lines += protocol_block(section.dataset, runs, runs)
    lines.append(f"- **Quantized layers:** {section.scope}")
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
        delta = signed_interval(format_mean_std(row.deltas, scale=1.0, digits=digits))
    elif row.mode == "QAT" and row.diff is not None:
        delta = f"{row.diff:+.{digits}f}"
    else:
        delta = DASH
    cells = [cell_text(row.act), cell_text(row.init), cell_text(row.quant), row.mode,
             format_mean_std(row.values, scale=1.0, digits=digits), delta,
             DASH if row.churn is None else f"{row.churn:.2f}",
             format_mean(row.bits, digits=3), format_mean(row.size_kib, digits=1), str(row.n)]
    return "| " + " | ".join(cells) + " |"


# -- CSV and JSON ----------------------------------------------------------------------------


def quant_records(sections: Sequence[QuantSection]) -> list[dict[str, Any]]:
    """One dict per row of the quant board's tables, in table order. The difference to float
    and its spread are in the metric's units; PTQ's are over the per-seed pairs (`pairs`), QAT's
    is against the float mean and has no spread."""
    out = []
    for section in sections:
        for row in section.rows:
            deltas = row.deltas if row.paired else None
            out.append({
                **section_keys(section), "act": row.act, "init": row.init, "quant": row.quant,
                "mode": row.mode, "metric": section.metric, "n": row.n,
                "mean": board_stats.mean(row.values), "std": board_stats.std(row.values),
                "diff_vs_float": row.diff,
                "diff_std": board_stats.std(deltas) if deltas is not None else None,
                **interval_fields("diff_ci95",
                                  board_stats.ci95(deltas) if deltas is not None else None),
                "pairs": len(deltas) if deltas is not None else None, "churn": row.churn,
                "bits_per_weight": board_stats.mean(row.bits),
                "model_size_kib": board_stats.mean(row.size_kib), "seeds": list(row.seeds),
            })
    return out


# -- the plot --------------------------------------------------------------------------------


def _quant_plot(section: QuantSection) -> GroupedBars:
    """Bars of the mean difference to float per format (PTQ formats, then QAT), one colour per
    (act, init); formats ordered by their mean difference over the pairs, best first."""
    series = list(dict.fromkeys(row.label for row in section.rows))
    formats: dict[str, dict[str, Bar]] = {}
    for row in section.rows:
        if row.diff is None:
            continue  # the float rows are the zero line
        if row.paired:
            error = board_stats.ci95(row.deltas)
        else:
            spread = board_stats.std(row.values)
            error = None if spread is None else (row.diff - spread, row.diff + spread)
        formats.setdefault(f"{row.quant} ({row.mode})", {})[row.label] = (row.diff, error)
    better = -1.0 if section.language else 1.0  # lower bpb is better, higher accuracy

    def rank(name: str) -> tuple:
        mean = board_stats.mean([v for v, _ in formats[name].values()])
        return (name.endswith("(QAT)"), -better * mean, name)

    ranked = sorted(formats, key=rank)
    unit = "Δ test bpb (lower is better)" if section.language else "Δ test accuracy (pp)"
    title = (f"{section.dataset} / {section.arch}: {unit} against the float model (the line at "
             f"0), mean per format")
    note = ("error bars: PTQ, 95% CI over the per-seed pairs (quantized minus its own float "
            "model);\nQAT, ± sample std of its seeds (its difference is to the float mean); "
            "none with one seed")
    return GroupedBars(title, f"{unit}; {note}", ranked, series,
                       [formats[name] for name in ranked], zero_line=True)
