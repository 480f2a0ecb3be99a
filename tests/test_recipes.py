"""Training recipes beyond AdamW + cosine: data-set recipes, SGD and the one-cycle schedule,
shift and flip augmentation, flip test-time augmentation, an EMA of the weights, the staged
(CIFAR-style) ResNet, and the activations' companion inits in the standard grid."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from zoo.build import build_model, check_activations
from zoo.cli import main
from zoo.cli.options import parse_options
from zoo.data.images import ShiftFlip, ShuffledBatches
from zoo.errors import ZooError
from zoo.models.timm_models import StagedResNet, small_resnet
from zoo.registry import ACTS, ARCHS, INITS
from zoo.registry.inits import gaussian_moments
from zoo.runs.config import TrainConfig
from zoo.sweep.grid import Grid
from zoo.tasks.classify import evaluate
from zoo.tasks.kinds import make_trainer
from zoo.train.trainer import Trainer, lr_schedule, make_optimizer

TINY = dict(epochs=2, train_subset=256, batch_size=32, warmup_epochs=0.5)


# --- configs, run ids, protocols -----------------------------------------------------------------

def test_recipe_fields_at_their_defaults_leave_run_ids_and_protocols_as_they_were():
    config = TrainConfig.for_arch("vit", act="relu", seed=0)
    assert config.run_id() == "digits-vit-relu-default-none-s0-88d1757f"  # published before
    protocol = config.protocol()
    assert (protocol["optimizer"], protocol["schedule"]) == ("adamw", "linear warmup + cosine")
    for field in ("aug_shift", "aug_flip", "tta_flip", "ema"):
        assert field not in protocol and field not in config.to_dict()


def test_list_valued_arch_params_are_read_from_the_command_line(tmp_path):
    # the README's `--arch-param layers=[1,1,1] widths=[16,32,64]`
    assert parse_options(["layers=[2, 2,2]", "widths=[24,48,96]", "size=tiny", "r=0.5"],
                         "--arch-param") == {"layers": [2, 2, 2], "widths": [24, 48, 96],
                                             "size": "tiny", "r": 0.5}
    args = ["train", "resnet", "--dataset", "digits", "--arch-param", "layers=[1,1,1]",
            "widths=[8,8,8]", "--epochs", "1", "--train-subset", "64", "--out", str(tmp_path),
            "--no-progress"]
    assert main(args) == 0
    (config,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/config.json")]
    assert config["config"]["arch_params"] == {"layers": [1, 1, 1], "widths": [8, 8, 8]}


def test_a_data_sets_recipe_applies_on_that_data_set_only_and_flags_win_over_it():
    fashion = TrainConfig.for_arch("resnet", dataset="fashion-mnist")
    digits = TrainConfig.for_arch("resnet")
    assert fashion.optimizer == "sgd" and fashion.aug_flip and fashion.tta_flip
    assert fashion.arch_params["widths"] == [16, 32, 64]
    assert digits.optimizer == "adamw" and not digits.aug_flip and digits.arch_params == {}
    assert TrainConfig.for_arch("resnet", dataset="fashion-mnist", epochs=1).epochs == 1
    assert TrainConfig.for_arch("resnet", dataset="fashion-mnist", aug_flip=False).aug_flip is False
    merged = TrainConfig.for_arch("resnet", dataset="fashion-mnist", arch_params={"widths": [8, 8, 8]})
    assert merged.arch_params["layers"] == [1, 1, 1] and merged.arch_params["widths"] == [8, 8, 8]
    protocol = fashion.protocol()
    assert protocol["aug_shift"] == 1 and protocol["tta_flip"] is True
    assert protocol["optimizer"].startswith("sgd") and "linear decay" in protocol["schedule"]


def test_zoo_info_shows_each_data_sets_recipe(capsys):
    assert main(["info", "resnet"]) == 0
    shown = capsys.readouterr().out
    assert "recipe on fashion-mnist: epochs=6" in shown and "optimizer=sgd" in shown


@pytest.mark.parametrize("overrides, message", [
    ({"aug_flip": True}, "horizontal flips can change what a digits image shows"),
    ({"tta_flip": True}, "horizontal flips"),
    ({"optimizer": "lion"}, "--optimizer must be one of adamw, sgd"),
    ({"schedule": "step"}, "--schedule must be one of cosine, linear"),
    ({"aug_shift": -1}, "--aug-shift must be a whole number >= 0"),
    ({"ema": 1.0}, r"--ema must be a decay in \(0, 1\)"),
])
def test_recipe_values_that_cannot_work_are_one_line_errors(overrides, message):
    with pytest.raises(ZooError, match=message):
        TrainConfig.for_arch("vit", **overrides)


def test_image_augmentation_is_refused_for_language_models():
    with pytest.raises(ZooError, match="--aug-shift: for image classifiers only, not gpt2"):
        TrainConfig.for_arch("gpt2", aug_shift=2)


def test_the_cli_passes_the_recipe_flags_and_refuses_bad_ones(tmp_path, capsys):
    args = ["train", "resnet", "--act", "relu", "--dataset", "digits", "--epochs", "1",
            "--train-subset", "64", "--optimizer", "sgd", "--schedule", "linear", "--lr", "0.05",
            "--aug-shift", "1", "--ema", "0.9", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    stored = json.loads(next(tmp_path.glob("*/config.json")).read_text())["config"]
    assert (stored["optimizer"], stored["schedule"], stored["aug_shift"], stored["ema"]) == \
        ("sgd", "linear", 1, 0.9)
    assert main(["train", "vit", "--aug-flip", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "horizontal flips" in capsys.readouterr().err


# --- optimizer and schedule ----------------------------------------------------------------------

def test_sgd_is_nesterov_with_momentum_and_no_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    optimizer = make_optimizer(model, TrainConfig.for_arch("vit", optimizer="sgd", lr=0.1,
                                                           weight_decay=5e-4))
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in optimizer.param_groups)
    decays = sorted(g["weight_decay"] for g in optimizer.param_groups)
    assert decays == [0.0, 5e-4]


def test_the_linear_schedule_warms_up_then_falls_in_a_straight_line_to_zero():
    factor = lr_schedule("linear", total_steps=110, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5)
    assert factor(110) == 0.0
    cosine = lr_schedule("cosine", total_steps=110, warmup_steps=10)
    assert cosine(60) == pytest.approx(0.5) and cosine(35) > factor(35)


# --- augmentation and test-time augmentation -----------------------------------------------------

def test_a_shift_moves_the_image_by_at_most_n_pixels_and_fills_with_the_black_level():
    x = torch.zeros(64, 1, 6, 6)
    x[:, :, 2:4, 2:4] = 1.0  # a bright square in the middle
    out = ShiftFlip(shift=1, fill=(-0.5,))(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for image in out[:, 0]:
        rows, cols = torch.nonzero(image == 1.0, as_tuple=True)
        assert len(rows) == 4 and rows.min() in (1, 2, 3) and cols.min() in (1, 2, 3)
        assert set(image.unique().tolist()) <= {-0.5, 0.0, 1.0}
    moved = {(int(torch.nonzero(i == 1.0)[0, 0]), int(torch.nonzero(i == 1.0)[0, 1]))
             for i in out[:, 0]}
    assert len(moved) == 9  # every offset in [-1, 1]^2 occurs among 64 draws


def test_flips_mirror_about_half_of_the_examples_and_keep_the_rest():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5).repeat(50, 1, 1, 1)
    out = ShiftFlip(flip=True)(x, torch.Generator().manual_seed(1))
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 30 < sum(mirrored) < 70


def test_augmented_batches_are_the_same_for_the_same_seed_and_epoch_and_differ_across_epochs():
    x, y = torch.randn(40, 1, 8, 8), torch.arange(40)
    augment = ShiftFlip(shift=2, flip=True)

    def epoch(seed, k):
        return [xb for xb, _ in ShuffledBatches(x, y, 16, seed, augment=augment).epoch(k)]

    assert all(torch.equal(a, b) for a, b in zip(epoch(0, 1), epoch(0, 1)))
    assert not all(torch.equal(a, b) for a, b in zip(epoch(0, 1), epoch(0, 2)))
    plain = [xb for xb, _ in ShuffledBatches(x, y, 16, 0).epoch(1)]
    assert not ShiftFlip() and all(torch.equal(a, b) for a, b in zip(
        plain, [xb for xb, _ in ShuffledBatches(x, y, 16, 0, augment=ShiftFlip()).epoch(1)]))


def test_flip_test_time_augmentation_scores_the_mean_logits_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x, y = torch.randn(10, 2, 4, 4), torch.randint(0, 3, (10,))
    mean_logits = (model(x) + model(x.flip(3))) / 2
    found = evaluate(model, x, y, keep_predictions=True, tta_flip=True)
    assert found["predictions"] == mean_logits.argmax(1).tolist()
    expected_loss = nn.functional.cross_entropy(mean_logits, y).item()
    assert found["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert evaluate(model, x, y)["loss"] == pytest.approx(
        nn.functional.cross_entropy(model(x), y).item(), rel=1e-5)


# --- the EMA of the weights ----------------------------------------------------------------------

def test_with_an_ema_the_average_is_evaluated_and_checkpointed_and_resume_gives_the_same_result(
        tmp_path, monkeypatch):
    config = TrainConfig.for_arch("resnet", act="relu", ema=0.9, epochs=3, **{
        k: v for k, v in TINY.items() if k != "epochs"})
    reference = make_trainer(config, out=tmp_path / "reference", show_progress=False).run()

    # a run that stops right after its second checkpoint, as a crash would, then resumes
    original = Trainer._checkpoint

    def crash_after_epoch_2(self, epoch, *args, **kwargs):
        original(self, epoch, *args, **kwargs)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_checkpoint", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(config, out=tmp_path / "resumed", show_progress=False).run()
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    resumed = make_trainer(config, out=tmp_path / "resumed", show_progress=False).run()
    assert resumed.resumed_from == 2
    for key in ("test_acc", "test_loss", "val_acc", "train_loss"):
        assert resumed.record.metrics[key] == reference.record.metrics[key]

    # the checkpointed model is the average, not the trainer's weights
    from zoo.runs.rundir import RunDir

    run = RunDir(reference.run_dir.path)
    checkpoint = run.load_checkpoint()
    trained = checkpoint.trainer_state["train_weights"]
    name = next(k for k, v in trained.items() if v.dtype.is_floating_point and v.ndim == 4)
    assert not torch.equal(checkpoint.model_state[name], trained[name])
    from zoo.evaluate.stored import evaluate_run

    assert evaluate_run(run.path, device="cpu")["test_acc"] == reference.record.metrics["test_acc"]


# --- the staged (CIFAR-style) ResNet ------------------------------------------------------------

def test_three_stages_are_he_et_als_cifar_resnet_with_the_activation_in_every_block():
    model = build_model("resnet", act="golu", image_size=(28, 28), channels=1, num_classes=10,
                        arch_params={"layers": [1, 1, 1], "widths": [16, 32, 64]})
    assert isinstance(model, StagedResNet)
    assert check_activations(model, "golu") == 1 + 3 * 2  # the stem and two per block
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.forward_head(model.forward_features(torch.randn(2, 1, 28, 28)),
                              pre_logits=True).shape == (2, 64)
    deeper = small_resnet(image_size=(28, 28), channels=1, num_classes=10, act_layer=nn.ReLU,
                          layers=(3, 3, 3), widths=(16, 32, 64))
    assert sum(isinstance(m, nn.Conv2d) for m in deeper.modules()) == 1 + 18 + 2  # ResNet-20


def test_the_stem_stride_and_stage_strides_set_where_the_resolution_halves():
    def feature_map(**options):
        model = small_resnet(image_size=(28, 28), channels=1, num_classes=10,
                             act_layer=nn.ReLU, layers=(1, 1, 1), widths=(16, 32, 64), **options)
        return model.forward_features(torch.randn(1, 1, 28, 28)).shape[-1]

    assert feature_map() == 7 and feature_map(stem_stride=2) == 4
    assert feature_map(strides=(2, 2, 2)) == 4 and feature_map(strides=(1, 1, 1)) == 28


@pytest.mark.parametrize("options, message", [
    ({"layers": (1, 1), "widths": (16, 32, 64)}, "as many stages"),
    ({"layers": (1, 1, 1), "widths": (16, 32, 64), "stem_stride": 3}, "must be 1 or 2"),
    ({"layers": (1, 1, 1), "widths": (16, 32, 64), "strides": (1, 2)}, "one per stage"),
    ({"stem_stride": 2}, "options of resnets with other than four stages"),
])
def test_bad_resnet_shapes_are_one_line_errors(options, message):
    with pytest.raises(ZooError, match=message):
        small_resnet(image_size=(28, 28), channels=1, num_classes=10, act_layer=nn.ReLU,
                     **options)


def test_four_stages_stay_timms_own_resnet():
    import timm.models.resnet

    model = build_model("resnet", act="relu", image_size=(8, 8), channels=1, num_classes=10)
    assert isinstance(model, timm.models.resnet.ResNet)


# --- companion inits ----------------------------------------------------------------------------

def test_activations_name_the_init_their_paper_pairs_them_with(capsys):
    companions = {name: ACTS.get(name).extra.get("companion_init") for name in ACTS.names()}
    assert companions["sine"] == "siren"
    for name in ("hermite", "fourier", "tropical", "rational", "selu"):
        assert companions[name] == "variance_preserving"
    assert companions["gelu"] is None and companions["golu"] is None
    for init in filter(None, companions.values()):
        INITS.get(init)  # every companion is a registered init
    assert main(["info", "sine"]) == 0
    assert "companion init: siren" in capsys.readouterr().out


def test_for_selu_variance_preserving_is_lecun_normal():
    second_moment, _ = gaussian_moments(ACTS.get("selu").create())
    assert second_moment == pytest.approx(1.0, abs=1e-3)  # so 1 / (fan_in E[g^2]) = 1 / fan_in


def test_the_standard_grid_adds_each_activations_companion_init():
    configs, _ = Grid(protocol="smoke", archs=["resnet"], datasets=["digits"],
                      acts=["gelu", "sine", "selu"]).configs()
    pairs = [(c.act, c.init) for c in configs]
    assert pairs == [("gelu", "default"), ("sine", "default"), ("sine", "siren"),
                     ("selu", "default"), ("selu", "variance_preserving")]
    plain, _ = Grid(protocol="smoke", archs=["resnet"], datasets=["digits"],
                    acts=["sine"], inits=["default"]).configs()
    assert [(c.act, c.init) for c in plain] == [("sine", "default")]
    named, _ = Grid(protocol="smoke", archs=["resnet"], datasets=["digits"],
                    acts=["sine", "gelu"], inits=["orthogonal", "companion"]).configs()
    assert [(c.act, c.init) for c in named] == [("sine", "orthogonal"), ("sine", "siren"),
                                                ("gelu", "orthogonal")]


def test_a_sweep_worker_loads_a_data_set_once_for_all_its_runs():
    from zoo.tasks.classify import keep_loaded_data, load_data

    config = TrainConfig.for_arch("vit", train_subset=100)
    assert load_data(config, torch.device("cpu")) is not load_data(config, torch.device("cpu"))
    keep_loaded_data()
    try:
        first = load_data(config, torch.device("cpu"))
        assert load_data(TrainConfig.for_arch("resnet", act="relu", train_subset=100),
                         torch.device("cpu")) is first  # same data, another run
        other = load_data(TrainConfig.for_arch("vit", train_subset=50), torch.device("cpu"))
        assert other is not first and len(other.train[0]) == 50
    finally:
        keep_loaded_data(False)


# --- the quick recipes on Fashion-MNIST ----------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_the_fashion_mnist_recipes_train_one_cpu_thread_on_the_whole_set(arch):
    config = TrainConfig.for_arch(arch, dataset="fashion-mnist")
    assert config.train_subset is None and config.eval_subset is None
    steps = math.ceil(55_000 / config.batch_size) * config.epochs
    assert steps > 1000  # several epochs of the whole set, not a subset
    assert "fashion-mnist" in ARCHS.get(arch).extra["dataset_recipes"]
