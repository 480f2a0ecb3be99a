"""One run across two processes: torchrun + DDP on the CPU (gloo), against a single process."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.errors import ZooError
from zoo.runs.config import TrainConfig
from zoo.runs.results import ResultsStore
from zoo.runs.rundir import RunDir
from zoo.sweep.executors import _torchrun_failure
from zoo.tasks.kinds import make_trainer
from zoo.train import distributed

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available in this build of PyTorch")

# The whole digits train split at batch 32: 3 epochs learn well above chance in a few seconds,
# and the last batch of each epoch (1257 % 32 = 9 examples) splits 5/4, so the weighting of
# uneven shards is part of what the comparison checks.
TRAIN = dict(eval_subset=128, epochs=3, batch_size=32, lr=2e-3, warmup_epochs=0.5)
ARGS = ["train", "vit", "--eval-subset", "128", "--epochs", "3", "--batch-size", "32",
        "--lr", "2e-3", "--warmup-epochs", "0.5", "--no-progress", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks share this machine's cores


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "zoo", *args]


def stored_runs(out: Path) -> list:
    with ResultsStore(out / "results.sqlite") as store:
        return store.runs()


def result_metrics(out: Path) -> dict:
    return json.loads(next(out.glob("*/result.json")).read_text())["metrics"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One uninterrupted two-process run of ARGS (shared: a torchrun start costs seconds)."""
    out = tmp_path_factory.mktemp("ddp")
    done = subprocess.run(torchrun(*ARGS, "--out", str(out)), env=ENV, capture_output=True,
                          text=True, timeout=600)
    return done, out


def test_a_torchrun_job_trains_one_run_equivalent_to_the_single_process_run(ddp_run, tmp_path):
    done, out = ddp_run
    assert done.returncode == 0, done.stderr[-3000:]
    runs = stored_runs(out)
    assert len(runs) == 1 and runs[0].status == "completed"
    ddp = runs[0]
    assert math.isfinite(ddp.metrics["test_acc"]) and ddp.environment["world_size"] == 2

    single = make_trainer(TrainConfig.for_arch("vit", **TRAIN), out=tmp_path, device="cpu",
                          show_progress=False).run().record
    assert single.run_id == ddp.run_id  # the same config: the same row, on any number of ranks
    assert "world_size" not in single.environment
    # The same global batches and the gradient of the same global mean: every epoch's training
    # loss agrees to 0.1% (measured: ~1e-5). A job whose ranks did not average their gradients,
    # or weighed the uneven last shards wrongly, or saw different batches, misses by far more.
    for a, b in zip(single.metrics["curve"]["train_loss"], ddp.metrics["curve"]["train_loss"],
                    strict=True):
        assert b == pytest.approx(a, rel=1e-3)
    assert ddp.metrics["val_loss"] == pytest.approx(single.metrics["val_loss"], rel=1e-3)
    assert abs(ddp.metrics["test_acc"] - single.metrics["test_acc"]) <= 2 / 128
    assert single.metrics["train_loss"] < single.metrics["curve"]["train_loss"][0] - 0.3
    assert min(single.metrics["test_acc"], ddp.metrics["test_acc"]) > 0.3  # chance: 0.1


def test_a_batch_size_not_divisible_by_the_processes_is_a_one_line_error(tmp_path):
    done = subprocess.run(torchrun(*ARGS[:-2], "--batch-size", "33", "--device", "cpu",
                                   "--out", str(tmp_path)),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("zoo: error:")]
    assert errors and all("batch size 33 is not divisible by the 2 processes" in line
                          for line in errors)
    # torchrun prints its own report of a failed job; no traceback comes from zoo's ranks.
    assert f'File "{Path(zoo.__file__).parent}' not in done.stderr
    assert "[rank0]: Traceback" not in done.stderr
    assert not (tmp_path / "results.sqlite").exists()


