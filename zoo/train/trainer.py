"""Training one run of any task (an image classifier, a language model, an image generator; see
zoo.train.task): the optimizer and schedule of its config, a checkpoint every epoch, resume
after a crash, diagnostics, and a row in the results database."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch
from timm.utils import ModelEmaV3
from torch import nn

from zoo.build import count_parameters
from zoo.errors import RunDiverged, ZooError
from zoo.quant.apply import size_report
from zoo.registry import INITS
from zoo.runs import environment
from zoo.runs.config import TrainConfig
from zoo.runs.device import resolve_device
from zoo.runs.ids import protocol_id
from zoo.runs.protocols import protocol_name_for
from zoo.runs.results import ResultsStore, RunRecord, results_path, utc_now
from zoo.runs.rundir import RunDir, check_dependencies, load_weights
from zoo.train import distributed
from zoo.train.diagnostics import activation_diagnostics, initial_weights, relative_weight_change
from zoo.train.experiment_log import LOGGERS, ExperimentLog, open_log
from zoo.train.progress import TrainingProgress
from zoo.train.task import MakeTask, Task


def training_rule(config: TrainConfig):
    """The init's own `apply`, for the hooks some inits keep using during training
    (`after_step`, `param_lr_scale`; see zoo.registry.inits)."""
    return INITS.get(config.init).create(**config.init_params)


def make_optimizer(model: nn.Module, config: TrainConfig, lr_scale=None) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.9 (`config.optimizer`). Standard practice (timm,
    nanoGPT): no weight decay on biases, norms and 1-d parameters. `lr_scale(param)`, if given,
    multiplies the learning rate per parameter."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            key = (p.ndim >= 2, float(lr_scale(p)) if lr_scale else 1.0)
            groups.setdefault(key, []).append(p)
    lr = config.lr * config.lr_scale
    param_groups = [{"params": params, "weight_decay": config.weight_decay if decay else 0.0,
                     "lr": lr * scale}
                    for (decay, scale), params in sorted(groups.items(), key=lambda kv: kv[0])]
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=lr)


def lr_schedule(shape: str, total_steps: int, warmup_steps: int):
    """The learning-rate factor per step: linear warmup, then a cosine ("cosine") or a straight
    line ("linear", the one-cycle shape of fast CIFAR recipes) down to 0 at the last step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress)) if shape == "cosine" else 1.0 - progress

    return factor


@dataclass
class RunOutcome:
    run_dir: RunDir
    record: RunRecord
    resumed_from: int  # epochs already done when this process started
    already_done: bool


@dataclass
class TrainingState:
    """What a run's stages hand on to each other: set up, then resumed or started, then trained."""

    model: nn.Module
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Any
    step_hook: Callable[[int], None]
    steps_per_epoch: int
    started_at: str
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    weights0: dict[str, torch.Tensor] | None = None  # None: no weight-change diagnostics

    @property
    def evaluated(self) -> nn.Module:
        """The weights evaluated and checkpointed as the run's model: the EMA's, if any."""
        return self.ema.module if self.ema is not None else self.model


