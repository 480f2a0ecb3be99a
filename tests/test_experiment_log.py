"""Experiment logs (`--log tensorboard|wandb`): what a run writes is read back and compared with
the run's own metrics.jsonl; the default writes nothing and loads neither logger."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import main
from zoo.runs.config import TrainConfig
from zoo.sweep.executors import Job, run_job
from zoo.sweep.runner import job_for

EPOCHS, SUBSET, BATCH = 2, 128, 32
STEPS_PER_EPOCH = SUBSET // BATCH
TRAIN = ["train", "vit", "--act", "golu", "--epochs", str(EPOCHS), "--train-subset", str(SUBSET),
         "--eval-subset", "64", "--batch-size", str(BATCH), "--no-progress"]


def only_run(out: Path) -> Path:
    (run,) = [p for p in out.rglob("config.json")]
    return run.parent


def epoch_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_every_step_and_every_epochs_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    assert main([*TRAIN, "--log", "tensorboard", "--out", str(tmp_path / "runs")]) == 0
    run = only_run(tmp_path / "runs")
    scalars = tensorboard_scalars(run / "logs" / "tensorboard")

    steps = list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    for name in ("loss", "lr", "throughput"):
        assert [step for step, _ in scalars[f"train/{name}"]] == steps, name
    assert all(v > 0 for _, v in scalars["train/throughput"])
    assert all(v > 0 for _, v in scalars["train/lr"])

    rows = epoch_rows(run)
    assert len(rows) == EPOCHS
    for key in ("val_acc", "val_loss", "train_loss"):
        logged = scalars[f"epoch/{key}"]
        assert [step for step, _ in logged] == [(e + 1) * STEPS_PER_EPOCH for e in range(EPOCHS)]
        assert [v for _, v in logged] == pytest.approx([row[key] for row in rows], rel=1e-6)
    # the diagnostics of every epoch as well
    assert any(tag.startswith("epoch/") and "acc" not in tag and "loss" not in tag
               for tag in scalars)


def test_wandb_writes_an_offline_run_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main([*TRAIN, "--log", "wandb", "--out", str(tmp_path / "runs")]) == 0
    run = only_run(tmp_path / "runs")
    run_id = json.loads((run / "config.json").read_text()).get("run_id", run.name)
    (offline,) = (run / "logs" / "wandb").rglob("offline-run-*")
    records = list(offline.glob("run-*.wandb"))
    assert len(records) == 1 and records[0].stat().st_size > 0
    assert run_id in records[0].name or run.name in records[0].name


def test_the_default_writes_no_log_loads_no_tensorboard_and_starts_no_wandb_run(tmp_path):
    # (timm.utils imports wandb whenever it is installed, so only a started run would be ours)
    script = (
        "import sys\n"
        "from zoo.cli import main\n"
        f"assert main({TRAIN + ['--out', str(tmp_path / 'runs')]!r}) == 0\n"
        "loaded = [m for m in ('torch.utils.tensorboard', 'tensorboard') if m in sys.modules]\n"
        "wandb = sys.modules.get('wandb')\n"
        "loaded += ['a wandb run'] if wandb is not None and wandb.run is not None else []\n"
        "print('loaded:', loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded: []" in done.stdout
    assert not (only_run(tmp_path / "runs") / "logs").exists()


def test_an_unknown_logger_is_a_usage_error(tmp_path, capsys):
    assert main([*TRAIN, "--log", "mlflow", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--log: invalid choice: 'mlflow'" in err and len(err.strip().splitlines()) == 1


def test_a_sweep_passes_the_option_to_each_runs_trainer(tmp_path):
    pytest.importorskip("tensorboard")
    config = TrainConfig.for_arch("vit", act="golu", epochs=1, train_subset=SUBSET,
                                  eval_subset=64, batch_size=BATCH)
    job = job_for(config, tmp_path / "runs", "cpu", 1, [], log="tensorboard")
    assert isinstance(job, Job) and job.log == "tensorboard"
    result = run_job(job)
    assert result.status == "completed", result
    run = only_run(tmp_path / "runs")
    assert len(tensorboard_scalars(run / "logs" / "tensorboard")["train/loss"]) == STEPS_PER_EPOCH
