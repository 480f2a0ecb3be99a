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
from zoo.evaluate.stored import evaluate_run
from zoo.models.activation import Activation
from zoo.registry import ACTS
from zoo.runs.config import TrainConfig
from zoo.runs.results import ResultsStore
from zoo.tasks.kinds import make_trainer

QUICK = dict(epochs=3, train_subset=512, batch_size=16, warmup_epochs=0.5, lr=2e-3)


def quick_config(**overrides) -> TrainConfig:
    return TrainConfig.for_arch("vit", **{"act": "golu", **QUICK, **overrides})


def test_a_short_run_writes_config_metrics_checkpoint_environment_and_a_result_row(tmp_path):
    outcome = make_trainer(quick_config(), out=tmp_path / "runs", show_progress=False).run()
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
    a = make_trainer(quick_config(), out=tmp_path / "a", show_progress=False).run().record.metrics
    b = make_trainer(quick_config(), out=tmp_path / "b", show_progress=False).run().record.metrics
    for key in ("test_acc", "test_loss", "val_acc", "train_loss"):
        assert a[key] == b[key]


def test_rerunning_a_finished_run_returns_the_stored_result_without_training(tmp_path):
    first = make_trainer(quick_config(), out=tmp_path, show_progress=False).run()
    again = make_trainer(quick_config(), out=tmp_path, show_progress=False).run()
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
    for key in ("test_acc", "test_loss", "val_acc", "train_loss", "epochs_done",
                "weight_change_median", "feature_rank", "massive_activation"):
        assert resumed[key] == expected[key]  # the resumed run measures change from the same W0
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
    trainer = make_trainer(quick_config(act=exploding_act), out=tmp_path, show_progress=False)
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
    outcome = make_trainer(config, out=tmp_path, show_progress=False).run()
    report = evaluate_run(outcome.record.run_id, out=tmp_path, device="cpu")
    assert report["epoch"] == 1
    assert report["test_acc"] == outcome.record.metrics["test_acc"] == report["stored_test_acc"]


def test_two_processes_cannot_train_the_same_run_at_once(tmp_path):
    trainer = make_trainer(quick_config(), out=tmp_path, show_progress=False)
    with trainer.run_dir.exclusive():
        other = make_trainer(quick_config(), out=tmp_path, show_progress=False)
        with pytest.raises(ZooError, match="is being trained by process"):
            other.run()
    assert trainer.run().record.status == "completed"  # the lock is released afterwards


# -- diagnostics, predictions and training-time init rules ------------------------------------


def test_every_epoch_records_weight_change_massive_activations_and_feature_rank(tmp_path):
    outcome = make_trainer(quick_config(), out=tmp_path, show_progress=False).run()
    run = outcome.run_dir.path
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    model_weights = {"blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.weight", "head.weight"}
    for row in epochs:
        assert model_weights <= set(row["weight_change"])
        assert row["massive_activation"] >= 1 and row["massive_activation_block"].startswith("blocks.")
        assert 1 <= row["feature_rank"] <= 64  # the vit's features are 64-d
    # weights keep moving away from W0 while training
    assert epochs[-1]["weight_change_median"] > epochs[0]["weight_change_median"] > 0
    final = outcome.record.metrics
    assert final["weight_change_median"] == epochs[-1]["weight_change_median"]
    assert final["feature_rank"] == epochs[-1]["feature_rank"]
    assert (run / "initial_weights.safetensors").is_file()


def test_the_test_predictions_are_stored_and_match_the_test_accuracy(tmp_path):
    from zoo.data.images import load_dataset, to_device_tensors

    outcome = make_trainer(quick_config(), out=tmp_path, show_progress=False).run()
    with ResultsStore(tmp_path / "results.sqlite") as store:
        split, predicted = store.predictions([outcome.record.run_id])[outcome.record.run_id]
    labels = to_device_tensors(load_dataset("digits"), "digits", torch.device("cpu")).test[1]
    assert split == "test" and len(predicted) == len(labels)
    accuracy = (torch.tensor(predicted) == labels).float().mean().item()
    assert accuracy == pytest.approx(outcome.record.metrics["test_acc"])


