"""Named protocols: the training budget every run of a sweep shares, per (arch, data set).

A protocol fixes what a comparison holds constant (epochs, subsets; the rest comes from the
architecture's recipe), the standard grid a submission is run on, and the baseline every row of
a leaderboard is tested against. Runs are compared by their hyperparameters' hash
(`TrainConfig.protocol()`), so a named protocol is a convenient way to get the same hash on every
machine; `protocol_name_for` maps a hash back to its name for the leaderboards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zoo.errors import ZooError
from zoo.registry.core import unknown_name_message
from zoo.runs.config import TrainConfig
from zoo.runs.ids import protocol_id as hash_protocol

BASELINE = {"act": "gelu", "init": "default", "quant": "none"}


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    # (arch, dataset) -> recipe overrides; "*" matches any arch or data set. The most specific
    # key wins: (arch, dataset), then (arch, "*"), ("*", dataset), ("*", "*").
    budgets: dict[tuple[str, str], dict[str, Any]]
    archs: tuple[str, ...] = ("vit", "resnet")  # the standard grid (`zoo submit`)
    datasets: tuple[str, ...] = ("digits", "fashion-mnist")
    seeds: tuple[int, ...] = (0, 1, 2)
    baseline: dict[str, str] = field(default_factory=lambda: dict(BASELINE))
    # A retired protocol names the runs of an older budget: they stay in the database and keep
    # their name, but the leaderboards leave them out (and say how many there are).
    retired: bool = False
    # Whether the budgets apply on top of the data-set recipes (`dataset_recipes`) or, for a
    # protocol defined before those existed, on the architecture's recipe alone.
    on_dataset_recipes: bool = True

    def covers(self, arch: str, dataset: str) -> bool:
        return any(key in self.budgets
                   for key in ((arch, dataset), (arch, "*"), ("*", dataset), ("*", "*")))

    def overrides(self, arch: str, dataset: str) -> dict[str, Any]:
        for key in ((arch, dataset), (arch, "*"), ("*", dataset), ("*", "*")):
            if key in self.budgets:
                return {**self.budgets[key], "dataset": dataset}
        return {"dataset": dataset}

    def config(self, arch: str, dataset: str, **fields: Any):
        """The TrainConfig of a run of this protocol (`fields`: act, init, seed, ...)."""
        return TrainConfig.for_arch(arch, dataset_recipe=self.on_dataset_recipes,
                                    **{**self.overrides(arch, dataset), **fields})

    def describe(self, arch: str, dataset: str) -> str:
        budget = {k: v for k, v in self.overrides(arch, dataset).items() if k != "dataset"}
        return ", ".join(f"{k}={v}" for k, v in sorted(budget.items())) or "the recipe"


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    if protocol.name in PROTOCOLS:
        raise ZooError(f"protocol '{protocol.name}' is already defined")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    """A protocol to train under: retired ones are refused (they name stored runs only)."""
    protocol = PROTOCOLS.get(name)
    if protocol is None or protocol.retired:
        current = sorted(n for n, p in PROTOCOLS.items() if not p.retired)
        if protocol is not None:
            raise ZooError(f"protocol '{name}' is retired (its runs stay in the database); "
                           f"train under one of {', '.join(current)}")
        raise ZooError(unknown_name_message("protocol", name, current))
    return protocol


# nanoGPT's CPU run on Shakespeare (4 layers, 4 heads, width 128, block 64, batch 12, 2000
# iterations at lr 1e-3, no dropout): the anchor of the language-model board.
GPT2_NANOGPT_CPU = {"arch_params": {"size": "tiny"}, "block_size": 64, "batch_size": 12,
                    "steps_per_epoch": 100, "epochs": 20, "lr": 1e-3, "warmup_epochs": 1,
                    "weight_decay": 0.1}

register_protocol(Protocol(
    "quick",
    "a laptop-CPU budget, about 4 minutes of one thread per image run: digits whole with fewer "
    "epochs; Fashion-MNIST whole (55000/5000/10000) with each arch's Fashion-MNIST recipe; "
    "gpt2 tiny on Shakespeare at nanoGPT's CPU settings (2000 steps)",
    budgets={
        ("vit", "digits"): {"epochs": 15},
        ("resnet", "digits"): {"epochs": 10},
        # kat is the vit with rational MLPs: the vit's budget; var and rar keep their recipes
        # (already CPU budgets: nano and tiny sizes)
        ("kat", "digits"): {"epochs": 15},
        ("gpt2", "shakespeare"): GPT2_NANOGPT_CPU,
        ("*", "*"): {},
    },
))
register_protocol(Protocol(
    "full",
    "near convergence: each architecture's recipe, on Fashion-MNIST for 30 epochs (5 times "
    "quick's for resnet, 3 times for vit; about 10 minutes of one CPU thread per resnet run)",
    budgets={
        ("resnet", "fashion-mnist"): {"epochs": 30},
        ("vit", "fashion-mnist"): {"epochs": 30},
        ("gpt2", "shakespeare"): GPT2_NANOGPT_CPU,  # the language-model board has one budget
        ("*", "*"): {},
    },
))
register_protocol(Protocol(
    "quick-v1",
    "the quick budgets before the Fashion-MNIST recipes (until December 2026): the first "
    "3000-5000 training and 2000 validation/test images, 2-3 epochs, under the digits recipes; "
    "gpt2 nano for 1000 steps (its recipe)",
    budgets={
        ("vit", "fashion-mnist"): {"epochs": 3, "train_subset": 5000, "eval_subset": 2000},
        ("resnet", "fashion-mnist"): {"epochs": 2, "train_subset": 3000, "eval_subset": 2000},
        ("kat", "fashion-mnist"): {"epochs": 3, "train_subset": 5000, "eval_subset": 2000},
        ("gpt2", "shakespeare"): {},
    },
    retired=True,
    on_dataset_recipes=False,
))
register_protocol(Protocol(
    "quick-v2",
    "the quick budget of the ViT Fashion-MNIST recipe's first version (until 6 December 2026): "
    "6 epochs instead of 10, 87.61 ± 0.09% for GELU, short of the 88% quick aims at",
    budgets={
        ("vit", "fashion-mnist"): {"epochs": 6},
        ("kat", "fashion-mnist"): {"epochs": 6},  # kat shares the vit's Fashion-MNIST recipe
    },
    retired=True,
))
register_protocol(Protocol(
    "smoke",
    "checks that a grid runs end to end in seconds (1 epoch on 256 examples); not a comparison",
    budgets={("*", "*"): {"epochs": 1, "train_subset": 256, "eval_subset": 256}},
    seeds=(0,),
))


def protocol_name_for(protocol_id: str, arch: str, dataset: str) -> str | None:
    """The named protocol whose budget for (arch, dataset) hashes to `protocol_id`, if any.
    Where several do, one that changes the recipe here goes last, and of the others one that
    is not the recipe everywhere; ties go to the first registered (quick before full)."""
    def preference(protocol: Protocol) -> tuple[bool, bool]:
        changes_it_here = protocol.describe(arch, dataset) != "the recipe"
        recipe_everywhere = not any(protocol.budgets.values())
        return changes_it_here, not recipe_everywhere

    for protocol in sorted(PROTOCOLS.values(), key=preference):
        if not protocol.covers(arch, dataset):
            continue
        try:
            config = protocol.config(arch, dataset)
        except ZooError:
            continue
        if hash_protocol(config.protocol()) == protocol_id:
            return protocol.name
    return None
