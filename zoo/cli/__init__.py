"""The `zoo` command: list, info, train, sweep, submit, eval, sample, quant-sweep, leaderboard,
bench, probe.

Every user mistake ends as one line on stderr (`zoo: error: ...`) and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

from zoo.cli.parser import build_parser
from zoo.errors import ZooError

# command -> (module of zoo.cli, function). A command's module, and what it needs (torch, the
# registries, the trainer), is imported only when the command runs: `zoo --help` and a usage
# error stay instant, and importing zoo.cli needs the standard library alone.
COMMANDS = {
    "list": ("catalogue", "cmd_list"), "info": ("catalogue", "cmd_info"),
    "train": ("train", "cmd_train"),
    "sweep": ("sweeps", "cmd_sweep"), "submit": ("sweeps", "cmd_submit"),
    "eval": ("evaluation", "cmd_eval"), "eval --lm-eval": ("lm_evaluation", "cmd_lm_eval"),
    "sample": ("evaluation", "cmd_sample"),
    "quant-sweep": ("evaluation", "cmd_quant_sweep"),
    "leaderboard": ("boards", "cmd_leaderboard"),
    "bench": ("tools", "cmd_bench"), "probe": ("tools", "cmd_probe"),
}


def command(name: str):
    """The function that runs the command `name`."""
    module, function = COMMANDS[name]
    return _member(module, function)


def _member(module: str, name: str):
    return getattr(importlib.import_module(f"zoo.cli.{module}"), name)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _member("plugins", "load_plugins")(args.plugin_before_command + args.plugin)
        return command(args.command)(args) or 0
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0


__all__ = ["main", "build_parser", "COMMANDS", "command"]
