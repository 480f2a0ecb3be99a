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

    def overrides(self, arch: str, dataset: str) -> dict[str, Any]:
        for key in ((arch, dataset), (arch, "*"), ("*", dataset), ("*", "*")):
            if key in self.budgets:
                return {**self.budgets[key], "dataset": dataset}
        return {"dataset": dataset}

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
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ZooError(unknown_name_message("protocol", name, sorted(PROTOCOLS))) from None


register_protocol(Protocol(
    "quick",
    "a laptop-CPU budget: digits whole with fewer epochs; Fashion-MNIST on the first 3000-5000 "
    "training and 2000 validation/test images, 2-3 epochs",
    budgets={
        ("vit", "digits"): {"epochs": 15},
        ("resnet", "digits"): {"epochs": 10},
        ("vit", "fashion-mnist"): {"epochs": 3, "train_subset": 5000, "eval_subset": 2000},
        ("resnet", "fashion-mnist"): {"epochs": 2, "train_subset": 3000, "eval_subset": 2000},
        # kat is the vit with rational MLPs: the vit's budget; gpt2, var and rar keep their
        # recipes (already CPU budgets: nano and tiny sizes)
        ("kat", "digits"): {"epochs": 15},
        ("kat", "fashion-mnist"): {"epochs": 3, "train_subset": 5000, "eval_subset": 2000},
        ("*", "*"): {},
    },
))
register_protocol(Protocol(
    "full",
    "what a GPU user would publish: each architecture's own recipe on the whole data set",
    budgets={("*", "*"): {}},
))
register_protocol(Protocol(
    "smoke",
    "checks that a grid runs end to end in seconds (1 epoch on 256 examples); not a comparison",
    budgets={("*", "*"): {"epochs": 1, "train_subset": 256, "eval_subset": 256}},
    seeds=(0,),
))


def protocol_name_for(protocol_id: str, arch: str, dataset: str) -> str | None:
    """The named protocol whose budget for (arch, dataset) hashes to `protocol_id`, if any.
    Where several do (quick leaves gpt2 its recipe), the one that is the recipe, `full`, wins."""
    from zoo.harness.config import TrainConfig
    from zoo.harness.results import protocol_id as hash_protocol

    def preference(protocol: Protocol) -> tuple[bool, bool]:
        changes_it_here = protocol.describe(arch, dataset) != "the recipe"
        recipe_everywhere = not any(protocol.budgets.values())
        return changes_it_here, not recipe_everywhere

    for protocol in sorted(PROTOCOLS.values(), key=preference):
        try:
            config = TrainConfig.for_arch(arch, **protocol.overrides(arch, dataset))
        except ZooError:
            continue
        if hash_protocol(config.protocol()) == protocol_id:
            return protocol.name
    return None
