"""Quantization from the command line: post-training quantization of stored float runs
(`zoo eval --quant`, `zoo quant-sweep`), quantization-aware training (`zoo train --qat`), and
the quant leaderboards rendered from what they stored."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
import torch

from zoo.boards.render import render_leaderboards
from zoo.cli import main
from zoo.runs.config import TrainConfig
from zoo.runs.ids import protocol_id
from zoo.runs.results import ResultsStore, RunRecord
from zoo.tasks.kinds import make_trainer

QUICK = dict(epochs=2, train_subset=256)


@pytest.fixture(scope="module")
def float_runs(tmp_path_factory):
    """Two seeds of a small float vit, trained once for the module."""
    out = tmp_path_factory.mktemp("runs")
    ids = [make_trainer(TrainConfig.for_arch("vit", act="gelu", seed=seed, **QUICK), out=out,
                        show_progress=False).run().record.run_id for seed in (0, 1)]
    return out, ids


def one_line_error(capsys, code):
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("zoo: error: "), err
    return err[0]


def test_eval_quant_stores_a_result_beside_the_float_one(float_runs, capsys):
    out, (run_id, _) = float_runs
    assert main(["eval", run_id, "--out", str(out), "--quant", "int4-g32"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    with ResultsStore(out / "results.sqlite") as store:
        record = store.get(f"{run_id}+int4-g32")
        float_record = store.get(run_id)
        predictions = store.predictions([record.run_id])
    m = record.metrics
    assert record.quant == "int4-g32" and record.config["ptq_of"] == run_id
    assert record.protocol_id == float_record.protocol_id
    # the float model is re-evaluated in the same process: it matches what training stored
    assert m["float_test_acc"] == pytest.approx(float_record.metrics["test_acc"], abs=1e-12)
    assert 4 < m["bits_per_weight"] < 5.2 and m["model_bytes"] < m["float_bytes"] / 4
    assert "first 64 training images" in record.config["calibration"]
    assert len(predictions[record.run_id][1]) == 270  # digits' test split, for churn


def test_quant_params_reach_the_quantizer_and_the_run_id(float_runs, capsys):
    out, (run_id, _) = float_runs
    assert main(["eval", run_id, "--out", str(out), "--quant", "int8-wo",
                 "--quant-param", "skip=first,last"]) == 0
    printed = capsys.readouterr().out
    stored_id = printed.split(":")[0]
    assert stored_id.startswith(f"{run_id}+int8-wo-")
    with ResultsStore(out / "results.sqlite") as store:
        record = store.get(stored_id)
    assert set(record.config["float_layers"]) == {"patch_embed.proj", "head"}


def test_a_sweep_covers_every_run_and_resumes_without_repeating(float_runs, capsys):
    out, ids = float_runs
    args = ["quant-sweep", *ids, "--out", str(out), "--quants", "int8-wo,mxfp4,w4a4-hadamard"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.count("test accuracy") == 6
    assert main(args) == 0
    assert capsys.readouterr().out.count("(stored earlier)") == 6


def test_the_quant_board_shows_float_ptq_and_qat_rows(float_runs, tmp_path, capsys):
    out, ids = float_runs
    assert main(["quant-sweep", *ids, "--out", str(out), "--quants", "int8-wo,mxfp4"]) == 0
    qat = TrainConfig.for_arch("vit", act="gelu", quant="int4-g32", qat=True, **QUICK)
    make_trainer(qat, out=out, show_progress=False).run()
    assert main(["leaderboard", "--out", str(out), "--to", str(tmp_path / "boards")]) == 0
    board = (tmp_path / "boards" / "quant-digits-vit.md").read_text()
    assert "| gelu | default | none | float |" in board
    assert "| gelu | default | mxfp4 | PTQ |" in board and "| gelu | default | int4-g32 | QAT |" in board
    assert "Δ acc (pp)" in board and "PTQ calibration" in board and "n seeds" in board
    main_board = (tmp_path / "boards" / "digits-vit.md").read_text()
    assert "mxfp4" not in main_board  # PTQ results are not training runs
    assert "int4-g32" in main_board  # a QAT run is one
    # beside it: a record per table row, and the section's plot
    records = json.loads((tmp_path / "boards" / "quant-digits-vit.json").read_text())
    rows = quant_table(board)
    assert [(r["quant"], r["mode"]) for r in records] == [(r["quant"], r["mode"]) for r in rows]
    assert {r["mode"] for r in records} == {"float", "PTQ", "QAT"}
    (plot,) = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", board)
    assert plot.startswith("quant-digits-vit/") and valid_png(tmp_path / "boards" / plot)


# -- the quant board's files, from a small fixed database ------------------------------------

PROTOCOL = {"epochs": 3, "lr": 0.01}


def quant_run(run_id, seed, acc, *, quant="none", float_acc=None, qat=False, **metrics):
    """A float run, its PTQ result (with `float_acc`, the float model's own accuracy measured
    beside it) or a QAT run, of gelu on digits / vit."""
    config = {"config": {"qat": True}} if qat else {}
    if float_acc is not None:
        config.update(ptq_of=run_id.split("+")[0], calibration="the first 64 training images")
        metrics["float_test_acc"] = float_acc
    return RunRecord(
        run_id=run_id, arch="vit", act="gelu", init="default", quant=quant, dataset="digits",
        seed=seed, protocol=PROTOCOL, protocol_id=protocol_id(PROTOCOL), status="completed",
        metrics={"test_acc": acc, "params": 2048, **metrics}, environment={}, config=config,
        run_dir=f"runs/{run_id}", started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:10:00+00:00")


QUANT_RUNS = [
    *(quant_run(f"f{s}", s, acc, float_bytes=8192) for s, acc in enumerate([0.90, 0.92, 0.94])),
    # PTQ of each float run: -0, -1 and +1 points against its own float model
    *(quant_run(f"f{s}+int8-wo", s, acc, quant="int8-wo", float_acc=f, bits_per_weight=8.5,
                model_bytes=2048)
      for s, (acc, f) in enumerate([(0.90, 0.90), (0.91, 0.92), (0.95, 0.94)])),
    *(quant_run(f"q{s}", s, acc, quant="int4-g32", qat=True, bits_per_weight=5.0,
                model_bytes=3072) for s, acc in enumerate([0.85, 0.87])),
]


def quant_table(markdown):
    """The rows of a quant board's table as {header: cell}."""
    rows, header = [], None
    for line in markdown.splitlines():
        if line.startswith("| act | init | quant | mode |"):
            header = line.strip("| ").split(" | ")
        elif header and line.startswith("| ") and "---" not in line:
            rows.append(dict(zip(header, line.strip("| ").split(" | "))))
    return rows


