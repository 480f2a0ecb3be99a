"""The sweep loop: keep every executor slot busy, and show what is done, running and failed,
with an ETA, while it runs."""

from __future__ import annotations

import concurrent.futures as cf
import statistics
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from zoo.runs.config import TrainConfig
from zoo.sweep.executors import Job, JobResult

REFRESH_S = 1.0


@dataclass
class SweepState:
    total: int
    skipped: int  # stored before the sweep started
    results: list[JobResult] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=dict)  # run id -> start time
    started: float = field(default_factory=time.monotonic)

    def count(self, *statuses: str) -> int:
        return sum(result.status in statuses for result in self.results)

    @property
    def queued(self) -> int:
        return self.total - self.skipped - len(self.results) - len(self.running)

    def eta_s(self, slots: int) -> float | None:
        """Remaining runs times the mean duration of the runs this sweep trained, over the
        slots; None until one run has finished."""
        durations = [r.seconds for r in self.results if r.status == "completed"]
        if not durations:
            return None
        remaining = self.queued + len(self.running)
        return statistics.mean(durations) * remaining / max(1, min(slots, remaining or 1))

    def headline(self, slots: int) -> str:
        eta = self.eta_s(slots)
        done = self.count("completed", "skipped")
        parts = [f"{done + self.skipped}/{self.total} done ({self.skipped} stored earlier)",
                 f"{len(self.running)} running", f"{self.queued} queued",
                 f"{self.count('failed', 'busy')} failed", f"{self.count('diverged')} diverged",
                 f"elapsed {_duration(time.monotonic() - self.started)}"]
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        return " · ".join(parts)

    def utilization(self, slots: int) -> str | None:
        """How well the sweep used the machine: the runs' training time over slots x wall
        time, and the time each run spent outside its training epochs (start-up, data,
        evaluation, checkpoints). None until a run has been trained."""
        trained = [r for r in self.results if r.status == "completed" and r.seconds > 0]
        if not trained:
            return None
        wall = time.monotonic() - self.started
        busy = sum(r.train_time_s for r in trained) / (slots * wall) if wall > 0 else 0.0
        outside = statistics.mean(r.seconds - r.train_time_s for r in trained)
        share = outside / statistics.mean(r.seconds for r in trained)
        return (f"machine use: training time / ({slots} slot(s) x wall time) = {busy:.2f}; "
                f"outside training (start-up, data, evaluation, checkpoints): {outside:.1f} s "
                f"per run, {share:.1%} of its time")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class SweepDisplay:
    """A live table on a terminal; one line per finished run anywhere else (CI logs, files)."""

    def __init__(self, state: SweepState, slots: int, console: Console | None = None):
        self.state, self.slots = state, slots
        self.console = console or Console(stderr=True)
        if not self.console.is_terminal:  # a log file: one finished run per line, unwrapped
            self.console.soft_wrap = True
        self.live = Live(self._render(), console=self.console, refresh_per_second=2,
                         transient=False) if self.console.is_terminal else None
        self._headline_due = False  # log mode: a run finished since the last headline

    def __enter__(self) -> "SweepDisplay":
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.update(self._render())
            self.live.stop()

    def finished(self, result: JobResult) -> None:
        line = f"{result.status:>9}  {result.run_id}  {result.message}  ({result.seconds:.0f} s)"
        if self.live:
            self.live.console.print(line, highlight=False)
        else:
            self.console.print(line, highlight=False)
            self._headline_due = True

    def refresh(self) -> None:
        """Called once the freed slots are refilled, so "running" counts the runs really in
        flight rather than the moment between one run ending and the next starting."""
        if self.live:
            self.live.update(self._render())
        elif self._headline_due:
            self.console.print(f"  {self.state.headline(self.slots)}", highlight=False)
            self._headline_due = False

    def _render(self):
        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for run_id, since in sorted(self.state.running.items(), key=lambda kv: kv[1]):
            table.add_row("  running", run_id, _duration(now - since))
        return Group(Text(self.state.headline(self.slots), style="bold"), table)


def run_jobs(jobs: list[Job], executor, state: SweepState, display: SweepDisplay,
             make_executor: Callable[[], object] | None = None) -> SweepState:
    """Run `jobs`, at most `executor.slots` at a time. If a local worker dies (killed, out of
    memory), its runs are reported failed, a fresh pool takes over the rest, and they resume from
    their checkpoints when the sweep is run again."""
    queue = list(jobs)
    in_flight: dict[cf.Future, Job] = {}

    def fill_free_slots() -> None:
        while queue and len(in_flight) < executor.slots:
            job = queue.pop(0)
            in_flight[executor.submit(job)] = job
            state.running[job.run_id] = time.monotonic()

    try:
        fill_free_slots()
        while in_flight:
            done, _ = cf.wait(in_flight, timeout=REFRESH_S, return_when=cf.FIRST_COMPLETED)
            broken = False
            for future in done:
                job = in_flight.pop(future)
                since = state.running.pop(job.run_id, time.monotonic())
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    result = JobResult(job.run_id, "failed", time.monotonic() - since,
                                       "its worker process died (killed or out of memory); "
                                       "run the sweep again to resume it")
                except Exception as exc:  # noqa: BLE001 - e.g. a Ray worker lost
                    result = JobResult(job.run_id, "failed", time.monotonic() - since,
                                       f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                state.results.append(result)
                display.finished(result)
            if broken and make_executor is not None:
                executor.shutdown(cancel=True)
                executor = make_executor()
            fill_free_slots()
            display.refresh()
    except KeyboardInterrupt:
        executor.shutdown(cancel=True)
        raise
    executor.shutdown()
    return state


def job_for(config: TrainConfig, out, device: str, threads: int | None, plugins: list[str],
            labels: dict | None = None, log: str | None = None) -> Job:
    return Job(config=asdict(config), out=str(out), device=device, threads=threads,
               plugins=list(plugins), labels=labels, log=log)
