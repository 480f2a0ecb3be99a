"""`zoo bench quant`: fake-quantization of a weight-like (rows, 4096) matrix in every format, by
zoo's CuPy kernels (`zoo.quant.cuda`, where they can run) and by the eager PyTorch
reference (`zoo.quant.formats.fake_quantize`), against `x.clone()` timed in the same run: the
copy bandwidth a one-pass kernel can at best reach. GB/s counts x read and the result written
(2 * numel * element size). Timings are medians from torch.utils.benchmark (which synchronizes
CUDA). On a machine without CUDA or CuPy only the reference and the copy are timed.
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

from zoo.kernels import runtime
from zoo.quant import cuda as quant_cuda
from zoo.quant import formats as reference
from zoo.quant.formats import Format
from zoo.runs import environment
from zoo.runs.device import ensure_fits, resolve_device
from zoo.tools.kernel_bench import BUFFERS_PER_ELEMENT, seconds_per_call

K = 4096  # elements per row: a weight matrix's input features

DEFAULT_FORMATS: dict[str, Format] = {
    "int8 channel": reference.INT8_CHANNEL,
    "int8 tensor": Format("int", 8, "tensor"),
    "int4 g128": reference.int_group(4, 128),
    "int4 g128 asym": reference.int_group(4, 128, symmetric=False),
    "int4 g32": reference.int_group(4, 32),
    "fp8 e4m3": reference.FP8_E4M3,
    "fp8 e5m2": reference.FP8_E5M2,
    "mxfp4": reference.MXFP4,
    "nvfp4": reference.NVFP4,
}

_MISSING = "—"


def quant_bench_environment(device: str | torch.device = "auto") -> dict:
    """environment.capture plus CuPy's version: what `quant_bench_markdown` records."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    cupy = runtime.cupy_or_none()
    return {**environment.capture(dev), "cupy": cupy.__version__ if cupy is not None else None}


def bench_quant(formats: dict[str, Format] | None = None, numel: int | None = None,
                device: str = "auto", dtype: torch.dtype | None = None,
                min_run_time: float = 0.2) -> list[dict]:
    """One row per format: reference, kernel (None where it cannot launch) and copy timings of
    fake-quantizing a (numel // 4096, 4096) matrix (rows of numel elements when numel < 4096).
    Defaults: 2^26 elements of bfloat16 on CUDA, 2^20 of float32 on the CPU."""
    dev = resolve_device(device)
    numel = numel or (2**26 if dev.type == "cuda" else 2**20)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    chosen = DEFAULT_FORMATS if formats is None else formats
    # input, output and the float32 intermediates of a fake quantizer: a bound
    ensure_fits(BUFFERS_PER_ELEMENT * 4 * numel, dev, f"timing {numel:,} elements")
    k = min(K, numel)
    shape = (max(1, numel // k), k)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device=dev, dtype=dtype)
    moved = 2 * x.numel() * x.element_size()
    copy_s = seconds_per_call(lambda: x.clone(), min_run_time)
    common = {"device": environment.device_name(dev), "dtype": str(dtype).replace("torch.", ""),
              "shape": shape, "copy_ms": copy_s * 1e3, "copy_gbps": moved / copy_s / 1e9}
    rows = []
    for name, fmt in chosen.items():
        reference_s = seconds_per_call(lambda fmt=fmt: reference.fake_quantize(x, fmt), min_run_time)
        row = {"format": name, "describe": fmt.describe(), **common,
               "reference_ms": reference_s * 1e3, "reference_gbps": moved / reference_s / 1e9,
               "kernel_ms": None, "kernel_gbps": None, "speedup": None, "copy_fraction": None,
               "bitwise": None}
        if quant_cuda.can_launch(x, fmt):
            kernel_s = seconds_per_call(lambda fmt=fmt: quant_cuda.fake_quantize(x, fmt), min_run_time)
            got, want = quant_cuda.fake_quantize(x, fmt), reference.fake_quantize(x, fmt)
            row.update(kernel_ms=kernel_s * 1e3, kernel_gbps=moved / kernel_s / 1e9,
                       speedup=reference_s / kernel_s, copy_fraction=copy_s / kernel_s,
                       bitwise=bool(torch.equal(got.view(_int_view(dtype)),
                                                want.view(_int_view(dtype)))))
        rows.append(row)
    return rows


def _int_view(dtype: torch.dtype) -> torch.dtype:
    return torch.int32 if dtype.itemsize == 4 else torch.int16


def _cells(r: dict) -> list[str]:
    def number(value, spec):
        return _MISSING if value is None else format(value, spec)

    bitwise = _MISSING if r["bitwise"] is None else ("yes" if r["bitwise"] else "NO")
    speedup = _MISSING if r["speedup"] is None else f"{r['speedup']:.1f}x"
    return [r["format"], r["describe"], number(r["reference_ms"], ".3f"),
            number(r["reference_gbps"], ".1f"), number(r["kernel_ms"], ".3f"),
            number(r["kernel_gbps"], ".1f"), number(r["copy_fraction"], ".0%"), speedup, bitwise]


_COLUMNS = ["format", "description", "reference (ms)", "reference GB/s", "kernel (ms)",
            "kernel GB/s", "of copy", "vs reference", "bitwise"]


def _protocol(rows: list[dict], env: dict) -> str:
    first = rows[0] if rows else {}
    shape = first.get("shape")
    parts = [env.get("device") or first.get("device", "?")]
    if shape:
        parts.append(f"{first['dtype']} ({shape[0]:,} x {shape[1]:,})")
        parts.append(f"copy bandwidth {first['copy_gbps']:.1f} GB/s (x.clone())")
    parts.append(f"torch {env.get('torch') or torch.__version__}")
    parts.append(f"cupy {env['cupy']}" if env.get("cupy") else "no cupy")
    if env.get("git_commit"):
        parts.append(f"zoo {env['git_commit']}")
    return ", ".join(parts)


def quant_bench_markdown(rows: list[dict], env: dict) -> str:
    """leaderboards/quant-kernels.md: the protocol line and one table row per format."""
    lines = ["# Quantization kernels", "",
             "Generated by `zoo bench quant --write`; do not edit by hand.", "",
             "On a GPU, `bash benchmarks/gpu_acceptance.sh` writes this board with the CUDA "
             "parity tests and every GPU target in one run (README, section GPU).", "",
             f"**Measured on:** {_protocol(rows, env)}.", "",
             "Fake quantization (quantize then dequantize, in the input's dtype) of a weight-like "
             "matrix. Median times from torch.utils.benchmark. GB/s counts the input read and "
             "the output written (2 x numel x element size); `of copy` is the kernel's rate over "
             "that of `x.clone()` in the same run; `vs reference` is the kernel's speed-up over "
             "the eager PyTorch reference (`zoo.quant.formats.fake_quantize`); `bitwise` says "
             f"whether the kernel's output equals the reference's bit for bit. {_MISSING}: the "
             "kernel cannot run here (no CUDA or no CuPy).", "",
             "| " + " | ".join(_COLUMNS) + " |",
             "|:---|:---|" + "---:|" * (len(_COLUMNS) - 3) + ":---|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_quant_bench(rows: list[dict], env: dict | None = None,
                      console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"quantization kernels: {_protocol(rows, env or {})}",
                  title_justify="left")
    for column in _COLUMNS:
        table.add_column(column)
    for r in rows:
        table.add_row(*_cells(r))
    console.print(table)