def valid_png(path):
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def render_quant(tmp_path, runs, name):
    with ResultsStore(tmp_path / f"{name}.sqlite") as store:
        for run in runs:
            store.upsert(run)
        paths = render_leaderboards(store, tmp_path / name)
    return {p.relative_to(tmp_path / name).as_posix(): p.read_bytes() for p in paths}


def test_the_quant_board_has_csv_json_and_a_plot_drawn_from_its_rows(tmp_path):
    files = render_quant(tmp_path, QUANT_RUNS, "boards")
    pid = protocol_id(PROTOCOL)
    assert {"quant-digits-vit.md", "quant-digits-vit.csv", "quant-digits-vit.json",
            f"quant-digits-vit/{pid}.png"} <= set(files)
    board = files["quant-digits-vit.md"].decode()
    assert ("Every row at full precision: [quant-digits-vit.csv](quant-digits-vit.csv), "
            "[quant-digits-vit.json](quant-digits-vit.json).") in board
    rows = quant_table(board)
    assert [(r["quant"], r["mode"], r["Δ acc (pp)"]) for r in rows] == [
        ("none", "float", "—"), ("int8-wo", "PTQ", "+0.00 ± 1.00"), ("int4-g32", "QAT", "-6.00")]
    records = json.loads(files["quant-digits-vit.json"], parse_constant=pytest.fail)  # no NaN
    csv_rows = list(csv.DictReader(files["quant-digits-vit.csv"].decode().splitlines()))
    assert len(records) == len(csv_rows) == len(rows)
    for record, row, csv_row in zip(records, rows, csv_rows):
        assert (record["protocol_id"], record["dataset"], record["arch"]) == (pid, "digits", "vit")
        assert (record["act"], record["init"], record["quant"], record["mode"]) == (
            row["act"], row["init"], row["quant"], row["mode"])
        assert row["test acc (%)"] == f"{record['mean']:.2f} ± " + (
            "—" if record["std"] is None else f"{record['std']:.2f}")
        assert row["bits / weight"] == f"{record['bits_per_weight']:.3f}"
        assert row["model size (KiB)"] == f"{record['model_size_kib']:.1f}"
        assert row["n seeds"] == str(record["n"]) == str(len(record["seeds"]))
        for key, value in record.items():  # the CSV is the JSON, cell by cell
            if isinstance(value, float):
                assert float(csv_row[key]) == value  # full precision: round-trips exactly
            elif isinstance(value, list):
                assert csv_row[key] == " ".join(map(str, value))
            else:
                assert csv_row[key] == ("" if value is None else str(value))
    float_row, ptq, qat = records
    assert float_row["diff_vs_float"] is None and float_row["bits_per_weight"] == 32.0
    assert float_row["model_size_kib"] == 8.0 and float_row["mean"] == pytest.approx(92.0)
    # PTQ: the paired differences -0, -1, +1 points: mean 0, s = 1, 95% CI 0 ± 4.3027 / sqrt(3)
    assert ptq["diff_vs_float"] == pytest.approx(0.0, abs=1e-12) and ptq["pairs"] == 3
    assert ptq["diff_std"] == pytest.approx(1.0)
    assert (ptq["diff_ci95_low"], ptq["diff_ci95_high"]) == pytest.approx((-2.4841377, 2.4841377))
    assert ptq["mean"] == pytest.approx(92.0) and ptq["std"] == pytest.approx(math.sqrt(7))
    # QAT: its mean (86) minus the float runs' mean (92); no pairs, no spread of the difference
    assert qat["diff_vs_float"] == pytest.approx(-6.0) and qat["pairs"] is None
    assert qat["diff_std"] is None and qat["diff_ci95_low"] is None and qat["seeds"] == [0, 1]
    (plot,) = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", board)
    assert plot == f"quant-digits-vit/{pid}.png" and valid_png(tmp_path / "boards" / plot)


