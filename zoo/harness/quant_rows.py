"""The rows of a quantization board section, as numbers.

One `QuantSection` per (data set, arch, protocol) with quantized results; one `QuantRow` per
(act, init, quant, mode) of the (act, init) pairs that were quantized: the float model, each
format evaluated after training (PTQ) and each format trained with (QAT). The markdown table, the
CSV/JSON files and the plot are all drawn from these objects, so they cannot disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from zoo.harness import board_stats
from zoo.harness.leaderboard import _churn, _group, _metric, _metric_values, _variant
from zoo.harness.results import RunRecord, is_ptq

MODES = ("float", "PTQ", "QAT")  # the order of a pair's rows


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

    @property
    def metric(self) -> str:
        return "test_bpb" if self.language else "test_acc_percent"

    @property
    def digits(self) -> int:
        return 4 if self.language else 2


def mode(run: RunRecord) -> str:
    if is_ptq(run):
        return "PTQ"
    return "QAT" if (run.config.get("config") or {}).get("qat") else "float"


def quant_sections(dataset: str, arch: str, runs: list[RunRecord],
                   predictions: Mapping[str, list[int]]) -> list[QuantSection]:
    """One section per protocol of the completed runs of (dataset, arch) with quantized
    results, by protocol id."""
    return [_section(dataset, arch, pid, protocol_runs, predictions)
            for pid, protocol_runs in sorted(_group(runs, lambda run: run.protocol_id).items())
            if any(mode(run) != "float" for run in protocol_runs)]


def _section(dataset: str, arch: str, pid: str, runs: list[RunRecord],
             predictions: Mapping[str, list[int]]) -> QuantSection:
    from zoo.harness.protocols import protocol_name_for

    cells = _group(runs, lambda run: _variant(run)[:2])  # (act, init) -> runs
    # only the (act, init) pairs that were quantized: their float runs are the baselines
    runs = sorted((run for cell in cells.values() if any(mode(r) != "float" for r in cell)
                   for run in cell), key=lambda run: run.run_id)
    language = any("test_bpb" in run.metrics for run in runs)
    rows = []
    for (act, init), cell_runs in sorted(_group(runs, lambda run: _variant(run)[:2]).items()):
        rows += _cell_rows(act, init, cell_runs, language, predictions)
    calibrations = sorted({run.config.get("calibration") for run in runs if is_ptq(run)} - {None})
    return QuantSection(dataset, arch, pid, protocol_name_for(pid, arch, dataset), language,
                        tuple(rows), tuple(runs), tuple(calibrations))


def _cell_rows(act: str, init: str, runs: list[RunRecord], language: bool,
               predictions: Mapping[str, list[int]]) -> list[QuantRow]:
    """The rows of one (act, init): float first, then PTQ and QAT, each best first."""
    metric, scale = ("test_bpb", 1.0) if language else ("test_acc", 100.0)
    floats = [run for run in runs if mode(run) == "float" and run.quant == "none"]
    float_mean = statistics.mean(_metric_values(floats, metric)) if floats else None
    keyed = []
    for (quant, kind), group in _group(runs, lambda r: (_variant(r)[2], mode(r))).items():
        group = sorted(group, key=lambda run: (run.seed, run.run_id))
        values = _metric_values(group, metric)
        deltas: list[float] = []
        diff = None
        if kind == "PTQ":
            pairs = [(_metric(run, metric), _metric(run, f"float_{metric}")) for run in group]
            deltas = [(q - f) * scale for q, f in pairs if q is not None and f is not None]
            diff = board_stats.mean(deltas)
        elif kind == "QAT" and float_mean is not None and values:
            diff = (statistics.mean(values) - float_mean) * scale
        if kind == "float":  # float32; the size PTQ measured includes buffers (BatchNorm's)
            measured = _metric_values(runs, "float_bytes")
            bits = [32.0]
            size = [b / 1024 for b in measured] if measured else \
                [4 * p / 1024 for p in _metric_values(group, "params")]
        else:
            bits = _metric_values(group, "bits_per_weight")
            size = [b / 1024 for b in _metric_values(group, "model_bytes")]
        churn = _churn(group, predictions)
        row = QuantRow(act=act, init=init, quant=quant, mode=kind,
                       seeds=tuple(run.seed for run in group),
                       values=tuple(v * scale for v in values), deltas=tuple(deltas), diff=diff,
                       churn=None if churn is None else 100 * churn, bits=tuple(bits),
                       size_kib=tuple(size))
        best = statistics.mean(values) if values else float("inf")
        keyed.append(((MODES.index(kind), best if language else -best, quant), row))
    return [row for _, row in sorted(keyed, key=lambda item: item[0])]