class Trainer:
    """One run, from config to stored result. `run()` resumes a killed run of the same config.

    Started by torchrun (WORLD_SIZE > 1), every process runs this same code on its share of each
    global batch, with DDP for the training step; rank 0 alone writes (see
    zoo.train.distributed). Without torchrun nothing of that runs."""

    LOG_EVERY = 10  # steps between progress updates (each costs a device sync on GPU)

    def __init__(self, config: TrainConfig, out: str | Path = "runs", device: str = "auto",
                 compile: bool = False, show_progress: bool = True,
                 labels: dict[str, Any] | None = None, *, make_task: MakeTask,
                 log: str | None = None):
        config.validate()
        if log is not None and log not in LOGGERS:
            raise ZooError(f"--log must be one of {', '.join(LOGGERS)}, got {log}")
        self.log = log  # an experiment log beside the run's files (tensorboard, wandb), or None
        self.make_task = make_task
        self.labels = labels  # stored in config.json, outside the run id (e.g. a submission)
        self.config = config
        self.out = Path(out)
        self.device = resolve_device(device)
        self.compile = compile
        self.show_progress = show_progress
        self.run_dir = RunDir(self.out / config.run_id())
        self.group = distributed.from_environment()
        if self.group.distributed:
            self._join_group()
        self.autocast = self.device.type == "cuda"  # bf16 autocast on GPU, float32 on CPU

    def _join_group(self) -> None:
        """One process of a torchrun job: its own GPU, no progress bar and no writes but on
        rank 0. The run id stays the config's: a run is the same row on any number of ranks."""
        distributed.check_supported(self.config, self.group)
        self.device = distributed.rank_device(self.device, self.group)
        self.show_progress = self.show_progress and self.group.is_main
        if not self.group.is_main:
            self.run_dir = distributed.ReadOnlyRunDir(self.run_dir.path)

    # --- the whole run ----------------------------------------------------------------------
    def run(self) -> RunOutcome:
        if not self.group.distributed:
            with self.run_dir.exclusive():
                return self._run()
        with distributed.process_group(self.device), \
                distributed.entered_by_main(self.group, self.run_dir.exclusive):
            return self._run()

    def _results_store(self):
        return ResultsStore(results_path(self.out)) if self.group.is_main else \
            distributed.NoResultsStore()

    def _run(self) -> RunOutcome:
        config, group = self.config, self.group
        with self._results_store() as store:
            previous = group.from_main(store.get(config.run_id()))  # rank 0 decides
            if previous is not None and previous.status == "completed":
                return RunOutcome(self.run_dir, previous, config.epochs, already_done=True)
            with group.main_first():  # rank 0 alone fills shared caches (tokens, tokenizers)
                task = self.make_task(config, self.device, self.out, self.show_progress)
            state = self._set_up(task)
            if group.from_main(self.run_dir.has_checkpoint()):  # the others load rank 0's
                self._resume(state, task)
            else:
                self._start(state, task)
            group.barrier()  # the others read config.json once rank 0 has written it
            record = self._running_record(store, state)
            self._epochs(store, record, state, task)
            return self._finish(store, record, state, task)

    # --- the stages of a run ----------------------------------------------------------------
    def _set_up(self, task: Task) -> TrainingState:
        """Model, optimizer, schedule and batches, as for a fresh start (resume overwrites)."""
        config, group = self.config, self.group
        model = task.build().to(self.device)
        if group.distributed:
            model = distributed.sync_batchnorm(model, self.device)
        rule = training_rule(config)
        after_step = getattr(rule, "after_step", None)
        step_hook = (lambda step: after_step(model, step)) if after_step else (lambda step: None)
        optimizer = make_optimizer(model, config, getattr(rule, "param_lr_scale", None))
        batches = task.train_batches()
        if group.distributed:
            distributed.check_shardable(batches, group)
        steps_per_epoch = len(batches)
        total_steps = steps_per_epoch * config.epochs
        warmup_steps = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule(config.schedule, total_steps, max(1, warmup_steps)))
        # With an EMA of the weights, the average is what is evaluated and checkpointed as
        # the run's model; the trainer's own weights travel in trainer.pt for resume.
        ema = ModelEmaV3(model, decay=config.ema) if config.ema else None
        if ema is not None:
            step_hook = _then_update(step_hook, ema, model)
        return TrainingState(model=model, ema=ema, optimizer=optimizer, scheduler=scheduler,
                             batches=batches, step_hook=step_hook,
                             steps_per_epoch=steps_per_epoch, started_at=utc_now())

    def _start(self, state: TrainingState, task: Task) -> None:
        """A new run: its initial weights and config.json."""
        config = self.config
        state.weights0 = initial_weights(state.model)
        self.run_dir.save_initial_weights(state.weights0)
        self.run_dir.write_json("config.json", {
            "config": config.to_dict(), "run_id": config.run_id(),
            "protocol": config.protocol(), **task.run_summary(),
            **({"labels": self.labels} if self.labels else {})})

    def _resume(self, state: TrainingState, task: Task) -> None:
        """A run killed after a checkpoint: weights, optimizer, schedule, RNG and history as
        they were, so that it ends as if it had never stopped."""
        ckpt = self.run_dir.load_checkpoint()
        trainer_state = ckpt.trainer_state
        load_weights(state.evaluated, ckpt.model_state, self.run_dir.path)
        if state.ema is not None:
            load_weights(state.model, trainer_state["train_weights"], self.run_dir.path)
        state.optimizer.load_state_dict(trainer_state["optimizer"])
        state.scheduler.load_state_dict(trainer_state["scheduler"])
        torch.set_rng_state(trainer_state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in trainer_state:
            torch.cuda.set_rng_state(trainer_state["rng_cuda"], self.device)
        if self.group.distributed:
            distributed.restore_rng_states(trainer_state, self.group, self.device)
        state.history = list(trainer_state["history"])
        state.started_at = trainer_state.get("started_at", state.started_at)
        state.start_epoch = ckpt.epoch
        state.weights0 = self.run_dir.load_initial_weights()
        check_dependencies(self.run_dir.read_json("config.json"), task.run_summary(),
                           self.config.run_id())

    def _running_record(self, store, state: TrainingState) -> RunRecord:
        """The run's row, `running`, with the environment it runs in."""
        config, group = self.config, self.group
        env = environment.capture(self.device)
        if group.distributed:
            env["world_size"] = group.size
        self.run_dir.write_json("environment.json", env)
        record = RunRecord(
            run_id=config.run_id(), arch=config.arch, act=config.act, init=config.init,
            quant=config.quant, dataset=config.dataset, seed=config.seed,
            protocol=config.protocol(), protocol_id=protocol_id(config.protocol()),
            status="running",
            metrics={"params": count_parameters(state.model), "epochs_done": state.start_epoch},
            environment=env, config=self.run_dir.read_json("config.json"),
            run_dir=str(self.run_dir.path.resolve()), started_at=state.started_at,
            finished_at=None, kind=config.kind(),
            protocol_name=protocol_name_for(protocol_id(config.protocol()), config.arch,
                                            config.dataset))
        store.upsert(record)
        return record

    def _epochs(self, store, record: RunRecord, state: TrainingState, task: Task) -> None:
        """Train the remaining epochs, a checkpoint after each. A non-finite loss ends the run
        as `diverged` (RunDiverged)."""
        config = self.config
        step_model = distributed.wrap(state.model, self.device) if self.group.distributed \
            else state.model
        step_model = torch.compile(step_model) if self.compile else step_model
        progress = TrainingProgress(
            f"{config.arch}·{config.act}", state.steps_per_epoch * config.epochs,
            enabled=self.show_progress, unit=task.unit)
        progress.note(
            f"{config.run_id()}: {config.arch}·{config.act}, init {config.init}, quant "
            f"{config.quant}, on {task.describe()}, {record.metrics['params']:,} params, "
            f"{record.environment['device']}"
            + (f"; resuming after epoch {state.start_epoch}" if state.start_epoch else ""))
        log = open_log(self.log if self.group.is_main else None, self.run_dir.path,
                       config.run_id(), config.to_dict())
        with progress, contextlib.ExitStack() as closing:
            if log is not None:
                closing.callback(log.close)
            progress.advance_to(state.start_epoch * state.steps_per_epoch)
            for epoch in range(state.start_epoch, config.epochs):
                row = self._train_epoch(step_model, state.optimizer, state.scheduler,
                                        state.batches, epoch, progress, task, state.step_hook,
                                        log)
                if not math.isfinite(row["train_loss"]):
                    self._diverged(store, record, state.history, row)
                val = task.evaluate(state.evaluated, "validation", self.autocast)
                row.update({f"val_{key}": value for key, value in val.items()})
                row.update(self._diagnostics(state.evaluated, state.weights0,
                                             task.diagnostics_input()))
                state.history.append(row)
                if log is not None:
                    log.epoch((epoch + 1) * state.steps_per_epoch, row)
                self._checkpoint(epoch + 1, state.evaluated, state.optimizer, state.scheduler,
                                 state.history, state.started_at,
                                 train_model=state.model if state.ema is not None else None)
                progress.log_epoch(row, config.epochs)

    def _finish(self, store, record: RunRecord, state: TrainingState, task: Task) -> RunOutcome:
        """Test metrics and the summary of training: the row becomes `completed`."""
        test, predictions = task.final_metrics(state.evaluated, self.autocast)
        history = state.history
        train_time = sum(r["train_time_s"] for r in history)
        samples = sum(r["samples"] for r in history)
        last = history[-1]
        record.metrics = {
            **test, **{k: v for k, v in last.items() if k.startswith("val_")},
            "train_loss": last["train_loss"], "train_time_s": train_time,
            "samples_per_s": samples / train_time if train_time > 0 else None,
            "params": record.metrics["params"], "epochs_done": len(history),
            **{k: last[k] for k in _FINAL_DIAGNOSTICS if k in last},
            "curve": learning_curve(history),
            **(size_report(state.evaluated) if self.config.quant != "none" else {}),
        }
        record.status, record.finished_at = "completed", utc_now()
        self.run_dir.write_json("result.json", {"status": record.status, "metrics": record.metrics})
        store.upsert(record, predictions=predictions, split="test")
        return RunOutcome(self.run_dir, record, state.start_epoch, already_done=False)

    # --- pieces ---------------------------------------------------------------------------
    def _train_epoch(self, model, optimizer, scheduler, batches, epoch: int,
                     progress: TrainingProgress, task, after_step=lambda step: None,
                     log: ExperimentLog | None = None) -> dict[str, Any]:
        """One epoch of `batches` (anything with len() and .epoch(k) -> (x, y) minibatches).
        With an experiment `log`, every step's loss, lr and throughput go to it (a device sync
        per step: only when asked for)."""
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen, start = 0, time.perf_counter()
        step_start = start
        for step, (xb, yb) in enumerate(batches.epoch(epoch), start=1):
            share = 1.0
            if self.group.distributed:  # this rank's rows of the global batch
                xb, yb, share = distributed.shard(xb, yb, self.group)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = model(xb)
                loss = task.loss(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            (loss if share == 1.0 else loss * share).backward()
            optimizer.step()
            scheduler.step()
            after_step(epoch * len(batches) + step)
            loss_sum += loss.detach() * yb.numel()  # examples, or tokens for language models
            correct += task.correct(logits, yb)
            seen += yb.numel()
            if log is not None:
                now = time.perf_counter()
                log.step(epoch * len(batches) + step, {
                    "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                    "throughput": yb.numel() / max(now - step_start, 1e-9)})
                step_start = now
            if step % self.LOG_EVERY == 0 or step == len(batches):
                loss_total, correct_total, seen_total = self._epoch_totals(loss_sum, correct, seen)
                mean_loss = loss_total / seen_total
                progress.update(step, len(batches), loss=mean_loss, acc=correct_total / seen_total,
                                rate=seen_total / (time.perf_counter() - start))
                if not math.isfinite(mean_loss):
                    break  # no point finishing an epoch that has already diverged
        elapsed = time.perf_counter() - start
        loss_total, correct_total, seen_total = self._epoch_totals(loss_sum, correct, seen)
        return {"epoch": epoch + 1, "train_loss": loss_total / max(1, seen_total),
                "train_acc": correct_total / max(1, seen_total), "lr": scheduler.get_last_lr()[0],
                "train_time_s": elapsed, "samples": seen_total}

    def _epoch_totals(self, loss_sum: torch.Tensor, correct: torch.Tensor,
                      seen: int) -> tuple[float, int, int]:
        """The epoch's loss sum, correct predictions and examples so far; across a torchrun job,
        summed over every rank's share (the logged loss is the global batch's, the same on every
        rank, so that a non-finite loss stops all of them at the same step)."""
        if not self.group.distributed:
            return loss_sum.item(), correct.item(), seen
        return self.group.sum_counts(loss_sum, correct, seen)

    def _diagnostics(self, model, weights0, x_val) -> dict[str, Any]:
        """Weight change since step 0 (per matrix, and its median), massive activations and the
        penultimate features' effective rank on the validation set."""
        found = activation_diagnostics(model, x_val, autocast=self.autocast)
        row = {k: found[k] for k in ("massive_activation", "massive_activation_block",
                                     "feature_rank")}
        if weights0 is not None:
            change = relative_weight_change(model, weights0)
            finite = sorted(v for v in change.values() if math.isfinite(v))
            row["weight_change"] = change
            row["weight_change_median"] = finite[len(finite) // 2] if finite else None
        return row

    def _checkpoint(self, epoch, model, optimizer, scheduler, history, started_at,
                    train_model: nn.Module | None = None) -> None:
        """`model` is the run's model (the EMA when there is one); `train_model`, the weights
        the optimizer steps when they differ from it."""
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng_cpu": torch.get_rng_state(), "history": history, "started_at": started_at}
        if train_model is not None:
            state["train_weights"] = {k: v.detach().cpu()
                                      for k, v in train_model.state_dict().items()}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.group.distributed:  # every rank takes part; rank 0 writes
            state.update(distributed.rng_states(self.group, self.device))
        self.run_dir.save_checkpoint(epoch, model, state)
        self.run_dir.write_metrics(history)

    def _diverged(self, store, record: RunRecord, history, row) -> NoReturn:
        record.status, record.finished_at = "diverged", utc_now()
        record.metrics = {**record.metrics, "epochs_done": len(history),
                          "diverged_at_epoch": row["epoch"], "train_loss": row["train_loss"]}
        self.run_dir.write_metrics(history + [row])
        self.run_dir.write_json("result.json", {"status": record.status, "metrics": record.metrics})
        store.upsert(record)
        raise RunDiverged(f"run {record.run_id} diverged: non-finite training loss in epoch "
                          f"{row['epoch']} (recorded as diverged; try a lower --lr)")


def _then_update(step_hook, ema: ModelEmaV3, model: nn.Module):
    """`step_hook`, then one EMA update of the weights."""
    def hook(step: int) -> None:
        step_hook(step)
        ema.update(model, step=step)

    return hook


def learning_curve(history: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """The per-epoch losses and validation metrics, kept in the results database so that the
    leaderboards can plot training curves without the run folders."""
    keys = [key for key in CURVE_KEYS if any(key in row for row in history)]
    return {"epoch": [row["epoch"] for row in history],
            **{key: [row.get(key) for row in history] for key in keys}}


CURVE_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_bpb")
# Per-epoch diagnostics copied into the final metrics (the last epoch's values).
_FINAL_DIAGNOSTICS = ("weight_change_median", "massive_activation", "feature_rank")
