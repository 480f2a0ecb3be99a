"""`zoo bench harness`: is zoo's training loop as fast as a bare PyTorch loop?

Both loops train their own copy of the same model on the same device-resident data, batch size
and number of epochs; repetitions alternate between them so that drift in machine speed hits both.
The figure reported is the ratio of medians (zoo / bare), measured in this one process.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from zoo.harness import environment
from zoo.harness.config import TrainConfig
from zoo.harness.progress import TrainingProgress
from zoo.harness.tasks import ImageClassification
from zoo.harness.train import Trainer, make_optimizer, warmup_cosine


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


def bench_harness(arch: str = "vit", act: str | None = None, dataset: str = "digits",
                  batch_size: int = 64, epochs: int = 2, repeats: int = 5, device: str = "auto",
                  console: Console | None = None) -> dict:
    console = console or Console()
    config = TrainConfig.for_arch(arch, act=act, dataset=dataset, batch_size=batch_size,
                                  epochs=epochs * repeats)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out=out, device=device, show_progress=False)
    dev = trainer.device
    task = ImageClassification(config, dev)
    data = task.data
    zoo_model = task.build().to(dev)
    bare_model = copy.deepcopy(zoo_model)
    zoo_opt, bare_opt = make_optimizer(zoo_model, config), make_optimizer(bare_model, config)
    batches = task.train_batches()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        zoo_opt, warmup_cosine(len(batches) * config.epochs, len(batches)))
    generator = torch.Generator().manual_seed(config.seed)
    silent = TrainingProgress("bench", len(batches) * config.epochs, enabled=False)

    def time_zoo(epoch: int) -> float:
        start = time.perf_counter()
        row = trainer._train_epoch(zoo_model, zoo_opt, scheduler, batches, epoch, silent, task)
        return row["samples"] / (time.perf_counter() - start)

    def time_bare() -> float:
        start = time.perf_counter()
        n = bare_epoch(bare_model, bare_opt, *data.train, config.batch_size, generator)
        return n / (time.perf_counter() - start)

    time_zoo(0), time_bare()  # warm-up: allocator, kernels, first-touch of the weights
    zoo_rates, bare_rates = [], []
    for r in range(repeats):
        for e in range(epochs):
            zoo_rates.append(time_zoo(1 + r * epochs + e))
            bare_rates.append(time_bare())
    zoo_median, bare_median = statistics.median(zoo_rates), statistics.median(bare_rates)
    result = {"arch": arch, "act": config.act, "dataset": dataset, "batch_size": batch_size,
              "device": environment.device_name(dev), "zoo_samples_per_s": zoo_median,
              "bare_samples_per_s": bare_median, "ratio": zoo_median / bare_median,
              "epochs_timed": len(zoo_rates)}
    table = Table(title=f"training throughput, {arch}·{config.act} on {dataset}, batch "
                        f"{batch_size}, {result['device']}", title_justify="left")
    for column in ("loop", "samples/s (median)", "min", "max", "ratio to bare"):
        table.add_column(column)
    for name, rates in (("zoo", zoo_rates), ("bare PyTorch", bare_rates)):
        table.add_row(name, f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f}",
                      f"{max(rates):,.0f}", f"{statistics.median(rates) / bare_median:.3f}")
    console.print(table)
    return result
