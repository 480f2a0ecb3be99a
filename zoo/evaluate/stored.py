"""`zoo eval RUN`: rebuild a stored run's model and data, load its checkpoint, evaluate."""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ZooError
from zoo.runs.config import TrainConfig
from zoo.runs.device import resolve_device
from zoo.runs.rundir import RunDir, check_dependencies, load_weights
from zoo.tasks.kinds import task_for


def find_run(run: str, out: str | Path = "runs") -> RunDir:
    for candidate in (Path(run), Path(out) / run):
        if (candidate / "config.json").is_file():
            return RunDir(candidate)
    raise ZooError(f"no run '{run}': give a run directory or a run id inside {out}")


def load_run_model(run: str, out: str | Path = "runs", device: str = "auto"):
    """(run_dir, config, task, model with the checkpoint's weights, epoch) of a stored run."""
    run_dir = find_run(run, out)
    stored = run_dir.read_json("config.json")
    config = TrainConfig.from_stored(stored, run_dir.path / "config.json")
    if not run_dir.has_checkpoint():
        raise ZooError(f"run {run_dir.name} has no checkpoint yet (it has not finished an epoch)")
    dev = resolve_device(device)
    epoch, state = run_dir.load_model_state()
    task = task_for(config, dev, run_dir.path.parent, show_progress=False)
    check_dependencies(stored, task.run_summary(), run_dir.name)
    model = task.build().to(dev)
    load_weights(model, {k: v.to(dev) for k, v in state.items()}, run_dir.path)
    return run_dir, config, task, model, epoch


def evaluate_run(run: str, out: str | Path = "runs", device: str = "auto") -> dict:
    run_dir, config, task, model, epoch = load_run_model(run, out, device)
    test = task.evaluate(model, "test", autocast=task.device.type == "cuda")
    stored = (run_dir.read_json_if_present("result.json") or {}).get("metrics", {})
    return {"run_id": run_dir.name, "epoch": epoch,
            **{f"test_{key}": value for key, value in test.items()},
            **{f"stored_test_{key}": stored.get(f"test_{key}") for key in test}}
