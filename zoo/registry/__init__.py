"""Registries of everything a run is made of, one per kind.

    from zoo.registry import ACTS
    @ACTS.register("golu", formula="x * exp(-exp(-x))", paper=("Gompertz Linear Units", "2502.03654"))
    def golu(**params): ...

Built-in entries live in the sibling modules (archs, acts, inits, quants, datasets); third-party
packages add theirs through the `zoo.plugins` entry-point group or `--plugin FILE.py`.
"""

from __future__ import annotations

# Built-in entries register themselves on import.
from zoo.registry import (  # noqa: E402,F401  (submodules, imported for their entries)
                               acts,
                               archs,
                               datasets,
                               inits,
                               inits_transfer,
                               inits_unit,
                               quants,
                               text_datasets,
)
from zoo.registry.core import (
                               ACTS,
                               ARCHS,
                               DATASETS,
                               INITS,
                               QUANTS,
                               REGISTRIES,
                               Entry,
                               Paper,
                               Registry,
                               find,
                               registry_for,
)

__all__ = ["ARCHS", "ACTS", "INITS", "QUANTS", "DATASETS", "REGISTRIES", "Entry", "Paper",
           "Registry", "registry_for", "find"]
