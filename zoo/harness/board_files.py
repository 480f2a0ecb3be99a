"""The machine-readable side of the leaderboards: `<board>.csv` and `<board>.json` (one record
per table row, or per grid cell for `inits`, numbers at full precision) for every kind of board,
and the `README.md` index of every rendered file.

Deterministic like the markdown: same sections -> same bytes (fixed column order, Python's
shortest round-trip float repr, no NaN: undefined statistics are empty in CSV, null in JSON).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zoo.harness import board_stats
from zoo.harness.board_rows import Section
from zoo.harness.leaderboard import (INIT_GRID_FILE, INIT_GRID_STEM, _group, _is_language_model,
                                     board_stem, leaderboard_filename, protocol_label)
from zoo.harness.results import RunRecord

if TYPE_CHECKING:
    from zoo.harness.gen_rows import GenSection
    from zoo.harness.grid_rows import GridSection
    from zoo.harness.quant_rows import QuantSection

SECTION_KEYS = ("protocol_id", "protocol", "dataset", "arch")  # which table a record is from
COLUMNS = (*SECTION_KEYS, "act", "init", "quant", "submitted", "baseline", "companion_init",
           "lr_tuned", "metric", "n", "mean", "std", "ci95_low", "ci95_high", "diff_vs_baseline",
           "p_value", "p_holm", "churn", "params", "throughput", "train_time_s", "seeds")
LM_COLUMNS = ("val_bpb", "test_ppl")  # language models are ranked by validation bpb
QUANT_COLUMNS = (*SECTION_KEYS, "act", "init", "quant", "mode", "metric", "n", "mean", "std",
                 "diff_vs_float", "diff_std", "diff_ci95_low", "diff_ci95_high", "pairs", "churn",
                 "bits_per_weight", "model_size_kib", "seeds")
GEN_COLUMNS = (*SECTION_KEYS, "act", "init", "quant", "n", "fid_mean", "fid_std", "fid_ci95_low",
               "fid_ci95_high", "precision_mean", "precision_std", "recall_mean", "recall_std",
               "class_consistency_mean", "class_consistency_std", "test_loss_mean",
               "test_loss_std", "params", "images_per_s", "raster_images_per_s", "speedup",
               "samples", "seeds")
GRID_COLUMNS = (*SECTION_KEYS, "act", "init", "metric", "n", "mean", "std", "ci95_low",
                "ci95_high", "best", "diverged", "churn", "weight_change", "feature_rank",
                "massive_activation", "seeds")
REGENERATE = "zoo leaderboard --out results --to leaderboards"
# files in the leaderboard folder that `zoo bench` writes, not `zoo leaderboard`
BENCH_FILES = {
    "kernels.md": "activation kernels against their PyTorch reference, written by "
                  "`zoo bench kernels --write` (not from the results database)",
    "quant-kernels.md": "quantization kernels, written by `zoo bench quant --write` (not from "
                        "the results database)",
}


def records(sections: Sequence[Section]) -> list[dict[str, Any]]:
    """One dict per table row, sections in board order, rows in table order."""
    from statistics import fmean

    language = any(section.language for section in sections)
    out = []
    for section in sections:
        # Holm over the section's tests: the baseline row has none (its p is None)
        adjusted = board_stats.holm([None if row.is_baseline else row.p_value
                                     for row in section.rows])
        for row, p_holm in zip(section.rows, adjusted):
            act, init, quant = row.variant
            record = {
                **_section_keys(section),
                "act": act, "init": init, "quant": quant,
                "submitted": row.submitted, "baseline": row.is_baseline,
                "companion_init": row.companion, "lr_tuned": row.lr_pick,
                "metric": section.metric, "n": row.n, "mean": row.mean, "std": row.std,
                **_interval("ci95", row.ci95),
                "diff_vs_baseline": row.diff, "p_value": row.p_value, "p_holm": p_holm,
                "churn": row.churn,
                "params": _params(row.params), "throughput": row.throughput,
                "train_time_s": row.train_time_s, "seeds": list(row.seeds),
            }
            if language:
                record["val_bpb"] = fmean(row.val_bpb) if row.val_bpb else None
                record["test_ppl"] = fmean(row.test_ppl) if row.test_ppl else None
            out.append(record)
    return out


def quant_records(sections: Sequence[QuantSection]) -> list[dict[str, Any]]:
    """One dict per row of the quant board's tables, in table order. The difference to float
    and its spread are in the metric's units; PTQ's are over the per-seed pairs (`pairs`), QAT's
    is against the float mean and has no spread."""
    out = []
    for section in sections:
        for row in section.rows:
            deltas = row.deltas if row.paired else None
            out.append({
                **_section_keys(section), "act": row.act, "init": row.init, "quant": row.quant,
                "mode": row.mode, "metric": section.metric, "n": row.n,
                "mean": board_stats.mean(row.values), "std": board_stats.std(row.values),
                "diff_vs_float": row.diff,
                "diff_std": board_stats.std(deltas) if deltas is not None else None,
                **_interval("diff_ci95", board_stats.ci95(deltas) if deltas is not None else None),
                "pairs": len(deltas) if deltas is not None else None, "churn": row.churn,
                "bits_per_weight": board_stats.mean(row.bits),
                "model_size_kib": board_stats.mean(row.size_kib), "seeds": list(row.seeds),
            })
    return out


def gen_records(sections: Sequence[GenSection]) -> list[dict[str, Any]]:
    """One dict per row of the generation board's tables, in table order."""
    from zoo.harness.gen_leaderboard import grid_name

    out = []
    for section in sections:
        for row in section.rows:
            act, init, quant = row.variant
            out.append({
                **_section_keys(section), "act": act, "init": init, "quant": quant, "n": row.n,
                **_mean_std("fid", row.fid), **_interval("fid_ci95", row.fid_ci95),
                **_mean_std("precision", row.precision), **_mean_std("recall", row.recall),
                **_mean_std("class_consistency", row.class_consistency),
                **_mean_std("test_loss", row.test_loss), "params": _params(row.params),
                "images_per_s": board_stats.mean(row.images_per_s),
                "raster_images_per_s": board_stats.mean(row.raster_images_per_s),
                "speedup": board_stats.mean(row.speedup),
                "samples": grid_name(section.dataset, row.grid_run_id), "seeds": list(row.seeds),
            })
    return out


