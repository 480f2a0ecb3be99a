"""`zoo probe`: signal propagation at initialization.

One forward and backward pass of the cross-entropy loss on one real batch, with hooks on every
Linear and Conv layer and every zoo activation, reporting per layer (in the order the forward
pass reaches them): mean and variance of the output, the norm of the loss gradient with respect to
that output and, for weight layers, the weight gradient's norm and the weight matrix's effective
rank. A variance or gradient norm that shrinks or grows geometrically with depth is the vanishing
or exploding signal an initialization is meant to prevent.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from zoo.data.images import ShuffledBatches
from zoo.errors import ZooError
from zoo.models.activation import Activation
from zoo.registry.datasets import DEFAULT_DATASET
from zoo.runs import environment
from zoo.runs.config import TrainConfig
from zoo.runs.device import resolve_device
from zoo.runs.files import atomic_write, atomic_write_json
from zoo.tasks.classify import build_for, load_data
from zoo.train.diagnostics import effective_rank

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class ProbeRow:
    """One call of one layer of interest. Statistics are over the whole batch (all elements);
    gradient norms are Frobenius norms of the gradient of the batch-mean loss."""

    depth: int  # 1, 2, ... in the order the forward pass reaches the layers
    name: str  # qualified module name; a second call of the same module gets "#2"
    kind: str  # "linear", "conv" or "activation"
    shape: tuple[int, ...]  # of the output, batch first
    mean: float
    var: float  # population variance (no Bessel correction)
    grad_norm: float | None  # of dLoss/dOutput; None where no gradient reaches the output
    weight_shape: tuple[int, ...] | None = None
    weight_grad_norm: float | None = None
    effective_rank: float | None = None

    @property
    def max_rank(self) -> int | None:
        """min of the weight matrix's sides (a conv weight as (out, in*k*k))."""
        if self.weight_shape is None:
            return None
        return min(self.weight_shape[0], math.prod(self.weight_shape[1:]))

    @property
    def rank_ratio(self) -> float | None:
        """Effective rank / max rank: 1 for a well-spread spectrum, near 0 for a collapsed one."""
        if self.effective_rank is None or not self.max_rank:
            return None
        return self.effective_rank / self.max_rank

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_rank": self.max_rank, "rank_ratio": self.rank_ratio}


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, Activation):
        return "activation"
    return None


def probe_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[ProbeRow]:
    """Forward + backward of cross_entropy(model(x), y) in training mode, as the first training
    step sees it (BatchNorm uses, and updates, batch statistics); no optimizer step. The model's
    mode is restored; its parameters' .grad hold this batch's gradients afterwards."""
    calls: list[dict[str, Any]] = []
    seen: dict[str, int] = {}

    def forward_hook(name: str, kind: str):
        def hook(module: nn.Module, inputs, output) -> None:
            if not isinstance(output, torch.Tensor):
                return
            seen[name] = seen.get(name, 0) + 1
            out = output.detach().double()  # float64: exact enough to compare with theory
            call = {"name": name if seen[name] == 1 else f"{name}#{seen[name]}", "kind": kind,
                    "module": module, "shape": tuple(output.shape), "mean": out.mean().item(),
                    "var": out.var(correction=0).item(), "grad_norm": None}
            if output.requires_grad:
                # A tensor hook sees dLoss/dOutput itself; a module's full backward hook would
                # need every input to take part in autograd.
                output.register_hook(lambda g: call.update(grad_norm=g.double().norm().item()))
            calls.append(call)

        return hook

    handles = [module.register_forward_hook(forward_hook(name, kind))
               for name, module in model.named_modules() if (kind := _kind(module))]
    was_training = model.training
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).float(), y).backward()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    rows = []
    for depth, call in enumerate(calls, start=1):
        module, weight = call.pop("module"), None
        if call["kind"] != "activation":
            weight = module.weight
        rows.append(ProbeRow(
            depth=depth, **call,
            weight_shape=tuple(weight.shape) if weight is not None else None,
            weight_grad_norm=(weight.grad.double().norm().item()
                              if weight is not None and weight.grad is not None else None),
            effective_rank=effective_rank(weight) if weight is not None else None))
    return rows


# --- From the registry to rows, table and files ------------------------------------------------

@dataclass
class ProbeResult:
    config: dict[str, Any]
    rows: list[ProbeRow]

    @property
    def stem(self) -> str:
        """arch-act-init-dataset-sSEED, with the parameters set on act or init appended (e.g.
        `-beta1.5`, `-rank4`) so that probes of different settings do not overwrite each other."""
        c = self.config
        options = {**(c.get("act_params") or {}), **(c.get("init_params") or {})}
        extra = "".join(f"-{k}{v:g}" if isinstance(v, (int, float)) else f"-{k}{v}"
                        for k, v in sorted(options.items()))
        stem = f"{c['arch']}-{c['act']}-{c['init']}-{c['dataset']}-s{c['seed']}{extra}"
        return re.sub(r"[^A-Za-z0-9._=-]+", "_", stem)