def test_the_quant_boards_files_are_the_same_bytes_on_every_render(tmp_path):
    first = render_quant(tmp_path, QUANT_RUNS, "first")
    again = render_quant(tmp_path, QUANT_RUNS[::-1], "again")
    assert any(name.startswith("quant-") and name.endswith(".png") for name in first)
    assert first == again


def test_qat_trains_and_its_checkpoint_evaluates_to_the_stored_result(tmp_path, capsys):
    config = TrainConfig.for_arch("vit", act="golu", quant="w4a4-hadamard", qat=True, **QUICK)
    record = make_trainer(config, out=tmp_path, show_progress=False).run().record
    assert record.status == "completed" and record.metrics["test_acc"] > 0.15
    assert record.config["config"]["qat"] is True
    assert 4 < record.metrics["bits_per_weight"] < 4.5
    assert main(["eval", record.run_id, "--out", str(tmp_path)]) == 0
    assert f"{record.metrics['test_acc']:.2%}" in capsys.readouterr().out


def test_float_run_ids_do_not_change_with_the_qat_field():
    assert "qat" not in TrainConfig.for_arch("vit", act="relu").to_dict()


@pytest.mark.parametrize("args, fragment", [
    (["train", "vit", "--quant", "int4-g32"], "needs --qat"),
    (["train", "vit", "--qat"], "--qat needs a format"),
    (["train", "vit", "--quant", "int4-g33", "--qat"], "unknown quant 'int4-g33'"),
    (["train", "vit", "--quant", "resq", "--qat", "--quant-param", "bits=3"],
     "bad --quant-param for resq"),
    (["eval", "nowhere", "--quant", "int8-wo"], "no run 'nowhere'"),
])
def test_bad_quantization_input_is_one_line(args, fragment, capsys):
    assert fragment in one_line_error(capsys, main(args))


def test_ptq_refuses_qat_runs_and_the_float_format(float_runs, tmp_path, capsys):
    out, (run_id, _) = float_runs
    assert "is the float model" in one_line_error(
        capsys, main(["eval", run_id, "--out", str(out), "--quant", "none"]))
    assert "goes with --quant" in one_line_error(
        capsys, main(["eval", run_id, "--out", str(out), "--quant-param", "skip=last"]))
    config = TrainConfig.for_arch("vit", act="relu", quant="int8-wo", qat=True, epochs=1,
                                  train_subset=64)
    qat_id = make_trainer(config, out=tmp_path, show_progress=False).run().record.run_id
    assert "starts from a float run" in one_line_error(
        capsys, main(["eval", qat_id, "--out", str(tmp_path), "--quant", "int4-g32"]))


def test_differences_are_signed_and_zero_is_never_negative():
    from zoo.boards.quant import signed_interval

    assert signed_interval("0.12 ± 0.21") == "+0.12 ± 0.21"
    assert signed_interval("-0.12 ± 0.21") == "-0.12 ± 0.21"
    assert signed_interval("-0.00 ± 0.37") == "+0.00 ± 0.37"
    assert signed_interval("—") == "—"