def test_a_killed_torchrun_job_resumes_from_rank_0s_checkpoint(ddp_run, tmp_path):
    reference = result_metrics(ddp_run[1])
    job = subprocess.Popen(torchrun(*ARGS, "--out", str(tmp_path)), env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(tmp_path.glob("*/checkpoint.json")) and time.time() < deadline:
        time.sleep(0.05)
    kill_tree(job.pid)  # as hard as a crash of the machine: every rank and torchrun itself
    job.wait()
    run_dir = next(tmp_path.glob("*/checkpoint.json")).parent
    assert not (run_dir / "result.json").exists(), "the kill came too late to test resuming"

    done = subprocess.run(torchrun(*ARGS, "--out", str(tmp_path)), env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed" in done.stdout
    resumed = result_metrics(tmp_path)
    for key in ("test_acc", "test_loss", "val_loss", "train_loss", "epochs_done",
                "weight_change_median", "feature_rank", "massive_activation"):
        assert resumed[key] == reference[key], key  # gloo on the CPU is deterministic
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert [run.status for run in stored_runs(tmp_path)] == ["completed"]


RANK_1_EXPLODES = '''
import os

from zoo.models.activation import Activation
from zoo.registry import ACTS

SCALE = 1e30 if os.environ.get("RANK") == "1" else 1.0


@ACTS.register("explode_on_rank_1", formula="x", paper=("none", None))
def explode(inplace=False):
    return Activation("explode_on_rank_1", lambda x: x * SCALE * SCALE, inplace=inplace)
'''


def test_a_loss_that_diverges_on_one_rank_stops_every_rank(tmp_path):
    plugin = tmp_path / "explode.py"
    plugin.write_text(RANK_1_EXPLODES)
    done = subprocess.run(
        torchrun("--plugin", str(plugin), "train", "vit", "--act", "explode_on_rank_1",
                 "--epochs", "2", "--train-subset", "64", "--batch-size", "32", "--no-progress",
                 "--device", "cpu", "--out", str(tmp_path / "runs")),
        env=ENV, capture_output=True, text=True, timeout=300)  # a rank left waiting: timeout
    assert done.returncode != 0
    assert done.stderr.count("diverged: non-finite training loss in epoch 1") == 2  # both ranks
    [run] = stored_runs(tmp_path / "runs")
    assert run.status == "diverged" and run.metrics["diverged_at_epoch"] == 1


def test_a_sweep_on_the_torchrun_executor_stores_its_run(tmp_path, capsys):
    code = main(["sweep", "--executor", "torchrun", "--nproc-per-node", "2", "--protocol",
                 "smoke", "--archs", "vit", "--acts", "gelu", "--datasets", "digits", "--seeds",
                 "1", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    runs = stored_runs(tmp_path)
    assert len(runs) == 1 and runs[0].status == "completed"
    assert runs[0].environment["world_size"] == 2
    assert math.isfinite(runs[0].metrics["test_acc"])


# --- the pieces, without starting processes -------------------------------------------------

def test_without_torchrun_no_distributed_code_runs(tmp_path, monkeypatch):
    """The single-process path is today's: none of the DDP pieces is ever called."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a single-process run called distributed code")

    for name in ("check_supported", "check_shardable", "rank_device", "process_group",
                 "entered_by_main", "shard", "wrap", "sync_batchnorm", "rng_states",
                 "restore_rng_states"):
        monkeypatch.setattr(distributed, name, forbidden)
    for name in ("init_process_group", "barrier", "broadcast_object_list", "all_reduce",
                 "all_gather_object"):
        monkeypatch.setattr(torch.distributed, name, forbidden)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = TrainConfig.for_arch("vit", epochs=2, train_subset=96, batch_size=32)
    first = make_trainer(config, out=tmp_path, device="cpu", show_progress=False)
    assert first.run_dir.__class__ is RunDir
    assert first.run().record.status == "completed"
    assert make_trainer(config, out=tmp_path, show_progress=False).run().already_done


def test_without_torchrun_a_process_is_a_group_of_one():
    assert distributed.from_environment({}) == distributed.Group()
    assert not distributed.from_environment({"WORLD_SIZE": "1", "RANK": "0"}).distributed
    group = distributed.from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1",
                                          "MASTER_ADDR": "localhost", "MASTER_PORT": "1"})
    assert (group.rank, group.size, group.local_rank, group.is_main) == (3, 4, 1, False)
    assert group.local_size == 4  # torchrun sets LOCAL_WORLD_SIZE; without it, one machine
    with pytest.raises(ZooError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not set"):
        distributed.from_environment({"WORLD_SIZE": "2"})


def test_uneven_shards_weigh_their_losses_to_the_global_mean():
    x, y = torch.randn(9, 3), torch.randn(9)
    shares = [distributed.shard(x, y, distributed.Group(rank=r, size=2)) for r in range(2)]
    assert [len(s[1]) for s in shares] == [5, 4]
    assert torch.equal(torch.cat([s[0] for s in shares]), x)
    ddp_mean = sum(weight * part.mean() for _, part, weight in shares) / 2  # DDP averages
    assert ddp_mean.item() == pytest.approx(y.mean().item(), rel=1e-6)
    assert distributed.shard(x[:8], y[:8], distributed.Group(rank=1, size=2))[2] == 1.0


def test_ranks_other_than_0_never_write_the_run_folder(tmp_path):
    writers = {name for name in vars(RunDir) if name.startswith(("write", "save", "exclusive"))}
    assert writers <= set(vars(distributed.ReadOnlyRunDir))  # a new writer must be overridden
    run_dir = distributed.ReadOnlyRunDir(tmp_path / "run")
    with run_dir.exclusive():
        run_dir.write_json("config.json", {})
        run_dir.write_metrics([{"epoch": 1}])
        run_dir.save_initial_weights({"w": torch.zeros(2)})
        run_dir.save_checkpoint(1, torch.nn.Linear(2, 2), {})
    assert not (tmp_path / "run").exists()


def test_a_failed_torchrun_job_is_summarized_by_the_ranks_error_not_torchruns_banner():
    stderr = ("zoo rank 1: batch size 33 is not divisible\nTraceback (most recent call last):\n"
              "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
              "zoo.sweep.executors FAILED\n" + "=" * 60 + "\n")
    assert _torchrun_failure(stderr, 1) == "zoo rank 1: batch size 33 is not divisible"
    assert _torchrun_failure("RuntimeError: boom\n" + "=" * 60, 1) == "RuntimeError: boom"
    assert _torchrun_failure("", -9) == "torchrun exited with status -9"


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts each rank in its own session,
    so killing torchrun's process group would leave the ranks running)."""
    victims = [pid, *descendants(pid)]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while any(alive(victim) for victim in victims[1:]) and time.time() < deadline:
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
