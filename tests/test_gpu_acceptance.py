"""benchmarks/gpu_acceptance.sh without a GPU: its dry run passes, its steps come in the order of
value (parity, then benchmarks, then the smoke), its summary names every target and reads the
targets right off the boards, and the wheel lock check catches a wheel that is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_acceptance.sh"
HELPER = REPO / "benchmarks" / "gpu_acceptance_steps.py"
WHEELS_CHECK = REPO / "benchmarks" / "gpu_wheels_check.py"
TARGETS = {"elementwise_copy_bandwidth": (">=", 0.85), "elementwise_vs_torch_compile": (">=", 1.0),
           "group_rational_vs_eager": (">=", 20.0), "kat_step_vs_vit_step": ("<=", 1.5),
           "fake_quant_copy_bandwidth": (">=", 0.80)}
KINDS = ["setup", "parity", "benchmark", "smoke"]  # the order of value
PARITY = ["parity-activations", "parity-quant", "parity-data-var", "ddp-nccl"]
BENCHMARKS = ["bench-kernels", "bench-quant", "step-ratio", "bench-kernels-compile"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-dry-run")
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "ZOO_GPU_STEPS")}
    env["ZOO_GPU_PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    return done, out


def helper_module():
    """The script's Python half, benchmarks/gpu_acceptance_steps.py, imported from its file
    (the standard library and zoo.cli at import)."""
    spec = importlib.util.spec_from_file_location("gpu_acceptance_steps", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, HELPER


def test_the_dry_run_passes(dry_run):
    done, out = dry_run
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert done.stdout.strip().endswith("gpu_acceptance.sh --dry-run: ok")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "dry-run" and summary["finished"]
    assert [s["status"] for s in summary["steps"]] == ["checked"] * len(summary["steps"])
    for step in summary["steps"][1:4]:  # the pytest selections: collected, and not empty
        count = int(re.match(r"(\d+) tests collected", step["note"]).group(1))
        assert count > 0, step
    with tarfile.open(out / "results.tar.gz") as archive:
        names = archive.getnames()
    assert "./summary.json" in names and "./detail/steps/00-setup/wheels.json" in names


def test_steps_run_parity_first_then_benchmarks_then_the_smoke(dry_run):
    _, out = dry_run
    steps = json.loads((out / "summary.json").read_text())["steps"]
    kinds = [s["kind"] for s in steps]
    assert kinds == sorted(kinds, key=KINDS.index) and kinds[0] == "setup"
    assert [s["name"] for s in steps if s["kind"] == "parity"] == PARITY
    assert [s["name"] for s in steps if s["kind"] == "benchmark"] == BENCHMARKS
    assert [s["name"] for s in steps if s["kind"] == "smoke"] == ["smoke"]
    # the script's own table, in the script's order, is what ran
    table = SCRIPT.read_text().split("\nSTEPS=(\n", 1)[1].split("\n)\n", 1)[0]
    declared = [line.split()[0].strip('"') for line in table.splitlines() if line.strip()]
    assert declared == [s["name"] for s in steps]


def test_the_summary_names_every_target(dry_run):
    _, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    targets = {t["name"]: t for t in summary["targets"]}
    assert set(targets) == set(TARGETS)
    steps = {s["name"] for s in summary["steps"]}
    for name, (op, threshold) in TARGETS.items():
        target = targets[name]
        assert (target["op"], target["threshold"]) == (op, threshold)
        assert target["step"] in steps and target["description"]
        assert target["measured"] is None and target["met"] is None  # nothing measured here


def test_targets_are_read_off_the_boards(tmp_path):
    """A GPU run's files, made up: the summary takes each target's worst case."""
    helper, path = helper_module()
    root = tmp_path / "out"
    steps = root / "detail" / "steps"
    plan = ["setup setup", "parity-activations parity", "bench-kernels benchmark",
            "bench-quant benchmark", "step-ratio benchmark", "bench-kernels-compile benchmark",
            "smoke smoke"]
    meta = root / "detail" / "run" / "meta"
    meta.mkdir(parents=True)
    (meta / "plan.tsv").write_text("".join(
        f"{i}\t{n}\t{k}\t60\n" for i, (n, k) in enumerate(line.split() for line in plan)))
    (meta / "run.json").write_text('{"mode": "run"}')
    dirs = {line.split()[0]: steps / f"{i:02d}-{line.split()[0]}" for i, line in enumerate(plan)}
    for name, d in dirs.items():
        (d / "leaderboards").mkdir(parents=True)
        (d / "step.json").write_text(json.dumps({"name": name, "status": "passed",
                                                 "archs": "vit" if name == "smoke" else ""}))
    header = ("**Measured on:** NVIDIA H200, 67,108,864 elements of bfloat16, copy bandwidth "
              "4000.0 GB/s, torch 2.11.0+cu130.\n\n"
              "| act | impl | fwd (ms) | fwd+bwd (ms) | fwd+bwd GB/s | of copy bw | vs reference |\n"
              "|:---|:---|---:|---:|---:|---:|---:|\n")
    rows = ("| gelu | reference | 0.300 | 1.000 | 671.1 | 17% | 1.00x |\n"
            "| gelu | zoo kernel | 0.070 | 0.190 | 3532.1 | 88% | 5.26x |\n"
            "| relu | zoo kernel | 0.070 | 0.200 | 3200.0 | 80% | 4.00x |\n"
            "| rational | reference | 5.000 | 20.000 | 33.6 | 1% | 1.00x |\n"
            "| rational | zoo kernel | 0.100 | 0.800 | 838.9 | 21% | 25.00x |\n")
    (dirs["bench-kernels"] / "leaderboards" / "kernels.md").write_text(
        "# Activation kernels\n\n" + header + rows)
    (dirs["bench-kernels-compile"] / "leaderboards" / "kernels.md").write_text(
        "# Activation kernels\n\n" + header + rows
        + "| gelu | torch.compile | 0.080 | 0.200 | 3355.4 | 84% | 5.00x |\n"
          "| relu | torch.compile | 0.070 | 0.180 | 3728.3 | 93% | 4.40x |\n")
    (dirs["bench-quant"] / "leaderboards" / "quant-kernels.md").write_text(
        "# Quantization kernels\n\n**Measured on:** NVIDIA H200, bfloat16 (16,384 x 4,096), copy "
        "bandwidth 4000.0 GB/s (x.clone()), torch 2.11.0, cupy 14.2.0.\n\n"
        "| format | description | reference (ms) | reference GB/s | kernel (ms) | kernel GB/s | "
        "of copy | vs reference | bitwise |\n|:---|:---|---:|---:|---:|---:|---:|---:|:---|\n"
        "| int8 channel | int8, per channel | 1.000 | 268.4 | 0.075 | 3600.0 | 90% | 13.3x | yes |\n"
        "| nvfp4 | nvfp4 | 2.000 | 134.2 | 0.081 | 3300.0 | 83% | 24.7x | yes |\n")
    (dirs["step-ratio"] / "step-ratio.json").write_text(json.dumps({
        "ratio": 1.2, "headline": "fashion-mnist", "rational_kernel": True, "device": "NVIDIA H200",
        "shapes": {"fashion-mnist": {"ratio": 1.2, "vit_ms": 1.0, "kat_ms": 1.2,
                                     "batch_size": 128}}}))
    (dirs["parity-activations"] / "junit.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="0">'
        '<testcase classname="tests.test_kernels" name="test_a"/>'
        '<testcase classname="tests.test_kernels" name="test_b"><failure message="boom"/>'
        '</testcase><testcase classname="tests.test_kernels" name="test_c"/></testsuite>'
        '</testsuites>')
    runs = dirs["smoke"] / "runs" / "vit"
    (runs / "abc").mkdir(parents=True)
    (runs / "smoke.txt").write_text("run1_exit=137\nkilled_after_checkpoint=1\nrun2_exit=0\n"
                                    "run3_exit=0\n")
    (runs / "2-resume.log").write_text("resumed abc after epoch 1\n")
    (runs / "3-completed.log").write_text("run abc already completed; stored result:\n")
    (runs / "abc" / "result.json").write_text(json.dumps({"status": "completed", "metrics": {
        "train_loss": 1.0, "test_loss": 1.1, "curve": {"train_loss": [2.0, 1.5, 1.0]}}}))

    done = subprocess.run([sys.executable, str(path), "summary", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads((root / "summary.json").read_text())
    got = {t["name"]: t for t in summary["targets"]}
    assert got["elementwise_copy_bandwidth"]["measured"] == pytest.approx(0.8)
    assert got["elementwise_copy_bandwidth"]["detail"]["worst"] == "relu"
    assert got["elementwise_copy_bandwidth"]["met"] is False
    assert got["group_rational_vs_eager"]["measured"] == 25.0
    assert got["group_rational_vs_eager"]["met"] is True
    assert got["elementwise_vs_torch_compile"]["measured"] == pytest.approx(4.0 / 4.4, abs=1e-4)
    assert got["elementwise_vs_torch_compile"]["met"] is False
    assert got["fake_quant_copy_bandwidth"]["measured"] == pytest.approx(0.825)
    assert got["fake_quant_copy_bandwidth"]["detail"]["bitwise_all"] is True
    assert got["kat_step_vs_vit_step"]["measured"] == 1.2
    assert got["kat_step_vs_vit_step"]["met"] is True
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["parity-activations"]["tests"]["failures"] == 1
    assert steps["parity-activations"]["tests"]["not_passed"][0]["message"] == "boom"
    smoke = steps["smoke"]["runs"]["vit"]
    assert smoke["ok"] and smoke["resumed"] and smoke["already_completed"] and smoke["finite"]
    assert not summary["all_targets_met"]


def test_the_cuda_only_tests_are_found_by_their_skip_conditions(tmp_path):
    helper, _ = helper_module()
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        "import pytest, torch\n"
        "GPU = torch.cuda.is_available() and True\n"
        "gpu = pytest.mark.skipif(not GPU, reason='x')\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')\n"
        "def test_decorated(): pass\n"
        "@gpu\n"
        "def test_named_mark(): pass\n"
        "def test_in_the_body():\n"
        "    if not torch.cuda.is_available():\n"
        "        pytest.skip('no GPU here')\n"
        "def test_skips_when_cuda_is_there():\n"
        "    if torch.cuda.is_available():\n"
        "        pytest.skip('CUDA is available here')\n"
        "@pytest.mark.skipif(True, reason='other')\n"
        "def test_other(): pass\n")
    assert helper.cuda_gated_tests(tests) == {
        "tests/test_a.py::test_decorated", "tests/test_a.py::test_named_mark",
        "tests/test_a.py::test_in_the_body"}


def test_the_wheel_lock_resolves_and_a_missing_wheel_is_one_error(tmp_path):
    done = subprocess.run([sys.executable, str(WHEELS_CHECK)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lock = (REPO / "benchmarks" / "gpu_wheels.txt").read_text()
    without_dill = re.sub(r"\ndill==.*?\n\n", "\n\n", lock, flags=re.S)
    assert without_dill != lock
    (tmp_path / "lock.txt").write_text(without_dill)
    done = subprocess.run([sys.executable, str(WHEELS_CHECK), "--lock", str(tmp_path / "lock.txt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu wheels: ") and "dill" in last and "neither in the image" in last
