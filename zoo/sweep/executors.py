"""Where the runs of a sweep happen. Each executor turns a `Job` into a
`concurrent.futures.Future` of its `JobResult`; the sweep loop (zoo.sweep.runner) is the
same for all of them. No scheduling of our own: a process pool, Ray, or torchrun does it.

- `local`: a `ProcessPoolExecutor` (spawn), one worker per GPU, or cores / threads on a CPU.
- `ray`: one Ray task per run (`pip install 'zoo-bench[ray]'`), on a cluster (`--address`) or a
  Ray instance started for the sweep. The results folder must be shared by every node.
- `torchrun`: one run at a time across `--nproc-per-node` processes (DDP), for big runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.errors import RunDiverged, ZooError
from zoo.registry.plugins import load_entry_point_plugins, load_plugin_file
from zoo.runs.config import TrainConfig
from zoo.runs.results import ResultsStore, results_path, utc_now
from zoo.tasks.classify import keep_loaded_data
from zoo.tasks.kinds import make_trainer

EXECUTORS = ("local", "ray", "torchrun")


@dataclass
class Job:
    config: dict[str, Any]  # TrainConfig fields
    out: str
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads in the worker
    plugins: list[str] = field(default_factory=list)  # plugin files the worker must load
    labels: dict[str, Any] | None = None
    log: str | None = None  # an experiment log for each run (tensorboard, wandb)

    @property
    def run_id(self) -> str:
        return TrainConfig(**self.config).run_id()


@dataclass
class JobResult:
    run_id: str
    status: str  # completed, skipped (stored earlier), diverged, failed, busy
    seconds: float
    message: str = ""  # the headline metric, or why it failed
    resumed_from: int = 0
    train_time_s: float = 0.0  # of `seconds`, the time spent in training epochs


def run_job(job: Job, device: str | None = None) -> JobResult:
    """Train one run in this process; never raises (a failure is a result)."""
    start = time.perf_counter()
    run_id = job.config.get("arch", "?")
    try:
        _prepare_worker(job.plugins, job.threads)
        config = TrainConfig(**job.config)
        run_id = config.run_id()
        outcome = make_trainer(config, out=job.out, device=device or job.device, show_progress=False,
                               labels=job.labels, log=job.log).run()
        status = "skipped" if outcome.already_done else "completed"
        message = headline(outcome.record.metrics)
        if outcome.resumed_from and not outcome.already_done:
            message += f" (resumed after epoch {outcome.resumed_from})"
        return JobResult(run_id, status, time.perf_counter() - start, message,
                         outcome.resumed_from, 0.0 if outcome.already_done else
                         trained_here(outcome.record.metrics, outcome.resumed_from))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row of the summary

        if isinstance(exc, RunDiverged):
            return JobResult(run_id, "diverged", time.perf_counter() - start, str(exc))
        if isinstance(exc, ZooError) and "is being trained by" in str(exc):
            return JobResult(run_id, "busy", time.perf_counter() - start, str(exc))
        message = str(exc) if isinstance(exc, ZooError) else \
            f"{type(exc).__name__}: {exc} ({_where(exc)})"
        mark_failed(Path(job.out), run_id, message)
        return JobResult(run_id, "failed", time.perf_counter() - start, message.splitlines()[0])


def trained_here(metrics: dict[str, Any], resumed_from: int) -> float:
    """The training time of the epochs this process ran (a resumed run stores them all)."""
    total, epochs = metrics.get("train_time_s") or 0.0, metrics.get("epochs_done") or 0
    return total * (epochs - resumed_from) / epochs if epochs else 0.0


def headline(metrics: dict[str, Any]) -> str:
    for key, text in (("fid", "FID {:.2f}"), ("test_bpb", "test bpb {:.4f}"),
                      ("test_acc", "test acc {:.2%}")):
        if isinstance(metrics.get(key), (int, float)):
            return text.format(metrics[key])
    return ""


def mark_failed(out: Path, run_id: str, message: str) -> None:
    """A run that raised keeps its checkpoints; its row says `failed` (with why) instead of
    `running`, so the boards list it and the next sweep tries it again."""
    try:
        with ResultsStore(results_path(out)) as store:
            record = store.get(run_id)
            if record is not None and record.status == "running":
                record.status, record.finished_at = "failed", utc_now()
                record.metrics = {**record.metrics, "error": message[:500]}
                store.upsert(record)
    except ZooError:
        pass  # the summary still reports the failure


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "no traceback"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno}"


_PREPARED: set[str] = set()


def _prepare_worker(plugins: list[str], threads: int | None) -> None:
    """Load the sweep's plugins (a spawned or remote worker starts with built-ins only) and
    size torch's thread pool so that the workers do not oversubscribe the cores."""
    load_entry_point_plugins()
    for plugin in plugins:
        if plugin not in _PREPARED:
            load_plugin_file(plugin)
            _PREPARED.add(plugin)
    if threads:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


