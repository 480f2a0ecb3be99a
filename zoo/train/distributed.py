"""One run across several processes: torchrun starts them, DistributedDataParallel trains.

`torchrun --standalone --nproc-per-node N -m zoo train ...` starts N copies of the same command
with WORLD_SIZE, RANK and LOCAL_RANK in their environment. The Trainer reads them here
(`from_environment`); without them (WORLD_SIZE unset or 1) nothing in this module runs and the
single-process path is untouched.

The protocol does not change with the number of processes: every rank draws the same global
minibatch (same seed) and trains on its share of the rows, and DDP averages the gradients, so one
step sees the same `batch_size` examples as a single-process step. Rank 0 alone writes the run
folder and the results database; the others read what it wrote (`ReadOnlyRunDir`,
`NoResultsStore`) and learn its decisions through `Group.from_main`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
from timm.layers import convert_sync_batchnorm
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from zoo.data.images import ShuffledBatches
from zoo.errors import ZooError
from zoo.registry.kinds import is_generator_arch
from zoo.runs.rundir import RunDir

_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Group:
    """This process's place in the job; the default is a plain single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a small picklable object): rank 0 decides."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        found: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(found, value)
        return found

    def sum_counts(self, loss_sum: torch.Tensor, correct: torch.Tensor,
                   seen: int) -> tuple[float, int, int]:
        """(loss sum, correct, examples) summed over the ranks' shares: every rank gets the
        global numbers, so they log the same loss and stop together when it is not finite."""
        totals = torch.stack([loss_sum.detach().double(), correct.double(),
                              torch.tensor(float(seen), dtype=torch.float64,
                                           device=loss_sum.device)])
        if self.distributed:
            torch.distributed.all_reduce(totals)
        loss, hits, count = totals.tolist()
        return loss, round(hits), round(count)

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first and alone (it may fill shared caches: tokenized corpora,
        tokenizers), then the others run it and find the caches ready."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


def from_environment(env: dict[str, str] | None = None) -> Group:
    """The group torchrun describes in the environment, or a single process."""
    env = os.environ if env is None else env
    size = _int_variable(env, "WORLD_SIZE", "1")
    if size <= 1:
        return Group()
    missing = [name for name in _TORCHRUN_VARIABLES if name not in env]
    if missing:
        raise ZooError(f"WORLD_SIZE is {size} but {', '.join(missing)} is not set: start "
                       "distributed runs with torchrun")
    rank, local_rank = _int_variable(env, "RANK", "0"), _int_variable(env, "LOCAL_RANK", "0")
    if not 0 <= rank < size:
        raise ZooError(f"RANK {rank} is outside 0..{size - 1} (WORLD_SIZE {size})")
    local_size = _int_variable(env, "LOCAL_WORLD_SIZE", str(size))
    return Group(rank=rank, size=size, local_rank=local_rank, local_size=local_size)


def _int_variable(env, name: str, default: str) -> int:
    text = env.get(name, default)
    try:
        return int(text)
    except ValueError:
        raise ZooError(f"environment variable {name}={text!r} is not an integer") from None


def check_supported(config, group: Group) -> None:
    """What a distributed run cannot do, as one-line errors before any process waits on another."""
    if config.batch_size % group.size:
        raise ZooError(f"batch size {config.batch_size} is not divisible by the {group.size} "
                       f"processes: the global batch is split evenly across them; pick a "
                       f"multiple of {group.size}")
    if is_generator_arch(config.arch):
        raise ZooError(f"'{config.arch}' is an image generator: generators train in one "
                       "process (their evaluation trains its own classifier); run without "
                       "torchrun")


def check_shardable(batches, group: Group) -> None:
    """Every rank needs at least one row of every global batch, the short last one included."""
    if isinstance(batches, ShuffledBatches) and not batches.drop_last:
        last = len(batches.x) % batches.batch_size
        if 0 < last < group.size:
            raise ZooError(f"the last batch of an epoch holds {last} example(s), fewer than the "
                           f"{group.size} processes; change --train-subset or --batch-size")


def rank_device(device: torch.device, group: Group) -> torch.device:
    """On CUDA each rank owns the GPU of its local rank; on the CPU they share the cores."""
    if device.type != "cuda":
        return device
    gpus = torch.cuda.device_count()
    if max(group.local_size, group.local_rank + 1) > gpus:  # every rank says so, none waits
        raise ZooError(f"{group.local_size} processes on this machine need as many GPUs; it has "
                       f"{gpus}: lower --nproc-per-node, or train on --device cpu")
    return torch.device("cuda", group.local_rank)


