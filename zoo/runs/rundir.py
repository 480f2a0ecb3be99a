"""A run's directory: config, environment, per-epoch metrics, checkpoints and final result.

    <run_dir>/config.json        what was asked for (enough to rebuild the model and data)
    <run_dir>/environment.json   versions, device, git commit
    <run_dir>/metrics.jsonl      one line per finished epoch
    <run_dir>/checkpoint.json    points at the newest complete checkpoint, with the sha256 of
                                 each of its files (checked before the files are trusted)
    <run_dir>/checkpoints/epoch-NNNN/{model.safetensors, trainer.pt}
    <run_dir>/initial_weights.safetensors   the weight matrices at step 0 (for weight change)
    <run_dir>/result.json        status and final metrics, written last

Every file is written atomically and the checkpoint pointer is moved only after the checkpoint it
names is complete, so a run killed at any moment resumes from its last finished epoch. Reading a
checkpoint checks the pointer's shape (its folder must be the run's own `checkpoints/epoch-NNNN`)
and each file's checksum: a damaged or tampered file is a one-line error, never silently wrong
weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from zoo.errors import ZooError
from zoo.runs.files import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    file_lock,
    lock_owner,
    remove_stale_temp_files,
    sha256_file,
)

CHECKPOINT_FILES = ("model.safetensors", "trainer.pt")
CHECKPOINT_DIR = re.compile(r"checkpoints/epoch-(\d{4,})")


@dataclass
class Checkpoint:
    epoch: int
    model_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "config.json").is_file()

    @contextlib.contextmanager
    def exclusive(self):
        """Held while a process trains this run: a second process with the same config would
        otherwise interleave its checkpoints with the first one's. The OS drops the lock when the
        holder dies, so a killed run never blocks its own resume."""
        lock = self.path / ".lock"
        with file_lock(lock, wait=False, owner=f"process {os.getpid()}") as acquired:
            if not acquired:
                holder = lock_owner(lock) or "another process"
                raise ZooError(f"run {self.name} is being trained by {holder} right now; wait for "
                               "it or pick another --seed/--out")
            remove_stale_temp_files(self.path)  # left by a killed run of this folder
            yield

    # --- json documents -------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ZooError(f"{path} is missing: is {self.path} a zoo run directory?") from None
        except (OSError, ValueError) as exc:
            raise ZooError(f"{path} is unreadable or corrupt: {exc}") from None

    def read_json_if_present(self, name: str) -> Any | None:
        return self.read_json(name) if (self.path / name).is_file() else None

    def write_metrics(self, history: list[dict]) -> None:
        lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
        atomic_write_text(self.path / "metrics.jsonl", lines)

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, epoch: int, model: nn.Module, trainer_state: dict[str, Any]) -> None:
        folder = self.path / "checkpoints" / f"epoch-{epoch:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
        atomic_write(folder / "trainer.pt", lambda tmp: torch.save(trainer_state, tmp))
        self.write_json("checkpoint.json", {
            "epoch": epoch, "dir": folder.relative_to(self.path).as_posix(),
            "sha256": {name: sha256_file(folder / name) for name in CHECKPOINT_FILES}})
        for old in (self.path / "checkpoints").glob("epoch-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)

    def save_initial_weights(self, weights: dict[str, torch.Tensor]) -> None:
        atomic_write(self.path / "initial_weights.safetensors",
                     lambda tmp: save_file({k: v.contiguous() for k, v in weights.items()},
                                           str(tmp)))

    def load_initial_weights(self) -> dict[str, torch.Tensor] | None:
        """None for runs started before zoo recorded them."""
        path = self.path / "initial_weights.safetensors"
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except Exception as exc:
            raise ZooError(f"{path} is corrupt or unreadable ({_short(exc)})") from None

    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint.json").is_file()

    def checkpoint_pointer(self) -> tuple[int, Path, dict[str, str]]:
        """(epoch, folder, sha256 per file) of the newest checkpoint, from checkpoint.json,
        checked: the folder is this run's `checkpoints/epoch-NNNN` of that epoch. Checksums
        are empty for checkpoints written before zoo recorded them."""
        pointer = self.read_json("checkpoint.json")
        where = self.path / "checkpoint.json"
        if not isinstance(pointer, dict) or not isinstance(pointer.get("dir"), str) \
                or type(pointer.get("epoch")) is not int:
            raise ZooError(f"{where} is damaged: it needs an integer 'epoch' and a 'dir'")
        match = CHECKPOINT_DIR.fullmatch(pointer["dir"])
        if match is None or int(match.group(1)) != pointer["epoch"] or pointer["epoch"] < 1:
            raise ZooError(f"{where} is damaged: 'dir' must be checkpoints/epoch-NNNN of its "
                           f"epoch {pointer['epoch']}, got {pointer['dir']!r}")
        checksums = pointer.get("sha256", {})
        complete = isinstance(checksums, dict) and all(
            isinstance(checksums.get(name), str) for name in CHECKPOINT_FILES)
        if checksums != {} and not complete:
            raise ZooError(f"{where} is damaged: 'sha256' must give each of "
                           f"{', '.join(CHECKPOINT_FILES)}")
        return pointer["epoch"], self.path / pointer["dir"], checksums

    def _verified(self, folder: Path, name: str, checksums: dict[str, str]) -> Path:
        path = folder / name
        if not path.is_file():
            raise ZooError(f"checkpoint {path} is missing")
        if checksums and sha256_file(path) != checksums[name]:
            raise ZooError(f"checkpoint {path} does not match the sha256 recorded in "
                           "checkpoint.json: the file was damaged or changed after it was "
                           "written; restore it, or delete the run to train it again")
        return path

    def load_model_state(self) -> tuple[int, dict[str, torch.Tensor]]:
        epoch, folder, checksums = self.checkpoint_pointer()
        path = self._verified(folder, "model.safetensors", checksums)
        try:
            return epoch, load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise ZooError(f"checkpoint {path} is corrupt or unreadable ({_short(exc)})") from None

    def load_checkpoint(self) -> Checkpoint:
        epoch, model_state = self.load_model_state()
        _, folder, checksums = self.checkpoint_pointer()
        path = self._verified(folder, "trainer.pt", checksums)
        try:
            trainer_state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ZooError(f"checkpoint {path} is corrupt or unreadable ({_short(exc)})") from None
        check_trainer_state(trainer_state, epoch, path)
        return Checkpoint(epoch, model_state, trainer_state)


TRAINER_STATE_KEYS = ("optimizer", "scheduler", "rng_cpu", "history")


def check_trainer_state(state: Any, epoch: int, path: Path) -> None:
    """trainer.pt must be the trainer's own dictionary, with one history entry per epoch the
    pointer claims (a pointer ahead of its history would skip epochs on resume)."""
    if not isinstance(state, dict) or any(key not in state for key in TRAINER_STATE_KEYS):
        raise ZooError(f"checkpoint {path} is not a zoo trainer state (it needs "
                       f"{', '.join(TRAINER_STATE_KEYS)})")
    if not isinstance(state["history"], list) or len(state["history"]) != epoch:
        count = len(state["history"]) if isinstance(state["history"], list) else "no"
        raise ZooError(f"checkpoint {path} holds {count} epochs of history but checkpoint.json "
                       f"says epoch {epoch}: the run's files disagree; delete the run to train "
                       "it again")


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Load a checkpoint's weights; a checkpoint of another model is a one-line error."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ZooError(f"checkpoint in {source} does not fit the model: {first}") from None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def check_dependencies(stored_config: dict[str, Any], summary: dict[str, Any],
                       run: str) -> None:
    """A run resumed or evaluated must see the frozen dependencies it was trained with."""
    stored = stored_config.get("dependencies") or {}
    current = summary.get("dependencies") or {}
    for name, ref in stored.items():
        now = current.get(name)
        if now is None or now.get("sha256") != ref.get("sha256"):
            raise ZooError(f"run {run} was trained with {name} {ref.get('id')} (sha256 "
                           f"{str(ref.get('sha256'))[:12]}…), which is not the one found now "
                           f"({(now or {}).get('id', 'none')}); restore it, or train a new run")


def stored_model_weights(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The latest checkpointed model weights of the run folder at `path`, on the CPU; None
    before its first checkpoint."""
    run = RunDir(Path(path))
    return run.load_model_state()[1] if run.has_checkpoint() else None
