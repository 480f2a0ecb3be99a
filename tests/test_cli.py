"""The `zoo` command: help everywhere, and every bad input ends as one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zoo.cli import main


def run_zoo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def assert_one_line_error(capsys, code: int, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("zoo: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [[], ["list"], ["info"], ["train"], ["eval"],
                                     ["leaderboard"], ["bench"], ["bench", "harness"],
                                     ["bench", "quant"], ["quant-sweep"], ["sample"], ["sweep"],
                                     ["submit"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: zoo" in capsys.readouterr().out


def test_list_shows_every_kind_with_papers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("archs", "acts", "inits", "quants", "datasets", "golu", "Gompertz", "orthogonal"):
        assert word in out


def test_info_prints_formula_paper_and_arxiv_id(capsys):
    assert main(["info", "golu"]) == 0
    out = capsys.readouterr().out
    assert "x * exp(-exp(-x))" in out and "2502.03654" in out


@pytest.mark.parametrize("args, fragments", [
    (["train", "vit", "--act", "gelo"], ["unknown act 'gelo'", "gelu"]),
    (["train", "vitt"], ["unknown arch 'vitt'", "vit"]),
    (["train", "vit", "--init", "kaiminq"], ["unknown init", "kaiming"]),
    (["train", "vit", "--dataset", "digitz"], ["unknown dataset", "digits"]),
    (["train", "vit", "--epochs", "-3"], ["argument --epochs: must be a whole number >= 1, got -3"]),
    (["train", "vit", "--epochs", "three"], ["argument --epochs: must be a whole number, got 'three'"]),
    (["train", "vit", "--batch-size", "0"], ["--batch-size: must be a whole number >= 1"]),
    (["train", "vit", "--lr", "-1"], ["--lr: must be > 0, got -1"]),
    (["train", "vit", "--device", "cuda:0"], ["CUDA is not available"]),
    (["train", "vit", "--dataset", "cifar10"], ["cifar10", "not available offline"]),
    (["list", "actz"], ["unknown kind 'actz'"]),
    (["train", "vit", "--act", "swish", "--act-param", "gamma=2"], ["swish has no parameter gamma"]),
    (["train", "vit", "--act", "swish", "--act-param", "beta"], ["--act-param takes NAME=NUMBER"]),
    (["info", "golux"], ["unknown name 'golux'", "golu"]),
    (["eval", "no-such-run"], ["no run 'no-such-run'"]),
    (["leaderboard"], ["no results database"]),
    (["--plugin", "absent.py", "list"], ["plugin file not found"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
])
def test_bad_input_is_one_line_and_non_zero(args, fragments, capsys):
    if args[-1] == "cuda:0" and __import__("torch").cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_one_line_error(capsys, main(args), *fragments)


def test_corrupt_checkpoint_is_one_line_for_eval(capsys, tmp_path):
    assert main(["train", "vit", "--epochs", "1", "--train-subset", "64", "--no-progress"]) == 0
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    weights = next(run_dir.glob("checkpoints/*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert_one_line_error(capsys, main(["eval", run_dir.name]), "does not match the sha256")
    # a checkpoint of a zoo that recorded no checksums: safetensors' own check still speaks
    pointer = json.loads((run_dir / "checkpoint.json").read_text())
    del pointer["sha256"]
    (run_dir / "checkpoint.json").write_text(json.dumps(pointer))
    assert_one_line_error(capsys, main(["eval", run_dir.name]), "is corrupt or unreadable")


def test_the_installed_command_prints_no_traceback():
    result = run_zoo("train", "vit", "--act", "gelo")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: unknown act 'gelo'; did you mean gelu")
    assert "Traceback" not in result.stderr + result.stdout


def test_bench_harness_reports_zoo_against_a_bare_loop(capsys):
    from zoo.tools.bench import bench_harness

    result = bench_harness("resnet", batch_size=64, epochs=1, repeats=1, device="cpu")
    assert result["zoo_samples_per_s"] > 0 and result["bare_samples_per_s"] > 0
    assert result["ratio"] == result["zoo_samples_per_s"] / result["bare_samples_per_s"]
    out = capsys.readouterr().out
    assert "bare PyTorch" in out and "ratio to bare" in out


def test_leaderboard_renders_the_runs_trained_from_the_cli(capsys, tmp_path):
    for seed in ("0", "1"):
        assert main(["train", "resnet", "--act", "golu", "--epochs", "1", "--train-subset", "64",
                     "--seed", seed, "--no-progress"]) == 0
    assert main(["leaderboard"]) == 0
    page = (tmp_path / "leaderboards" / "digits-resnet.md").read_text()
    assert "| golu | default | none |" in page and "| 2 |" in page
    assert "Seeds:** 0, 1" in page and "train_subset=64" in page


def test_bench_kernels_times_reference_and_native_ops_and_writes_the_table(tmp_path):
    from zoo.tools.kernel_bench import bench_kernels

    out = tmp_path / "kernels.md"
    rows = bench_kernels(["golu", "gelu", "rational"], numel=4096, device="cpu",
                         min_run_time=0.01, out=out)
    impls = {(r["act"], r["impl"]) for r in rows}
    assert impls == {("golu", "reference"), ("gelu", "reference"), ("gelu", "native"),
                     ("rational", "reference")}
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_gbps"] > 0 for r in rows)
    reference = next(r for r in rows if r["impl"] == "reference" and r["act"] == "gelu")
    assert reference["speedup_vs_reference"] == 1.0
    page = out.read_text()
    assert "| gelu | native |" in page and "copy bandwidth" in page


def test_bench_kernels_needs_whole_rows_of_channels_for_rational(capsys):
    code = main(["bench", "kernels", "rational", "--numel", "1000", "--device", "cpu"])
    assert_one_line_error(capsys, code, "--numel must be a multiple of 1024", "got 1,000")


def test_train_takes_init_options_and_refuses_unknown_ones(capsys, tmp_path):
    code = main(["train", "vit", "--init", "lowrank", "--init-param", "bogus=2"])
    assert_one_line_error(capsys, code, "bad --init-param for lowrank")
    code = main(["train", "vit", "--init", "lowrank", "--init-param", "rank=2", "--epochs", "1",
                 "--train-subset", "64", "--no-progress", "--out", str(tmp_path)])
    assert code == 0 and "lowrank" in capsys.readouterr().out


def test_several_init_options_follow_one_flag_or_repeat_it(tmp_path):
    from zoo.runs.results import ResultsStore

    base = ["train", "vit", "--init", "lir", "--epochs", "1", "--train-subset", "64",
            "--no-progress"]
    assert main([*base, "--init-param", "tvr_std=0.01", "tvr_interval=5", "--out",
                 str(tmp_path / "a")]) == 0
    assert main([*base, "--init-param", "tvr_std=0.01", "--init-param", "tvr_interval=5",
                 "--out", str(tmp_path / "b")]) == 0
    for out in ("a", "b"):
        with ResultsStore(tmp_path / out / "results.sqlite") as store:
            (run,) = store.runs()
        assert run.config["config"]["init_params"] == {"tvr_std": 0.01, "tvr_interval": 5}


def test_output_cut_short_by_a_closed_pipe_is_not_an_error():
    listing = subprocess.Popen([sys.executable, "-m", "zoo.cli", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    listing.stdout.readline()
    listing.stdout.close()  # like `zoo list | head -1`
    listing.wait(timeout=120)  # rich exits 1 on a closed pipe, plain prints 0
    assert listing.stderr.read() == ""


def test_eval_needs_lm_eval_only_for_lm_eval_tasks(monkeypatch, tmp_path, capsys):
    # lm-evaluation-harness is an optional extra: a plain `zoo eval` must work without it
    for name in ["lm_eval", *(n for n in sys.modules if n.startswith("lm_eval."))]:
        monkeypatch.setitem(sys.modules, name, None)  # "not installed", submodules included
    for name in ("zoo.evaluate.lm_eval", "zoo.cli.lm_evaluation", "zoo.cli.evaluation"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    code = main(["eval", "no-such-run", "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2 and "no-such-run" in error and "lm-evaluation-harness" not in error
    code = main(["eval", "no-such-run", "--out", str(tmp_path), "--lm-eval", "shakespeare_ppl"])
    assert code == 2 and "lm-evaluation-harness" in capsys.readouterr().err
