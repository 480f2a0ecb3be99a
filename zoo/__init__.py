"""zoo: a pluggable model zoo and benchmark harness for activations, inits and quantization.

The public Python API (`zoo.api`) is available from here: `zoo.create_model`, `zoo.act_layer`,
`zoo.init_`, `zoo.quantize_`, `zoo.train_run`... `__all__` lists it, and it is the contract. The
names load on first use, so that `import zoo` and the `zoo` command stay instant (torch is
imported only when a name that needs it is touched).
"""

from __future__ import annotations

import importlib
from typing import Any

from zoo.version import __version__

__all__ = [
    "__version__",
    # finding variants
    "list_variants", "list_archs", "list_acts", "list_inits", "list_quants", "list_datasets",
    "info",
    # activations
    "create_act", "act_layer", "check_act",
    # models
    "create_model", "model_act", "init_", "quantize_", "size_report",
    # runs
    "TrainConfig", "RunRecord", "train_run", "evaluate_run",
    # errors
    "ZooError",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("zoo.api"), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