def probe_run(arch: str, *, act: str | None = None, init: str = "default",
              dataset: str | None = None, seed: int = 0, batch_size: int = 256,
              device: str = "auto", act_params: dict[str, Any] | None = None,
              init_params: dict[str, Any] | None = None) -> ProbeResult:
    """Build `arch` exactly as `zoo train` would and probe it on the first training batch of
    epoch 1 (the same seeded draw training starts with), capped at the training split's size.
    `dataset` None: zoo's default data set."""
    dataset = dataset or DEFAULT_DATASET
    if batch_size <= 0:
        raise ZooError(f"--batch-size must be positive, got {batch_size}")
    config = TrainConfig.for_arch(arch, act=act, init=init, dataset=dataset, seed=seed,
                                  act_params=act_params, init_params=init_params)
    dev = resolve_device(device)
    data = load_data(config, dev)
    config.batch_size = min(batch_size, data.spec.sizes["train"])
    model = build_for(config, data).to(dev)
    x, y = next(ShuffledBatches(*data.train, config.batch_size, config.seed).epoch(0))
    rows = probe_model(model, x, y)
    return ProbeResult(config={
        "arch": config.arch, "act": config.act, "init": config.init, "dataset": config.dataset,
        "seed": config.seed, "batch_size": config.batch_size, "act_params": config.act_params,
        "init_params": config.init_params, "device": environment.device_name(dev),
        "precision": "float32"}, rows=rows)


def print_probe(result: ProbeResult, console: Console | None = None) -> None:
    c = result.config
    table = Table(title=f"signal at initialization: {c['arch']}·{c['act']}, init {c['init']}, "
                        f"{c['dataset']} batch of {c['batch_size']}, seed {c['seed']}, "
                        f"{c['device']}", title_justify="left")
    for column in ("depth", "layer", "kind", "shape", "mean", "var", "grad norm",
                   "W grad norm", "eff. rank"):
        text = column in ("layer", "kind", "shape")
        table.add_column(column, justify="left" if text else "right", no_wrap=True)
    for r in result.rows:
        rank = f"{r.effective_rank:.1f} / {r.max_rank}" if r.effective_rank is not None else ""
        table.add_row(str(r.depth), r.name, r.kind, "x".join(map(str, r.shape)),
                      _num(r.mean), _num(r.var), _num(r.grad_norm), _num(r.weight_grad_norm), rank)
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)  # a log or pipe: rows whole, not wrapped at 80
    console.print(table)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def write_probe(result: ProbeResult, out: str | Path) -> tuple[Path, Path]:
    """`<stem>.png` and `<stem>.json` in `out`, each written atomically."""
    out = Path(out)
    png, js = out / f"{result.stem}.png", out / f"{result.stem}.json"
    plot_probe(result.rows, png, title=result.stem)
    atomic_write_json(js, {"config": result.config,
                           "rows": [_finite_or_text(r.to_dict()) for r in result.rows]})
    return png, js


def _finite_or_text(row: dict[str, Any]) -> dict[str, Any]:
    # Strict JSON has no NaN or Infinity, and an exploding network produces both.
    return {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in row.items()}


def plot_probe(rows: list[ProbeRow], path: str | Path, title: str = "") -> None:
    """Depth on the x-axis; panels: output variance (log), gradient norm (log), effective rank /
    max rank. Depths where a variance or output gradient norm is non-finite are shaded red, where
    it is exactly 0 grey. Written atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: no global state, no GUI backend

    fig = Figure(figsize=(10, 8), layout="constrained")
    FigureCanvasAgg(fig)
    var_ax, grad_ax, rank_ax = fig.subplots(3, 1, sharex=True)
    # One colour per kind in every panel; filled: the layer's output, hollow: its weight.
    for kind, marker, color in (("linear", "o", "C0"), ("conv", "s", "C1"),
                                ("activation", "^", "C2")):
        chosen = [r for r in rows if r.kind == kind]
        if not chosen:
            continue
        depths = [r.depth for r in chosen]
        style = {"marker": marker, "color": color, "linestyle": "none"}
        var_ax.plot(depths, [_loggable(r.var) for r in chosen], label=kind, **style)
        grad_ax.plot(depths, [_loggable(r.grad_norm) for r in chosen], label=f"{kind} output",
                     **style)
        if kind != "activation":
            grad_ax.plot(depths, [_loggable(r.weight_grad_norm) for r in chosen], mfc="none",
                         label=f"{kind} weight", **style)
            rank_ax.plot(depths, [_nan(r.rank_ratio) for r in chosen], label=kind, **style)
    for ax, values, label in ((var_ax, [r.var for r in rows], "output variance"),
                              (grad_ax, [r.grad_norm for r in rows], "gradient norm")):
        shown = [v for v in values if not math.isnan(_loggable(v))]
        # A log axis with no positive finite value would fail to draw.
        ax.set(yscale="log" if shown else "linear", ylabel=label)
        # Values a log axis cannot show get a shaded column instead: exploded or vanished.
        for flagged, color, name in (
                (lambda v: not math.isfinite(v), "red", "non-finite"),
                (lambda v: v == 0, "grey", "exactly 0")):
            depths = [r.depth for r, v in zip(rows, values) if v is not None and flagged(v)]
            for i, depth in enumerate(depths):
                ax.axvspan(depth - 0.5, depth + 0.5, color=color, alpha=0.15, lw=0,
                           label="_nolegend_" if i else name)
    var_ax.set_title(title)
    rank_ax.set(ylim=(0, 1.05), ylabel="effective rank / max rank", xlabel="depth")
    for ax in (var_ax, grad_ax, rank_ax):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a net of activations only has no ranks
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _loggable(value: float | None) -> float:
    """The value where a log axis can show it, else NaN (matplotlib leaves a gap)."""
    return value if value is not None and math.isfinite(value) and value > 0 else math.nan
