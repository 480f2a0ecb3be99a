"""The `zoo` command line: every command and option, parsed into an `argparse.Namespace`.
Nothing here imports torch: `zoo --help` and a usage error are instant."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.values import (
    count,
    decay,
    fraction,
    natural,
    non_negative,
    positive,
    probability,
    seed,
)
from zoo.errors import ZooError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the default prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        raise ZooError(f"{self.prog}: {message} (see `{self.prog} --help`)")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        # argparse drops a "--" value (`--epochs=--`) and stores [] without checking it; the
        # options that collect lists (--act-param...) are those whose default is a list
        for action in self._actions:
            if action.option_strings and action.nargs is None \
                    and not isinstance(action.default, list) \
                    and isinstance(getattr(namespace, action.dest, None), list):
                self.error(f"argument {action.option_strings[-1]}: expected one value")
        return namespace, extras


def plugin_option(dest: str = "plugin") -> argparse.ArgumentParser:
    # The main parser and the subcommands keep separate lists: argparse would let a
    # subcommand's empty default overwrite `zoo --plugin f.py list`.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--plugin", dest=dest, action="append", default=[], metavar="FILE.py",
                        help="load extra registry entries from a Python file (several at once or repeated)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    plugin = plugin_option()
    parser = OneLineParser(prog="zoo", parents=[plugin_option("plugin_before_command")],
                     description="A model zoo and benchmark harness for activations, "
                                 "initializations and quantization formats.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
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
    p.add_argument("--block-size", type=count, help="language models: tokens per sequence")
    p.add_argument("--steps-per-epoch", type=count,
                   help="language models: steps between checkpoints and validation passes")
    p.add_argument("--epochs", type=count, help="epochs (default: the architecture's recipe)")
    p.add_argument("--batch-size", type=count, help="batch size (default: recipe)")
    p.add_argument("--lr", type=positive, help="peak learning rate (default: recipe)")
    p.add_argument("--weight-decay", type=non_negative, help="weight decay (default: recipe)")
    p.add_argument("--warmup-epochs", type=non_negative, help="linear warmup length (default: recipe)")
    p.add_argument("--label-smoothing", type=fraction, help="cross-entropy label smoothing (default 0)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"],
                   help="adamw, or sgd with Nesterov momentum 0.9 (default: recipe)")
    p.add_argument("--schedule", choices=["cosine", "linear"],
                   help="decay after the warmup: cosine, or linear to 0 (default: recipe)")
    p.add_argument("--aug-shift", type=natural, metavar="N",
                   help="image classifiers: random translations by up to N pixels (default: "
                        "recipe; 0 = off)")
    p.add_argument("--aug-flip", action=argparse.BooleanOptionalAction,
                   help="image classifiers: random horizontal flips, on data sets where they "
                        "keep the label (default: recipe)")
    p.add_argument("--tta-flip", action=argparse.BooleanOptionalAction,
                   help="image classifiers: evaluate on each image and its mirror (default: "
                        "recipe)")
    p.add_argument("--lr-scale", type=positive, metavar="X",
                   help="train at X times the protocol's lr and stay in its comparison (what "
                        "`zoo sweep --tune-lr` picks; default 1)")
    p.add_argument("--ema", type=decay, metavar="DECAY",
                   help="evaluate an exponential moving average of the weights with this decay "
                        "(default: recipe; off)")
    p.add_argument("--train-subset", type=count, metavar="N",
                   help="train on the first N training examples only (quick checks)")
    p.add_argument("--eval-subset", type=count, metavar="N",
                   help="validate and test on the first N examples of those splits only "
                        "(a quick budget; the full splits by default)")
    p.add_argument("--seed", type=seed, default=0, help="seed of init and data order (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", default="runs", type=Path,
                   help="where runs and results.sqlite live (default ./runs)")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    log_option(p)
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
    sweep_options(p)
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
    sweep_options(p)
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
    p.add_argument("--limit", type=positive, metavar="N",
                   help="with --lm-eval: the first N documents of each task (below 1: a fraction)")
    p.add_argument("--num-fewshot", type=natural, metavar="K",
                   help="with --lm-eval: few-shot examples per prompt (default: each task's)")
    p.add_argument("--batch-size", type=count, default=16, metavar="B",
                   help="with --lm-eval: sequences per forward pass (default 16)")
    p.add_argument("--quant", metavar="QUANT",
                   help="post-training quantization: quantize the float run with QUANT "
                        "(calibrating on its first training batch), evaluate it and store the "
                        "result in OUT/results.sqlite")
    p.add_argument("--quant-param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="with --quant: a quantization option, e.g. skip=first,last")
    gen = p.add_argument_group("image generators (var, rar): generation metrics")
    sampling_options(gen)
    gen.add_argument("--samples-per-class", type=count, default=None, metavar="N",
                     help="samples per class for FID, precision/recall, class consistency "
                          "(default 100)")
    gen.add_argument("--inception", action="store_true",
                     help="also the standard Inception FID (torchmetrics; downloads Inception "
                          "weights: online only)")

    p = sub.add_parser("sample", parents=[plugin], help="sample images from a stored generator",
                       description="Sample a PNG grid from a stored var or rar run: column j "
                                   "holds class j.")
    p.add_argument("run", help="a run directory, or a run id inside --out")
    p.add_argument("--n", type=count, default=64, help="number of images (default 64)")
    sampling_options(p)
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
    p.add_argument("--html", type=Path, metavar="DIR",
                   help="also render the boards as a static website into DIR (sortable, "
                        "filterable tables; opens from file://)")

    p = sub.add_parser("bench", parents=[plugin], help="measure speed")
    bench = p.add_subparsers(dest="target", metavar="TARGET", parser_class=OneLineParser)
    bench.required = True
    b = bench.add_parser("harness", parents=[plugin],
                         help="zoo's training step against a bare PyTorch loop, same model and data")
    b.add_argument("arch", nargs="?", default="vit")
    b.add_argument("--act", help="activation (default: the architecture's own)")
    b.add_argument("--dataset", help="default: the architecture's recipe")
    b.add_argument("--batch-size", type=count, help="default: the architecture's recipe")
    b.add_argument("--steps-per-epoch", type=count,
                   help="language models: steps per timed epoch (default: recipe)")
    b.add_argument("--epochs", type=count, default=2, help="timed epochs per repetition")
    b.add_argument("--repeats", type=count, default=5, help="alternating repetitions of each loop")
    b.add_argument("--device", default="auto")
    k = bench.add_parser("kernels", parents=[plugin],
                         help="activation kernels against their reference, torch.compile and "
                              "native ops")
    k.add_argument("acts", nargs="*", help="activations (default: every formula activation)")
    k.add_argument("--numel", type=count, help="elements (default 2^26 on GPU, 2^20 on CPU)")
    k.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="default bfloat16 on GPU, float32 on CPU")
    k.add_argument("--device", default="auto")
    k.add_argument("--compile", action="store_true", help="also time torch.compile of the reference")
    k.add_argument("--write", action="store_true", help="write leaderboards/kernels.md")
    q = bench.add_parser("quant", parents=[plugin],
                         help="fake-quantization kernels against the PyTorch reference and the "
                              "copy bandwidth")
    q.add_argument("--numel", type=count, help="elements (default 2^26 on GPU, 2^20 on CPU)")
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
    p.add_argument("--dataset", default=None, help="data set (default: digits)")
    p.add_argument("--seed", type=seed, default=0, help="seed of init and batch (default 0)")
    p.add_argument("--batch-size", type=count, default=256,
                   help="examples in the probed batch (default 256, at most the training split)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", default="probes", type=Path,
                   help="folder for the figure and JSON (default ./probes)")
    return parser


def sweep_options(p) -> None:
    """Where and how the runs of `zoo sweep` and `zoo submit` happen."""
    p.add_argument("--executor", default="local", choices=["local", "ray", "torchrun"],
                   help="local process pool (default), Ray, or torchrun (one run across GPUs)")
    p.add_argument("--workers", type=count, help="runs at once (default: GPUs, else cores / threads)")
    p.add_argument("--threads", type=count, help="torch threads per run (default: cores / workers)")
    p.add_argument("--address", help="with --executor ray: the cluster (default: start Ray here)")
    p.add_argument("--nproc-per-node", type=count,
                   help="with --executor torchrun: processes per run (default: GPUs, else 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", default="runs", type=Path,
                   help="where runs and results.sqlite live (default ./runs)")
    p.add_argument("--leaderboard", type=Path, metavar="DIR",
                   help="render the leaderboards into DIR when the sweep ends")
    log_option(p)


def log_option(p) -> None:
    p.add_argument("--log", choices=["tensorboard", "wandb"],
                   help="also write an experiment log into each run folder (RUN/logs/...): "
                        "per-step loss, lr and throughput, per-epoch metrics and diagnostics "
                        "(default: none; wandb honours WANDB_MODE=offline)")


def sampling_options(p) -> None:
    p.add_argument("--cfg", type=non_negative, default=None,
                   help="classifier-free guidance scale, 1 = conditional only (default 1.5)")
    p.add_argument("--top-k", type=natural, default=None, help="top-k sampling, 0 = off (default 0)")
    p.add_argument("--top-p", type=probability, default=None,
                   help="nucleus sampling, 1 = off (default 0.95)")
    p.add_argument("--temperature", type=positive, default=None, help="(default 1)")
    p.add_argument("--sample-seed", type=seed, default=None,
                   help="seed of the sampling generator (default 0)")
