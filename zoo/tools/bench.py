"""`zoo bench harness`: is zoo's training loop as fast as a bare PyTorch loop?

Both loops train their own copy of the same model on the same data, batch size and number of
steps; repetitions alternate between them so that drift in machine speed hits both. The figure
reported is the ratio of medians (zoo / bare), measured in this one process. Images are counted
in examples per second; language models in tokens per second, the bare loop drawing its windows
from the token memmap the way nanoGPT's `get_batch` does.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from zoo.runs import environment
from zoo.runs.config import TrainConfig
from zoo.tasks.classify import ImageClassification
from zoo.tasks.kinds import make_trainer, task_for
from zoo.train.progress import TrainingProgress
from zoo.train.trainer import lr_schedule, make_optimizer


def bare_epoch(model, optimizer, x, y, batch_size: int, generator: torch.Generator) -> int:
    """The loop a PyTorch tutorial would write: shuffle, slice, forward, backward, step."""
    model.train()
    autocast = x.device.type == "cuda"  # the same bf16 autocast zoo uses on GPU
    perm = torch.randperm(len(y), generator=generator).to(x.device)
    for i in range(0, len(y), batch_size):
        idx = perm[i:i + batch_size]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x[idx]).float(), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return len(y)


def bare_lm_epoch(model, optimizer, tokens, batch_size: int, block_size: int, steps: int,
                  generator: torch.Generator, device: torch.device) -> int:
    """nanoGPT's loop: random windows sliced from the memmap, forward, backward, step."""
    model.train()
    autocast = device.type == "cuda"
    for _ in range(steps):
        starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
        chunk = torch.from_numpy(np.stack([tokens[i:i + block_size + 1] for i in starts.tolist()])
                                 .astype(np.int64)).to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch_size * block_size


def bench_harness(arch: str = "vit", act: str | None = None, dataset: str | None = None,
                  batch_size: int | None = None, epochs: int = 2, repeats: int = 5,
                  device: str = "auto", steps_per_epoch: int | None = None,
                  console: Console | None = None) -> dict:
    console = console or Console()
    config = TrainConfig.for_arch(arch, act=act, dataset=dataset, batch_size=batch_size,
                                  epochs=epochs * repeats, steps_per_epoch=steps_per_epoch)
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(config, out=out, device=device, show_progress=False)
    dev = trainer.device
    task = task_for(config, dev)
    zoo_model = task.build().to(dev)
    bare_model = copy.deepcopy(zoo_model)
    zoo_opt, bare_opt = make_optimizer(zoo_model, config), make_optimizer(bare_model, config)
    batches = task.train_batches()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        zoo_opt, lr_schedule(config.schedule, len(batches) * config.epochs, len(batches)))
    generator = torch.Generator().manual_seed(config.seed)
    silent = TrainingProgress("bench", len(batches) * config.epochs, enabled=False)

    def time_zoo(epoch: int) -> float:
        start = time.perf_counter()
        row = trainer._train_epoch(zoo_model, zoo_opt, scheduler, batches, epoch, silent, task)
        return row["samples"] / (time.perf_counter() - start)

    def time_bare() -> float:
        start = time.perf_counter()
        if isinstance(task, ImageClassification):
            n = bare_epoch(bare_model, bare_opt, *task.data.train, config.batch_size, generator)
        else:
            n = bare_lm_epoch(bare_model, bare_opt, task.streams.train.data, config.batch_size,
                              config.block_size, config.steps_per_epoch, generator, dev)
        return n / (time.perf_counter() - start)

    time_zoo(0), time_bare()  # warm-up: allocator, kernels, first-touch of the weights
    zoo_rates, bare_rates = [], []
    for r in range(repeats):
        for e in range(epochs):
            zoo_rates.append(time_zoo(1 + r * epochs + e))
            bare_rates.append(time_bare())
    zoo_median, bare_median = statistics.median(zoo_rates), statistics.median(bare_rates)
    unit = task.unit
    result = {"arch": arch, "act": config.act, "dataset": config.dataset,
              "batch_size": config.batch_size, "unit": unit,
              "device": environment.device_name(dev), f"zoo_{unit}_per_s": zoo_median,
              f"bare_{unit}_per_s": bare_median, "ratio": zoo_median / bare_median,
              "epochs_timed": len(zoo_rates)}
    shape = f"batch {config.batch_size}" + (
        f" x {config.block_size} tokens" if unit == "tokens" else "")
    table = Table(title=f"training throughput, {arch}·{config.act} on {config.dataset}, "
                        f"{shape}, {result['device']}", title_justify="left")
    for column in ("loop", f"{unit}/s (median)", "min", "max", "ratio to bare"):
        table.add_column(column)
    for name, rates in (("zoo", zoo_rates), ("bare PyTorch", bare_rates)):
        table.add_row(name, f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f}",
                      f"{max(rates):,.0f}", f"{statistics.median(rates) / bare_median:.3f}")
    console.print(table)
    return result
