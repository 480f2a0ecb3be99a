"""`zoo bench` and `zoo probe`: speed, and the signal at initialization."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.cli.options import parse_options, parse_params
from zoo.errors import ZooError
from zoo.runs.files import atomic_write_text, writable_folder
from zoo.tools import kernel_bench, quant_bench
from zoo.tools.bench import bench_harness
from zoo.tools.probe import print_probe, probe_run, write_probe


def cmd_bench(args) -> int:
    if args.target == "kernels":
        if args.numel is not None and args.numel <= 0:
            raise ZooError(f"--numel must be positive, got {args.numel}")
        kernel_bench.bench_kernels(args.acts or None, numel=args.numel, device=args.device,
                                   dtype=getattr(torch, args.dtype) if args.dtype else None,
                                   compile=args.compile,
                                   out=Path("leaderboards/kernels.md") if args.write else None)
    if args.target == "quant":
        if args.numel is not None and args.numel <= 0:
            raise ZooError(f"--numel must be positive, got {args.numel}")
        # called through their modules: the GPU acceptance dry run swaps these functions
        rows = quant_bench.bench_quant(numel=args.numel, device=args.device,
                                       dtype=getattr(torch, args.dtype) if args.dtype else None)
        env = quant_bench.quant_bench_environment(args.device)
        quant_bench.print_quant_bench(rows, env)
        if args.write:
            path = Path("leaderboards/quant-kernels.md")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, quant_bench.quant_bench_markdown(rows, env))
            print(f"wrote {path}")
    if args.target == "harness":
        bench_harness(args.arch, act=args.act, dataset=args.dataset, batch_size=args.batch_size,
                      epochs=args.epochs, repeats=args.repeats, device=args.device,
                      steps_per_epoch=args.steps_per_epoch)
    return 0


def cmd_probe(args) -> int:
    writable_folder(args.out, "--out")
    result = probe_run(args.arch, act=args.act, init=args.init, dataset=args.dataset,
                       seed=args.seed, batch_size=args.batch_size, device=args.device,
                       act_params=parse_params(args.act_param, "--act-param"),
                       init_params=parse_options(args.init_param, "--init-param"))
    print_probe(result)
    for path in write_probe(result, args.out):
        print(f"wrote {path}")
    return 0
