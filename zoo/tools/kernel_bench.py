"""`zoo bench kernels`: every formula activation and the group-rational one, forward and forward+backward, timed against
(a) its PyTorch reference in eager mode, (b) `torch.compile` of that reference (optional: slow to
compile on a CPU), (c) PyTorch's native op where one exists. Timings use torch.utils.benchmark
(which synchronizes CUDA); GB/s counts the bytes each pass must move at least (forward: read x,
write y; forward+backward: that plus read x and grad_y, write grad_x), and on a GPU the fraction
of the copy bandwidth measured in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.benchmark import Timer

from zoo.errors import ZooError
from zoo.kernels import runtime
from zoo.kernels.rational import group_rational
from zoo.registry import ACTS
from zoo.registry.acts import FORMULAS
from zoo.runs import environment
from zoo.runs.device import ensure_fits, resolve_device
from zoo.runs.files import atomic_write_text

NATIVE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu, "mish": F.mish, "elu": F.elu, "selu": F.selu, "softplus": F.softplus,
    "leaky_relu": F.leaky_relu,
}


RATIONAL_CHANNELS = 1024
BUFFERS_PER_ELEMENT = 8  # float32-sized tensors of numel elements alive at once, at most


def implementations(name: str, dev: torch.device, dtype: torch.dtype,
                    compile: bool = False) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """What is timed for activation `name` at its defaults: the eager PyTorch reference,
    `torch.compile` of it (if asked), PyTorch's native op where one exists, and zoo's fused
    kernel when it can run on `dev`."""
    module = ACTS.get(name).create().to(dev)
    if name == "rational":
        a, b = module.a.detach().to(dtype), module.b.detach().to(dtype)
        impls = {"reference": lambda t: group_rational(t, a, b)}
    else:
        formula = FORMULAS[name]
        params = [getattr(module, p.name).detach().to(dtype) for p in formula.params]
        impls = {"reference": lambda t: formula.reference(t, *params)}
    if runtime.can_launch(torch.empty(1, device=dev, dtype=dtype)):
        impls["zoo kernel"] = module
    if compile:
        # every reference is the same lambda to dynamo, whose recompile limit (8) would leave
        # all activations after the first few uncompiled: start each one from a clean cache
        torch.compiler.reset()
        impls["torch.compile"] = torch.compile(impls["reference"])
    if name in NATIVE:
        impls["native"] = NATIVE[name]
    return impls


@dataclass
class Timing:
    fwd_s: float
    fwdbwd_s: float


def seconds_per_call(fn: Callable[[], object], min_run_time: float) -> float:
    """The median seconds of one call of `fn`, by torch.utils.benchmark's blocked autorange."""
    return Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def time_impl(fn, x: torch.Tensor, min_run_time: float) -> Timing:
    x_grad = x.detach().clone().requires_grad_()
    grad_y = torch.ones_like(x)

    def fwdbwd():
        (y,) = (fn(x_grad),)
        torch.autograd.backward(y, grad_y)
        x_grad.grad = None

    with torch.no_grad():
        fwd = seconds_per_call(lambda: fn(x), min_run_time)
    return Timing(fwd, seconds_per_call(fwdbwd, min_run_time))


def copy_bandwidth(x: torch.Tensor, min_run_time: float) -> float:
    """Bytes/s of `y.copy_(x)`: read + write, the ceiling for an elementwise kernel."""
    y = torch.empty_like(x)
    return 2 * x.numel() * x.element_size() / seconds_per_call(lambda: y.copy_(x), min_run_time)


