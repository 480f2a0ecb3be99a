"""The `zoo` command: list, info, train, sweep, submit, eval, sample, quant-sweep, leaderboard,
bench, probe.

Every user mistake ends as one line on stderr (`zoo: error: ...`) and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from zoo.errors import ZooError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the default prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        raise ZooError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _plugin_option(dest: str = "plugin") -> argparse.ArgumentParser:
    # The main parser and the subcommands keep separate lists: argparse would let a
    # subcommand's empty default overwrite `zoo --plugin f.py list`.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--plugin", dest=dest, action="append", default=[], metavar="FILE.py",
                        help="load extra registry entries from a Python file (several at once or repeated)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    plugin = _plugin_option()
    parser = _Parser(prog="zoo", parents=[_plugin_option("plugin_before_command")],
                     description="A model zoo and benchmark harness for activations, "
                                 "initializations and quantization formats.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("list", parents=[plugin], help="list registered archs, acts, inits, "
                       "quants and datasets")
    p.add_argument("kind", nargs="?", help="one kind: archs, acts, inits, quants or datasets")

    p = sub.add_parser("info", parents=[plugin], help="show one entry's paper, formula and defaults")
    p.add_argument("name", help="an entry name, or KIND:NAME when several kinds share it")

    p = sub.add_parser("train", parents=[plugin], help="train ARCH with the chosen variants",
                       description="Train one run. Re-running the same command resumes a killed "
                                   "run, or prints the stored result of a finished one.")
    p.add_argument("arch", help="architecture (`zoo list archs`)")
    p.add_argument("--act", help="activation (default: the architecture's own)")
    p.add_argument("--act-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="set an activation parameter, e.g. --act-param beta=1.5 (several at once or repeated)")
    p.add_argument("--init-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="set an init option, e.g. --init-param rank=4 (several at once or repeated)")
    p.add_argument("--init", default="default", help="initialization (default: the architecture's)")
    p.add_argument("--quant", default="none",
                   help="quantization format, trained with --qat (default: none)")
    p.add_argument("--quant-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="set a quantization option, e.g. --quant-param skip=first,last")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware training: fake-quantize in the forward pass, "
                        "straight-through gradients")
    p.add_argument("--dataset", help="data set or text corpus (default: the architecture's "
                                     "recipe, else digits)")
    p.add_argument("--arch-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="set an architecture option, e.g. --arch-param size=tiny (gpt2)")
    p.add_argument("--tokenizer", help="language models: byte, bpe or gpt2; image generators: "
                                       "msvq or vq[:key=value,...] (default: recipe)")
    p.add_argument("--block-size", type=int, help="language models: tokens per sequence")
    p.add_argument("--steps-per-epoch", type=int,
                   help="language models: steps between checkpoints and validation passes")
    p.add_argument("--epochs", type=int, help="epochs (default: the architecture's recipe)")
    p.add_argument("--batch-size", type=int, help="batch size (default: recipe)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: recipe)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: recipe)")
    p.add_argument("--warmup-epochs", type=float, help="linear warmup length (default: recipe)")
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (default 0)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"],
                   help="adamw, or sgd with Nesterov momentum 0.9 (default: recipe)")
    p.add_argument("--schedule", choices=["cosine", "linear"],
                   help="decay after the warmup: cosine, or linear to 0 (default: recipe)")
    p.add_argument("--aug-shift", type=int, metavar="N",
                   help="image classifiers: random translations by up to N pixels (default: "
                        "recipe; 0 = off)")
    p.add_argument("--aug-flip", action=argparse.BooleanOptionalAction,
                   help="image classifiers: random horizontal flips, on data sets where they "
                        "keep the label (default: recipe)")
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction,
                   help="image classifiers: evaluate on each image and its mirror (default: "
                        "recipe)")
    p.add_argument("--lr-scale", type=float, metavar="X",
                   help="train at X times the protocol's lr and stay in its comparison (what "
                        "`zoo sweep --tune-lr` picks; default 1)")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="evaluate an exponential moving average of the weights with this decay "
                        "(default: recipe; off)")
    p.add_argument("--train-subset", type=int, metavar="N",
                   help="train on the first N training examples only (quick checks)")
    p.add_argument("--eval-subset", type=int, metavar="N",
                   help="validate and test on the first N examples of those splits only "
                        "(a quick budget; the full splits by default)")
    p.add_argument("--seed", type=int, default=0, help="seed of init and data order (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", default="runs", type=Path,
                   help="where runs and results.sqlite live (default ./runs)")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("sweep", parents=[plugin],
                       help="train every combination of a grid under a named protocol",
                       description="Train every combination of a grid (a TOML file and/or "
                                   "flags) under a named protocol. Stored runs are skipped and "
                                   "interrupted ones resume: re-run the same command after a "
                                   "crash to finish the sweep.")
    p.add_argument("grid", nargs="?", type=Path, metavar="GRID.toml",
                   help="a grid file (keys protocol, archs, acts, inits, quants, datasets, seeds)")
    p.add_argument("--protocol", help="quick (laptop CPU), full (GPU, the recipes) or smoke "
                                      "(default: the file's, else quick)")
    for key, what in (("archs", "architectures"), ("acts", "activations"),
                      ("inits", "initializations"), ("quants", "quantization formats (QAT)"),
                      ("datasets", "data sets")):
        companion = (", and 'companion': each activation's paper init (siren for sine...)"
                     if key == "inits" else "")
        p.add_argument(f"--{key}", metavar="A,B,...",
                       help=f"comma-separated {what}, or 'all'{companion} (default: the "
                            "protocol's grid" + (": default,companion)" if key == "inits" else ")"))
    p.add_argument("--seeds", metavar="N|A,B|A-B",
                   help="a count (3 = seeds 0,1,2), a list or a range (default: the protocol's)")
    p.add_argument("--tune-lr", metavar="X,Y,...",
                   help="pick a learning rate per variant: its first seed trains at each "
                        "multiple of the protocol's lr (e.g. 0.5,1,2), the best validation "
                        "score picks, and the other seeds train at the pick")
    _sweep_options(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")

    p = sub.add_parser("submit", parents=[plugin],
                       help="check new activations, then train them on a protocol's standard grid",
                       description="Submit activations: load FILE.py (a plugin file registering "
                                   "them) or an installed plugin's activation (--entry), check "
                                   "each one (finite on extreme inputs, float64 gradcheck, dtype "
                                   "and shape kept, inplace=True accepted, learnable parameters, "
                                   "kernel parity on a GPU), then train the protocol's standard "
                                   "grid with them. A failed check refuses the submission before "
                                   "anything is stored; the runs are labelled with the file's "
                                   "sha256.")
    p.add_argument("file", nargs="?", type=Path, metavar="FILE.py",
                   help="a plugin file that registers the activations")
    p.add_argument("--entry", metavar="NAME",
                   help="instead of FILE.py: an activation registered by an installed plugin")
    p.add_argument("--protocol", default="quick",
                   help="quick (laptop CPU, default), full (GPU, the recipes) or smoke")
    _sweep_options(p)
    p.add_argument("--dry-run", action="store_true", help="check and print the plan, train nothing")

    p = sub.add_parser("eval", parents=[plugin], help="evaluate a stored run on its test split",
                       description="Evaluate a stored run on its test split, or a language "
                                   "model on lm-evaluation-harness tasks (--lm-eval).")
    p.add_argument("run", help="a run directory, or a run id inside --out")
    p.add_argument("--out", default="runs", type=Path, help="where runs live (default ./runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--lm-eval", metavar="TASKS",
                   help="language models: run lm-eval tasks (comma-separated), zoo's offline "
                        "shakespeare_ppl and shakespeare_speaker or any of lm-eval's; writes "
                        "RUN/lm_eval.json")
    p.add_argument("--limit", type=float, metavar="N",
                   help="with --lm-eval: the first N documents of each task (below 1: a fraction)")
    p.add_argument("--num-fewshot", type=int, metavar="K",
                   help="with --lm-eval: few-shot examples per prompt (default: each task's)")
    p.add_argument("--batch-size", type=int, default=16, metavar="B",
                   help="with --lm-eval: sequences per forward pass (default 16)")
    p.add_argument("--quant", metavar="QUANT",
                   help="post-training quantization: quantize the float run with QUANT "
                        "(calibrating on its first training batch), evaluate it and store the "
                        "result in OUT/results.sqlite")
    p.add_argument("--quant-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="with --quant: a quantization option, e.g. skip=first,last")
    gen = p.add_argument_group("image generators (var, rar): generation metrics")
    _sampling_options(gen)
    gen.add_argument("--samples-per-class", type=int, default=None, metavar="N",
                     help="samples per class for FID, precision/recall, class consistency "
                          "(default 100)")
    gen.add_argument("--inception", action="store_true",
                     help="also the standard Inception FID (torchmetrics; downloads Inception "
                          "weights: online only)")

    p = sub.add_parser("sample", parents=[plugin], help="sample images from a stored generator",
                       description="Sample a PNG grid from a stored var or rar run: column j "
                                   "holds class j.")
    p.add_argument("run", help="a run directory, or a run id inside --out")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    _sampling_options(p)
    p.add_argument("--file", type=Path,
                   help="the PNG to write (default RUN/samples-<settings>.png)")
    p.add_argument("--out", default="runs", type=Path, help="where runs live (default ./runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = sub.add_parser("quant-sweep", parents=[plugin],
                       help="post-training quantization of float runs with every format",
                       description="Quantize each float RUN with every format (or --quants), "
                                   "evaluate, and store the results; formats already stored "
                                   "for a run are skipped, so an interrupted sweep resumes.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or run ids in --out")
    p.add_argument("--quants", help="comma-separated formats (default: every quantization "
                                    "format, see `zoo list quants`)")
    p.add_argument("--out", default="runs", type=Path, help="where runs live (default ./runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--redo", action="store_true", help="evaluate formats already stored again")

    p = sub.add_parser("leaderboard", parents=[plugin],
                       help="render leaderboards/*.md from the results database")
    p.add_argument("--out", default="runs", type=Path,
                   help="the runs folder holding results.sqlite (default ./runs)")
    p.add_argument("--db", type=Path, help="a results database (default OUT/results.sqlite)")
    p.add_argument("--to", default="leaderboards", type=Path, help="output folder (default ./leaderboards)")

    p = sub.add_parser("bench", parents=[plugin], help="measure speed")
    bench = p.add_subparsers(dest="target", metavar="TARGET", parser_class=_Parser)
    bench.required = True
    b = bench.add_parser("harness", parents=[plugin],
                         help="zoo's training step against a bare PyTorch loop, same model and data")
    b.add_argument("arch", nargs="?", default="vit")
    b.add_argument("--act", help="activation (default: the architecture's own)")
    b.add_argument("--dataset", help="default: the architecture's recipe")
    b.add_argument("--batch-size", type=int, help="default: the architecture's recipe")
    b.add_argument("--steps-per-epoch", type=int,
                   help="language models: steps per timed epoch (default: recipe)")
    b.add_argument("--epochs", type=int, default=2, help="timed epochs per repetition")
    b.add_argument("--repeats", type=int, default=5, help="alternating repetitions of each loop")
    b.add_argument("--device", default="auto")
    k = bench.add_parser("kernels", parents=[plugin],
                         help="activation kernels against their reference, torch.compile and "
                              "native ops")
    k.add_argument("acts", nargs="*", help="activations (default: every formula activation)")
    k.add_argument("--numel", type=int, help="elements (default 2^26 on GPU, 2^20 on CPU)")
    k.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="default bfloat16 on GPU, float32 on CPU")
    k.add_argument("--device", default="auto")
    k.add_argument("--compile", action="store_true", help="also time torch.compile of the reference")
    k.add_argument("--write", action="store_true", help="write leaderboards/kernels.md")
    q = bench.add_parser("quant", parents=[plugin],
                         help="fake-quantization kernels against the PyTorch reference and the "
                              "copy bandwidth")
    q.add_argument("--numel", type=int, help="elements (default 2^26 on GPU, 2^20 on CPU)")
    q.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="default bfloat16 on GPU, float32 on CPU")
    q.add_argument("--device", default="auto")
    q.add_argument("--write", action="store_true", help="write leaderboards/quant-kernels.md")

    p = sub.add_parser("probe", parents=[plugin],
                       help="signal propagation at initialization, layer by layer",
                       description="Build ARCH as `zoo train` would, run forward and backward on "
                                   "one training batch, and report per layer the output mean and "
                                   "variance, gradient norms and the weights' effective rank; "
                                   "writes a figure and a JSON file.")
    p.add_argument("arch", help="architecture (`zoo list archs`)")
    p.add_argument("--act", help="activation (default: the architecture's own)")
    p.add_argument("--act-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="set an activation parameter (several at once or repeated)")
    p.add_argument("--init", default="default", help="initialization (default: the architecture's)")
    p.add_argument("--init-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="set an init option, e.g. --init-param gain=2 (several at once or repeated)")
    p.add_argument("--dataset", default="digits", help="data set (default: digits)")
    p.add_argument("--seed", type=int, default=0, help="seed of init and batch (default 0)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="examples in the probed batch (default 256, at most the training split)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", default="probes", type=Path,
                   help="folder for the figure and JSON (default ./probes)")
    return parser


def _sweep_options(p) -> None:
    """Where and how the runs of `zoo sweep` and `zoo submit` happen."""
    p.add_argument("--executor", default="local", choices=["local", "ray", "torchrun"],
                   help="local process pool (default), Ray, or torchrun (one run across GPUs)")
    p.add_argument("--workers", type=int, help="runs at once (default: GPUs, else cores / threads)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: cores / workers)")
    p.add_argument("--address", help="with --executor ray: the cluster (default: start Ray here)")
    p.add_argument("--nproc-per-node", type=int,
                   help="with --executor torchrun: processes per run (default: GPUs, else 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", default="runs", type=Path,
                   help="where runs and results.sqlite live (default ./runs)")
    p.add_argument("--leaderboard", type=Path, metavar="DIR",
                   help="render the leaderboards into DIR when the sweep ends")


def _sampling_options(p) -> None:
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance scale, 1 = conditional only (default 1.5)")
    p.add_argument("--top-k", type=int, default=None, help="top-k sampling, 0 = off (default 0)")
    p.add_argument("--top-p", type=float, default=None,
                   help="nucleus sampling, 1 = off (default 0.95)")
    p.add_argument("--temperature", type=float, default=None, help="(default 1)")
    p.add_argument("--sample-seed", type=int, default=None,
                   help="seed of the sampling generator (default 0)")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _load_plugins(args.plugin_before_command + args.plugin)
        return COMMANDS[args.command](args) or 0
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0


def _load_plugins(files: list[str]) -> None:
    from zoo.registry.plugins import load_entry_point_plugins, load_plugin_file

    load_entry_point_plugins()
    for file in files:
        load_plugin_file(file)


# --- commands ---------------------------------------------------------------------------------

def cmd_list(args) -> int:
    from zoo.harness.listing import print_listing

    print_listing(args.kind)
    return 0


def cmd_info(args) -> int:
    from zoo.harness.listing import print_info

    print_info(args.name)
    return 0


def cmd_train(args) -> int:
    from zoo.harness.config import TrainConfig
    from zoo.harness.train import Trainer

    config = TrainConfig.for_arch(
        args.arch, act=args.act, init=args.init, quant=args.quant, dataset=args.dataset,
        seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing, train_subset=args.train_subset,
        eval_subset=args.eval_subset, optimizer=args.optimizer, schedule=args.schedule,
        aug_shift=args.aug_shift, aug_flip=args.aug_flip, tta_flip=args.tta_flip, ema=args.ema,
        lr_scale=args.lr_scale,
        act_params=_parse_params(args.act_param, "--act-param"),
        init_params=_parse_options(args.init_param, "--init-param"),
        arch_params=_parse_options(args.arch_param, "--arch-param"),
        quant_params=_parse_options(args.quant_param, "--quant-param"), qat=args.qat,
        tokenizer=args.tokenizer, block_size=args.block_size,
        steps_per_epoch=args.steps_per_epoch)
    trainer = Trainer(config, out=args.out, device=args.device, compile=args.compile,
                      show_progress=not args.no_progress)
    outcome = trainer.run()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone reports
        return 0
    m = outcome.record.metrics
    if outcome.already_done:
        print(f"run {outcome.record.run_id} already completed; stored result:")
    elif outcome.resumed_from:
        print(f"resumed {outcome.record.run_id} after epoch {outcome.resumed_from}")
    if "fid" in m:  # an image generator
        from zoo.harness.gen_eval import describe_generation

        print(describe_generation(m))
        print(f"test token loss {m['test_loss']:.4f}, {m['params']:,} params, "
              f"{m['train_time_s']:.1f} s training; samples in "
              f"{outcome.run_dir.path / 'samples.png'}")
    elif "test_bpb" in m:  # a language model
        print(f"test bits per byte: {m['test_bpb']:.4f}  (perplexity {m['test_ppl']:.2f}, "
              f"val bpb {m['val_bpb']:.4f}, {m['params']:,} params, {m['train_time_s']:.1f} s "
              f"training, {m['samples_per_s']:,.0f} tokens/s)")
    else:
        print(f"test accuracy: {m['test_acc']:.2%}  (test loss {m['test_loss']:.4f}, "
              f"{m['params']:,} params, {m['train_time_s']:.1f} s training, "
              f"{m['samples_per_s']:.0f} samples/s)")
    print(f"run saved to {outcome.run_dir.path}")
    return 0


def cmd_sweep(args) -> int:
    from zoo.harness.lr_tuning import parse_scales
    from zoo.harness.sweep import Grid, run_sweep

    grid = Grid.from_toml(args.grid) if args.grid else Grid()
    grid = grid.merged(protocol=args.protocol, archs=args.archs, acts=args.acts,
                       inits=args.inits, quants=args.quants, datasets=args.datasets,
                       seeds=args.seeds)
    plugins = [str(Path(p).resolve()) for p in args.plugin_before_command + args.plugin]
    tune_lr = parse_scales(args.tune_lr) if args.tune_lr is not None else None
    state = run_sweep(grid, out=args.out, plugins=plugins, dry_run=args.dry_run,
                      tune_lr=tune_lr, **_sweep_executor(args))
    return _finish_sweep(state, args)


def _sweep_executor(args) -> dict[str, Any]:
    return {"executor": args.executor, "workers": args.workers, "threads": args.threads,
            "device": args.device, "address": args.address,
            "nproc_per_node": args.nproc_per_node}


def _finish_sweep(state, args) -> int:
    """After `zoo sweep` or `zoo submit`: the boards if asked for; failed runs fail the command."""
    if state is None:  # a dry run
        return 0
    if args.leaderboard is not None:
        from zoo.harness.leaderboard import render_leaderboards
        from zoo.harness.results import ResultsStore
        from zoo.harness.train import results_path

        with ResultsStore(results_path(args.out)) as store:
            written = render_leaderboards(store, args.leaderboard)
        print(f"rendered {len(written)} leaderboard file(s) into {args.leaderboard}")
    else:
        print(f"render the leaderboards with `zoo leaderboard --out {args.out} --to DIR`")
    failed = state.count("failed", "busy")
    if failed:
        raise ZooError(f"{failed} run(s) failed (listed above); run the same command again to "
                       "retry them, the others are stored")
    return 0


def cmd_submit(args) -> int:
    from zoo.harness import submission
    from zoo.harness.protocols import get_protocol
    from zoo.harness.sweep import Grid, run_sweep
    from zoo.harness.train import results_path

    if (args.file is None) == (args.entry is None):
        raise ZooError("zoo submit takes FILE.py or --entry NAME (one of them)")
    get_protocol(args.protocol)  # a typo fails before the checks, not after them
    submitted = (submission.load_submission_file(args.file) if args.file else
                 submission.load_submission_entry(args.entry))
    submission.check_stored_runs(submitted, args.out)
    submission.validate(submitted)
    plugins = [str(Path(p).resolve()) for p in args.plugin_before_command + args.plugin]
    state = run_sweep(Grid(protocol=args.protocol, acts=submitted.names), out=args.out,
                      plugins=list(dict.fromkeys([*plugins, *submitted.plugin_files])),
                      labels=submitted.labels, dry_run=args.dry_run, **_sweep_executor(args))
    if state is not None:
        print(f"runs of {', '.join(submitted.names)} are in {results_path(args.out)}, labelled "
              f"submitted.sha256 = {submitted.sha256[:12]}…")
    return _finish_sweep(state, args)


def _parse_params(items: list[str], flag: str) -> dict[str, float] | None:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ZooError(f"{flag} takes NAME=NUMBER, got '{item}'")
    return params or None


def cmd_eval(args) -> int:
    if args.lm_eval is not None:
        return _cmd_lm_eval(args)
    if args.limit is not None or args.num_fewshot is not None:
        raise ZooError("--limit and --num-fewshot go with --lm-eval TASKS")
    if args.quant is not None:
        from zoo.harness.ptq import PTQSession, describe

        session = PTQSession(args.run, out=args.out, device=args.device)
        record = session.evaluate(args.quant, _parse_options(args.quant_param, "--quant-param"))
        print(f"{record.run_id}: {describe(record)}")
        print(f"stored in {args.out / 'results.sqlite'}")
        return 0
    if args.quant_param:
        raise ZooError("--quant-param goes with --quant QUANT")
    from zoo.harness.evaluate import evaluate_run

    from zoo.harness.gen_eval import is_generator_run

    sampling = _sampling_protocol(args)
    if is_generator_run(args.run, args.out):
        return _cmd_eval_generator(args, sampling)
    if sampling is not None or args.samples_per_class is not None or args.inception:
        raise ZooError("--cfg, --top-k, --top-p, --temperature, --sample-seed, "
                       "--samples-per-class and --inception are for image generators (var, rar)")
    report = evaluate_run(args.run, out=args.out, device=args.device)
    if "test_bpb" in report:  # a language model
        print(f"{report['run_id']}: test bits per byte {report['test_bpb']:.4f}, perplexity "
              f"{report['test_ppl']:.2f} (checkpoint of epoch {report['epoch']})")
        stored, shown = report.get("stored_test_bpb"), "{:.4f} bits per byte"
    else:
        print(f"{report['run_id']}: test accuracy {report['test_acc']:.2%}, "
              f"test loss {report['test_loss']:.4f} (checkpoint of epoch {report['epoch']})")
        stored, shown = report.get("stored_test_acc"), "{:.2%}"
    if stored is not None:
        print(f"stored at the end of training: {shown.format(stored)}")
    return 0


def _sampling_protocol(args, **defaults):
    """The sampling flags given, over the default GenProtocol (None when none was given)."""
    from dataclasses import replace

    from zoo.harness.gen_eval import GenProtocol

    given = {name: getattr(args, flag) for name, flag in (
        ("cfg", "cfg"), ("top_k", "top_k"), ("top_p", "top_p"), ("temperature", "temperature"),
        ("seed", "sample_seed"))}
    given = {k: v for k, v in {**defaults, **given}.items() if v is not None}
    if not given:
        return None
    protocol = replace(GenProtocol(), **given)
    protocol.validate()
    return protocol


def _cmd_eval_generator(args, sampling) -> int:
    from dataclasses import replace

    from zoo.harness.gen_eval import GenProtocol, describe_generation, evaluate_generator

    protocol = sampling or GenProtocol()
    if args.samples_per_class is not None:
        protocol = replace(protocol, samples_per_class=args.samples_per_class)
    protocol.validate()
    report, path = evaluate_generator(args.run, protocol, out=args.out, device=args.device,
                                      inception=args.inception)
    print(f"{report['run_id']}: {describe_generation(report)}")
    print(f"test token loss {report['test_loss']:.4f} (stored at the end of training: "
          f"{report['stored_test_loss']:.4f}); checkpoint of epoch {report['epoch']}")
    if "inception_fid" in report:
        print(f"Inception FID (torchmetrics, {report['gen_protocol']['samples']} samples): "
              f"{report['inception_fid']:.2f}")
    print(f"wrote {path}")
    return 0


def cmd_sample(args) -> int:
    from zoo.harness.gen_eval import GenProtocol, sample_run

    if args.n < 1:
        raise ZooError(f"--n must be positive, got {args.n}")
    protocol = _sampling_protocol(args) or GenProtocol()
    path = sample_run(args.run, protocol, n=args.n, file=args.file, out=args.out,
                      device=args.device)
    print(f"wrote {path}")
    return 0


def _cmd_lm_eval(args) -> int:
    from zoo.harness.lm_eval_adapter import (evaluate_run_lm, parse_task_list,
                                             print_lm_eval_report)

    limit = args.limit
    if limit is not None and limit >= 1:
        if limit != int(limit):
            raise ZooError(f"--limit takes a whole number of documents (or a fraction below 1), "
                           f"got {limit:g}")
        limit = int(limit)
    report, path = evaluate_run_lm(args.run, parse_task_list(args.lm_eval), out=args.out,
                                   device=args.device, batch_size=args.batch_size, limit=limit,
                                   num_fewshot=args.num_fewshot)
    print_lm_eval_report(report)
    print(f"wrote {path}")
    return 0


def cmd_quant_sweep(args) -> int:
    from zoo.harness.ptq import describe, quant_sweep
    from zoo.registry.quants import SWEEP

    quants = [q.strip() for q in args.quants.split(",") if q.strip()] if args.quants else SWEEP

    def report(record, cached):
        print(f"{record.run_id.split('+')[0]} {describe(record)}"
              + ("  (stored earlier)" if cached else ""))

    records = quant_sweep(args.runs, quants, out=args.out, device=args.device, redo=args.redo,
                          report=report)
    print(f"{len(records)} results in {args.out / 'results.sqlite'}; render them with "
          f"`zoo leaderboard --out {args.out}`")
    return 0


def cmd_leaderboard(args) -> int:
    from zoo.harness.leaderboard import render_leaderboards
    from zoo.harness.results import ResultsStore
    from zoo.harness.train import results_path

    db = args.db or results_path(args.out)
    if not db.is_file():
        raise ZooError(f"no results database at {db}: train something first (`zoo train vit`)")
    with ResultsStore(db) as store:
        written = render_leaderboards(store, args.to)
    if not written:
        print(f"no completed runs in {db}; nothing to render")
    pages = [path for path in written if path.suffix == ".md"]
    for path in pages:
        print(f"wrote {path}")
    if len(written) > len(pages):  # one CSV, JSON and plot per board: counted, not listed
        kinds = ", ".join(f"{sum(p.suffix == suffix for p in written)} {suffix[1:].upper()}"
                          for suffix in (".csv", ".json", ".png")
                          if any(p.suffix == suffix for p in written))
        print(f"wrote {kinds} file(s) beside them in {args.to}")
    return 0


def cmd_bench(args) -> int:
    from zoo.harness.bench import bench_harness

    if args.target == "kernels":
        import torch

        from zoo.harness.kernel_bench import bench_kernels

        if args.numel is not None and args.numel <= 0:
            raise ZooError(f"--numel must be positive, got {args.numel}")
        bench_kernels(args.acts or None, numel=args.numel, device=args.device,
                      dtype=getattr(torch, args.dtype) if args.dtype else None,
                      compile=args.compile, out=Path("leaderboards/kernels.md") if args.write else None)
    if args.target == "quant":
        import torch

        from zoo.harness.atomic import atomic_write_text
        from zoo.harness.quant_bench import (bench_quant, print_quant_bench,
                                             quant_bench_environment, quant_bench_markdown)

        if args.numel is not None and args.numel <= 0:
            raise ZooError(f"--numel must be positive, got {args.numel}")
        rows = bench_quant(numel=args.numel, device=args.device,
                           dtype=getattr(torch, args.dtype) if args.dtype else None)
        env = quant_bench_environment(args.device)
        print_quant_bench(rows, env)
        if args.write:
            path = Path("leaderboards/quant-kernels.md")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, quant_bench_markdown(rows, env))
            print(f"wrote {path}")
    if args.target == "harness":
        bench_harness(args.arch, act=args.act, dataset=args.dataset, batch_size=args.batch_size,
                      epochs=args.epochs, repeats=args.repeats, device=args.device,
                      steps_per_epoch=args.steps_per_epoch)
    return 0


def cmd_probe(args) -> int:
    from zoo.harness.probe import print_probe, probe_run, write_probe

    result = probe_run(args.arch, act=args.act, init=args.init, dataset=args.dataset,
                       seed=args.seed, batch_size=args.batch_size, device=args.device,
                       act_params=_parse_params(args.act_param, "--act-param"),
                       init_params=_parse_options(args.init_param, "--init-param"))
    print_probe(result)
    for path in write_probe(result, args.out):
        print(f"wrote {path}")
    return 0


def _parse_options(items: list[str], flag: str) -> dict[str, Any] | None:
    # Unlike activation parameters, these may be words (kaiming's mode=fan_out, gpt2's
    # size=tiny) or whole numbers (gpt2's n_layer=3).
    options: dict[str, Any] = {}
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise ZooError(f"{flag} takes NAME=VALUE, got '{item}'")
        for parse in (int, float, str):
            try:
                options[name] = parse(value)
                break
            except ValueError:
                continue
    return options or None


COMMANDS = {"list": cmd_list, "info": cmd_info, "train": cmd_train, "eval": cmd_eval,
            "leaderboard": cmd_leaderboard, "bench": cmd_bench, "probe": cmd_probe,
            "quant-sweep": cmd_quant_sweep, "sample": cmd_sample, "sweep": cmd_sweep,
            "submit": cmd_submit}


if __name__ == "__main__":
    sys.exit(main())
