"""`zoo train var`: the tokenizer is trained once and reused as a frozen, checksummed dependency;
the generator trains through the same run, resume, results and leaderboard machinery as every
other model, and ends with generation metrics, a speed comparison and a sample grid."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from zoo.boards.generation import board_name
from zoo.boards.render import render_leaderboards
from zoo.build import build_model
from zoo.cli import main
from zoo.errors import ZooError
from zoo.registry import INITS
from zoo.runs.config import TrainConfig
from zoo.runs.results import ResultsStore
from zoo.runs.tokenizer_spec import TokenizerSpec, parse_tokenizer

# A tokenizer and a generator small enough for a CPU test: digits (8x8 -> a 4x4 latent, scales
# 1-2-3-4, 30 tokens per image).
TOKENIZER = "msvq:batch=64,codebook=32,latent=8,steps=150,width=16"
QUICK = ["--dataset", "digits", "--tokenizer", TOKENIZER, "--arch-param", "size=nano",
         "--epochs", "2", "--batch-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of var and one of rar, trained once for the whole module."""
    out = tmp_path_factory.mktemp("gen-runs")
    for argv in (["var", "--act", "gelu", "--seed", "0"], ["var", "--act", "gelu", "--seed", "1"],
                 ["rar", "--act", "gelu", "--tokenizer", TOKENIZER.replace("msvq", "vq")]):
        assert main(["train", *QUICK, *argv, "--out", str(out)]) == 0  # later flags win
    return out


def _records(out):
    with ResultsStore(out / "results.sqlite") as store:
        return {run.run_id: run for run in store.runs()}


# --- the tokenizer spec -------------------------------------------------------------------------

def test_a_tokenizer_spec_round_trips_through_its_canonical_text():
    spec = parse_tokenizer("msvq:scales=1-2-4-7,codebook=256,steps=500")
    assert spec == TokenizerSpec(kind="msvq", scales=(1, 2, 4, 7), codebook=256, steps=500)
    assert parse_tokenizer(spec.canonical()) == spec
    assert parse_tokenizer("msvq:codebook=512").canonical() == "msvq"  # defaults drop out


@pytest.mark.parametrize("text, message", [
    ("pixel", "unknown image tokenizer"), ("msvq:colors=3", "bad tokenizer option"),
    ("msvq:steps=many", "not a number"), ("msvq:codebook=0", "must be positive"),
    ("vq:scales=1-2", "one scale")])
def test_a_bad_tokenizer_spec_is_a_one_line_error(text, message):
    with pytest.raises(ZooError, match=message):
        parse_tokenizer(text)


def test_the_var_recipe_trains_on_fashion_mnist_with_the_multi_scale_tokenizer():
    config = TrainConfig.for_arch("var")
    assert (config.dataset, config.tokenizer) == ("fashion-mnist", "msvq")
    assert TrainConfig.for_arch("rar").tokenizer == "vq"
    # the same tokenizer written two ways is one run
    same = TrainConfig.for_arch("var", tokenizer="msvq:codebook=512")
    assert same.run_id() == config.run_id()


@pytest.mark.parametrize("argv, message", [
    (["var", "--dataset", "shakespeare"], "image model"),
    (["var", "--block-size", "64"], "for language models"),
    (["var", "--tokenizer", "bpe"], "unknown image tokenizer")])
