"""The classification and language-model leaderboards: `<dataset>-<arch>.md`, one per (data
set, arch) with completed runs, with its rows as CSV and JSON and one plot per section.

One `Section` per protocol (runs trained under different hyperparameters are never compared in
one table); one `Row` per variant (act, init, quant with their parameters, and whether `zoo
submit` added it) with its statistics over seeds against the protocol's baseline. The markdown
table, the CSV/JSON files and the plot are all drawn from these objects, so they cannot disagree.

Metrics read from the run records: `test_acc` (fraction 0..1) or, for language models,
`test_bpb`, `val_bpb` and `test_ppl`; `params`, `train_time_s`, `samples_per_s`, and `curve`
(per-epoch validation metrics, for the plots); config["labels"]["submitted"], set by `zoo
submit`, tags the row.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from zoo.boards import records
from zoo.boards import stats as board_stats
from zoo.boards.files import (
    SECTION_KEYS,
    board_stem,
    csv_text,
    files_line,
    interval_fields,
    json_text,
    param_count,
    section_keys,
    stored_part,
)
from zoo.boards.formatting import (
    DASH,
    format_count,
    format_interval,
    format_mean_std,
    format_number,
    format_p,
    format_signed,
)
from zoo.boards.markdown import (
    GENERATED_NOTE,
    cell_text,
    not_completed_block,
    protocol_block,
    protocol_label,
)
from zoo.boards.plots import Curve, MeanBar, Plot, RankingPlot, write_ranking_png
from zoo.errors import ZooError
from zoo.registry import ACTS
from zoo.runs.lr_tuning import lr_scale, picks_from_runs
from zoo.runs.protocols import BASELINE, PROTOCOLS
from zoo.runs.results import RunRecord
from zoo.runs.stamps import stamped

# After the interval's sentence (`stats_note`): what Δ and p mean, on every kind of section.
STATS_NOTE = (
    "† marks rows with fewer than three seeds. Δ: the row's mean minus the mean of the "
    "section's baseline row; p: two-sided Welch t-test (unequal variances) of the row's seeds "
    "against the baseline's; — where either side has fewer than two seeds or both have zero "
    "variance. The p-values are per row and not corrected for multiple comparisons: with k rows, "
    "about 0.05·k of them fall below 0.05 by chance when nothing differs (the CSV and JSON add "
    "`p_holm`, Holm–Bonferroni-adjusted over the section's rows); with a handful of seeds, read "
    "p as a guide, not a verdict. A section of a named protocol (quick, full, smoke) whose "
    "standard grid (`zoo submit`: every registered activation with the baseline's init and "
    "quantization, on the protocol's seeds) covers this data set and arch lists what of that "
    "grid is missing. Each section's plot shows the means with their intervals and, for runs "
    "that stored learning curves, the validation curves."
)


def stats_note(bounds: tuple[float, float] | None) -> str:
    """What the interval, Δ and p of a section mean; `bounds` is the metric's range, if any."""
    return f"95% CI: {board_stats.interval_method(bounds)}. {STATS_NOTE}"


