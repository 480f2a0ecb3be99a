"""Training an image classifier: AdamW with linear warmup and cosine decay, data held on the
device, a checkpoint every epoch, resume after a crash, and a row in the results database."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn

from zoo.errors import RunDiverged, ZooError
from zoo.harness import distributed, environment
from zoo.harness.config import TrainConfig
from zoo.harness.diagnostics import activation_diagnostics, initial_weights, relative_weight_change
from zoo.harness.progress import TrainingProgress
from zoo.harness.results import ResultsStore, RunRecord, protocol_id, utc_now
from zoo.harness.rundir import RunDir, load_weights
from zoo.harness.tasks import check_dependencies, task_for
from zoo.models.build import count_parameters
from zoo.quant.apply import size_report
from zoo.registry import INITS


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ZooError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"device '{name}' was requested but CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ZooError(f"device '{name}' is not supported: use auto, cpu, cuda or cuda:N")
    return device


def results_path(out: Path) -> Path:
    return Path(out) / "results.sqlite"


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


class Trainer:
    """One run, from config to stored result. `run()` resumes a killed run of the same config.

    Started by torchrun (WORLD_SIZE > 1), every process runs this same code on its share of each
    global batch, with DDP for the training step; rank 0 alone writes (see
    zoo.harness.distributed). Without torchrun nothing of that runs."""

    LOG_EVERY = 10  # steps between progress updates (each costs a device sync on GPU)

    def __init__(self, config: TrainConfig, out: str | Path = "runs", device: str = "auto",
                 compile: bool = False, show_progress: bool = True,
                 labels: dict[str, Any] | None = None):
        config.validate()
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
                task = task_for(config, self.device, self.out, self.show_progress)
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
            evaluated = ema.module if ema is not None else model
            if ema is not None:
                step_hook = _then_update(step_hook, ema, model)

            start_epoch, history, started_at = 0, [], utc_now()
            if group.from_main(self.run_dir.has_checkpoint()):  # the others load rank 0's
                ckpt = self.run_dir.load_checkpoint()
                load_weights(evaluated, ckpt.model_state, self.run_dir.path)
                if ema is not None:
                    load_weights(model, ckpt.trainer_state["train_weights"], self.run_dir.path)
                optimizer.load_state_dict(ckpt.trainer_state["optimizer"])
                scheduler.load_state_dict(ckpt.trainer_state["scheduler"])
                torch.set_rng_state(ckpt.trainer_state["rng_cpu"])
                if self.device.type == "cuda" and "rng_cuda" in ckpt.trainer_state:
                    torch.cuda.set_rng_state(ckpt.trainer_state["rng_cuda"], self.device)
                if group.distributed:
                    distributed.restore_rng_states(ckpt.trainer_state, group, self.device)
                history = list(ckpt.trainer_state["history"])
                started_at = ckpt.trainer_state.get("started_at", started_at)
                start_epoch = ckpt.epoch
                weights0 = self.run_dir.load_initial_weights()
                check_dependencies(self.run_dir.read_json("config.json"), task.run_summary(),
                                   config.run_id())
            else:
                weights0 = initial_weights(model)
                self.run_dir.save_initial_weights(weights0)
                self.run_dir.write_json("config.json", {
                    "config": config.to_dict(), "run_id": config.run_id(),
                    "protocol": config.protocol(), **task.run_summary(),
                    **({"labels": self.labels} if self.labels else {})})

            group.barrier()  # the others read config.json once rank 0 has written it
            env = environment.capture(self.device)
            if group.distributed:
                env["world_size"] = group.size
            self.run_dir.write_json("environment.json", env)
            params = count_parameters(model)
            record = RunRecord(
                run_id=config.run_id(), arch=config.arch, act=config.act, init=config.init,
                quant=config.quant, dataset=config.dataset, seed=config.seed,
                protocol=config.protocol(), protocol_id=protocol_id(config.protocol()),
                status="running", metrics={"params": params, "epochs_done": start_epoch},
                environment=env, config=self.run_dir.read_json("config.json"),
                run_dir=str(self.run_dir.path.resolve()), started_at=started_at, finished_at=None)
            store.upsert(record)

            step_model = distributed.wrap(model, self.device) if group.distributed else model
            step_model = torch.compile(step_model) if self.compile else step_model
            progress = TrainingProgress(
                f"{config.arch}·{config.act}", total_steps, enabled=self.show_progress,
                unit=task.unit)
            progress.note(
                f"{config.run_id()}: {config.arch}·{config.act}, init {config.init}, quant "
                f"{config.quant}, on {task.describe()}, {params:,} params, "
                f"{env['device']}" + (f"; resuming after epoch {start_epoch}" if start_epoch else ""))
            with progress:
                progress.advance_to(start_epoch * steps_per_epoch)
                for epoch in range(start_epoch, config.epochs):
                    row = self._train_epoch(step_model, optimizer, scheduler, batches, epoch,
                                            progress, task, step_hook)
                    if not math.isfinite(row["train_loss"]):
                        return self._diverged(store, record, history, row)
                    val = task.evaluate(evaluated, "validation", self.autocast)
                    row.update({f"val_{key}": value for key, value in val.items()})
                    row.update(self._diagnostics(evaluated, weights0, task.diagnostics_input()))
                    history.append(row)
                    self._checkpoint(epoch + 1, evaluated, optimizer, scheduler, history,
                                     started_at, train_model=model if ema is not None else None)
                    progress.log_epoch(row, config.epochs)

            test, predictions = task.final_metrics(evaluated, self.autocast)
            train_time = sum(r["train_time_s"] for r in history)
            samples = sum(r["samples"] for r in history)
            last = history[-1]
            record.metrics = {
                **test, **{k: v for k, v in last.items() if k.startswith("val_")},
                "train_loss": last["train_loss"], "train_time_s": train_time,
                "samples_per_s": samples / train_time if train_time > 0 else None,
                "params": params, "epochs_done": len(history),
                **{k: last[k] for k in _FINAL_DIAGNOSTICS if k in last},
                "curve": learning_curve(history),
                **(size_report(evaluated) if config.quant != "none" else {}),
            }
            record.status, record.finished_at = "completed", utc_now()
            self.run_dir.write_json("result.json", {"status": record.status, "metrics": record.metrics})
            store.upsert(record, predictions=predictions, split="test")
            return RunOutcome(self.run_dir, record, start_epoch, already_done=False)

    # --- pieces ---------------------------------------------------------------------------
    def _train_epoch(self, model, optimizer, scheduler, batches, epoch: int,
                     progress: TrainingProgress, task, after_step=lambda step: None
                     ) -> dict[str, Any]:
        """One epoch of `batches` (anything with len() and .epoch(k) -> (x, y) minibatches)."""
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen, start = 0, time.perf_counter()
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

    def _diverged(self, store, record: RunRecord, history, row) -> RunOutcome:
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
