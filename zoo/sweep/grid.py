"""`zoo sweep`: every combination of a grid, under one named protocol, on an executor.

A sweep is idempotent: runs already completed in the results database are skipped, runs killed
halfway resume from their last checkpoint (the Trainer does that by run id), and failed runs are
tried again. So re-running the same command after a crash finishes the sweep without repeating
work or losing rows. The executors only decide where a run happens (zoo.sweep.executors).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib
from rich.console import Console

from zoo.errors import ZooError
from zoo.registry import ACTS, ARCHS, DATASETS, INITS, QUANTS
from zoo.registry.archs import default_act
from zoo.registry.kinds import is_text_dataset, takes_text
from zoo.runs import lr_tuning
from zoo.runs.config import TrainConfig
from zoo.runs.protocols import get_protocol
from zoo.runs.results import ResultsStore, results_path
from zoo.runs.rundir import RunDir
from zoo.sweep.executors import make_executor
from zoo.sweep.runner import SweepDisplay, SweepState, job_for, run_jobs

ALL = "all"  # in a grid list: every registered entry of that kind
# In a grid's inits: each activation's companion init (the one its paper pairs it with, e.g.
# siren for sine), for the activations that name one; the others get no extra run.
COMPANION = "companion"
_REGISTRIES = {"archs": ARCHS, "acts": ACTS, "inits": INITS, "quants": QUANTS,
               "datasets": DATASETS}


@dataclass
class Grid:
    """Lists of names to combine; None = the protocol's standard grid (archs, data sets, seeds),
    the architecture's own activation, the default init and each activation's companion init,
    no quantization."""

    protocol: str = "quick"
    archs: list[str] | None = None
    acts: list[str] | None = None
    inits: list[str] | None = None
    quants: list[str] | None = None
    datasets: list[str] | None = None
    seeds: list[int] | None = None

    @classmethod
    def from_toml(cls, path: Path) -> "Grid":
        """A grid file: `protocol = "quick"`, lists `archs`, `acts`, `inits`, `quants`,
        `datasets` (names, or "all"), and `seeds` (a list, or a count)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ZooError(f"grid file not found: {path}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ZooError(f"cannot read grid file {path}: {exc}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ZooError(f"{path}: unknown key(s) {', '.join(unknown)}; a grid has "
                           f"{', '.join(sorted(known))}")
        grid = cls()
        for key, value in data.items():
            setattr(grid, key, _parse_field(key, value, str(path)))
        return grid

    def merged(self, **flags: Any) -> "Grid":
        """Flags given on the command line win over the file's values."""
        grid = Grid(**{f.name: getattr(self, f.name) for f in fields(self)})
        for key, value in flags.items():
            if value is not None:
                setattr(grid, key, _parse_field(key, value, f"--{key}"))
        return grid

    def configs(self) -> tuple[list[TrainConfig], list[str]]:
        """Every combination as a validated TrainConfig (in a stable order), and a note for each
        pair of arch and data set that cannot go together (a language model on images)."""
        protocol = get_protocol(self.protocol)
        archs = self._names("archs", protocol.archs)
        datasets = self._names("datasets", protocol.datasets)
        inits = self._names("inits", ["default", COMPANION])
        quants = self._names("quants", ["none"])
        seeds = self.seeds if self.seeds is not None else list(protocol.seeds)
        configs, skipped = [], []
        for arch, dataset in itertools.product(archs, datasets):
            if takes_text(arch) != is_text_dataset(dataset):
                skipped.append(f"{arch} × {dataset} (one is for text, the other for images)")
                continue
            acts = self._names("acts", [default_act(arch)])
            # seed-major: a sweep stopped early has every variant with its first seeds
            pairs = [(act, init) for act in acts for init in _inits_for(act, inits)]
            for seed, (act, init), quant in itertools.product(seeds, pairs, quants):
                configs.append(protocol.config(arch, dataset, act=act, init=init, quant=quant,
                                               seed=seed, qat=quant != "none"))
        if not configs:
            raise ZooError("the grid is empty: no architecture goes with any of its data sets")
        ids = [config.run_id() for config in configs]
        if len(set(ids)) != len(ids):
            raise ZooError("the grid names the same run twice; remove the repeated names")
        return configs, skipped

    def _names(self, key: str, default: list[str] | tuple[str, ...]) -> list[str]:
        chosen = getattr(self, key)
        if chosen is None:
            return list(default)
        registry = _REGISTRIES[key]
        names = registry.names() if ALL in chosen else chosen
        if key == "inits" and COMPANION in chosen:
            names = [*names, COMPANION] if ALL in chosen else names
        if key == "quants" and ALL in chosen:
            names = [name for name in names if name != "none"]
        for name in names:
            if not (key == "inits" and name == COMPANION):
                registry.get(name)  # an unknown name: a one-line error naming the closest ones
        return list(dict.fromkeys(names))


def _inits_for(act: str, inits: list[str]) -> list[str]:
    """The grid's inits for one activation: COMPANION becomes its companion init, if it has
    one that the list does not already hold."""
    companion = ACTS.get(act).extra.get("companion_init")
    named = [init for init in inits if init != COMPANION]
    if COMPANION in inits and companion and companion not in named:
        named.append(companion)
    return named


def _parse_field(key: str, value: Any, where: str) -> Any:
    if key == "protocol":
        if not isinstance(value, str):
            raise ZooError(f"{where}: protocol must be a name, e.g. \"quick\"")
        get_protocol(value)
        return value
    if key == "seeds":
        return _parse_seeds(value, where)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ZooError(f"{where}: {key} must be a list of names")
    items = [v.strip() for v in items if v.strip()]
    if not items:
        raise ZooError(f"{where}: {key} is empty")
    return items


def _parse_seeds(value: Any, where: str) -> list[int]:
    """`3` or `"3"` -> [0, 1, 2] (a count); `"0,4"` or `[0, 4]` -> [0, 4]; `"4,"` -> [4];
    `"2-4"` -> [2, 3, 4]."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.isdigit():  # a count
                return _parse_seeds(int(text), where)
            if "-" in text and "," not in text:
                low, high = (int(part) for part in text.split("-"))
                value = list(range(low, high + 1))
            else:
                value = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ZooError(f"{where}: seeds take a count, a list (0,1,2) or a range (0-2), "
                           f"got '{text}'") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ZooError(f"{where}: a seed count must be positive, got {value}")
        value = list(range(value))
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ZooError(f"{where}: seeds must be non-negative whole numbers")
    return sorted(set(value))


# --- planning --------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a sweep will do, decided from the results database before anything starts."""

    todo: list[TrainConfig]  # new, interrupted (resumed) or failed (tried again)
    completed: list[str]  # run ids with a stored result: skipped
    diverged: list[str]  # a result too (the variant cannot train at this lr): skipped
    resumed: list[str] = field(default_factory=list)  # run ids in `todo` with a checkpoint
    retried: list[str] = field(default_factory=list)  # run ids in `todo` that failed before


def plan(configs: list[TrainConfig], out: Path) -> Plan:
    db = results_path(out)
    stored = {}
    if db.is_file():
        with ResultsStore(db) as store:
            stored = {run.run_id: run.status for run in store.runs()}
    result = Plan(todo=[], completed=[], diverged=[])
    for config in configs:
        run_id = config.run_id()
        status = stored.get(run_id)
        if status == "completed":
            result.completed.append(run_id)
        elif status == "diverged":
            result.diverged.append(run_id)
        else:
            result.todo.append(config)
            if RunDir(Path(out) / run_id).has_checkpoint():
                result.resumed.append(run_id)
            if status == "failed":
                result.retried.append(run_id)
    return result


# --- running ---------------------------------------------------------------------------------

def run_sweep(grid: Grid, *, out: Path, executor: str = "local", workers: int | None = None,
              threads: int | None = None, device: str = "auto", address: str | None = None,
              nproc_per_node: int | None = None, plugins: list[str] | None = None,
              labels: dict[str, Any] | None = None, dry_run: bool = False, console=None,
              tune_lr: list[float] | None = None, log: str | None = None):
    """Plan the grid against the results in `out`, then train what is missing. With `tune_lr`
    (multiples of the protocol's lr), each variant's first seed trains at every multiple first,
    then its other seeds at the multiple with the best validation score (zoo.runs.lr_tuning).
    Returns the final SweepState (None for a dry run)."""
    console = console or Console(stderr=True, soft_wrap=True)
    configs, skipped_pairs = grid.configs()
    protocol = get_protocol(grid.protocol)
    console.print(f"sweep under protocol '{protocol.name}' ({protocol.summary})",
                  highlight=False)
    for pair in skipped_pairs:
        console.print(f"  left out: {pair}", highlight=False)
    run = dict(out=Path(out), executor=executor, workers=workers, threads=threads,
               device=device, address=address, nproc_per_node=nproc_per_node,
               plugins=plugins, labels=labels, dry_run=dry_run, console=console, log=log)
    if not tune_lr:
        return _run_configs(configs, **run)
    first_seed = min(config.seed for config in configs)
    firsts = [config for config in configs if config.seed == first_seed]
    console.print(f"tuning the lr: seed {first_seed} of each of {len(firsts)} variant(s) at "
                  f"{', '.join(f'x{s:g}' for s in tune_lr)} of the protocol's lr, then the "
                  "other seeds at each variant's pick", highlight=False)
    state = _run_configs([c for first in firsts for c in lr_tuning.candidates(first, tune_lr)],
                         **run)
    if dry_run:
        return None
    picks = _lr_picks(firsts, tune_lr, Path(out))
    for first in firsts:
        scale = picks.get(first.run_id())
        console.print(f"  lr pick for {first.arch}·{first.act}·{first.init}: "
                      + (f"x{scale:g}" if scale else "none (no candidate completed)"),
                      highlight=False)
    rest = [replace(config, lr_scale=picks[key]) for config in configs
            if config.seed != first_seed
            and (key := replace(config, seed=first_seed).run_id()) in picks
            and picks[key] is not None]
    later = _run_configs(rest, **run) if rest else None
    if later is None or state is None:
        return later or state
    return SweepState(total=state.total + later.total, skipped=state.skipped + later.skipped,
                      results=state.results + later.results, started=state.started)


def _lr_picks(firsts: list[TrainConfig], scales: list[float], out: Path) -> dict[str, float]:
    """{first-seed run id at lr x1: the picked multiple}, from the stored candidates."""
    with ResultsStore(results_path(out)) as store:
        stored = {run.run_id: run for run in store.runs()}
    picks = {}
    for first in firsts:
        scored = {}
        for candidate in lr_tuning.candidates(first, scales):
            record = stored.get(candidate.run_id())
            if record is not None and record.status in ("completed", "diverged"):
                scored[candidate.lr_scale] = (lr_tuning.validation_score(record)
                                              if record.status == "completed" else None)
        picks[first.run_id()] = lr_tuning.pick(scored)
    return picks


def _run_configs(configs: list[TrainConfig], *, out: Path, executor: str, workers, threads,
                 device: str, address, nproc_per_node, plugins, labels, dry_run: bool, console,
                 log: str | None = None):
    todo = plan(configs, Path(out))
    console.print(f"{len(configs)} runs; {len(todo.completed)} stored, {len(todo.diverged)} "
                  f"diverged earlier, {len(todo.todo)} to train ({len(todo.resumed)} resume from "
                  f"a checkpoint, {len(todo.retried)} failed before)", highlight=False)
    if dry_run:
        for config in todo.todo:
            console.print(f"  would train {config.run_id()}", highlight=False)
        return None
    state = SweepState(total=len(configs), skipped=len(todo.completed) + len(todo.diverged))
    if not todo.todo:
        console.print("nothing to train: every run of this grid is stored", highlight=False)
        return state
    Path(out).mkdir(parents=True, exist_ok=True)

    def new_executor():
        made, _ = make_executor(executor, workers=workers, threads=threads, device=device,
                                address=address, nproc_per_node=nproc_per_node)
        return made

    pool, run_threads = make_executor(executor, workers=workers, threads=threads, device=device,
                                      address=address, nproc_per_node=nproc_per_node)
    jobs = [job_for(config, out, device, run_threads, plugins or [], labels, log)
            for config in todo.todo]
    console.print(f"{pool.slots} run(s) at a time on the {pool.name} executor, {run_threads} "
                  f"thread(s) each", highlight=False)
    with SweepDisplay(state, pool.slots, console) as display:
        run_jobs(jobs, pool, state, display, make_executor=new_executor)
    console.print(state.headline(pool.slots), highlight=False)
    use = state.utilization(pool.slots)
    if use:
        console.print(use, highlight=False)
    return state