# --- local process pool -----------------------------------------------------------------------

_WORKER_DEVICE: str | None = None


def _init_local_worker(devices) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get() if devices is not None else None
    keep_loaded_data()


def _run_local(job: Job) -> JobResult:
    return run_job(job, device=_WORKER_DEVICE if job.device == "auto" else None)


class LocalExecutor:
    """A spawn-based process pool: one process per worker, reused across runs. On GPUs each
    worker owns one device."""

    name = "local"

    def __init__(self, workers: int, gpus: int = 0):
        context = multiprocessing.get_context("spawn")  # no CUDA or sqlite state crosses a fork
        devices = None
        if gpus:
            devices = context.Queue()
            for index in range(workers):
                devices.put(f"cuda:{index % gpus}")
        self.slots = workers
        self._pool = cf.ProcessPoolExecutor(workers, mp_context=context,
                                            initializer=_init_local_worker, initargs=(devices,))

    def submit(self, job: Job) -> cf.Future:
        return self._pool.submit(_run_local, job)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


# --- Ray ----------------------------------------------------------------------------------------

LOOPBACK = "127.0.0.1"
# Ray's switch for an instance confined to one machine (its default on macOS and Windows): the
# node's address is then the loopback one, and Ray's servers listen on it alone rather than on
# every interface. Without it, `_node_ip_address="127.0.0.1"` is replaced by the machine's
# network address. Ray reads the variable when it is first imported.
RAY_ONE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def local_ray_options() -> dict[str, Any]:
    """`ray.init`'s options for the instance a sweep starts on this machine: reachable from this
    machine only (no dashboard either), with no more object store than a sweep needs."""
    return {"_node_ip_address": LOOPBACK, "include_dashboard": False, "dashboard_host": LOOPBACK,
            "object_store_memory": 80 * 1024 * 1024}


