"""`zoo leaderboard`: every board rendered from the results database into one folder.

Each kind of board builds its own pages and plots from the runs it shows (`classification`,
`init_grid`, `quant`, `generation`); this module decides which runs go to which kind, leaves
out the runs of retired protocols, writes every file atomically and lists the boards in
`README.md`. The output depends only on the database: same rows -> byte-identical files,
whatever the insertion order; no timestamps.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

from zoo.boards import records
from zoo.boards.classification import classification_files, leaderboard_filename
from zoo.boards.files import BENCH_FILES, board_stem, index_markdown
from zoo.boards.generation import board_name, copy_grids, generation_boards, is_generator
from zoo.boards.init_grid import INIT_GRID_FILE, INIT_GRID_STEM, grid_boards, init_grid_files
from zoo.boards.markdown import GENERATED_NOTE, protocol_label
from zoo.boards.quant import mode, quant_files, quant_stem
from zoo.boards.site import render_site
from zoo.errors import ZooError
from zoo.runs.files import atomic_write_text, inside, within
from zoo.runs.protocols import PROTOCOLS
from zoo.runs.results import ResultsStore, RunRecord, is_ptq
from zoo.runs.stamps import stamp_stored

__all__ = ["render_leaderboards", "record_standard_grid", "STANDARD_ACTS"]

INDEX_FILE = "README.md"  # the list of every rendered board
# The database key of the standard grid's activations, as registered when the boards were last
# rendered by `zoo leaderboard` (or a sweep's --leaderboard): the "missing" lines read it.
STANDARD_ACTS = "standard_acts"


def render_leaderboards(store: ResultsStore, out_dir: Path,
                        html_dir: Path | None = None) -> list[Path]:
    """Write one leaderboard per (dataset, arch) with completed runs; the init grid; one
    quantization board per (dataset, arch) with quantized results; one generation board per data
    set with image generators (and their sample grids); each with its CSV, JSON and one plot per
    section; and the `README.md` index of them all. Return the written paths, sorted (the sample
    grids, copies of the runs' own pictures, aside).

    Each file is replaced atomically; other files in `out_dir` are left alone. With `html_dir`,
    the same boards also become a static website there (`zoo.boards.site`).
    """
    out_dir = Path(out_dir)
    stamp_stored(store)  # rows an older zoo stored: stamped once, then read like the rest
    stored, retired = split_retired(store.runs())
    predictions = {run_id: classes for run_id, (_, classes) in
                   store.predictions([run.run_id for run in stored]).items()}
    # PTQ results go to the quant boards, image generators to var-<dataset>.md
    every_run = [run for run in stored if not is_ptq(run) and not is_generator(run)]
    # file name -> text / plot
    pages, plots = classification_files(every_run, predictions, store.meta(STANDARD_ACTS))
    generators = {run.run_id for run in stored if is_generator(run)}
    quantizable = [run for run in stored if run.run_id not in generators
                   and run.run_id.split("+")[0] not in generators]
    grid_pages, grid_plots = init_grid_files(every_run, predictions)
    quant_pages, quant_plots = quant_files(quantizable, predictions)
    generation_pages, grids, generation_plots = generation_boards(stored)
    for more_pages, more_plots in ((grid_pages, grid_plots), (quant_pages, quant_plots),
                                   (generation_pages, generation_plots)):
        pages.update(more_pages)
        plots.update(more_plots)
    entries = _index_entries(pages, every_run, quantizable, stored)
    bench = [name for name in BENCH_FILES if (out_dir / name).is_file()]
    pages[INDEX_FILE] = index_markdown(entries, bench, GENERATED_NOTE) + retired_note(retired)
    # every file name, some built from the database's fields: checked before anything is written
    targets = {name: inside(out_dir, name) for name in [*pages, *plots, *grids]}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot create leaderboard folder {out_dir}: {exc}") from exc
    paths = []
    for name in sorted(pages):
        _write_atomically(targets[name], pages[name])
        paths.append(targets[name])
    for name in sorted(plots):
        draw, content = plots[name]
        _write_atomically(targets[name], content, draw)
        paths.append(targets[name])
    # a grid is copied only from a run folder beside the database: a database that names a
    # folder elsewhere must not pull files from it into the published boards
    runs_dir = store.path.parent
    elsewhere = sorted(name for name, source in grids.items() if not within(runs_dir, source))
    if elsewhere:
        warnings.warn(f"{len(elsewhere)} sample grid(s) not copied: the database puts their run "
                      f"folders outside {runs_dir}: {', '.join(elsewhere[:3])}", stacklevel=2)
    missing = copy_grids({name: source for name, source in grids.items()
                          if name not in elsewhere}, out_dir)
    if missing:  # the boards are right; only the pictures of runs trained elsewhere are absent
        warnings.warn(f"{len(missing)} sample grid(s) named by the boards are not at hand (their "
                      f"run folders are elsewhere): {', '.join(missing[:3])}", stacklevel=2)
    if html_dir is not None:
        paths += render_site(pages, out_dir, html_dir, entries)
    return sorted(paths)


def record_standard_grid(store: ResultsStore, acts: Sequence[str]) -> None:
    """Store the standard grid's activations (every registered one, by `zoo leaderboard`) with
    the runs, so that rendering the same database gives the same boards anywhere."""
    store.set_meta(STANDARD_ACTS, list(acts))


def split_retired(runs: Iterable[RunRecord]) -> tuple[list[RunRecord], dict[str, int]]:
    """(the runs the boards show, {retired protocol: number of its runs left off})."""
    shown, retired = [], {}
    for run in runs:
        protocol = PROTOCOLS.get(run.protocol_name) if run.protocol_name else None
        if protocol is not None and protocol.retired:
            retired[protocol.name] = retired.get(protocol.name, 0) + 1
        else:
            shown.append(run)
    return shown, retired


def retired_note(retired: Mapping[str, int]) -> str:
    if not retired:
        return ""
    counts = ", ".join(f"`{name}` ({count} runs)" for name, count in sorted(retired.items()))
    return ("\n## Retired protocols\n\nRuns of older budgets stay in the results database and "
            f"are left off every board: {counts}. Each is named and described in "
            "`zoo/runs/protocols.py`.\n")


def _write_atomically(path: Path, content: Any,
                      write: Callable[[Any, Path], None] | None = None) -> None:
    """`content` is text, or what `write(content, path)` draws (a plot)."""
    try:
        if write is None:
            atomic_write_text(path, content)
        else:
            write(content, path)
    except OSError as exc:
        raise ZooError(f"cannot write leaderboard {path}: {exc}") from exc


# -- the README.md index ---------------------------------------------------------------------


def _index_entries(pages: Mapping[str, str], every_run: list[RunRecord],
                   quantizable: list[RunRecord], stored: list[RunRecord]
                   ) -> list[tuple[str, str]]:
    """(file name, what it holds) for every markdown board in `pages`, for README.md: the runs
    are grouped as each kind of board groups them."""
    completed = [run for run in every_run if run.status == "completed"]
    entries = []
    for (dataset, arch), runs in records.group(completed, lambda r: (r.dataset, r.arch)).items():
        name, stem = leaderboard_filename(dataset, arch), board_stem(dataset, arch)
        if name in pages:
            what = ("bits per byte of language models" if records.is_language_model(runs)
                    else "test accuracy of classifiers")
            entries.append((name, f"{dataset} / {arch}, {what}; {_runs_text(runs)}; "
                                  f"{_files_text(stem)}"))
    grids = grid_boards(every_run)
    if INIT_GRID_FILE in pages:
        boards = ", ".join(f"{d} / {a}" for d, a in sorted({key[:2] for key in grids}))
        runs = [run for key in sorted(grids) for run in grids[key] if run.status == "completed"]
        entries.append((INIT_GRID_FILE, f"activation × initialization grids of {boards}; "
                                         f"{_runs_text(runs)}; {_files_text(INIT_GRID_STEM)}"))
    quantized = [run for run in quantizable if run.status == "completed" and mode(run) != "float"]
    for (dataset, arch), runs in records.group(quantized, lambda r: (r.dataset, r.arch)).items():
        stem = quant_stem(dataset, arch)
        if f"{stem}.md" in pages:
            entries.append((f"{stem}.md", f"{dataset} / {arch}, quantized models (PTQ and QAT) "
                                          f"against their float runs; "
                                          f"{_runs_text(runs, 'quantized results')}; "
                                          f"{_files_text(stem)}"))
    generated = [run for run in stored if is_generator(run) and run.status == "completed"]
    for dataset, runs in records.group(generated, lambda r: r.dataset).items():
        name = board_name(dataset)
        if name in pages:
            archs = ", ".join(sorted({run.arch for run in runs}))
            entries.append((name, f"{dataset}, image generators ({archs}); {_runs_text(runs)}; "
                                  f"{_files_text(name[:-3], 'plots and sample grids')}"))
    return sorted(entries)


def _files_text(stem: str, folder: str = "plots") -> str:
    return f"[CSV]({stem}.csv), [JSON]({stem}.json), {folder} in `{stem}/`"


def _runs_text(runs: list[RunRecord], what: str = "completed runs") -> str:
    """`protocols `full` (`<id>`); 42 completed runs`."""
    labels = sorted({protocol_label(run.protocol_id, run.protocol_name) for run in runs})
    word = "protocol" if len(labels) == 1 else "protocols"
    return f"{word} {', '.join(labels)}; {len(runs)} {what}"