@contextlib.contextmanager
def process_group(device: torch.device):
    """torch.distributed for the run: nccl on CUDA, gloo on the CPU. Torn down at the end, on
    errors too; a process group someone else set up is used and left alone."""
    dist = torch.distributed
    if dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def entered_by_main(group: Group, make_context: Callable[[], ContextManager]):
    """Rank 0 enters `make_context()` (the run folder's lock); if it cannot, every rank raises
    its one-line error instead of waiting for a rank that has left."""
    with contextlib.ExitStack() as stack:
        error = None
        if group.is_main:
            try:
                stack.enter_context(make_context())
            except ZooError as exc:
                error = str(exc)
        error = group.from_main(error)
        if error:
            raise ZooError(error)
        yield


def shard(xb: torch.Tensor, yb: torch.Tensor,
          group: Group) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's rows of a global minibatch (contiguous chunks: the batch is already a random
    draw), and the factor for its mean loss: DDP averages the ranks' gradients, so a rank with
    n of the N targets weighs its loss by size * n / N to make that average the gradient of the
    global mean. The factor is exactly 1 when the rows split evenly."""
    x, y = xb.tensor_split(group.size)[group.rank], yb.tensor_split(group.size)[group.rank]
    return x, y, group.size * y.numel() / yb.numel()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around the model, for the training step only (evaluation, diagnostics and
    checkpoints use the module itself: the weights are the same on every rank)."""
    # A performance hint about a tiny parameter whose gradient comes from an expand (ViT's class
    # token), printed by every rank; not an error.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """On CUDA, BatchNorm normalizes with the statistics of the global batch (SyncBatchNorm), as a
    single process would. On the CPU it cannot (SyncBatchNorm needs CUDA): each rank normalizes
    with its own shard's statistics, as plain DDP does, so a BatchNorm model (resnet) trained
    across CPU processes differs slightly from a single-process run."""
    if device.type != "cuda":
        return model
    return convert_sync_batchnorm(model)  # timm's: also converts its BatchNormAct layers


def rng_states(group: Group, device: torch.device) -> dict[str, list[torch.Tensor]]:
    """Every rank's random state, for the checkpoint (a rank whose shards differ in size, or
    whose model draws random numbers, has its own)."""
    state = {"rng_cpu_by_rank": group.gather(torch.get_rng_state())}
    if device.type == "cuda":
        state["rng_cuda_by_rank"] = [s.cpu() for s in group.gather(
            torch.cuda.get_rng_state(device))]
    return state


def restore_rng_states(trainer_state: dict[str, Any], group: Group,
                       device: torch.device) -> None:
    """This rank's own random state from a checkpoint of a job of the same size (otherwise every
    rank keeps rank 0's, which the single-process fields hold)."""
    by_rank = trainer_state.get("rng_cpu_by_rank")
    if by_rank and len(by_rank) == group.size:
        torch.set_rng_state(by_rank[group.rank])
    cuda_by_rank = trainer_state.get("rng_cuda_by_rank")
    if device.type == "cuda" and cuda_by_rank and len(cuda_by_rank) == group.size:
        torch.cuda.set_rng_state(cuda_by_rank[group.rank], device)


class ReadOnlyRunDir(RunDir):
    """The run folder as a rank other than 0 sees it: it reads what rank 0 wrote (config,
    checkpoints) and never writes, not even the lock (rank 0 holds it for the job)."""

    @contextlib.contextmanager
    def exclusive(self):
        yield

    def write_json(self, name: str, obj: Any) -> None:
        pass

    def write_metrics(self, history: list[dict]) -> None:
        pass

    def save_checkpoint(self, epoch: int, model: nn.Module, trainer_state: dict[str, Any]) -> None:
        pass

    def save_initial_weights(self, weights: dict[str, torch.Tensor]) -> None:
        pass


class NoResultsStore:
    """The results database as a rank other than 0 sees it: rank 0 stores the run."""

    def __enter__(self) -> "NoResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def get(self, run_id: str) -> None:
        return None

    def upsert(self, record, predictions: list[int] | None = None, split: str = "test") -> None:
        pass