def test_bad_generator_options_fail_with_one_line(argv, message, capsys):
    assert main(["train", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- training ---------------------------------------------------------------------------------

def test_a_var_run_stores_generation_metrics_with_everything_they_depend_on(runs):
    records = _records(runs)
    var = [r for r in records.values() if r.arch == "var" and r.seed == 0][0]
    m = var.metrics
    assert var.status == "completed"
    assert m["fid"] >= 0 and m["fid_real_floor"] >= 0
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    assert 0 <= m["class_consistency"] <= 1
    assert m["images_per_s"] > 0 and m["raster_images_per_s"] > 0
    protocol = m["gen_protocol"]
    assert protocol["samples"] == 10 * protocol["samples_per_class"]
    assert {"cfg", "top_k", "top_p", "temperature", "seed", "reference"} <= set(protocol)
    assert len(protocol["feature_net"]["sha256"]) == 64
    tokenizer = var.config["dependencies"]["tokenizer"]
    assert tokenizer["scales"] == [1, 2, 3, 4] and len(tokenizer["sha256"]) == 64
    assert (runs / var.run_id / "samples.png").is_file()


def test_the_tokenizer_is_trained_once_and_reused_by_later_runs(runs):
    stored = sorted(p.name for p in (runs / "tokenizers").iterdir() if not p.name.startswith("."))
    assert len(stored) == 2  # one msvq for both var seeds, one vq for rar
    records = _records(runs).values()
    ids = {r.config["dependencies"]["tokenizer"]["id"] for r in records if r.arch == "var"}
    assert len(ids) == 1
    info = json.loads((runs / "tokenizers" / ids.pop() / "tokenizer.json").read_text())
    mse = info["metrics"]["recon_mse_by_scales"]
    assert mse[-1] < mse[0]  # more scales, a better round trip


def test_the_feature_network_is_trained_once_and_checksummed(runs):
    nets = [p for p in (runs / "evaluators").iterdir() if (p / "evaluator.json").is_file()]
    assert len(nets) == 1
    info = json.loads((nets[0] / "evaluator.json").read_text())
    ids = {r.metrics["gen_protocol"]["feature_net"]["sha256"] for r in _records(runs).values()}
    assert ids == {info["sha256"]}


def test_a_run_refuses_a_tokenizer_whose_weights_changed(runs, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(runs, copy)
    var = [r for r in _records(copy).values() if r.arch == "var"][0]
    tokenizer = copy / "tokenizers" / var.config["dependencies"]["tokenizer"]["id"]
    weights = tokenizer / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert main(["sample", var.run_id, "--out", str(copy), "--n", "4"]) == 2
    err = capsys.readouterr().err
    assert "checksum" in err and "Traceback" not in err


def test_zoo_sample_writes_a_png_grid(runs, tmp_path):
    from PIL import Image

    var = [r for r in _records(runs).values() if r.arch == "var"][0]
    target = tmp_path / "grid.png"
    assert main(["sample", var.run_id, "--out", str(runs), "--n", "20", "--cfg", "2",
                 "--top-k", "8", "--file", str(target)]) == 0
    image = Image.open(target)
    assert image.size[0] > image.size[1] > 8  # 10 columns (classes), 2 rows


def test_zoo_sample_is_reproducible_for_a_sampling_seed(runs, tmp_path):
    var = [r for r in _records(runs).values() if r.arch == "var"][0]
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for target in (first, second):
        assert main(["sample", var.run_id, "--out", str(runs), "--n", "10",
                     "--sample-seed", "3", "--file", str(target)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_zoo_eval_recomputes_generation_metrics_with_other_settings(runs, capsys):
    var = [r for r in _records(runs).values() if r.arch == "var"][0]
    assert main(["eval", var.run_id, "--out", str(runs), "--samples-per-class", "5",
                 "--cfg", "1"]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "50 samples" in out
    report = json.loads(next((runs / var.run_id).glob("gen_eval-cfg1-*-n5.json")).read_text())
    assert report["gen_protocol"]["cfg"] == 1
    assert report["test_loss"] == pytest.approx(var.metrics["test_loss"], rel=1e-5)


def test_sampling_flags_are_refused_for_classifiers(capsys, tmp_path):
    assert main(["train", "vit", "--epochs", "1", "--train-subset", "64", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    run = next(p for p in tmp_path.iterdir() if p.name.startswith("digits-vit"))
    assert main(["eval", run.name, "--out", str(tmp_path), "--cfg", "2"]) == 2
    assert "image generators" in capsys.readouterr().err


def test_a_killed_generator_run_resumes_and_ends_with_the_same_result(runs, tmp_path):
    killed = tmp_path / "killed"
    for dependency in ("tokenizers", "evaluators"):  # already trained: only the generator runs
        shutil.copytree(runs / dependency, killed / dependency)
    argv = ["train", "var", "--act", "gelu", "--seed", "0", *QUICK, "--out", str(killed)]
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(killed.glob("digits-var-*/checkpoint.json")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # as hard as a crash: no cleanup runs
    proc.wait()
    run_dir = next(killed.glob("digits-var-*/checkpoint.json")).parent
    assert not (run_dir / "result.json").exists(), "the kill came too late to test resuming"

    assert main(argv) == 0
    resumed = json.loads((run_dir / "result.json").read_text())["metrics"]
    expected = _records(runs)[run_dir.name].metrics
    for key in ("test_loss", "test_acc", "fid", "precision", "recall", "class_consistency"):
        assert resumed[key] == expected[key]


# --- the leaderboard --------------------------------------------------------------------------

def test_the_generation_board_has_a_row_per_arch_and_act_with_a_sample_grid(runs, tmp_path):
    with ResultsStore(runs / "results.sqlite") as store:
        paths = render_leaderboards(store, tmp_path / "boards")
    names = {p.name for p in paths}
    assert board_name("digits") in names
    assert not any(name.startswith("digits-var") for name in names)  # not a classifier board
    text = (tmp_path / "boards" / board_name("digits")).read_text()
    assert "## var, protocol" in text and "## rar, protocol" in text
    assert "FID ↓" in text and "Feature network:" in text and "Tokenizer:" in text
    var_row = next(line for line in text.splitlines() if line.startswith("| gelu")
                   and "var-digits/digits-var" in line)
    assert "| 2 |" in var_row  # two seeds averaged
    grid = var_row.split('src="')[1].split('"')[0]
    assert (tmp_path / "boards" / grid).is_file()


def test_the_generation_board_has_csv_json_and_a_linked_fid_plot_per_section(runs, tmp_path):
    from PIL import Image

    with ResultsStore(runs / "results.sqlite") as store:
        paths = render_leaderboards(store, tmp_path / "boards")
    boards = tmp_path / "boards"
    text = (boards / "var-digits.md").read_text()
    assert {boards / "var-digits.csv", boards / "var-digits.json"} <= set(paths)
    assert ("Every row at full precision: [var-digits.csv](var-digits.csv), "
            "[var-digits.json](var-digits.json).") in text
    # one record per table row, in table order, with the row's numbers at full precision
    header = next(line for line in text.splitlines() if line.startswith("| act |"))
    columns = header.strip("| ").split(" | ")
    rows = [dict(zip(columns, line.strip("| ").split(" | "))) for line in text.splitlines()
            if line.startswith("| ") and "<img" in line]
    records = json.loads((boards / "var-digits.json").read_text(), parse_constant=pytest.fail)
    csv_rows = list(csv.DictReader((boards / "var-digits.csv").read_text().splitlines()))
    assert len(records) == len(rows) == len(csv_rows) == 2  # var gelu, rar gelu
    for record, row, csv_row in zip(records, rows, csv_rows):
        assert row["act"] == record["act"] and row["n seeds"] == str(record["n"])
        std = "—" if record["fid_std"] is None else f"{record['fid_std']:.2f}"
        assert row["FID ↓"] == f"{record['fid_mean']:.2f} ± {std}"
        assert row["precision"].startswith(f"{record['precision_mean']:.3f} ± ")
        assert row["class consistency (%)"].startswith(f"{record['class_consistency_mean']:.2f}")
        assert row["test token loss"].startswith(f"{record['test_loss_mean']:.4f} ± ")
        assert f'src="{record["samples"]}"' in row["samples"]
        assert row["speedup"] == ("—" if record["speedup"] is None
                                  else f"{record['speedup']:.2f}×")
        assert float(csv_row["fid_mean"]) == record["fid_mean"]
    var = next(record for record in records if record["arch"] == "var")
    assert var["n"] == 2 and var["fid_ci95_low"] < var["fid_mean"] < var["fid_ci95_high"]
    # a plot per (arch, protocol) section, linked from it, beside the sample grids
    plots = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert len(plots) == 2 and all(re.fullmatch(r"var-digits/(var|rar)-\w+\.png", p) for p in plots)
    for plot in plots:
        assert boards / plot in paths
        with Image.open(boards / plot) as image:
            assert image.format == "PNG"


def test_the_generation_board_depends_on_the_database_alone(runs, tmp_path):
    database = tmp_path / "results.sqlite"
    shutil.copyfile(runs / "results.sqlite", database)
    with ResultsStore(runs / "results.sqlite") as store:  # beside its run folders: grids copied
        first = render_leaderboards(store, tmp_path / "a")
    moved = tmp_path / "elsewhere"
    shutil.move(str(runs), str(moved))  # the run folders (and their grids) are gone
    try:
        with ResultsStore(database) as store, pytest.warns(UserWarning, match="sample grid"):
            second = render_leaderboards(store, tmp_path / "b")
    finally:
        shutil.move(str(moved), str(runs))
    assert [p.name for p in first] == [p.name for p in second]
    assert any(p.suffix == ".png" for p in first)  # the FID plots: drawn from the database too
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()


def test_a_generator_trains_on_the_device_it_is_given():
    if not torch.cuda.is_available():
        pytest.skip("no GPU here")
    assert main(["train", "var", *QUICK, "--device", "cuda", "--out", "gpu-runs"]) == 0


# --- composition --------------------------------------------------------------------------------

def tiny_tokenizer(scales=(1, 2, 3, 4)):
    from zoo.models.msvq import MSVQConfig, MultiScaleVQ

    torch.manual_seed(0)
    return MultiScaleVQ(MSVQConfig(image_size=8, channels=1, scales=scales, codebook_size=16,
                                   latent_channels=8, width=8, downsample=2)).eval()


@pytest.mark.parametrize("arch", ["var", "rar"])
@pytest.mark.parametrize("init", INITS.names())
def test_every_init_applies_to_the_generators_and_leaves_the_tokenizer_alone(arch, init):
    if INITS.get(init).extra.get("requires"):
        pytest.skip(f"{init} needs {INITS.get(init).extra['requires']} (tested on its own)")
    tokenizer = tiny_tokenizer((1, 2, 3, 4) if arch == "var" else (4,))
    before = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    rows = torch.cat([torch.arange(8)[:, None] % 10,
                      torch.randint(16, (8, tokenizer.token_count))], dim=1)
    model = build_model(arch, act="gelu", init=init, seed=3, image_size=(8, 8), channels=1,
                        num_classes=10, tokenizer=tokenizer, arch_params={"size": "nano"},
                        calibration_batch=lambda: rows)
    assert all(torch.equal(before[k], v) for k, v in tokenizer.state_dict().items())
    logits = model(rows)
    assert logits.shape == (8, tokenizer.token_count, 16) and torch.isfinite(logits).all()


@pytest.mark.parametrize("quant", ["int8-wo", "w4a4-hadamard"])
def test_quantization_reaches_the_transformer_not_the_frozen_tokenizer(quant):
    from zoo.quant.layers import QuantLinear

    tokenizer = tiny_tokenizer()
    rows = torch.cat([torch.arange(8)[:, None] % 10,
                      torch.randint(16, (8, tokenizer.token_count))], dim=1)
    model = build_model("var", act="gelu", quant=quant, image_size=(8, 8), channels=1,
                        num_classes=10, tokenizer=tokenizer, arch_params={"size": "nano"},
                        calibration_batch=lambda: rows)
    assert isinstance(model.blocks[0].mlp.fc1, QuantLinear)
    assert not any(isinstance(m, QuantLinear) for m in model.tokenizer.modules())


def test_post_training_quantization_of_a_generator_is_stored_but_is_not_a_board_row(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs, copy)
    var = [r for r in _records(copy).values() if r.arch == "var"][0]
    assert main(["eval", var.run_id, "--out", str(copy), "--quant", "int8-wo"]) == 0
    assert f"{var.run_id}+int8-wo" in _records(copy)
    with ResultsStore(copy / "results.sqlite") as store:
        paths = render_leaderboards(store, tmp_path / "boards")
    assert not any(p.name.startswith("quant-") for p in paths)
    assert "+int8-wo" not in (tmp_path / "boards" / board_name("digits")).read_text()


def test_zoo_eval_inception_hands_uint8_images_to_the_established_package(runs, monkeypatch,
                                                                          capsys):
    import zoo.tasks.gen_metrics as gen_metrics

    seen = {}

    def fake_inception_fid(real, fake, **options):  # the real one downloads Inception weights
        seen.update(real=real, fake=fake)
        return 42.0

    monkeypatch.setattr(gen_metrics, "inception_fid", fake_inception_fid)
    var = [r for r in _records(runs).values() if r.arch == "var"][0]
    assert main(["eval", var.run_id, "--out", str(runs), "--samples-per-class", "3",
                 "--inception"]) == 0
    assert "Inception FID (torchmetrics, 30 samples): 42.00" in capsys.readouterr().out
    assert seen["real"].dtype == seen["fake"].dtype == torch.uint8
    assert seen["fake"].shape == (30, 1, 8, 8) and seen["real"].shape[1:] == (1, 8, 8)


def test_the_feature_network_keeps_the_recipe_published_generator_runs_pinned():
    """Data-set recipes (resnet's Fashion-MNIST one) must not change the feature network: the
    published var boards name these runs and generator runs pin their checksums."""
    from zoo.tasks.gen_eval import feature_net_config

    assert feature_net_config("fashion-mnist", 55_000).run_id() == \
        "fashion-mnist-resnet-relu-default-none-s0-52155581"
    assert feature_net_config("digits", 1_257).run_id() == \
        "digits-resnet-relu-default-none-s0-88824302"