def bench_kernels(names: list[str] | None = None, numel: int | None = None,
                  dtype: torch.dtype | None = None, device: str = "auto", compile: bool = False,
                  min_run_time: float = 0.2, out: Path | None = None,
                  console: Console | None = None) -> list[dict]:
    console = console or Console()
    dev = resolve_device(device)
    numel = numel or (2**26 if dev.type == "cuda" else 2**20)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    names = names or [*sorted(FORMULAS), "rational"]
    for name in names:
        ACTS.get(name)
    if "rational" in names and numel % RATIONAL_CHANNELS:
        raise ZooError(f"--numel must be a multiple of {RATIONAL_CHANNELS} to time rational "
                       f"(its input is (tokens, {RATIONAL_CHANNELS})), got {numel:,}")
    # the input, its float32 draw, outputs and gradients of the passes alive at once: a bound
    ensure_fits(BUFFERS_PER_ELEMENT * 4 * numel, dev, f"timing {numel:,} elements")
    x = (torch.randn(numel, device=dev) * 3).to(dtype)
    nbytes = x.element_size() * numel
    copy_bps = copy_bandwidth(x, min_run_time)
    rows = []
    for name in names:
        impls = implementations(name, dev, dtype, compile)
        # The group-rational activation groups the last dim: time it on (tokens, 1024 channels).
        shaped = x.view(-1, RATIONAL_CHANNELS) if name == "rational" else x
        timings = {label: time_impl(fn, shaped, min_run_time) for label, fn in impls.items()}
        for label, t in timings.items():
            rows.append({
                "act": name, "impl": label, "fwd_ms": t.fwd_s * 1e3, "fwdbwd_ms": t.fwdbwd_s * 1e3,
                "fwd_gbps": 2 * nbytes / t.fwd_s / 1e9, "fwdbwd_gbps": 5 * nbytes / t.fwdbwd_s / 1e9,
                "fwdbwd_copy_fraction": (5 * nbytes / t.fwdbwd_s) / copy_bps,
                "speedup_vs_reference": timings["reference"].fwdbwd_s / t.fwdbwd_s,
            })
    header = (f"{environment.device_name(dev)}, {numel:,} elements of {str(dtype).replace('torch.', '')}, "
              f"copy bandwidth {copy_bps / 1e9:.1f} GB/s, torch {torch.__version__}")
    _print(rows, header, console)
    if out is not None:
        atomic_write_text(out, render_markdown(rows, header))
        console.print(f"wrote {out}")
    return rows


def _print(rows: list[dict], header: str, console: Console) -> None:
    table = Table(title=f"activation kernels: {header}", title_justify="left")
    for column in ("act", "impl", "fwd ms", "fwd+bwd ms", "fwd+bwd GB/s", "of copy bw",
                   "vs reference"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["act"], r["impl"], f"{r['fwd_ms']:.3f}", f"{r['fwdbwd_ms']:.3f}",
                      f"{r['fwdbwd_gbps']:.1f}", f"{r['fwdbwd_copy_fraction']:.0%}",
                      f"{r['speedup_vs_reference']:.2f}x")
    console.print(table)


def render_markdown(rows: list[dict], header: str) -> str:
    lines = ["# Activation kernels", "",
             "Generated by `zoo bench kernels --write`; do not edit by hand.", "",
             "On a GPU, `bash benchmarks/gpu_acceptance.sh` writes this board with the CUDA "
             "parity tests and every GPU target in one run (README, section GPU).", "",
             f"**Measured on:** {header}.", "",
             "Median times from torch.utils.benchmark. GB/s counts the minimum bytes moved "
             "(forward: x in, y out; forward+backward: 5 tensors); `of copy bw` is that rate "
             "over the device's `copy_` bandwidth in the same run; `vs reference` is the "
             "forward+backward speed-up over the eager PyTorch reference.", "",
             "| act | impl | fwd (ms) | fwd+bwd (ms) | fwd+bwd GB/s | of copy bw | vs reference |",
             "|:---|:---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['act']} | {r['impl']} | {r['fwd_ms']:.3f} | {r['fwdbwd_ms']:.3f} | "
                     f"{r['fwdbwd_gbps']:.1f} | {r['fwdbwd_copy_fraction']:.0%} | "
                     f"{r['speedup_vs_reference']:.2f}x |")
    return "\n".join(lines) + "\n"
