"""The `zoo` command: list, info, train, sweep, submit, eval, sample, quant-sweep, leaderboard,
bench, probe.

Every failure ends as one line on stderr (`zoo: error: ...`) and a non-zero exit code:

    0    success
    1    an internal or environment error (a bug, a full disk, a library's failure); the line
         names the command and the exception, and ZOO_DEBUG=1 shows the traceback
    2    a usage error: a bad flag or value, a missing or damaged file the user can fix
    3    the run diverged (non-finite loss; recorded as `diverged`)
    130  interrupted (Ctrl-C); re-running the same command resumes
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Sequence

from zoo.cli.parser import build_parser
from zoo.errors import ZooError, one_line

INTERNAL_ERROR = 1
DEBUG_VARIABLE = "ZOO_DEBUG"

# A CUDA build of torch on a machine without a GPU logs "No CUDA runtime is found" when
# torch.utils.benchmark (zoo bench) loads: noise that would break the one-line errors.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

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
    name = "zoo"
    try:
        args = build_parser().parse_args(argv)
        name = f"zoo {args.command}"
        _member("plugins", "load_plugins")(args.plugin_before_command + args.plugin)
        return command(args.command)(args) or 0
    except ZooError as exc:
        print(f"zoo: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except Exception as exc:  # the net under the specific messages: never a traceback
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"zoo: error: {internal_error_line(name, exc)}", file=sys.stderr)
        return INTERNAL_ERROR


def internal_error_line(command_name: str, exc: BaseException) -> str:
    """What failed and why, on one line, for an exception zoo did not anticipate."""
    if isinstance(exc, OSError) and exc.strerror:  # the environment: disk full, permissions
        where = f" ({exc.filename})" if exc.filename else ""
        return (f"{command_name} failed: {exc.strerror}{where}; files already written are "
                f"intact ({DEBUG_VARIABLE}=1 shows the traceback)")
    if "No space left on device" in str(exc):  # libraries that wrap the OSError (safetensors)
        return (f"{command_name} failed: No space left on device ({type(exc).__name__}); files "
                f"already written are intact ({DEBUG_VARIABLE}=1 shows the traceback)")
    return (f"{command_name} failed with an internal error: {type(exc).__name__}: "
            f"{one_line(exc)[:300]} ({DEBUG_VARIABLE}=1 shows the traceback)")


__all__ = ["main", "build_parser", "COMMANDS", "command"]