@pytest.fixture
def frozen_head_init():
    """An init whose training rule zeroes the head's learning rate and counts steps."""
    from zoo.registry import INITS

    steps = []

    @INITS.register("frozen_head_test", formula="test only", touches="-", keeps="-")
    def frozen_head():
        def apply(model, ctx):  # the trainer asks a fresh instance for its rules: tag, don't keep
            model.head.weight.frozen_for_test = True

        apply.param_lr_scale = lambda p: 0.0 if getattr(p, "frozen_for_test", False) else 1.0
        apply.after_step = lambda model, step: steps.append(step)
        return apply

    yield steps
    INITS.remove("frozen_head_test")


def test_an_inits_training_rule_sets_learning_rates_and_runs_after_every_step(
        tmp_path, frozen_head_init):
    outcome = make_trainer(quick_config(init="frozen_head_test", weight_decay=0.0), out=tmp_path,
                           show_progress=False).run()
    change = outcome.record.metrics
    rows = [json.loads(line) for line in (outcome.run_dir.path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["weight_change"]["head.weight"] == 0.0  # lr scale 0: never moved
    assert rows[-1]["weight_change"]["blocks.0.mlp.fc1.weight"] > 0
    steps_per_epoch = 512 // 16
    assert frozen_head_init == list(range(1, 3 * steps_per_epoch + 1))
    assert change["test_acc"] > 0


def test_tvr_keeps_block_weights_at_the_target_std_during_training(tmp_path):
    from zoo.runs.rundir import RunDir

    config = quick_config(init="lir", init_params={"tvr_std": 0.02, "tvr_interval": 1},
                          lr=2e-2)  # a high lr that would grow the weights
    outcome = make_trainer(config, out=tmp_path, show_progress=False).run()
    _, state = RunDir(outcome.run_dir.path).load_model_state()
    for name in ("blocks.0.attn.qkv.weight", "blocks.3.mlp.fc2.weight"):
        assert state[name].std().item() <= 1.2 * 0.02 + 1e-6
    untouched = quick_config(init="lir", lr=2e-2)  # LIR alone lets them grow
    _, free = RunDir(make_trainer(untouched, out=tmp_path, show_progress=False).run().run_dir.path
                     ).load_model_state()
    assert free["blocks.0.attn.qkv.weight"].std().item() > 1.2 * 0.02


def test_run_ids_are_stable_across_zoo_versions():
    """The published runs' ids: a changed id would make `zoo train` retrain a stored run."""
    assert TrainConfig.for_arch("vit", act="relu", seed=0).run_id() == \
        "digits-vit-relu-default-none-s0-88d1757f"
    assert "tokenizer" not in TrainConfig.for_arch("vit", act="relu").protocol()


def test_eval_subset_validates_and_tests_on_the_first_examples_and_is_part_of_the_protocol(
        tmp_path):
    whole = quick_config()
    subset = quick_config(eval_subset=100)
    assert "eval_subset" not in whole.protocol() and "eval_subset" not in whole.to_dict()
    assert subset.protocol()["eval_subset"] == 100 and subset.run_id() != whole.run_id()
    record = make_trainer(subset, out=tmp_path, show_progress=False).run().record
    assert record.config["data"]["validation"] == record.config["data"]["test"] == 100
    with ResultsStore(tmp_path / "results.sqlite") as store:
        _, predictions = store.predictions([record.run_id])[record.run_id]
    assert len(predictions) == 100


def test_eval_subset_is_refused_for_language_models_and_generators():
    for arch in ("gpt2", "var"):
        with pytest.raises(ZooError, match="--eval-subset is for image classifiers"):
            TrainConfig.for_arch(arch, eval_subset=10)


def test_a_completed_run_stores_its_learning_curve_in_the_database(tmp_path):
    config = quick_config()
    record = make_trainer(config, out=tmp_path, show_progress=False).run().record
    curve = record.metrics["curve"]
    history = [json.loads(line) for line in
               (tmp_path / config.run_id() / "metrics.jsonl").read_text().splitlines()]
    assert curve["epoch"] == [row["epoch"] for row in history] == list(range(1, config.epochs + 1))
    assert curve["val_acc"] == [row["val_acc"] for row in history]
    assert curve["train_loss"] == [row["train_loss"] for row in history]
