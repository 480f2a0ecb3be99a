"""`zoo submit FILE.py`: a new activation is checked, then trained on the standard grid.

Every check refuses a broken activation with one line naming the check and the reason, before
anything is stored. Each test writes its plugin to a fresh path under a unique activation name
(plugin files are loaded once per path, and their entries stay registered): the `plugin`
fixture does both and removes the entries afterwards.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import torch

from zoo.cli import main
from zoo.kernels import runtime
from zoo.registry import ACTS, REGISTRIES, plugins
from zoo.registry.acts import FORMULAS
from zoo.runs.results import ResultsStore, RunRecord, results_path, utc_now
from zoo.sweep import submission

GPU = torch.cuda.is_available() and runtime.cupy_or_none() is not None
PARITY = "kernel parity: passed" if GPU else "kernel parity: skipped (no GPU)"

FORMULA_ACT = """
from zoo.kernels.formula import ElementwiseFormula, Param
from zoo.registry.acts import register_formula

register_formula(ElementwiseFormula("ACT_NAME", "x * sigmoid(beta * x)",
                                    [Param("beta", 1.702, learnable=True)]),
                 paper=("GELU's sigmoid approximation, as a test submission", None))
"""


def act_file(module: str, helpers: str = "", signature: str = "inplace=False") -> str:
    """A plugin file registering ACT_NAME, whose factory returns `module`."""
    return f"""
import torch
from zoo.models.activation import Activation
from zoo.registry import ACTS
{helpers}

@ACTS.register("ACT_NAME", paper=("A test submission", None))
def make({signature}):
    return {module}
"""


PLAIN_ACT = act_file('Activation("ACT_NAME", lambda x: x / (1 + x.abs()), inplace=inplace)')

WRONG_TANH = """
class WrongTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y)  # should be 1 - y**2
"""

INPLACE_TANH = """
class InplaceTanh(Activation):
    def forward(self, x):
        return x.tanh_() if self.inplace else x.tanh()
"""

UNUSED_PARAMETER = """
class Scaled(Activation):
    def __init__(self, inplace=False):
        super().__init__("ACT_NAME", torch.tanh, inplace=inplace)
        self.scale = torch.nn.Parameter(torch.tensor(2.0))  # declared, never used