READING_NOTE = (
    "Test accuracy in %: mean ± sample standard deviation (n − 1) over seeds; Δ in percentage "
    f"points. {stats_note(board_stats.PERCENT)} Churn in %: the fraction of test examples two "
    "seeds of the same variant classify differently, averaged over all pairs of seeds (\"Smooth "
    "activations and reproducibility in deep networks\"); — where fewer than two seeds stored "
    "their predictions. Train time and throughput are means over seeds. Only completed runs are "
    "averaged."
)
LM_READING_NOTE = (
    "Language models. Bits per byte (bpb): the mean next-token loss in bits, times tokens, over "
    "the UTF-8 bytes of the split — comparable across tokenizers, unlike perplexity (per token, "
    "shown for the test split). Mean ± sample standard deviation (n − 1) over seeds, lower is "
    "better; rows are ranked by validation bpb, the interval, Δ (in bpb, negative is better) "
    f"and p are of test bpb. {stats_note(None)} Throughput is in tokens per second. Only "
    "completed runs are averaged."
)
LM_TABLE_HEADER = (
    "| act | init | quant | val bpb | test bpb | 95% CI | Δ vs baseline (bpb) | p (Welch) "
    "| test perplexity | n seeds | params | train time (s) | throughput (tokens/s) |\n"
    "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
TABLE_HEADER = (
    "| act | init | quant | test acc (%) | 95% CI | Δ vs baseline (pp) | p (Welch) | churn (%) "
    "| n seeds | params | train time (s) | throughput (samples/s) |\n"
    "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
TRUSTED_SEEDS = 3  # rows with fewer seeds get FEW_SEEDS after their interval
FEW_SEEDS = "†"
FEW_SEEDS_NOTE = (f"{FEW_SEEDS} fewer than {TRUSTED_SEEDS} seeds: too few for a trustworthy "
                  "interval.")

COLUMNS = (*SECTION_KEYS, "act", "init", "quant", "submitted", "baseline", "companion_init",
           "lr_tuned", "metric", "n", "mean", "std", "ci95_low", "ci95_high", "diff_vs_baseline",
           "p_value", "p_holm", "churn", "params", "throughput", "train_time_s", "seeds")
LM_COLUMNS = ("val_bpb", "test_ppl")  # language models are ranked by validation bpb
CURVES_SHOWN = 4  # with many variants: the baseline, the best and the worst few by mean


@dataclass(frozen=True)
class Row:
    variant: tuple[str, str, str]  # (act, init, quant), each with its parameters
    submitted: bool
    seeds: tuple[int, ...]
    values: tuple[float, ...]  # the section's metric per seed, in display units (% or bpb)
    mean: float | None
    std: float | None
    ci95: tuple[float, float] | None
    diff: float | None  # mean minus the baseline row's mean
    p_value: float | None  # Welch's t-test against the baseline row
    is_baseline: bool
    churn: float | None  # in %
    params: tuple[float, ...]
    throughput: float | None  # samples/s (tokens/s for language models)
    train_time_s: float | None
    val_bpb: tuple[float, ...]  # language models only: the ranking metric and perplexity
    test_ppl: tuple[float, ...]
    curve: tuple[tuple[int, float], ...]  # (epoch, validation metric), mean over seeds
    lr_pick: float | None = None  # the lr multiple this row trained at, when it is a tuned pick
    companion: bool = False  # the init is the one the activation's paper pairs it with

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class Section:
    dataset: str
    arch: str
    pid: str
    name: str | None  # the named protocol (quick, full, smoke) this hash is, if any
    language: bool
    baseline: tuple[str, str, str]
    rows: tuple[Row, ...]  # in table order
    runs: tuple[RunRecord, ...]  # every finished run of the section, by run id
    missing: tuple[str, ...] | None  # standard-grid gaps; None when not a standard grid
    # lr tuning: (act / init / quant, picked multiple, ((multiple, first seed's validation
    # score in display units or None if it diverged), ...)) per tuned variant
    lr_tuning: tuple[tuple[str, float | None, tuple[tuple[float, float | None], ...]], ...] = ()

    @property
    def baseline_row(self) -> Row | None:
        return next((row for row in self.rows if row.is_baseline), None)

    @property
    def metric(self) -> str:
        return "test_bpb" if self.language else "test_acc_percent"


def is_submitted(run: RunRecord) -> bool:
    """Added by `zoo submit`, which labels the run with the submitted file and its hash."""
    return bool((run.config.get("labels") or {}).get("submitted"))


def is_companion(run: RunRecord) -> bool:
    """Whether the run's init is its activation's companion (`zoo info ACT`)."""
    return run.act in ACTS and ACTS.get(run.act).extra.get("companion_init") == run.init


def build_section(dataset: str, arch: str, pid: str, runs: list[RunRecord],
                  predictions: Mapping[str, list[int]],
                  standard_acts: Sequence[str] | None = None) -> Section:
    """The section of one protocol's finished runs of (dataset, arch), against the protocol's
    baseline (zoo's for an unnamed protocol)."""
    runs = sorted(runs, key=lambda run: run.run_id)
    name = records.protocol_name(runs)
    protocol = PROTOCOLS.get(name) if name else None
    base = protocol.baseline if protocol else BASELINE
    baseline = (base["act"], base["init"], base["quant"])
    language = records.is_language_model(runs)
    completed = [run for run in runs if run.status == "completed"]
    first_seed = protocol.seeds[0] if protocol else 0
    picks = picks_from_runs((run for run in runs if run.seed == first_seed),
                            records.base_variant, lr_scale)
    groups = records.group(completed, lambda run: (records.variant(run), is_submitted(run)))
    base_runs = groups.get((baseline, False), [])
    base_values = _values(base_runs, language)
    rows = []
    for (variant, submitted), group in groups.items():
        tuned = picks.get(records.base_variant(group[0]))
        scale = lr_scale(group[0])
        if tuned is not None and scale != 1 and scale != tuned[0]:
            continue  # a candidate the tuning did not pick: listed under the table
        row = _row(variant, submitted, group, language, (variant, submitted) == (baseline, False),
                   base_values if base_runs else None, predictions)
        row = replace(row, companion=is_companion(group[0]))
        rows.append(replace(row, lr_pick=scale) if tuned and tuned[0] == scale else row)
    rows.sort(key=lambda row: _sort_key(row, language))
    missing = None
    if standard_acts is not None and protocol is not None and arch in protocol.archs \
            and dataset in protocol.datasets:
        missing = _missing(completed, baseline, protocol.seeds, standard_acts)
    scale = 1.0 if language else 100.0
    tuning = tuple((" / ".join(variant), picked,
                    tuple((m, None if v is None else abs(v) * scale) for m, v in scored.items()))
                   for variant, (picked, scored) in sorted(picks.items()))
    return Section(dataset, arch, pid, name, language, baseline, tuple(rows), tuple(runs),
                   missing, tuning)


def _values(runs: list[RunRecord], language: bool) -> list[float]:
    return (records.metric_values(runs, "test_bpb") if language else
            [100 * v for v in records.metric_values(runs, "test_acc")])


def _row(variant: tuple[str, str, str], submitted: bool, runs: list[RunRecord], language: bool,
         is_baseline: bool, base_values: list[float] | None,
         predictions: Mapping[str, list[int]]) -> Row:
    runs = sorted(runs, key=lambda run: (run.seed, run.run_id))
    values = _values(runs, language)
    diff, p = board_stats.welch(values, base_values) if base_values is not None else (None, None)
    churn = None if language else records.churn(runs, predictions)
    bounds = None if language else board_stats.PERCENT  # bpb has no upper bound
    return Row(
        variant=variant, submitted=submitted, seeds=tuple(run.seed for run in runs),
        values=tuple(values), mean=board_stats.mean(values), std=board_stats.std(values),
        ci95=board_stats.ci95(values, bounds), diff=diff, p_value=None if is_baseline else p,
        is_baseline=is_baseline, churn=None if churn is None else 100 * churn,
        params=tuple(records.metric_values(runs, "params")),
        throughput=board_stats.mean(records.metric_values(runs, "samples_per_s")),
        train_time_s=board_stats.mean(records.metric_values(runs, "train_time_s")),
        val_bpb=tuple(records.metric_values(runs, "val_bpb")) if language else (),
        test_ppl=tuple(records.metric_values(runs, "test_ppl")) if language else (),
        curve=_mean_curve(runs, "val_bpb" if language else "val_acc", 1.0 if language else 100.0),
    )


def _sort_key(row: Row, language: bool) -> tuple:
    """Classifiers: best mean test accuracy first. Language models: lowest mean validation bpb
    first (the test split is only reported). Rows without the metric last; ties by name."""
    if language:
        ranking = statistics.fmean(row.val_bpb) if row.val_bpb else None
    else:
        ranking = None if row.mean is None else -row.mean
    return (ranking is None, ranking or 0.0, row.variant, row.submitted)


def _mean_curve(runs: list[RunRecord], key: str, scale: float) -> tuple[tuple[int, float], ...]:
    """The per-epoch mean over the seeds that stored a learning curve (older runs did not)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        curve = run.metrics.get("curve")
        if not isinstance(curve, Mapping):
            continue
        for epoch, value in zip(curve.get("epoch") or [], curve.get(key) or []):
            if isinstance(value, (int, float)) and math.isfinite(value):
                by_epoch.setdefault(int(epoch), []).append(scale * value)
    return tuple((epoch, statistics.fmean(v)) for epoch, v in sorted(by_epoch.items()))


def _missing(completed: list[RunRecord], baseline: tuple[str, str, str],
             seeds: tuple[int, ...], standard_acts: Sequence[str]) -> tuple[str, ...]:
    """The standard grid's activations (those registered when the boards were rendered, as
    stored in the database) without every seed of the grid, run with the baseline's init and
    quant: `name`, or `name (k of n seeds)`."""
    done = records.group((run for run in completed if run.seed in seeds), records.variant)
    missing = []
    for act in standard_acts:
        have = len({run.seed for run in done.get((act, *baseline[1:]), [])})
        if have == 0:
            missing.append(act)
        elif have < len(seeds):
            missing.append(f"{act} ({have} of {len(seeds)} seeds)")
    return tuple(missing)


# -- the board's files -----------------------------------------------------------------------


def leaderboard_filename(dataset: str, arch: str) -> str:
    """`<dataset>-<arch>.md`, with characters unsafe in file names replaced by `_`."""
    return board_stem(dataset, arch) + ".md"


def classification_files(runs: Iterable[RunRecord], predictions: Mapping[str, list[int]],
                         standard_acts: Sequence[str] | None = None
                         ) -> tuple[dict[str, str], dict[str, Plot]]:
    """({file name: text}, {plot file name: plot}): for every (dataset, arch) of `runs` with a
    completed run, `<dataset>-<arch>.md`, its `.csv` and `.json`, and one plot per section in
    `<dataset>-<arch>/`, all drawn from the same sections."""
    pages: dict[str, str] = {}
    plots: dict[str, Plot] = {}
    owners: dict[str, tuple[str, str]] = {}
    by_board = records.group(runs, lambda run: (run.dataset, run.arch))
    for (dataset, arch), board_runs in sorted(by_board.items()):
        if not any(run.status == "completed" for run in board_runs):
            continue
        name = leaderboard_filename(dataset, arch)
        if name in owners:
            raise ZooError(
                f"leaderboards {owners[name]} and {(dataset, arch)} would both be written to {name}"
            )
        owners[name] = (dataset, arch)
        sections = board_sections(dataset, arch, board_runs, predictions, standard_acts)
        stem = board_stem(dataset, arch)
        pages[name] = _board_markdown(dataset, arch, board_runs, sections)
        pages[f"{stem}.csv"] = board_csv(sections)
        pages[f"{stem}.json"] = board_json(sections)
        plots.update({_plot_name(section): (write_ranking_png, ranking_plot(section))
                      for section in sections if section.rows})
    return pages, plots


def board_sections(dataset: str, arch: str, runs: Iterable[RunRecord],
                   predictions: Mapping[str, list[int]] | None = None,
                   standard_acts: Sequence[str] | None = None) -> list[Section]:
    """One `Section` per protocol of the finished runs of (dataset, arch); with
    `standard_acts`, a named protocol's section lists which of them its grid lacks. Runs that
    are not stamped yet (zoo.runs.stamps) are read with their stamps."""
    runs = [stamped(run) for run in runs]
    finished = [run for run in runs
                if run.dataset == dataset and run.arch == arch and run.status != "running"]
    by_protocol = records.group(finished, lambda run: run.protocol_id)
    return [build_section(dataset, arch, pid, protocol_runs, predictions or {}, standard_acts)
            for pid, protocol_runs in sorted(by_protocol.items())]


def _plot_name(section: Section) -> str:
    """`<board stem>/<protocol id>.png`, relative to the leaderboard folder."""
    stem = board_stem(section.dataset, section.arch)
    return f"{stem}/{stored_part(section.pid, 'protocol id')}.png"


# -- markdown --------------------------------------------------------------------------------


def leaderboard_markdown(dataset: str, arch: str, runs: Iterable[RunRecord],
                         predictions: Mapping[str, list[int]] | None = None,
                         standard_acts: Sequence[str] | None = None) -> str:
    """The markdown of one leaderboard from the runs of (dataset, arch), any status;
    `predictions` (run_id -> predicted test classes) gives the churn column."""
    runs = [stamped(run) for run in runs]
    return _board_markdown(dataset, arch, runs,
                           board_sections(dataset, arch, runs, predictions, standard_acts))


def _board_markdown(dataset: str, arch: str, runs: list[RunRecord], sections: list[Section]) -> str:
    note = LM_READING_NOTE if records.is_language_model(runs) else READING_NOTE
    stem = board_stem(dataset, arch)
    lines = [f"# {dataset} / {arch}", "", GENERATED_NOTE, "", note, "", files_line(stem)]
    for section in sections:
        lines += ["", *_protocol_section(section)]
    return "\n".join(lines) + "\n"


def _protocol_section(section: Section) -> list[str]:
    runs = list(section.runs)
    completed = [run for run in runs if run.status == "completed"]
    lines = [f"## Protocol {protocol_label(section.pid, section.name)}", ""]
    lines += protocol_block(section.dataset, runs, completed)
    if section.rows:
        lines.append(_baseline_line(section))
    if section.missing is not None:
        missing = ", ".join(section.missing) or "none"
        lines.append(f"- **Missing from the standard grid:** {missing}")
    lines.append("")
    if section.rows:
        lines.append(LM_TABLE_HEADER if section.language else TABLE_HEADER)
        lines += [_table_row(row, section.language) for row in section.rows]
        if any(row.n < TRUSTED_SEEDS for row in section.rows):
            lines += ["", FEW_SEEDS_NOTE]
        lines += _lr_tuning_lines(section)
        what = "test bpb" if section.language else "test accuracy"
        alt = (f"{section.dataset} / {section.arch}, protocol {section.name or section.pid}: "
               f"{what} per variant with 95% CIs, and validation curves")
        lines += ["", f"![{alt}]({_plot_name(section)})"]
    else:
        lines.append("No run of this protocol completed.")
    lines += not_completed_block(runs)
    return lines


def _lr_tuning_lines(section: Section) -> list[str]:
    """Each tuned variant's candidates: the first seed's validation score per lr multiple."""
    if not section.lr_tuning:
        return []
    what, digits, unit = (("validation bpb", 4, "") if section.language else
                          ("validation accuracy", 2, "%"))
    lines = ["", f"Learning rates tuned (`zoo sweep --tune-lr`): the {what} of the first seed "
                 "at each multiple of the protocol's lr; the best is the pick, and the row "
                 "marked \"lr tuned\" trains every seed at it."]
    for variant, picked, scored in section.lr_tuning:
        tried = ", ".join(f"x{m:g} " + (DASH + " (diverged)" if v is None else
                                         f"{v:.{digits}f}{unit}") for m, v in scored)
        pick = f"x{picked:g}" if picked is not None else "none"
        lines.append(f"- {cell_text(variant)}: {tried}; pick {pick}")
    return lines


def _baseline_line(section: Section) -> str:
    baseline = " / ".join(section.baseline)
    whose = f"the `{section.name}` protocol's baseline" if section.name else "zoo's baseline"
    if section.baseline_row is None:
        return (f"- **Baseline:** {baseline} ({whose}) has no completed run under this protocol, "
                f"so Δ and p are {DASH}.")
    values = "test bpb" if section.language else "test accuracies"
    return (f"- **Baseline:** {baseline} ({whose}); Δ is each row's mean minus the baseline's, p "
            f"the two-sided Welch t-test (unequal variances) of the seeds' {values} against the "
            f"baseline's.")


def _table_row(row: Row, language: bool) -> str:
    """A markdown row of a `Row`: accuracy in % (2 digits) or bpb (4 digits)."""
    digits = 4 if language else 2
    act = cell_text(row.variant[0]) + (" (submitted)" if row.submitted else "")
    if row.lr_pick is not None:
        act += f" (lr tuned x{row.lr_pick:g})"
    stats = [
        format_mean_std(row.values, scale=1.0, digits=digits),
        format_interval(row.ci95, digits) + (FEW_SEEDS if row.n < TRUSTED_SEEDS else ""),
        "baseline" if row.is_baseline else format_signed(row.diff, digits),
        format_p(row.p_value),
    ]
    if language:
        stats = [format_mean_std(row.val_bpb, scale=1.0, digits=4), *stats,
                 format_mean_std(row.test_ppl, scale=1.0, digits=2)]
    else:
        stats.append(DASH if row.churn is None else f"{row.churn:.2f}")
    init = cell_text(row.variant[1]) + (" (companion)" if row.companion else "")
    cells = [act, init, cell_text(row.variant[2]), *stats, str(row.n),
             format_count(row.params), format_number(row.train_time_s),
             format_number(row.throughput)]
    return "| " + " | ".join(cells) + " |"


# -- CSV and JSON ----------------------------------------------------------------------------


def board_records(sections: Sequence[Section]) -> list[dict[str, Any]]:
    """One dict per table row, sections in board order, rows in table order."""
    language = any(section.language for section in sections)
    out = []
    for section in sections:
        # Holm over the section's tests: the baseline row has none (its p is None)
        adjusted = board_stats.holm([None if row.is_baseline else row.p_value
                                     for row in section.rows])
        for row, p_holm in zip(section.rows, adjusted):
            act, init, quant = row.variant
            record = {
                **section_keys(section),
                "act": act, "init": init, "quant": quant,
                "submitted": row.submitted, "baseline": row.is_baseline,
                "companion_init": row.companion, "lr_tuned": row.lr_pick,
                "metric": section.metric, "n": row.n, "mean": row.mean, "std": row.std,
                **interval_fields("ci95", row.ci95),
                "diff_vs_baseline": row.diff, "p_value": row.p_value, "p_holm": p_holm,
                "churn": row.churn,
                "params": param_count(row.params), "throughput": row.throughput,
                "train_time_s": row.train_time_s, "seeds": list(row.seeds),
            }
            if language:
                record["val_bpb"] = statistics.fmean(row.val_bpb) if row.val_bpb else None
                record["test_ppl"] = statistics.fmean(row.test_ppl) if row.test_ppl else None
            out.append(record)
    return out


def board_json(sections: Sequence[Section]) -> str:
    return json_text(board_records(sections))


def board_csv(sections: Sequence[Section]) -> str:
    columns = COLUMNS + (LM_COLUMNS if any(section.language for section in sections) else ())
    return csv_text(board_records(sections), columns)


# -- the plot --------------------------------------------------------------------------------


def row_label(row: Row) -> str:
    """The variant as the plot names it: `act / init / quant`, tagged if submitted."""
    return " / ".join(row.variant) + (" (submitted)" if row.submitted else "")


def ranking_plot(section: Section) -> RankingPlot:
    """What the section's plot shows: the mean of every row that has one, with its 95% CI, and
    the validation curves of `curve_rows`."""
    base = section.baseline_row
    chosen, curves_note = curve_rows(section)
    return RankingPlot(
        unit="test bpb (lower is better)" if section.language else "test accuracy (%)",
        baseline_note=(f"orange: baseline {row_label(base)}" if base is not None else
                       f"no baseline row ({' / '.join(section.baseline)})"),
        bars=tuple(MeanBar(row_label(row), row.mean, row.ci95, row.is_baseline)
                   for row in section.rows if row.mean is not None),
        curve_metric="validation bpb" if section.language else "validation accuracy (%)",
        curves=tuple(Curve(row_label(row), row.curve, row.is_baseline) for row in chosen),
        curves_note=curves_note,
        curves_stored=any(row.curve for row in section.rows),
    )


def curve_rows(section: Section) -> tuple[list[Row], str]:
    """The rows whose curves to draw, in table order, and a legend title saying which they are:
    all that stored one, or with many, the baseline and the best and worst few by mean."""
    stored = [row for row in section.rows if row.curve]
    missing = len(section.rows) - len(stored)
    suffix = f"; {missing} of {len(section.rows)} variants stored no curve" if missing else ""
    if len(stored) <= 2 * CURVES_SHOWN + 1:
        return stored, f"all {len(stored)} variants with curves{suffix}"
    better_first = sorted((row for row in stored if row.mean is not None),
                          key=lambda row: (row.mean if section.language else -row.mean,
                                           row.variant, row.submitted))
    picked = better_first[:CURVES_SHOWN] + better_first[-CURVES_SHOWN:]
    picked += [row for row in stored if row.is_baseline]
    chosen = [row for row in stored if any(row is p for p in picked)]  # table order
    return chosen, (f"baseline, best and worst {CURVES_SHOWN} of {len(stored)} variants by "
                    f"mean test {'bpb' if section.language else 'accuracy'}{suffix}")