def grid_records(sections: Sequence[GridSection]) -> list[dict[str, Any]]:
    """One dict per cell of the init grids, by section, then row (init), then column (act)."""
    out = []
    for section in sections:
        for cell in section.cells:
            out.append({
                **_section_keys(section), "act": cell.act, "init": cell.init,
                "metric": "test_acc_percent", "n": cell.n, "mean": cell.mean,
                "std": board_stats.std(cell.accuracy), **_interval("ci95", cell.ci95),
                "best": cell.best, "diverged": cell.diverged, "churn": cell.churn,
                "weight_change": board_stats.mean(cell.weight_change),
                "feature_rank": board_stats.mean(cell.feature_rank),
                "massive_activation": board_stats.mean(cell.massive_activation),
                "seeds": list(cell.seeds),
            })
    return out


def _section_keys(section: Any) -> dict[str, Any]:
    """The keys of the table a record belongs to: every kind of section has them."""
    return {"protocol_id": section.pid, "protocol": section.name,
            "dataset": section.dataset, "arch": section.arch}


def _interval(prefix: str, interval: tuple[float, float] | None) -> dict[str, float | None]:
    low, high = interval if interval is not None else (None, None)
    return {f"{prefix}_low": low, f"{prefix}_high": high}


def _mean_std(prefix: str, values: Sequence[float]) -> dict[str, float | None]:
    return {f"{prefix}_mean": board_stats.mean(values), f"{prefix}_std": board_stats.std(values)}


def _params(values: Sequence[float]) -> float | int | None:
    """The parameter count; the mean if seeds disagree (the markdown shows the range)."""
    if not values:
        return None
    if min(values) == max(values) and float(values[0]).is_integer():
        return int(values[0])
    return sum(values) / len(values)


