"""zoo from Python: the public API, re-exported as `zoo.<name>` (see `zoo.__all__`).

In the style of timm and torchao:

    model = zoo.create_model("vit", act="golu", num_classes=10, img_size=28, in_chans=1)
    net = timm.create_model("resnet18", act_layer=zoo.act_layer("golu"))
    zoo.init_(net, "lsuv", data=batch)
    zoo.quantize_(net, "int8-wo")
    zoo.list_acts("*lu"), zoo.info("golu")
    record = zoo.train_run(zoo.TrainConfig.for_arch("vit", act="golu", epochs=1))

`train_run` and `evaluate_run` are not `train` and `evaluate`: those names are zoo's packages
(`zoo.train`, `zoo.evaluate`), and a function would be shadowed by the package once imported.

Everything here is a thin, documented door onto the modules the CLI uses, so that Python and
`zoo train` build the same models and store the same runs.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from zoo.build import act_layer_for, build_model, check_activations
from zoo.errors import ZooError
from zoo.evaluate import stored
from zoo.models.activation import Activation
from zoo.models.context import BuildContext
from zoo.quant.apply import size_report as quant_size_report
from zoo.registry import ACTS, INITS, QUANTS, REGISTRIES, find, registry_for
from zoo.registry.kinds import is_generator_arch, takes_text
from zoo.registry.options import check_options
from zoo.runs.config import TrainConfig
from zoo.runs.results import RunRecord
from zoo.runs.rundir import stored_model_weights
from zoo.tasks.kinds import make_trainer

# --- finding variants ------------------------------------------------------------------------


def list_variants(kind: str, pattern: str = "*") -> list[str]:
    """Names of one kind (archs, acts, inits, quants, datasets) matching a shell-style pattern,
    sorted: `zoo.list_variants("acts", "*lu")`."""
    return [name for name in registry_for(kind).names() if fnmatch.fnmatchcase(name, pattern)]


def list_archs(pattern: str = "*") -> list[str]:
    return list_variants("archs", pattern)


def list_acts(pattern: str = "*") -> list[str]:
    return list_variants("acts", pattern)


def list_inits(pattern: str = "*") -> list[str]:
    return list_variants("inits", pattern)


def list_quants(pattern: str = "*") -> list[str]:
    return list_variants("quants", pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    return list_variants("datasets", pattern)


def info(name: str) -> dict[str, Any]:
    """What `zoo info NAME` shows, as a dictionary: kind, summary, formula, paper, defaults and
    tags (`kind:name` picks one kind where several share the name)."""
    entries = find(name)
    if len(entries) > 1:
        kinds = ", ".join(f"{e.kind}:{e.name}" for e in entries)
        raise ZooError(f"'{name}' names several entries; pick one: {kinds}")
    entry = entries[0]
    return {"name": entry.name, "kind": entry.kind, "summary": entry.summary,
            "formula": entry.formula, "paper": str(entry.paper) if entry.paper else None,
            "arxiv": entry.paper.arxiv if entry.paper else None,
            "defaults": dict(entry.defaults), "tags": list(entry.tags), "source": entry.source}


# --- activations -------------------------------------------------------------------------------


def create_act(name: str, **params: float) -> nn.Module:
    """The activation `name` as a module: its fused CUDA kernel on a GPU (where CuPy is
    installed), its PyTorch reference elsewhere. `params` set its parameters (`beta=1.5`)."""
    return ACTS.get(name).create(**params)


def act_layer(name: str, **params: float) -> Callable[..., nn.Module]:
    """A constructor to pass as timm's `act_layer`: each call (`act_layer()` or
    `act_layer(inplace=True)`) builds a fresh zoo activation."""
    return act_layer_for(name, **params)


def check_act(model: nn.Module, act: str) -> int:
    """Every nonlinearity of `model` must be the zoo activation `act` (the leak check zoo runs
    on every model it builds); returns how many there are."""
    return check_activations(model, act)


# --- models ------------------------------------------------------------------------------------


def create_model(arch: str, *, act: str | None = None, init: str = "default",
                 quant: str = "none", num_classes: int = 10, in_chans: int = 3,
                 img_size: int | tuple[int, int] = 32, vocab_size: int = 256,
                 block_size: int | None = None, seed: int = 0,
                 act_params: dict[str, float] | None = None,
                 init_params: dict[str, Any] | None = None,
                 quant_params: dict[str, Any] | None = None,
                 calibration: torch.Tensor | None = None, **arch_params: Any) -> nn.Module:
    """A registered architecture with the chosen activation, init and quantization, built as
    `zoo train` builds it (the leak check included). Image models take `num_classes`,
    `in_chans` and `img_size` as timm does; language models `vocab_size` and `block_size`.
    `arch_params` are the architecture's size options (`depth=2`, `size="tiny"`);
    `calibration` is a batch of inputs for data-dependent inits (LSUV) and quantizers."""
    if is_generator_arch(arch):
        raise ZooError(f"{arch} samples through an image tokenizer trained on a data set: train "
                       "it with zoo.train_run (or `zoo train`), then load the run")
    entry_options = (("--arch-param", arch_params, "archs"), ("--init-param", init_params,
                     "inits"), ("--quant-param", quant_params, "quants"))
    for flag, options, kind in entry_options:
        name = {"archs": arch, "inits": init, "quants": quant}[kind]
        check_options(REGISTRIES[kind].get(name), options, flag)
    if takes_text(arch):
        shape: dict[str, Any] = {"vocab_size": vocab_size, "block_size": block_size}
    else:
        side = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        shape = {"image_size": side, "channels": in_chans, "num_classes": num_classes}
    batch = None if calibration is None else (lambda: calibration)
    return build_model(arch, act=act, init=init, quant=quant, seed=seed, act_params=act_params,
                       init_params=init_params, quant_params=quant_params,
                       arch_params=arch_params or None, calibration_batch=batch, **shape)


def model_act(model: nn.Module) -> str | None:
    """The zoo activation a model uses (None if it has none, or several)."""
    names = {m.act_name for m in model.modules() if isinstance(m, Activation)}
    return names.pop() if len(names) == 1 else None


def init_(model: nn.Module, name: str, *, data: torch.Tensor | None = None, seed: int = 0,
          **params: Any) -> nn.Module:
    """Re-initialize `model` in place with the init `name` (`params` are its options);
    data-dependent inits (LSUV) take a batch of inputs as `data`. Returns the model.
    Activation-aware inits read the zoo activation the model uses."""
    entry = INITS.get(name)
    check_options(entry, params, "init option")
    apply = entry.create(**params)
    torch.manual_seed(seed)
    ctx = BuildContext(act=model_act(model) or "", seed=seed,
                       calibration_batch=None if data is None else (lambda: data),
                       run_weights=stored_model_weights)
    apply(model, ctx)
    return model


def quantize_(model: nn.Module, name: str, *, calibration: torch.Tensor | None = None,
              seed: int = 0, **params: Any) -> nn.Module:
    """Quantize `model`'s linear and convolution layers with the format or method `name`
    (`zoo.list_quants()`), in place as torchao's `quantize_` does, and return it. Methods
    that calibrate (GPTQ-like, rotations, activation quantization) take a batch of inputs as
    `calibration`; `skip="first,last"` keeps layers in float."""
    entry = QUANTS.get(name)
    check_options(entry, params, "quant option")
    recipe = entry.create(**params)
    ctx = BuildContext(act=model_act(model) or "", seed=seed,
                       calibration_batch=None if calibration is None else (lambda: calibration))
    return recipe(model, ctx) or model


def size_report(model: nn.Module) -> dict[str, Any]:
    """Bits per quantized weight (scales included), model bytes, float bytes, and how many
    layers and weights are quantized."""
    return quant_size_report(model)


# --- runs --------------------------------------------------------------------------------------


def train_run(config: TrainConfig | None = None, *, out: str | Path = "runs",
              device: str = "auto", show_progress: bool = False, compile: bool = False,
              **fields: Any) -> RunRecord:
    """Train one run, exactly as `zoo train` does, and return its stored record (status,
    metrics, protocol). Give a `TrainConfig`, or its fields: `zoo.train_run(arch="vit",
    act="golu", epochs=1)` starts from the architecture's recipe like the CLI. A finished run
    is not trained again; a killed one resumes."""
    if config is None:
        if "arch" not in fields:
            raise ZooError("zoo.train_run needs a TrainConfig or at least arch=...")
        arch = fields.pop("arch")
        config = TrainConfig.for_arch(arch, **fields)
    elif fields:
        raise ZooError("give zoo.train_run a TrainConfig or fields, not both")
    else:
        config.validate()
    trainer = make_trainer(config, out=out, device=device, compile=compile,
                           show_progress=show_progress)
    return trainer.run().record


def evaluate_run(run: str | Path, *, out: str | Path = "runs",
                 device: str = "auto") -> dict[str, Any]:
    """Reload a stored run's checkpoint (checksums verified) and evaluate it on its test
    split: what `zoo eval RUN` prints, as a dictionary."""
    return stored.evaluate_run(str(run), out=out, device=device)


__all__ = [
    "TrainConfig", "RunRecord", "ZooError",
    "list_variants", "list_archs", "list_acts", "list_inits", "list_quants", "list_datasets",
    "info", "create_act", "act_layer", "check_act", "create_model", "model_act", "init_",
    "quantize_", "size_report", "train_run", "evaluate_run",
]
