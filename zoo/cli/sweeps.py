"""`zoo sweep` and `zoo submit`: a grid of runs, and a new variant's verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.boards.render import record_standard_grid, render_leaderboards
from zoo.errors import ZooError
from zoo.registry import ACTS
from zoo.runs.files import writable_folder
from zoo.runs.lr_tuning import parse_scales
from zoo.runs.protocols import get_protocol
from zoo.runs.results import ResultsStore, results_path
from zoo.sweep import submission
from zoo.sweep.grid import Grid, run_sweep


def cmd_sweep(args) -> int:
    grid = Grid.from_toml(args.grid) if args.grid else Grid()
    grid = grid.merged(protocol=args.protocol, archs=args.archs, acts=args.acts,
                       inits=args.inits, quants=args.quants, datasets=args.datasets,
                       seeds=args.seeds)
    plugins = [str(Path(p).resolve()) for p in args.plugin_before_command + args.plugin]
    tune_lr = parse_scales(args.tune_lr) if args.tune_lr is not None else None
    check_output_folders(args)
    state = run_sweep(grid, out=args.out, plugins=plugins, dry_run=args.dry_run,
                      tune_lr=tune_lr, **_sweep_executor(args))
    return _finish_sweep(state, args)


def _sweep_executor(args) -> dict[str, Any]:
    return {"executor": args.executor, "workers": args.workers, "threads": args.threads,
            "device": args.device, "address": args.address,
            "nproc_per_node": args.nproc_per_node, "log": args.log}


def check_output_folders(args) -> None:
    """Where a sweep writes must be writable before its first run starts (a dry run writes
    nothing)."""
    if args.dry_run:
        return
    writable_folder(args.out, "--out")
    if args.leaderboard is not None:
        writable_folder(args.leaderboard, "--leaderboard")


def _finish_sweep(state, args) -> int:
    """After `zoo sweep` or `zoo submit`: the boards if asked for; failed runs fail the command."""
    if state is None:  # a dry run
        return 0
    if args.leaderboard is not None:
        with ResultsStore(results_path(args.out)) as store:
            record_standard_grid(store, ACTS.names())
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
    if (args.file is None) == (args.entry is None):
        raise ZooError("zoo submit takes FILE.py or --entry NAME (one of them)")
    get_protocol(args.protocol)  # a typo fails before the checks, not after them
    submitted = (submission.load_submission_file(args.file) if args.file else
                 submission.load_submission_entry(args.entry))
    submission.check_stored_runs(submitted, args.out)
    submission.validate(submitted)
    check_output_folders(args)  # after the checks: a refused submission creates nothing
    plugins = [str(Path(p).resolve()) for p in args.plugin_before_command + args.plugin]
    state = run_sweep(Grid(protocol=args.protocol, acts=submitted.names), out=args.out,
                      plugins=list(dict.fromkeys([*plugins, *submitted.plugin_files])),
                      labels=submitted.labels, dry_run=args.dry_run, **_sweep_executor(args))
    if state is not None:
        print(f"runs of {', '.join(submitted.names)} are in {results_path(args.out)}, labelled "
              f"submitted.sha256 = {submitted.sha256[:12]}…")
    return _finish_sweep(state, args)
