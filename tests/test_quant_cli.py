"""Quantization from the command line: post-training quantization of stored float runs
(`zoo eval --quant`, `zoo quant-sweep`), quantization-aware training (`zoo train --qat`), and
the quant leaderboards rendered from what they stored."""

from __future__ import annotations

import pytest

from zoo.cli import main
from zoo.harness.config import TrainConfig
from zoo.harness.results import ResultsStore
from zoo.harness.train import Trainer

QUICK = dict(epochs=2, train_subset=256)


@pytest.fixture(scope="module")
def float_runs(tmp_path_factory):
    """Two seeds of a small float vit, trained once for the module."""
    out = tmp_path_factory.mktemp("runs")
    ids = [Trainer(TrainConfig.for_arch("vit", act="gelu", seed=seed, **QUICK), out=out,
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
    Trainer(qat, out=out, show_progress=False).run()
    assert main(["leaderboard", "--out", str(out), "--to", str(tmp_path / "boards")]) == 0
    board = (tmp_path / "boards" / "quant-digits-vit.md").read_text()
    assert "| gelu | default | none | float |" in board
    assert "| gelu | default | mxfp4 | PTQ |" in board and "| gelu | default | int4-g32 | QAT |" in board
    assert "Δ acc (pp)" in board and "PTQ calibration" in board and "n seeds" in board
    main_board = (tmp_path / "boards" / "digits-vit.md").read_text()
    assert "mxfp4" not in main_board  # PTQ results are not training runs
    assert "int4-g32" in main_board  # a QAT run is one


def test_qat_trains_and_its_checkpoint_evaluates_to_the_stored_result(tmp_path, capsys):
    config = TrainConfig.for_arch("vit", act="golu", quant="w4a4-hadamard", qat=True, **QUICK)
    record = Trainer(config, out=tmp_path, show_progress=False).run().record
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
    qat_id = Trainer(config, out=tmp_path, show_progress=False).run().record.run_id
    assert "starts from a float run" in one_line_error(
        capsys, main(["eval", qat_id, "--out", str(tmp_path), "--quant", "int4-g32"]))


def test_differences_are_signed_and_zero_is_never_negative():
    from zoo.harness.quant_leaderboard import _signed

    assert _signed("0.12 ± 0.21") == "+0.12 ± 0.21"
    assert _signed("-0.12 ± 0.21") == "-0.12 ± 0.21"
    assert _signed("-0.00 ± 0.37") == "+0.00 ± 0.37"
    assert _signed("—") == "—"


def test_bench_quant_times_the_reference_against_the_copy_on_cpu(capsys, tmp_path):
    assert main(["bench", "quant", "--numel", "8192", "--device", "cpu", "--write"]) == 0
    assert "int4" in capsys.readouterr().out
    board = (tmp_path / "leaderboards" / "quant-kernels.md").read_text()
    assert "copy" in board and "| nvfp4 |" in board