def board_json(sections: Sequence[Section]) -> str:
    return json_text(records(sections))


def board_csv(sections: Sequence[Section]) -> str:
    columns = COLUMNS + (LM_COLUMNS if any(section.language for section in sections) else ())
    return csv_text(records(sections), columns)


def text_files(stem: str, markdown: str, rows: Sequence[Mapping[str, Any]],
               columns: Sequence[str]) -> dict[str, str]:
    """{`<stem>.md`, `<stem>.csv`, `<stem>.json`: text} of a board and its records."""
    return {f"{stem}.md": markdown, f"{stem}.csv": csv_text(rows, columns),
            f"{stem}.json": json_text(rows)}


def files_line(stem: str, what: str = "row") -> str:
    """The line under a board's note that links its CSV and JSON."""
    return f"Every {what} at full precision: [{stem}.csv]({stem}.csv), [{stem}.json]({stem}.json)."


def json_text(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A header of `columns`, then one line per record (the header alone when there is none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in rows:
        writer.writerow([_csv_cell(record[column]) for column in columns])
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return value


def index_markdown(entries: Sequence[tuple[str, str]], bench: Sequence[str],
                   generated_note: str) -> str:
    """`README.md`: every rendered board (file name, what it holds), then the `zoo bench`
    pages found beside them."""
    lines = ["# Leaderboards", "", generated_note, "",
             "Everything here except the benchmark pages below is rendered from the results "
             "database; to regenerate it:", "", "```bash", REGENERATE, "```", "",
             "Every board `<name>.md` has its rows at full precision in `<name>.csv` and "
             "`<name>.json` beside it (one record per table row, per cell for the init grid; "
             "accuracy, churn and their differences in %, bits per byte and FID as they are) and "
             "one plot per section in the folder `<name>/`, linked from the section.", "",
             "## Boards", ""]
    lines += [f"- [{name}]({name}): {text}" for name, text in sorted(entries)]
    if bench:
        lines += ["", "## Benchmarks", ""]
        lines += [f"- [{name}]({name}): {BENCH_FILES[name]}" for name in sorted(bench)]
    return "\n".join(lines) + "\n"


def index_entries(pages: Mapping[str, str], every_run: list[RunRecord],
                  quantizable: list[RunRecord], stored: list[RunRecord]) -> list[tuple[str, str]]:
    """(file name, what it holds) for every markdown board in `pages`, for README.md: the runs
    are grouped as each kind of board groups them."""
    from zoo.harness.gen_leaderboard import board_name, is_generator
    from zoo.harness.grid_rows import grid_boards
    from zoo.harness.quant_leaderboard import quant_stem
    from zoo.harness.quant_rows import mode

    completed = [run for run in every_run if run.status == "completed"]
    entries = []
    for (dataset, arch), runs in _group(completed, lambda r: (r.dataset, r.arch)).items():
        name, stem = leaderboard_filename(dataset, arch), board_stem(dataset, arch)
        if name in pages:
            what = ("bits per byte of language models" if _is_language_model(runs)
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
    for (dataset, arch), runs in _group(quantized, lambda r: (r.dataset, r.arch)).items():
        stem = quant_stem(dataset, arch)
        if f"{stem}.md" in pages:
            entries.append((f"{stem}.md", f"{dataset} / {arch}, quantized models (PTQ and QAT) "
                                          f"against their float runs; "
                                          f"{_runs_text(runs, 'quantized results')}; "
                                          f"{_files_text(stem)}"))
    generated = [run for run in stored if is_generator(run) and run.status == "completed"]
    for dataset, runs in _group(generated, lambda r: r.dataset).items():
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
    from zoo.harness.protocols import protocol_name_for

    keys = {(run.protocol_id, run.arch, run.dataset) for run in runs}
    labels = sorted({protocol_label(pid, protocol_name_for(pid, arch, dataset))
                     for pid, arch, dataset in keys})
    word = "protocol" if len(labels) == 1 else "protocols"
    return f"{word} {', '.join(labels)}; {len(runs)} {what}"