class RayExecutor:
    """One Ray task per run. `address=None` starts a Ray instance for this sweep on this
    machine, listening on 127.0.0.1 only; otherwise the sweep joins that cluster ("auto", or
    "ray://host:10001")."""

    name = "ray"

    def __init__(self, address: str | None, threads: int, gpus_per_run: float,
                 slots: int | None = None):
        if not address:
            os.environ[RAY_ONE_MACHINE_ENV] = "0"  # before `import ray` reads it
        try:
            import ray
        except ImportError:
            raise ZooError("--executor ray needs Ray: pip install 'zoo-bench[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "configure_logging": False}
            options.update({"address": address} if address else local_ray_options())
            try:
                ray.init(**options)
            except Exception as exc:  # noqa: BLE001 - Ray raises many types; all mean "no cluster"
                raise ZooError(f"cannot start or reach Ray at {address or 'this machine'}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                               ) from None
            if not address:
                self._check_loopback()
        resources = ray.cluster_resources()
        if gpus_per_run:
            capacity = int(resources.get("GPU", 0) // gpus_per_run)
        else:
            capacity = int(resources.get("CPU", 1) // max(1, threads))
        self.slots = slots or max(1, capacity)
        self._task = ray.remote(num_cpus=threads, num_gpus=gpus_per_run)(run_job)

    def _check_loopback(self) -> None:
        """Refuse a local instance that took a network address (Ray imported, and its switch
        read, before zoo could set it): it would listen beyond this machine."""
        address = self._ray.util.get_node_ip_address()
        if address != LOOPBACK:
            self._ray.shutdown()
            raise ZooError(f"the local Ray instance took the address {address}, not {LOOPBACK}, "
                           f"so it would listen on the network; set {RAY_ONE_MACHINE_ENV}=0 "
                           "before Ray is imported, or join a cluster with --address")

    def submit(self, job: Job) -> cf.Future:
        return self._task.remote(job).future()

    def shutdown(self, cancel: bool = False) -> None:
        self._ray.shutdown()


# --- torchrun -----------------------------------------------------------------------------------

class TorchrunExecutor:
    """Runs one at a time, each across `nproc` processes with DDP (`torchrun --standalone`):
    for a run too big for one device. The global batch size is the protocol's, split across the
    processes, so the result is comparable with a single-device run."""

    name = "torchrun"

    def __init__(self, nproc: int):
        if nproc < 1:
            raise ZooError(f"--nproc-per-node must be positive, got {nproc}")
        self.nproc = nproc
        self.slots = 1
        self._pool = cf.ThreadPoolExecutor(1)

    def submit(self, job: Job) -> cf.Future:
        return self._pool.submit(self._launch, job)

    def _launch(self, job: Job) -> JobResult:
        start = time.perf_counter()
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={self.nproc}", "-m", "zoo.sweep.executors",
                   json.dumps(asdict(job))]
        env = {**os.environ, "OMP_NUM_THREADS": str(job.threads or 1)}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        last = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if last:
            return JobResult(**json.loads(last[-1]))
        # Rank 0 died before reporting (killed, or torchrun stopped it after another rank failed).
        message = _torchrun_failure(done.stderr, done.returncode)
        mark_failed(Path(job.out), job.run_id, message)
        return JobResult(job.run_id, "failed", time.perf_counter() - start, message)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _torchrun_failure(stderr: str, returncode: int) -> str:
    """The line that says why a torchrun job failed: a rank's own one-line error, else the last
    exception line (torchrun ends its report with a banner, not with the cause)."""
    lines = [line.strip() for line in stderr.splitlines()]
    ours = [line for line in lines if re.match(r"^zoo( rank \d+)?: ", line)]
    exceptions = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): \S", line)
                  and "ChildFailedError" not in line]
    found = ours or exceptions
    return found[-1] if found else f"torchrun exited with status {returncode}"


def _torchrun_main(argv: list[str]) -> int:
    """One rank of a torchrun job: every rank trains (DDP); rank 0 alone reports, and records a
    failure in the results database (the other ranks never write)."""
    job = Job(**json.loads(argv[0]))
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        return _torchrun_follower(job, rank)
    result = run_job(job)
    print(json.dumps(asdict(result)), flush=True)
    return 0 if result.status in ("completed", "skipped") else 1


def _torchrun_follower(job: Job, rank: int) -> int:
    """A rank other than 0: `run_job` without its result row (rank 0 reports the same outcome)."""
    try:
        _prepare_worker(job.plugins, job.threads)
        make_trainer(TrainConfig(**job.config), out=job.out, device=job.device, show_progress=False,
                     labels=job.labels, log=job.log).run()
        return 0
    except ZooError as exc:
        print(f"zoo rank {rank}: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one line for the executor's summary
        print(f"zoo rank {rank}: {type(exc).__name__}: {exc} ({_where(exc)})", file=sys.stderr)
        return 1


def make_executor(name: str, *, workers: int | None, threads: int | None, device: str,
                  address: str | None = None, nproc_per_node: int | None = None):
    """The executor and the per-run thread count, sized to this machine (or the cluster)."""
    cores = os.cpu_count() or 1
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    gpus = torch.cuda.device_count() if on_gpu and device in ("auto", "cuda") else 0
    if name == "local":
        if workers is not None and workers < 1:
            raise ZooError(f"--workers must be positive, got {workers}")
        workers = workers or (gpus or max(1, cores // (threads or 1)))
        threads = threads or max(1, cores // workers)
        return LocalExecutor(workers, gpus=gpus), threads
    if name == "ray":
        threads = threads or 1
        return RayExecutor(address, threads, 1.0 if on_gpu else 0.0, slots=workers), threads
    if name == "torchrun":
        nproc = nproc_per_node or gpus or 1
        return TorchrunExecutor(nproc), threads or max(1, cores // nproc)
    raise ZooError(f"unknown executor '{name}': pick {', '.join(EXECUTORS)}")


if __name__ == "__main__":
    sys.exit(_torchrun_main(sys.argv[1:]))
