"""`zoo sweep`: a grid under a named protocol, trained on an executor, idempotent after a crash."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from zoo.cli import main
from zoo.errors import ZooError
from zoo.registry import ACTS
from zoo.runs.ids import protocol_id
from zoo.runs.protocols import PROTOCOLS, get_protocol, protocol_name_for
from zoo.runs.results import ResultsStore
from zoo.sweep.executors import JobResult
from zoo.sweep.grid import Grid, plan
from zoo.sweep.runner import SweepDisplay, SweepState, run_jobs

SMOKE = ["sweep", "--protocol", "smoke", "--archs", "vit", "--datasets", "digits",
         "--threads", "1"]


def stored(out: Path) -> dict[str, object]:
    with ResultsStore(out / "results.sqlite") as store:
        return {run.run_id: run for run in store.runs()}


# --- grids -------------------------------------------------------------------------------------

def test_a_grid_file_names_every_axis_and_expands_to_every_combination(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('protocol = "smoke"\narchs = ["vit", "resnet"]\nacts = ["gelu", "relu"]\n'
                         'inits = ["default", "zero"]\ndatasets = ["digits"]\nseeds = 2\n')
    configs, left_out = Grid.from_toml(grid_file).configs()
    assert len(configs) == 2 * 2 * 2 * 2 and not left_out
    assert {(c.arch, c.act, c.init, c.seed) for c in configs} == {
        (a, act, i, s) for a in ("vit", "resnet") for act in ("gelu", "relu")
        for i in ("default", "zero") for s in (0, 1)}
    assert all(c.epochs == 1 and c.train_subset == 256 and c.eval_subset == 256 for c in configs)


def test_flags_override_the_file_and_seed_counts_lists_and_ranges_all_work(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('protocol = "smoke"\narchs = ["vit"]\nacts = ["gelu"]\nseeds = [0]\n')
    base = Grid.from_toml(grid_file)
    for seeds, expected in (("3", [0, 1, 2]), ("1,4", [1, 4]), ("2-4", [2, 3, 4]), ("5,", [5])):
        grid = base.merged(seeds=seeds, acts="relu,golu", datasets="digits")
        configs, _ = grid.configs()
        assert sorted({c.seed for c in configs}) == expected
        assert {c.act for c in configs} == {"relu", "golu"}


def test_all_means_every_registered_activation():
    configs, _ = Grid(protocol="smoke", archs=["vit"], datasets=["digits"], acts=["all"],
                      seeds=[0]).configs()
    assert sorted({c.act for c in configs}) == ACTS.names()
    companions = [n for n in ACTS.names() if ACTS.get(n).extra.get("companion_init")]
    assert len(configs) == len(ACTS.names()) + len(companions)  # and their companion inits


def test_the_runs_are_ordered_seed_first_so_a_stopped_sweep_covers_every_variant():
    configs, _ = Grid(protocol="smoke", archs=["vit"], datasets=["digits"],
                      acts=["gelu", "relu", "golu"], seeds=[0, 1]).configs()
    assert [c.seed for c in configs] == [0, 0, 0, 1, 1, 1]


def test_pairs_of_a_language_model_and_an_image_data_set_are_left_out_with_a_note():
    configs, left_out = Grid(protocol="smoke", archs=["vit", "gpt2"], datasets=["digits"],
                             acts=["gelu"], seeds=[0]).configs()
    assert [c.arch for c in configs] == ["vit"]
    assert left_out and "gpt2" in left_out[0]


@pytest.mark.parametrize("text, message", [
    ('protocl = "quick"\n', "unknown key"),
    ('protocol = "quik"\n', "did you mean quick"),
    ('acts = ["gelu", "gleu"]\n', "unknown act 'gleu'"),
    ('seeds = "a-b"\n', "seeds take a count"),
    ('seeds = 0\n', "must be positive"),
    ('archs = "vit\n', "cannot read grid file"),
])
def test_a_bad_grid_file_is_a_one_line_error(tmp_path, text, message):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(text)
    with pytest.raises(ZooError, match=message):
        Grid.from_toml(grid_file).configs()


def test_the_quick_protocol_trains_fashion_mnist_whole_with_its_recipe_and_full_longer():
    quick, full = get_protocol("quick"), get_protocol("full")
    for arch in ("vit", "resnet"):
        config = quick.config(arch, "fashion-mnist")
        assert config.train_subset is None and config.eval_subset is None  # the whole set
        assert config.aug_flip and config.tta_flip  # the data set's recipe applies
        assert full.config(arch, "fashion-mnist").epochs > config.epochs
    assert quick.baseline == {"act": "gelu", "init": "default", "quant": "none"}
    assert (quick.archs, quick.datasets, quick.seeds) == (("vit", "resnet"),
                                                          ("digits", "fashion-mnist"), (0, 1, 2))


def test_a_protocol_hash_maps_back_to_its_name():
    for arch, dataset in (("vit", "digits"), ("resnet", "fashion-mnist"),
                          ("gpt2", "shakespeare")):
        named = {}
        for name, protocol in PROTOCOLS.items():
            try:
                config = protocol.config(arch, dataset) if protocol.covers(arch, dataset) \
                    else None
            except ZooError:  # e.g. smoke's eval subset on a language model
                config = None
            if config is not None:
                pid = protocol_id(config.protocol())
                named.setdefault(pid, name)  # quick and full share gpt2's: the first wins
        assert named, (arch, dataset)
        for pid, name in named.items():
            assert protocol_name_for(pid, arch, dataset) == name
    assert protocol_name_for("0123456789", "vit", "digits") is None


def test_a_retired_protocol_still_names_its_runs_but_cannot_be_trained_under():
    retired = PROTOCOLS["quick-v1"]
    assert retired.retired and not retired.covers("vit", "digits")
    old = retired.config("resnet", "fashion-mnist")  # the recipe before data-set recipes
    assert (old.train_subset, old.epochs, old.optimizer) == (3000, 2, "adamw")
    assert protocol_name_for(protocol_id(old.protocol()), "resnet", "fashion-mnist") == "quick-v1"
    with pytest.raises(ZooError, match="retired"):
        get_protocol("quick-v1")


def test_a_retired_budget_of_a_data_set_recipe_names_the_runs_trained_before_it_changed():
    # the vit's Fashion-MNIST recipe went from 6 to 10 epochs; `quick-v2` names the 6-epoch runs
    retired = PROTOCOLS["quick-v2"]
    old = retired.config("vit", "fashion-mnist")
    assert retired.retired
    assert (old.epochs, old.optimizer, old.aug_flip) == (6, "adamw", True)
    assert old.arch_params == {"patch_size": 7}  # the data-set recipe, not the digits one
    assert protocol_name_for(protocol_id(old.protocol()), "vit", "fashion-mnist") == "quick-v2"
    assert protocol_id(old.protocol()) == "51d7408ae5"  # the id of the runs published under it
    now = PROTOCOLS["quick"].config("vit", "fashion-mnist")
    assert now.epochs == 10
    assert protocol_name_for(protocol_id(now.protocol()), "vit", "fashion-mnist") == "quick"
    assert not retired.covers("resnet", "fashion-mnist")  # resnet's quick budget is unchanged


# --- running -----------------------------------------------------------------------------------

def test_a_sweep_trains_its_grid_and_a_second_sweep_trains_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main([*SMOKE, "--acts", "gelu,relu", "--workers", "2", "--out", str(out)]) == 0
    runs = stored(out)
    assert len(runs) == 2 and {r.status for r in runs.values()} == {"completed"}
    assert {r.act for r in runs.values()} == {"gelu", "relu"}
    assert all(r.protocol["epochs"] == 1 and r.protocol["eval_subset"] == 256
               for r in runs.values())
    capsys.readouterr()

    assert main([*SMOKE, "--acts", "gelu,relu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 stored" in err and "nothing to train" in err
    assert stored(out) == runs  # not a field of a row changed


def test_a_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main([*SMOKE, "--acts", "gelu", "--seeds", "2", "--dry-run", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("would train") == 2 and not out.exists()


def _plugin(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}_plugin.py"
    path.write_text(
        "import os, torch\n"
        "from zoo.registry import ACTS\n"
        "from zoo.models.activation import Activation\n"
        f"MARKER = os.environ['ZOO_TEST_MARKER']\n"
        f"def fn(x):\n{body}\n    return torch.relu(x)\n"
        f"@ACTS.register('{name}', formula='relu', paper=('test', None))\n"
        f"def make(inplace=False):\n    return Activation('{name}', fn, inplace=inplace)\n")
    return path


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A file whose presence breaks the test activations; the env var reaches spawned workers."""
    path = tmp_path / "broken"
    path.touch()
    monkeypatch.setenv("ZOO_TEST_MARKER", str(path))
    yield path


