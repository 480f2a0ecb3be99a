"""Training runs: short real runs on digits, resume after a kill, determinism, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from zoo.cli import main
from zoo.errors import RunDiverged, ZooError
from zoo.harness.config import TrainConfig
from zoo.harness.evaluate import evaluate_run
from zoo.harness.results import ResultsStore
from zoo.harness.train import Trainer
from zoo.models.activation import Activation
from zoo.registry import ACTS

QUICK = dict(epochs=3, train_subset=512, batch_size=16, warmup_epochs=0.5, lr=2e-3)


def quick_config(**overrides) -> TrainConfig:
    return TrainConfig.for_arch("vit", **{"act": "golu", **QUICK, **overrides})


def test_a_short_run_writes_config_metrics_checkpoint_environment_and_a_result_row(tmp_path):
    outcome = Trainer(quick_config(), out=tmp_path / "runs", show_progress=False).run()
    run = outcome.run_dir.path
    assert {"config.json", "environment.json", "metrics.jsonl", "checkpoint.json",
            "result.json"} <= {p.name for p in run.iterdir()}
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.1  # it learns
    assert (run / json.loads((run / "checkpoint.json").read_text())["dir"] / "model.safetensors").is_file()
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"].startswith(torch.__version__[:4])
    with ResultsStore(tmp_path / "runs" / "results.sqlite") as store:
        row = store.get(outcome.record.run_id)
    assert row.status == "completed" and row.act == "golu" and row.dataset == "digits"
    assert 0.2 < row.metrics["test_acc"] <= 1.0  # 3 short epochs: above chance (10%)
    assert row.metrics["params"] > 0 and row.metrics["samples_per_s"] > 0


def test_the_same_seed_gives_the_same_metrics_on_cpu(tmp_path):
    a = Trainer(quick_config(), out=tmp_path / "a", show_progress=False).run().record.metrics
    b = Trainer(quick_config(), out=tmp_path / "b", show_progress=False).run().record.metrics
    for key in ("test_acc", "test_loss", "val_acc", "train_loss"):
        assert a[key] == b[key]


def test_rerunning_a_finished_run_returns_the_stored_result_without_training(tmp_path):
    first = Trainer(quick_config(), out=tmp_path, show_progress=False).run()
    again = Trainer(quick_config(), out=tmp_path, show_progress=False).run()
    assert again.already_done and again.record.metrics == first.record.metrics


def test_a_killed_run_resumes_and_ends_with_the_same_result(tmp_path):
    args = ["train", "vit", "--act", "golu", "--epochs", "4", "--train-subset", "512",
            "--batch-size", "32", "--no-progress"]
    reference = tmp_path / "reference"
    assert main([*args, "--out", str(reference)]) == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(killed.glob("*/checkpoint.json")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # as hard as a crash: no cleanup runs
    proc.wait()
    run_dir = next(killed.glob("*/checkpoint.json")).parent
    assert not (run_dir / "result.json").exists(), "the kill came too late to test resuming"

    assert main([*args, "--out", str(killed)]) == 0
    expected = json.loads(next(reference.glob("*/result.json")).read_text())["metrics"]
    resumed = json.loads((run_dir / "result.json").read_text())["metrics"]
    for key in ("test_acc", "test_loss", "val_acc", "train_loss", "epochs_done"):
        assert resumed[key] == expected[key]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


@pytest.fixture
def exploding_act():
    @ACTS.register("explode_test", formula="x * 1e30 * 1e30", paper=("none", None))
    def explode(inplace=False):
        return Activation("explode_test", lambda x: x * 1e30 * 1e30, inplace=inplace)

    yield "explode_test"
    ACTS.remove("explode_test")


def test_a_non_finite_loss_stops_the_run_and_records_it_as_diverged(tmp_path, exploding_act):
    trainer = Trainer(quick_config(act=exploding_act), out=tmp_path, show_progress=False)
    with pytest.raises(RunDiverged, match="diverged"):
        trainer.run()
    with ResultsStore(tmp_path / "results.sqlite") as store:
        assert store.get(trainer.config.run_id()).status == "diverged"
    assert json.loads((trainer.run_dir.path / "result.json").read_text())["status"] == "diverged"


def test_a_diverged_run_exits_non_zero_from_the_cli(tmp_path, exploding_act, capsys):
    code = main(["train", "vit", "--act", exploding_act, "--epochs", "1", "--train-subset", "64",
                 "--no-progress"])
    assert code == 3
    assert "diverged" in capsys.readouterr().err


def test_eval_reproduces_the_stored_test_accuracy(tmp_path):
    config = TrainConfig.for_arch("resnet", epochs=1, train_subset=128)
    outcome = Trainer(config, out=tmp_path, show_progress=False).run()
    report = evaluate_run(outcome.record.run_id, out=tmp_path, device="cpu")
    assert report["epoch"] == 1
    assert report["test_acc"] == outcome.record.metrics["test_acc"] == report["stored_test_acc"]


def test_two_processes_cannot_train_the_same_run_at_once(tmp_path):
    trainer = Trainer(quick_config(), out=tmp_path, show_progress=False)
    with trainer.run_dir.exclusive():
        other = Trainer(quick_config(), out=tmp_path, show_progress=False)
        with pytest.raises(ZooError, match="is being trained by process"):
            other.run()
    assert trainer.run().record.status == "completed"  # the lock is released afterwards
