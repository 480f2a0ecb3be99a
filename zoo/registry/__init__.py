"""Registries of everything a run is made of, one per kind.

    from zoo.registry import ACTS
    @ACTS.register("golu", formula="x * exp(-exp(-x))", paper=("Gompertz Linear Units", "2502.03654"))
    def golu(**params): ...

Built-in entries live in the sibling modules (archs, acts, inits, quants, datasets); third-party
packages add theirs through the `zoo.plugins` entry-point group or `--plugin FILE.py`.
"""

from __future__ import annotations

from zoo.errors import ZooError
from zoo.registry.core import Entry, Paper, Registry, unknown_name_message

ARCHS = Registry("arch", "archs")
ACTS = Registry("act", "acts")
INITS = Registry("init", "inits")
QUANTS = Registry("quant", "quants")
DATASETS = Registry("dataset", "datasets")

REGISTRIES: dict[str, Registry] = {r.plural: r for r in (ARCHS, ACTS, INITS, QUANTS, DATASETS)}


def registry_for(kind: str) -> Registry:
    """Accepts singular or plural kind names: 'act', 'acts'."""
    for reg in REGISTRIES.values():
        if kind in (reg.kind, reg.plural):
            return reg
    raise ZooError(unknown_name_message("kind", kind, sorted(REGISTRIES)))


def find(name: str) -> list[Entry]:
    """Every entry called `name`, whatever its kind (`zoo info golu`). `kind:name` narrows it."""
    if ":" in name:
        kind, _, bare = name.partition(":")
        return [registry_for(kind).get(bare)]
    found = [reg.get(name) for reg in REGISTRIES.values() if name in reg]
    if not found:
        every = sorted({n for reg in REGISTRIES.values() for n in reg.names()})
        raise ZooError(unknown_name_message("name", name, every))
    return found


# Built-in entries register themselves on import.
from zoo.registry import (  # noqa: E402,F401
    acts, archs, datasets, inits, inits_transfer, inits_unit, quants, text_datasets)

__all__ = ["ARCHS", "ACTS", "INITS", "QUANTS", "DATASETS", "REGISTRIES", "Entry", "Paper",
           "Registry", "registry_for", "find"]
