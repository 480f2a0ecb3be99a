"""The rows of a classification or language-model leaderboard section, as numbers.

One `Section` per (data set, arch, protocol); one `Row` per variant (act, init, quant with their
parameters, and whether `zoo submit` added it) with its statistics over seeds against the
protocol's baseline. The markdown table, the CSV/JSON files and the plot are all drawn from these
objects, so they cannot disagree.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace

from zoo.harness import board_stats
from zoo.harness.leaderboard import (_churn, _group, _is_language_model, _metric_values, _variant,
                                     base_variant)
from zoo.harness.lr_tuning import lr_scale, picks_from_runs
from zoo.harness.results import RunRecord
from zoo.registry import ACTS


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
                  predictions: Mapping[str, list[int]]) -> Section:
    from zoo.harness.protocols import BASELINE, PROTOCOLS, protocol_name_for

    runs = sorted(runs, key=lambda run: run.run_id)
    name = protocol_name_for(pid, arch, dataset)
    protocol = PROTOCOLS.get(name) if name else None
    base = protocol.baseline if protocol else BASELINE
    baseline = (base["act"], base["init"], base["quant"])
    language = _is_language_model(runs)
    completed = [run for run in runs if run.status == "completed"]
    first_seed = protocol.seeds[0] if protocol else 0
    picks = picks_from_runs((run for run in runs if run.seed == first_seed), base_variant,
                            lr_scale)
    groups = _group(completed, lambda run: (_variant(run), is_submitted(run)))
    base_runs = groups.get((baseline, False), [])
    base_values = _values(base_runs, language)
    rows = []
    for (variant, submitted), group in groups.items():
        tuned = picks.get(base_variant(group[0]))
        scale = lr_scale(group[0])
        if tuned is not None and scale != 1 and scale != tuned[0]:
            continue  # a candidate the tuning did not pick: listed under the table
        row = _row(variant, submitted, group, language, (variant, submitted) == (baseline, False),
                   base_values if base_runs else None, predictions)
        row = replace(row, companion=is_companion(group[0]))
        rows.append(replace(row, lr_pick=scale) if tuned and tuned[0] == scale else row)
    rows.sort(key=lambda row: _sort_key(row, language))
    missing = None
    if protocol is not None and arch in protocol.archs and dataset in protocol.datasets:
        missing = _missing(completed, baseline, protocol.seeds)
    scale = 1.0 if language else 100.0
    tuning = tuple((" / ".join(variant), picked,
                    tuple((m, None if v is None else abs(v) * scale) for m, v in scored.items()))
                   for variant, (picked, scored) in sorted(picks.items()))
    return Section(dataset, arch, pid, name, language, baseline, tuple(rows), tuple(runs),
                   missing, tuning)


def _values(runs: list[RunRecord], language: bool) -> list[float]:
    return (_metric_values(runs, "test_bpb") if language else
            [100 * v for v in _metric_values(runs, "test_acc")])


def _row(variant: tuple[str, str, str], submitted: bool, runs: list[RunRecord], language: bool,
         is_baseline: bool, base_values: list[float] | None,
         predictions: Mapping[str, list[int]]) -> Row:
    runs = sorted(runs, key=lambda run: (run.seed, run.run_id))
    values = _values(runs, language)
    diff, p = board_stats.welch(values, base_values) if base_values is not None else (None, None)
    churn = None if language else _churn(runs, predictions)
    return Row(
        variant=variant, submitted=submitted, seeds=tuple(run.seed for run in runs),
        values=tuple(values), mean=board_stats.mean(values), std=board_stats.std(values),
        ci95=board_stats.ci95(values), diff=diff, p_value=None if is_baseline else p,
        is_baseline=is_baseline, churn=None if churn is None else 100 * churn,
        params=tuple(_metric_values(runs, "params")),
        throughput=board_stats.mean(_metric_values(runs, "samples_per_s")),
        train_time_s=board_stats.mean(_metric_values(runs, "train_time_s")),
        val_bpb=tuple(_metric_values(runs, "val_bpb")) if language else (),
        test_ppl=tuple(_metric_values(runs, "test_ppl")) if language else (),
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
             seeds: tuple[int, ...]) -> tuple[str, ...]:
    """Registered activations without every seed of the standard grid, run with the baseline's
    init and quant: `name`, or `name (k of n seeds)`. A submission's runs count for its act
    when its plugin is loaded (then it is registered)."""
    done = _group((run for run in completed if run.seed in seeds), _variant)
    missing = []
    for act in ACTS.names():
        have = len({run.seed for run in done.get((act, *baseline[1:]), [])})
        if have == 0:
            missing.append(act)
        elif have < len(seeds):
            missing.append(f"{act} ({have} of {len(seeds)} seeds)")
    return tuple(missing)
