"""Failure behaviour (README "Failure behaviour"): every failure is one line and a documented
exit code; stored files are verified before they are trusted; a failure never damages what was
already written."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo.cli.catalogue
import zoo.runs.device
from zoo.cli import main
from zoo.errors import ZooError
from zoo.runs.results import ResultsStore
from zoo.tasks.gen_eval import MAX_SAMPLES_PER_CLASS, GenProtocol

TINY = ["--epochs", "2", "--train-subset", "64", "--eval-subset", "64", "--no-progress"]


def one_line_error(capsys, code: int, *fragments: str, exit_code: int = 2) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == exit_code, err
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_zoo(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def database_state(out: Path) -> tuple[str, list]:
    """The results database's bytes and its rows: both must survive any failure."""
    path = out / "results.sqlite"
    with ResultsStore(path) as store:
        rows = [(r.run_id, r.status, r.metrics) for r in store.runs()]
    return hashlib.sha256(path.read_bytes()).hexdigest(), rows


# --- one trained run, copied into each test that damages it ----------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "runs"
    assert main(["train", "vit", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def runs(trained, tmp_path) -> Path:
    out = tmp_path / "runs"
    shutil.copytree(trained, out)
    return out


def run_folder(out: Path) -> Path:
    return next(p for p in out.iterdir() if p.is_dir())


def as_killed(out: Path) -> Path:
    """Make the stored run look killed after its last checkpoint: no result, no finished row,
    so that `zoo train` with the same flags resumes it from its files."""
    run = run_folder(out)
    (run / "result.json").unlink()
    conn = sqlite3.connect(out / "results.sqlite")
    conn.execute("DELETE FROM runs")
    conn.commit()
    conn.close()
    return run


def resume(out: Path) -> int:
    return main(["train", "vit", *TINY, "--out", str(out)])


def pointer(run: Path) -> dict:
    return json.loads((run / "checkpoint.json").read_text())


def write_pointer(run: Path, value) -> None:
    (run / "checkpoint.json").write_text(json.dumps(value))


# --- the guard at the top of the CLI -----------------------------------------------------------

def test_an_unanticipated_exception_is_one_line_naming_the_command_with_exit_1(monkeypatch,
                                                                                capsys):
    def broken(args):
        raise RuntimeError("something zoo did not foresee\nacross two lines")

    monkeypatch.setattr(zoo.cli.catalogue, "cmd_list", broken)
    line = one_line_error(capsys, main(["list"]), "zoo list failed with an internal error",
                          "RuntimeError: something zoo did not foresee across two lines",
                          "ZOO_DEBUG=1", exit_code=1)
    assert "Traceback" not in line


def test_zoo_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(zoo.cli.catalogue, "cmd_list",
                        lambda args: (_ for _ in ()).throw(RuntimeError("boom")))
    monkeypatch.setenv("ZOO_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["list"])


def test_a_full_disk_is_one_line_saying_so(monkeypatch, capsys):
    def full(args):
        raise OSError(28, os.strerror(28), "runs/some-run/trainer.pt")

    monkeypatch.setattr(zoo.cli.catalogue, "cmd_list", full)
    one_line_error(capsys, main(["list"]), "zoo list failed: No space left on device",
                   "runs/some-run/trainer.pt", exit_code=1)


def test_a_plugin_that_exits_while_loading_is_one_line(tmp_path, capsys):
    plugin = tmp_path / "quitter.py"
    plugin.write_text("import sys\nsys.exit(3)\n")
    one_line_error(capsys, main(["--plugin", str(plugin), "list"]),
                   "plugin quitter.py failed to load: SystemExit: 3")


def test_a_plugin_whose_factory_raises_is_one_line_naming_it(tmp_path, capsys):
    plugin = tmp_path / "boom_act.py"
    plugin.write_text(
        "from zoo.registry import ACTS\n"
        "@ACTS.register('boom', formula='x')\n"
        "def boom(**params):\n"
        "    raise ValueError('the factory is broken')\n")
    one_line_error(capsys, main(["train", "vit", "--act", "boom", "--plugin", str(plugin)]),
                   "act 'boom' (plugin:boom_act.py) failed to build",
                   "ValueError: the factory is broken")


# --- values are checked before anything is built or written -----------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["train", "vit", "--lr", "nan"], "argument --lr: must be finite, got 'nan'"),
    (["train", "vit", "--weight-decay", "inf"], "argument --weight-decay: must be finite"),
    (["train", "vit", "--seed", "99999999999999999999999"], "argument --seed: must be a seed in"),
    (["train", "vit", "--label-smoothing", "1"], "--label-smoothing: must be in [0, 1)"),
    (["train", "vit", "--ema", "1.5"], "argument --ema: must be in (0, 1)"),
    (["train", "vit", "--arch-param", "depth=-1"], "depth=-1 (arch vit): must be a whole number >= 1"),
    (["train", "vit", "--arch-param", "depth=2.5"], "depth=2.5 (arch vit): must be a whole number"),
    (["train", "vit", "--arch-param", "drop_path_rate=1"], "must be a number in [0, 1)"),
    (["train", "gpt2", "--arch-param", "n_head=0"], "n_head=0 (arch gpt2): must be a whole number >= 1"),
    (["train", "vit", "--init", "orthogonal", "--init-param", "gain=abc"],
     "gain=abc (init orthogonal): must be a number"),
    (["train", "vit", "--init", "kaiming", "--init-param", "mode=3"], "must be a word"),
    (["train", "vit", "--act", "swish", "--act-param", "beta=inf"],
     "beta=inf (act swish): must be a finite number"),
    (["train", "vit", "--tokenizer", "bpe"], "--tokenizer: language-model options"),
    (["train", "vit", "--block-size", "64", "--steps-per-epoch", "5"],
     "--block-size, --steps-per-epoch: language-model options"),
    (["sweep", "--workers", "0"], "argument --workers: must be a whole number >= 1, got 0"),
    (["sweep", "--threads", "0"], "argument --threads: must be a whole number >= 1"),
    (["sweep", "--nproc-per-node", "0"], "argument --nproc-per-node: must be a whole number >= 1"),
    (["quant-sweep", "some-run", "--quants", ","], "--quants names no format: got ','"),
    (["sample", "some-run", "--n", "-5"], "argument --n: must be a whole number >= 1"),
    (["eval", "some-run", "--top-p", "0"], "argument --top-p: must be in (0, 1]"),
    (["eval", "some-run", "--temperature", "nan"], "argument --temperature: must be finite"),
    (["probe", "vit", "--batch-size", "0"], "argument --batch-size: must be a whole number >= 1"),
    (["bench", "kernels", "--numel", "0"], "argument --numel: must be a whole number >= 1"),
])
def test_values_that_cannot_mean_anything_are_usage_errors(args, fragment, capsys):
    one_line_error(capsys, main(args), fragment)


def test_an_architecture_that_refuses_its_sizes_is_a_usage_error(capsys):
    # 30 is not divisible by the 4 heads: only timm knows, and says so in one line
    one_line_error(capsys, main(["train", "vit", "--arch-param", "embed_dim=30", *TINY]),
                   "cannot build vit with --arch-param embed_dim=30",
                   "dim should be divisible by num_heads")


def test_output_folders_are_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    one_line_error(capsys, main(["train", "vit", "--out", "a-file"]),
                   "--out a-file is a file, not a folder")
    one_line_error(capsys, main(["probe", "vit", "--out", "a-file/below"]),
                   "--out a-file/below: cannot create the folder")
    one_line_error(capsys, main(["sweep", "--acts", "gelu", "--out", "a-file"]),
                   "--out a-file is a file, not a folder")
    ResultsStore(tmp_path / "db" / "results.sqlite")
    one_line_error(capsys, main(["leaderboard", "--out", "db", "--to", "a-file"]),
                   "--to a-file is a file, not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    one_line_error(capsys, main(["train", "vit", "--out", str(folder)]), "is not writable")


def test_sample_counts_are_bounded_before_anything_is_generated():
    with pytest.raises(ZooError, match=f"in \\[1, {MAX_SAMPLES_PER_CLASS}\\]"):
        GenProtocol(samples_per_class=MAX_SAMPLES_PER_CLASS + 1).validate()
    with pytest.raises(ZooError, match="--cfg must be finite"):
        GenProtocol(cfg=float("nan")).validate()


def test_a_benchmark_that_cannot_fit_is_refused_before_allocating(monkeypatch, capsys):
    monkeypatch.setattr(zoo.runs.device, "free_memory", lambda device: 2**30)  # 1 GiB free
    for target in ("kernels", "quant"):
        one_line_error(capsys, main(["bench", target, "--numel", str(2**28), "--device", "cpu"]),
                       "timing 268,435,456 elements needs about 8.0 GiB, more than the 1.0 GiB "
                       "free on cpu")


# --- stored files are verified before they are trusted -----------------------------------------

def test_a_tampered_checkpoint_is_refused_by_eval_and_by_resume(runs, capsys):
    run = run_folder(runs)
    weights = next(run.glob("checkpoints/*/model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the last tensor: same size, still loadable
    weights.write_bytes(bytes(data))
    one_line_error(capsys, main(["eval", str(run)]), "does not match the sha256 recorded")
    as_killed(runs)
    one_line_error(capsys, resume(runs), "does not match the sha256 recorded")


def test_checkpoint_pointer_must_name_the_runs_own_checkpoint_folder(runs, capsys):
    run = run_folder(runs)
    good = pointer(run)
    for damaged, fragment in [
        ({}, "needs an integer 'epoch' and a 'dir'"),
        ({**good, "epoch": "2"}, "needs an integer 'epoch'"),
        ({**good, "dir": "../../elsewhere"}, "'dir' must be checkpoints/epoch-NNNN"),
        ({**good, "dir": "/etc"}, "'dir' must be checkpoints/epoch-NNNN"),
        ({**good, "epoch": 1}, "of its epoch 1"),
        ({**good, "sha256": {"model.safetensors": "ab"}}, "'sha256' must give each of"),
    ]:
        write_pointer(run, damaged)
        one_line_error(capsys, main(["eval", str(run)]), "checkpoint.json is damaged", fragment)


def test_a_trainer_state_of_the_wrong_shape_is_refused_on_resume(runs, capsys):
    run = as_killed(runs)
    good = pointer(run)
    folder = run / good["dir"]
    torch.save([1, 2, 3], folder / "trainer.pt")
    digest = hashlib.sha256((folder / "trainer.pt").read_bytes()).hexdigest()
    write_pointer(run, {**good, "sha256": {**good["sha256"], "trainer.pt": digest}})
    one_line_error(capsys, resume(runs), "is not a zoo trainer state")


def test_a_pointer_ahead_of_the_trainers_history_is_refused(runs, capsys):
    run = as_killed(runs)
    good = pointer(run)
    (run / good["dir"]).rename(run / "checkpoints" / "epoch-0003")
    write_pointer(run, {**good, "epoch": 3, "dir": "checkpoints/epoch-0003"})
    one_line_error(capsys, resume(runs), "holds 2 epochs of history but checkpoint.json says "
                                         "epoch 3")


@pytest.mark.parametrize("field, value, fragment", [
    ("epochs", "2", "config field 'epochs' holds '2'"),
    ("seed", True, "config field 'seed' holds True"),
    ("act_params", [], "config field 'act_params' holds []"),
    ("no_such_field", 1, "unknown fields: no_such_field"),
])
def test_a_config_json_of_the_wrong_shape_is_one_line(runs, capsys, field, value, fragment):
    run = run_folder(runs)
    stored = json.loads((run / "config.json").read_text())
    stored["config"][field] = value
    (run / "config.json").write_text(json.dumps(stored))
    one_line_error(capsys, main(["eval", str(run)]), fragment)


def test_nothing_stored_changes_when_a_command_fails(runs, capsys):
    before = database_state(runs)
    run = run_folder(runs)
    write_pointer(run, {})
    main(["eval", str(run)])
    main(["quant-sweep", str(run), "--quants", "int8", "--out", str(runs)])
    capsys.readouterr()
    assert database_state(runs) == before


# --- what a killed run leaves behind -----------------------------------------------------------

def test_temporary_files_of_a_killed_run_are_removed_on_resume(runs):
    run = as_killed(runs)
    stale = [run / ".config.json.k1ll3d.tmp",
             run / pointer(run)["dir"] / ".model.safetensors.k1ll3d.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert resume(runs) == 0
    assert not any(path.exists() for path in stale)


def test_every_file_of_a_run_has_one_mode(runs):
    modes = {path.name: stat.S_IMODE(path.stat().st_mode)
             for path in run_folder(runs).rglob("*") if path.is_file() and path.name != ".lock"}
    assert {"model.safetensors", "initial_weights.safetensors", "trainer.pt",
            "config.json"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


# --- a full disk -------------------------------------------------------------------------------

def limit_file_size(limit: int):
    def apply() -> None:  # in the child: files can grow to `limit` bytes (EFBIG beyond)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_write_beyond_the_space_left_is_one_line_and_loses_nothing(runs):
    before = database_state(runs)
    # a new run (seed 5) whose first weights file cannot be written in full
    result = run_zoo("train", "vit", *TINY, "--seed", "5", "--out", str(runs),
                     preexec_fn=limit_file_size(64 * 1024))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: zoo train failed"), result.stderr
    assert "Traceback" not in result.stderr
    assert database_state(runs) == before
    assert not list(runs.rglob("*.tmp"))  # the failed atomic write removed its temporary file


def test_a_full_tmpfs_is_one_line_and_loses_nothing(runs, tmp_path):
    """The same on a real full file system, where this machine lets a user mount one."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    before = database_state(runs)
    mount = tmp_path / "small-disk"
    mount.mkdir()
    # room for the database and little else: the new run's first weights file fills it
    script = (f"mount -t tmpfs -o size=300k tmpfs {mount} && mkdir {mount}/runs && "
              f"cp {runs}/results.sqlite {mount}/runs/ && "
              f"{sys.executable} -m zoo.cli train vit {' '.join(TINY)} --seed 7 "
              f"--out {mount}/runs; code=$?; cp {mount}/runs/results.sqlite {tmp_path}/after.sqlite;"
              " exit $code")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "zoo train failed: No space left on device" in lines[0], result.stderr
    after = tmp_path / "after"
    after.mkdir()
    shutil.copy(tmp_path / "after.sqlite", after / "results.sqlite")
    assert database_state(after)[1] == before[1]