"""

REFUSED = {
    # naive x * sigmoid(x): exp(x) overflows to inf, inf / inf = nan
    "nan-on-extremes": (
        act_file('Activation("ACT_NAME", lambda x: x * torch.exp(x) / (1 + torch.exp(x)), '
                 'inplace=inplace)'),
        "finite on extreme inputs", "output is nan at x=10000"),
    "wrong-gradient": (
        act_file('Activation("ACT_NAME", WrongTanh.apply, inplace=inplace)', WRONG_TANH),
        "float64 gradcheck", "Jacobian mismatch for output 0 with respect to input 0"),
    "changes-dtype": (
        act_file('Activation("ACT_NAME", lambda x: torch.tanh(x).double(), inplace=inplace)'),
        "dtype and shape preserved", "returns float64 for float32 input"),
    "changes-shape": (
        act_file('Activation("ACT_NAME", lambda x: torch.tanh(x).flatten(), inplace=inplace)'),
        "dtype and shape preserved", "returns shape (320,) for input shape (8, 5, 8)"),
    "rejects-inplace": (
        act_file('Activation("ACT_NAME", torch.tanh)', signature=""),
        "inplace=True accepted, input unchanged", "its factory rejects inplace=True"),
    "modifies-its-input": (
        act_file('InplaceTanh("ACT_NAME", torch.tanh, inplace=inplace)', INPLACE_TANH),
        "inplace=True accepted, input unchanged", "it modifies its input (inplace=True)"),
    "not-a-zoo-activation": (
        act_file("torch.nn.Tanh()"),
        "builds a zoo Activation", "its factory returns Tanh"),
    "parameter-without-gradient": (
        act_file("Scaled(inplace)", UNUSED_PARAMETER),
        "learnable parameters get finite gradients", "parameter 'scale' gets no gradient"),
}


@pytest.fixture
def plugin(tmp_path):
    """write(source) -> (path, name): the source with ACT_NAME replaced by a unique name, in a
    fresh folder; every entry whose name starts with such a name is removed afterwards."""
    names = []

    def write(source: str, file_name: str = "submission.py") -> tuple[Path, str]:
        name = f"sub_{uuid.uuid4().hex[:8]}"
        names.append(name)
        folder = tmp_path / name
        folder.mkdir()
        path = folder / file_name
        path.write_text(source.replace("ACT_NAME", name))
        return path, name

    yield write
    for registry in REGISTRIES.values():
        for entry in list(registry):
            if entry.name.startswith(tuple(names)):
                registry.remove(entry.name)
                FORMULAS.pop(entry.name, None)


@pytest.fixture
def stored_out(tmp_path):
    """A results folder that already holds one run (of another activation)."""
    out = tmp_path / "results"
    store_run(out, "gelu", labels=None)
    return out


def store_run(out: Path, act: str, labels: dict | None) -> None:
    now = utc_now()
    record = RunRecord(
        run_id=f"digits-vit-{act}-default-none-s0-0123456789", arch="vit", act=act,
        init="default", quant="none", dataset="digits", seed=0, protocol={"epochs": 1},
        protocol_id="0123456789", status="completed", metrics={"test_acc": 0.5},
        environment={}, config={"labels": labels} if labels else {}, run_dir=str(out / act),
        started_at=now, finished_at=now)
    with ResultsStore(results_path(out)) as store:
        store.upsert(record)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder`, with the bytes of each file."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("zoo: error: ")
    return err[0].removeprefix("zoo: error: ")


# --- good activations ----------------------------------------------------------------------------

@pytest.mark.parametrize("source", [FORMULA_ACT, PLAIN_ACT], ids=["formula", "plain"])
def test_a_good_activation_passes_every_check_with_one_line_each(plugin, source):
    path, name = plugin(source)
    submitted = submission.load_submission_file(path)
    lines = []
    submission.validate(submitted, lines.append)
    assert submitted.names == [name]
    assert lines[0] == f"checking act '{name}' (submission.py, sha256 {submitted.sha256[:12]})"
    assert len(lines) == 1 + len(submission.CHECKS)
    assert not any("FAILED" in line for line in lines)
    learnable = "passed (beta)" if source is FORMULA_ACT else "not applicable (no learnable "
    assert f"learnable parameters get finite gradients: {learnable}" in "\n".join(lines)
    kernel = PARITY if source is FORMULA_ACT else "kernel parity: not applicable (no CUDA kernel)"
    assert lines[-1].strip() == kernel


def test_every_builtin_activation_passes_the_checks():
    """The checks refuse nothing the catalogue holds (KAT's rational with its 8 groups too)."""
    for entry in ACTS:
        if entry.source == "builtin":
            submission.validate_activation(entry, report=lambda line: None)


def test_submit_trains_the_standard_grid_and_labels_every_run(plugin, tmp_path, capsys):
    path, name = plugin(FORMULA_ACT)
    out, boards = tmp_path / "results", tmp_path / "boards"
    code = main(["submit", str(path), "--protocol", "smoke", "--out", str(out),
                 "--workers", "1", "--threads", "1", "--leaderboard", str(boards)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert PARITY in stdout and "float64 gradcheck: passed" in stdout
    assert f"runs of {name} are in {results_path(out)}" in stdout
    assert "rendered" in stdout and any(boards.glob("*.md"))

    with ResultsStore(results_path(out)) as store:
        runs = [run for run in store.runs() if run.act == name]
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted((run.arch, run.dataset, run.seed) for run in runs) == [
        ("resnet", "digits", 0), ("resnet", "fashion-mnist", 0),
        ("vit", "digits", 0), ("vit", "fashion-mnist", 0)]  # smoke: 1 seed × 2 archs × 2 sets
    for run in runs:
        assert run.status == "completed"
        assert run.config["labels"] == {"submitted": {"file": "submission.py", "sha256": sha256}}
        config_json = json.loads((Path(run.run_dir) / "config.json").read_text())
        assert config_json["labels"]["submitted"]["sha256"] == sha256

    # The same file again: its runs are stored, nothing is trained twice.
    assert main(["submit", str(path), "--protocol", "smoke", "--out", str(out)]) == 0
    assert "nothing to train" in capsys.readouterr().err


def test_a_dry_run_checks_and_plans_but_stores_nothing(plugin, tmp_path, capsys):
    path, name = plugin(PLAIN_ACT)
    out = tmp_path / "results"
    assert main(["submit", str(path), "--dry-run", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "float64 gradcheck: passed" in captured.out
    assert f"would train digits-vit-{name}-default-none-s0-" in captured.err
    assert "12 runs" in captured.err  # quick: 2 archs × 2 data sets × 3 seeds
    assert not out.exists()


def test_every_activation_of_a_file_is_checked_and_planned(plugin, tmp_path, capsys):
    path, first = plugin(PLAIN_ACT + PLAIN_ACT.replace("ACT_NAME", "ACT_NAME_b"))
    assert main(["submit", str(path), "--dry-run", "--out", str(tmp_path / "results")]) == 0
    captured = capsys.readouterr()
    for name in (first, f"{first}_b"):
        assert f"checking act '{name}'" in captured.out
        assert f"would train digits-vit-{name}-default-none-s0-" in captured.err
    assert "24 runs" in captured.err


# --- refusals: one line, nothing stored -----------------------------------------------------

@pytest.mark.parametrize("case", list(REFUSED))
def test_a_broken_activation_is_refused_and_nothing_changes(case, plugin, stored_out, capsys):
    source, check, reason = REFUSED[case]
    path, name = plugin(source)
    before = snapshot(stored_out)
    code = main(["submit", str(path), "--protocol", "smoke", "--out", str(stored_out)])
    error = one_line_error(capsys)
    assert code != 0
    assert error.startswith(f"submission refused: act '{name}' fails {check}: ")
    assert reason in error
    assert snapshot(stored_out) == before


def test_the_report_shows_the_checks_up_to_the_first_failure(plugin, tmp_path, capsys):
    path, _ = plugin(REFUSED["wrong-gradient"][0])
    assert main(["submit", str(path), "--out", str(tmp_path / "results")]) != 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("  float64 gradcheck: FAILED (Jacobian mismatch")
    assert all(line.endswith(": passed") for line in lines[1:-1])
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("source, message", [
    ("x = 1\n", "submission.py registers nothing"),
    ('from zoo.registry import INITS\n\n@INITS.register("ACT_NAME")\ndef init(**options):\n'
     '    return lambda model, ctx: None\n',
     "registers init 'sub_", ),
], ids=["nothing", "an-init"])
def test_a_file_without_activations_is_refused(source, message, plugin, stored_out, capsys):
    path, _ = plugin(source)
    before = snapshot(stored_out)
    assert main(["submit", str(path), "--out", str(stored_out)]) != 0
    error = one_line_error(capsys)
    assert error.startswith("submission refused: ") and message in error
    if "init" in message:
        assert "zoo submit takes activations" in error
    assert snapshot(stored_out) == before


def test_a_name_already_registered_is_refused_when_the_file_loads(plugin, tmp_path, capsys):
    path, _ = plugin(PLAIN_ACT.replace('"ACT_NAME"', '"gelu"'))
    assert main(["submit", str(path), "--out", str(tmp_path / "results")]) != 0
    assert one_line_error(capsys) == ("submission refused: act 'gelu' is already registered "
                                      "(by builtin); pick another name")
    assert ACTS.get("gelu").source == "builtin"


@pytest.mark.parametrize("labels, what", [
    ({"submitted": {"file": "submission.py", "sha256": "ab" * 32}}, "submitted with sha256 abab"),
    (None, "not a submission"),
], ids=["another-file", "not-a-submission"])
def test_stored_runs_of_the_same_name_from_elsewhere_are_refused(labels, what, plugin,
                                                                 stored_out, capsys):
    """Their run ids would equal this submission's: the sweep would keep them as its results."""
    path, name = plugin(PLAIN_ACT)
    store_run(stored_out, name, labels)
    before = snapshot(stored_out)
    assert main(["submit", str(path), "--out", str(stored_out)]) != 0
    error = one_line_error(capsys)
    assert error.startswith(f"submission refused: act '{name}' already has 1 run(s) in ")
    assert what in error and "rename the activation" in error
    assert snapshot(stored_out) == before


@pytest.mark.parametrize("args", [["submit"], ["submit", "a.py", "--entry", "x"]],
                         ids=["neither", "both"])
def test_submit_takes_a_file_or_an_entry(args, capsys):
    assert main(args) != 0
    assert one_line_error(capsys) == "zoo submit takes FILE.py or --entry NAME (one of them)"


def test_an_unknown_protocol_fails_before_the_checks(plugin, capsys):
    path, _ = plugin(PLAIN_ACT)
    assert main(["submit", str(path), "--protocol", "quik"]) != 0
    assert "unknown protocol 'quik'" in one_line_error(capsys)
    assert capsys.readouterr().out == ""


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--help"])
    assert exit_.value.code == 0
    assert "--entry" in capsys.readouterr().out


# --- an installed plugin's activation: `zoo submit --entry NAME` -----------------------------

@pytest.fixture
def installed_plugin(plugin, monkeypatch):
    """install(source) -> (module file, name): the source as a module on sys.path, announced
    under the entry-point group zoo.plugins as 'my-acts'."""
    from importlib.metadata import EntryPoint

    def install(source: str) -> tuple[Path, str]:
        path, name = plugin(source, file_name="my_acts_plugin.py")
        module = f"{name}_acts"
        path = path.rename(path.with_name(f"{module}.py"))
        monkeypatch.syspath_prepend(str(path.parent))
        installed = EntryPoint(name="my-acts", value=module, group=plugins.ENTRY_POINT_GROUP)
        monkeypatch.setattr(plugins, "entry_points",
                            lambda group: [installed] if group == plugins.ENTRY_POINT_GROUP else [])
        monkeypatch.setattr(plugins, "_loaded", set())
        return path, name

    return install


def test_an_installed_plugins_activation_is_checked_and_labelled(installed_plugin, tmp_path,
                                                                 capsys):
    path, name = installed_plugin(FORMULA_ACT)
    out = tmp_path / "results"
    assert main(["submit", "--entry", name, "--dry-run", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"checking act '{name}' (installed plugin my-acts, sha256 " in captured.out
    assert PARITY in captured.out and "would train" in captured.err
    assert not out.exists()
    submitted = submission.load_submission_entry(name)
    assert submitted.plugin_files == ()  # workers load installed plugins themselves
    assert submitted.labels == {"submitted": {
        "entry": "my-acts", "module": path.stem, "version": None,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}


def test_an_installed_plugins_broken_activation_is_refused(installed_plugin, capsys):
    _, name = installed_plugin(REFUSED["changes-dtype"][0])
    assert main(["submit", "--entry", name, "--dry-run"]) != 0
    assert one_line_error(capsys).startswith(f"submission refused: act '{name}' fails dtype")


def test_entry_takes_only_an_installed_plugins_activation(capsys):
    assert main(["submit", "--entry", "gelu"]) != 0
    assert one_line_error(capsys) == (
        "submission refused: act 'gelu' is built in, not from an installed plugin; --entry "
        "takes an activation an installed package registered (a file: zoo submit FILE.py)")