def test_bench_quant_times_the_reference_against_the_copy_on_cpu(capsys, tmp_path):
    assert main(["bench", "quant", "--numel", "8192", "--device", "cpu", "--write"]) == 0
    assert "int4" in capsys.readouterr().out
    board = (tmp_path / "leaderboards" / "quant-kernels.md").read_text()
    assert "copy" in board and "| nvfp4 |" in board


# -- what the formats quantize, per architecture ---------------------------------------------

GPT2_PROTOCOL = {"epochs": 3, "lr": 0.01, "arch_params": {"size": "nano"}}


def gpt2_run(run_id, seed, bpb, *, quant="none", float_bpb=None):
    """A float gpt2 run on shakespeare, or (with `float_bpb`) its PTQ result."""
    config, metrics = {}, {"test_bpb": bpb, "params": 4096}
    if float_bpb is not None:
        config = {"ptq_of": run_id.split("+")[0], "calibration": "the first 32 windows"}
        metrics.update(float_test_bpb=float_bpb, bits_per_weight=8.5, model_bytes=2048)
    return RunRecord(
        run_id=run_id, arch="gpt2", act="gelu_tanh", init="default", quant=quant,
        dataset="shakespeare", seed=seed, protocol=GPT2_PROTOCOL,
        protocol_id=protocol_id(GPT2_PROTOCOL), status="completed", metrics=metrics,
        environment={}, config=config, run_dir=f"runs/{run_id}",
        started_at="2025-01-01T00:00:00+00:00", finished_at="2025-01-01T00:10:00+00:00")


def scope_line(board):
    (line,) = [line for line in board.splitlines() if line.startswith("- **Quantized layers:**")]
    return line


def quantized_for_real(arch, **shape):
    """(the layers `quant=int8-wo` quantizes, in module order, the model): what the board's
    line must describe."""
    from zoo.build import build_model

    model = build_model(arch, quant="int8-wo", **shape)
    order = [name for name, _ in model.named_modules()]
    return sorted(model.zoo_quant_summary.quantized, key=order.index), model


def test_the_quant_board_states_what_each_architecture_quantizes(tmp_path):
    gpt2 = [gpt2_run(f"g{s}", s, 2.0 + 0.01 * s) for s in range(2)]
    gpt2 += [gpt2_run(f"g{s}+int8-wo", s, 2.1, quant="int8-wo", float_bpb=2.0 + 0.01 * s)
             for s in range(2)]
    files = render_quant(tmp_path, QUANT_RUNS + gpt2, "boards")
    note = "Every nn.Linear and nn.Conv2d is quantized unless the quant's parameters say otherwise"
    gpt2_board, vit_board = (files[f"quant-{name}.md"].decode()
                             for name in ("shakespeare-gpt2", "digits-vit"))
    assert note in gpt2_board and "first and last layers included" not in gpt2_board

    # gpt2: the head reuses the token embedding's weight, which no format touches
    layers, model = quantized_for_real("gpt2", arch_params={"size": "nano"}, vocab_size=256)
    assert model.lm_head.weight is model.wte.weight and model.wte.weight.dtype == torch.float32
    assert "lm_head" not in layers and "wte" not in layers
    line = scope_line(gpt2_board)
    assert f"{len(layers)} layers" in line and f"from `{layers[0]}` to `{layers[-1]}`" in line
    assert "the output layer `lm_head` is not one" in line
    assert "the weight of the Embedding `wte` (tied weights), which stays float32" in line

    # vit: its head is an nn.Linear like the rest, and is quantized with them
    layers, model = quantized_for_real("vit", image_size=(8, 8), channels=1, num_classes=10)
    line = scope_line(vit_board)
    assert "head" in layers and f"{len(layers)} layers" in line
    assert f"from `{layers[0]}` to `{layers[-1]}`" in line
    assert "the output layer `head` is one of them" in line


def test_an_architecture_that_cannot_be_built_here_is_said_to_be_unknown(tmp_path):
    from dataclasses import replace

    unknown = [replace(run, run_id=f"p-{run.run_id}", arch="plugin_arch_not_loaded")
               for run in QUANT_RUNS]
    board = render_quant(tmp_path, unknown, "boards")["quant-digits-plugin_arch_not_loaded.md"]
    assert "not known here: the architecture cannot be built" in scope_line(board.decode())
