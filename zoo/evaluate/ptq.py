"""Post-training quantization of a stored float run: `zoo eval RUN --quant Q` and
`zoo quant-sweep RUN...`.

The run's checkpoint is loaded once; each format quantizes a fresh copy of it, calibrating
data-dependent methods on the task's calibration batch (the first training batch), and is
evaluated on the test split together with the float model in the same process. The result is
stored in the results database as its own record, `<run id>+<quant>[-<params digest>]`, under the
float run's protocol, with `config.ptq_of` naming the float run, the float model's test metrics
beside the quantized ones, the size report (bits per weight including scales, model bytes) and
the test predictions (for churn). Training leaderboards leave these records out; the
`quant-<dataset>-<arch>.md` boards show them.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

from zoo.errors import ZooError
from zoo.evaluate.stored import load_run_model
from zoo.models.context import BuildContext
from zoo.quant.apply import size_report
from zoo.registry import QUANTS
from zoo.runs import environment
from zoo.runs.ids import canonical_json, protocol_id
from zoo.runs.results import PTQ_KEY, ResultsStore, RunRecord, results_path, utc_now
from zoo.runs.stamps import stamped


def ptq_run_id(source_run_id: str, quant: str, params: dict[str, Any]) -> str:
    suffix = ""
    if params:
        suffix = "-" + hashlib.sha256(canonical_json(params).encode()).hexdigest()[:8]
    return f"{source_run_id}+{quant}{suffix}"


class PTQSession:
    """One float run, loaded once, quantized with as many formats as asked."""

    def __init__(self, run: str, out: str | Path = "runs", device: str = "auto"):
        self.out = Path(out)
        self.run_dir, self.config, self.task, self.float_model, self.epoch = \
            load_run_model(run, out, device)
        if self.config.quant != "none":
            raise ZooError(f"run {self.run_dir.name} was trained with --quant {self.config.quant} "
                           f"(QAT); post-training quantization starts from a float run")
        self.autocast = self.task.device.type == "cuda"
        self._float_metrics: dict[str, Any] | None = None

    @property
    def source_id(self) -> str:
        return self.run_dir.name

    def float_metrics(self) -> dict[str, Any]:
        if self._float_metrics is None:
            self._float_metrics, _ = self.task.final_metrics(self.float_model, self.autocast)
        return self._float_metrics

    def evaluate(self, quant: str, params: dict[str, Any] | None = None) -> RunRecord:
        params = dict(params or {})
        if quant == "none":
            raise ZooError("--quant none is the float model: use plain `zoo eval RUN`")
        try:
            recipe = QUANTS.get(quant).create(**params)
        except TypeError as exc:
            raise ZooError(f"bad --quant-param for {quant}: {exc}") from None
        started_at, start = utc_now(), time.perf_counter()
        model = copy.deepcopy(self.float_model)
        ctx = BuildContext(act=self.config.act, seed=self.config.seed,
                           calibration_batch=self.task.calibration_batch)
        recipe(model, ctx)
        quantize_seconds = time.perf_counter() - start
        test, predictions = self.task.final_metrics(model, self.autocast)
        size = size_report(model)
        summary = model.zoo_quant_summary
        config = replace(self.config, quant=quant, quant_params=params)
        protocol = self.config.protocol()  # the float run's: PTQ rows compare within it
        record = stamped(RunRecord(
            run_id=ptq_run_id(self.source_id, quant, params), arch=config.arch, act=config.act,
            init=config.init, quant=quant, dataset=config.dataset, seed=config.seed,
            protocol=protocol, protocol_id=protocol_id(protocol), status="completed",
            metrics={**test, **{f"float_{k}": v for k, v in self.float_metrics().items()},
                     **size, "quantize_time_s": quantize_seconds,
                     "params": sum(p.numel() for p in self.float_model.parameters())},
            environment=environment.capture(self.task.device),
            config={"config": config.to_dict(), PTQ_KEY: self.source_id,
                    "checkpoint_epoch": self.epoch,
                    "calibration": self.task.calibration_description(),
                    "quantized_layers": summary.quantized, "float_layers": summary.kept_float},
            run_dir=str(self.run_dir.path.resolve()), started_at=started_at,
            finished_at=utc_now()))
        with ResultsStore(results_path(self.out)) as store:
            store.upsert(record, predictions=predictions, split="test")
        return record


def quant_sweep(runs: Iterable[str], quants: Iterable[str], out: str | Path = "runs",
                device: str = "auto", redo: bool = False,
                report: Callable[[RunRecord, bool], None] = lambda record, cached: None
                ) -> list[RunRecord]:
    """Every format on every run; formats already stored for a run are skipped unless `redo`."""
    quants = list(quants)
    for quant in quants:
        QUANTS.get(quant)  # fail on a typo before loading anything
    records = []
    for run in runs:
        session = PTQSession(run, out, device)
        with ResultsStore(results_path(Path(out))) as store:
            done = {quant: store.get(ptq_run_id(session.source_id, quant, {})) for quant in quants}
        for quant in quants:
            stored = done[quant]
            if stored is not None and stored.status == "completed" and not redo:
                records.append(stored)
                report(stored, True)
                continue
            record = session.evaluate(quant)
            records.append(record)
            report(record, False)
    return records


def describe(record: RunRecord) -> str:
    """One line: the quantized metric against the float one, bits per weight, size."""
    m = record.metrics
    if m.get("bits_per_weight") is None:
        return f"{record.quant}: no layer was quantized"
    size = f"{m['bits_per_weight']:.3f} bits/weight, {m['model_bytes'] / 1024:,.1f} KiB " \
           f"(float {m['float_bytes'] / 1024:,.1f} KiB)"
    if "test_bpb" in m:
        return (f"{record.quant}: test bpb {m['test_bpb']:.4f} (float {m['float_test_bpb']:.4f}, "
                f"{m['test_bpb'] - m['float_test_bpb']:+.4f}), {size}")
    return (f"{record.quant}: test accuracy {m['test_acc']:.2%} (float {m['float_test_acc']:.2%}, "
            f"{100 * (m['test_acc'] - m['float_test_acc']):+.2f} pp), {size}")