@pytest.fixture
def cleanup_acts():
    names: list[str] = []
    yield names
    for name in names:
        ACTS.remove(name)


def test_a_failed_run_is_recorded_as_failed_and_the_next_sweep_tries_it_again(
        tmp_path, marker, cleanup_acts, capsys):
    cleanup_acts.append("flaky_sweep_test")
    plugin = _plugin(tmp_path, "flaky_sweep_test",
                     "    if os.path.exists(MARKER) and x.requires_grad:\n"
                     "        raise RuntimeError('the test activation broke')")
    out = tmp_path / "runs"
    args = ["--plugin", str(plugin), *SMOKE, "--acts", "flaky_sweep_test,relu", "--workers", "1",
            "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("zoo: error: 1 run(s) failed")
    assert "the test activation broke" in err and "Traceback" not in err
    runs = {r.act: r for r in stored(out).values()}
    assert runs["relu"].status == "completed"  # one failure does not stop the sweep
    assert runs["flaky_sweep_test"].status == "failed"
    assert "the test activation broke" in runs["flaky_sweep_test"].metrics["error"]

    marker.unlink()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 failed before" in err and "1 stored" in err
    assert {r.status for r in stored(out).values()} == {"completed"}


def test_a_worker_that_dies_fails_its_run_and_a_fresh_pool_runs_the_rest(
        tmp_path, marker, cleanup_acts, capsys):
    cleanup_acts.append("fatal_sweep_test")
    plugin = _plugin(tmp_path, "fatal_sweep_test",
                     "    if os.path.exists(MARKER):\n        os._exit(9)")
    out = tmp_path / "runs"
    args = ["--plugin", str(plugin), *SMOKE, "--acts", "fatal_sweep_test,relu", "--workers", "1",
            "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "worker process died" in err
    assert stored(out)[next(r for r in stored(out) if "-relu-" in r)].status == "completed"


def test_a_killed_sweep_resumes_its_interrupted_run_from_the_checkpoint(tmp_path, capsys):
    plugin = tmp_path / "long_protocol.py"
    plugin.write_text(
        "from zoo.runs.protocols import PROTOCOLS, Protocol, register_protocol\n"
        "if 'test-long' not in PROTOCOLS:\n"
        "    register_protocol(Protocol('test-long', 'a few epochs for a resume test',\n"
        "        budgets={('*', '*'): {'epochs': 4, 'train_subset': 512, 'eval_subset': 128,\n"
        "                              'batch_size': 32}}, seeds=(0,)))\n")
    out = tmp_path / "runs"
    args = ["--plugin", str(plugin), "sweep", "--protocol", "test-long", "--archs", "vit",
            "--acts", "golu", "--datasets", "digits", "--workers", "1", "--threads", "1",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(out.glob("*/checkpoint.json")) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, as hard as a crash
    proc.wait()
    run_dir = next(out.glob("*/checkpoint.json")).parent
    assert not (run_dir / "result.json").exists(), "the kill came too late to test resuming"

    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 resume from a checkpoint" in err and "resumed after epoch" in err
    runs = list(stored(out).values())
    assert len(runs) == 1 and runs[0].status == "completed"
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_the_live_summary_counts_runs_and_estimates_the_time_left():
    state = SweepState(total=10, skipped=2)
    state.running = {"a": 0.0, "b": 0.0}
    assert state.eta_s(slots=2) is None  # nothing finished yet: no estimate
    state.results = [JobResult("c", "completed", 30.0), JobResult("d", "completed", 10.0),
                     JobResult("e", "failed", 1.0)]
    assert state.queued == 3
    # 3 queued + 2 running runs of 20 s on average, 2 at a time
    assert state.eta_s(slots=2) == pytest.approx(20.0 * 5 / 2)
    line = state.headline(slots=2)
    assert "4/10 done (2 stored earlier)" in line and "2 running" in line
    assert "3 queued" in line and "1 failed" in line and "ETA" in line


class _InstantExecutor:
    """Two slots; a run finishes as soon as it is submitted, so the log shows every refill."""
    slots = 2

    def submit(self, job):
        future = cf.Future()
        future.set_result(JobResult(job.run_id, "completed", 1.0))
        return future

    def shutdown(self, cancel=False):
        pass


def test_the_log_counts_runs_in_flight_after_the_freed_slot_is_refilled():
    jobs = [SimpleNamespace(run_id=f"run-{i}") for i in range(5)]
    state = SweepState(total=5, skipped=0)
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    with SweepDisplay(state, slots=2, console=console) as display:
        run_jobs(jobs, _InstantExecutor(), state, display)
    headlines = [line for line in console.file.getvalue().splitlines() if "running" in line]
    # after the first two finish, the next two are already in flight; then the last one alone
    assert [line.split(" · ")[1] for line in headlines] == ["2 running", "1 running", "0 running"]
    assert headlines[-1].startswith("  5/5 done")


def test_the_summary_reports_how_well_the_sweep_used_the_machine(monkeypatch):
    import zoo.sweep.runner as runner

    monkeypatch.setattr(runner.time, "monotonic", lambda: 100.0)
    state = SweepState(total=3, skipped=0, started=0.0)  # started 100 s ago
    assert state.utilization(2) is None  # nothing trained yet
    state.results += [JobResult("a", "completed", 95.0, train_time_s=90.0),
                      JobResult("b", "completed", 85.0, train_time_s=80.0),
                      JobResult("c", "failed", 5.0)]
    line = state.utilization(2)
    assert "= 0.85" in line  # (90 + 80) / (2 x 100)
    assert "5.0 s per run, 5.6% of its time" in line  # mean 5 s outside of a mean 90 s


def test_a_resumed_run_counts_only_the_epochs_it_trained_now():
    from zoo.sweep.executors import trained_here

    assert trained_here({"train_time_s": 100.0, "epochs_done": 4}, resumed_from=3) == 25.0
    assert trained_here({"train_time_s": 100.0, "epochs_done": 4}, resumed_from=0) == 100.0


def test_the_plan_skips_completed_and_diverged_runs(tmp_path):
    out = tmp_path / "runs"
    assert main([*SMOKE, "--acts", "relu", "--out", str(out)]) == 0
    configs, _ = Grid(protocol="smoke", archs=["vit"], datasets=["digits"],
                      acts=["relu", "gelu"], seeds=[0]).configs()
    todo = plan(configs, out)
    assert [c.act for c in todo.todo] == ["gelu"] and len(todo.completed) == 1


def test_the_ray_executor_runs_a_grid_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "zoo.cli", *SMOKE, "--acts", "gelu,relu",
                           "--executor", "ray", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on the ray executor" in done.stderr
    runs = stored(out)
    assert len(runs) == 2 and {r.status for r in runs.values()} == {"completed"}


def test_the_ray_executor_without_ray_installed_is_a_one_line_error(monkeypatch):
    from zoo.sweep.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # as if `pip install 'zoo-bench[ray]'` never ran
    with pytest.raises(ZooError, match=r"needs Ray: pip install 'zoo-bench\[ray\]'"):
        make_executor("ray", workers=None, threads=1, device="cpu")


def test_every_architecture_has_a_valid_quick_budget_on_every_data_set_it_takes():
    from zoo.registry import ARCHS, DATASETS
    from zoo.runs.config import TrainConfig

    quick = get_protocol("quick")
    for arch in ARCHS.names():
        for dataset in DATASETS.names():
            if ("text" in ARCHS.get(arch).tags) == ("text" in DATASETS.get(dataset).tags):
                TrainConfig.for_arch(arch, **quick.overrides(arch, dataset))  # raises if invalid
    assert quick.overrides("kat", "digits") == quick.overrides("vit", "digits")


def test_the_language_model_board_runs_nanogpts_cpu_settings_under_quick_and_full():
    quick, full = get_protocol("quick"), get_protocol("full")
    config = quick.config("gpt2", "shakespeare")
    assert (config.arch_params["size"], config.block_size, config.batch_size) == ("tiny", 64, 12)
    assert config.epochs * config.steps_per_epoch >= 2000
    assert full.config("gpt2", "shakespeare").to_dict() == config.to_dict()
    assert protocol_name_for(protocol_id(config.protocol()), "gpt2", "shakespeare") == "quick"


# -- a local Ray instance listens on 127.0.0.1 only -------------------------------------------


class FakeRay(SimpleNamespace):
    """Stands in for the `ray` module: records how zoo initializes it, and reports `node_ip` as
    the node's address."""

    def __init__(self, node_ip="127.0.0.1"):
        super().__init__(init_options=None, shut_down=False,
                         util=SimpleNamespace(get_node_ip_address=lambda: node_ip))

    def is_initialized(self):
        return self.init_options is not None

    def init(self, **options):
        self.init_options = options

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, **resources):
        return lambda function: function

    def shutdown(self):
        self.shut_down = True


@pytest.fixture
def fake_ray(monkeypatch):
    from zoo.sweep.executors import RAY_ONE_MACHINE_ENV

    monkeypatch.delenv(RAY_ONE_MACHINE_ENV, raising=False)  # restored after the test
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    return fake


def test_a_local_ray_instance_is_bound_to_the_loopback_address(fake_ray):
    from zoo.sweep.executors import RAY_ONE_MACHINE_ENV, RayExecutor

    RayExecutor(None, threads=1, gpus_per_run=0.0)
    options = fake_ray.init_options
    assert options["_node_ip_address"] == "127.0.0.1" and "address" not in options
    assert options["include_dashboard"] is False and options["dashboard_host"] == "127.0.0.1"
    # without it, Ray swaps 127.0.0.1 for the machine's network address
    assert os.environ[RAY_ONE_MACHINE_ENV] == "0"


def test_joining_a_cluster_passes_its_address_and_no_local_binding(fake_ray):
    from zoo.sweep.executors import RAY_ONE_MACHINE_ENV, RayExecutor

    RayExecutor("ray://head:10001", threads=1, gpus_per_run=0.0)
    assert fake_ray.init_options["address"] == "ray://head:10001"
    assert "_node_ip_address" not in fake_ray.init_options
    assert RAY_ONE_MACHINE_ENV not in os.environ


def test_a_local_instance_that_took_a_network_address_is_stopped_and_refused(monkeypatch):
    from zoo.sweep.executors import RAY_ONE_MACHINE_ENV, RayExecutor

    monkeypatch.delenv(RAY_ONE_MACHINE_ENV, raising=False)
    fake = FakeRay(node_ip="192.0.2.7")  # as if Ray was imported before zoo set its switch
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(ZooError, match="took the address 192.0.2.7, not 127.0.0.1") as refused:
        RayExecutor(None, threads=1, gpus_per_run=0.0)
    assert "\n" not in str(refused.value) and fake.shut_down


LOCAL_RAY_PROBE = """
import socket, ray
from zoo.sweep.executors import RayExecutor

executor = RayExecutor(None, threads=1, gpus_per_run=0.0)
gcs_host, gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:  # no packet is sent: this picks the machine's network address
    probe.connect(("192.0.2.1", 9))
    network_address = probe.getsockname()[0]
except OSError:  # no route: no network to be reached from
    network_address = "127.0.0.1"
try:
    socket.create_connection((network_address, int(gcs_port)), timeout=3).close()
    reachable = "yes"
except OSError:
    reachable = "no"
executor.shutdown()
print(gcs_host, network_address, reachable)
"""


def test_a_local_ray_instance_cannot_be_reached_from_the_network(tmp_path):
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-c", LOCAL_RAY_PROBE], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    gcs_host, network_address, reachable = done.stdout.split()[-3:]
    if network_address.startswith("127."):
        pytest.skip("this machine has no network address to try")
    assert gcs_host == "127.0.0.1" and reachable == "no"
