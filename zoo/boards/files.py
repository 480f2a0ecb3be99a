"""The machine-readable side of the leaderboards, for every kind of board: CSV and JSON text of
a board's records (one record per table row, or per grid cell for `inits`, numbers at full
precision), the fields every kind of record shares, the file names boards share, and the
`README.md` index of every board.

Deterministic like the markdown: same records -> same bytes (fixed column order, Python's
shortest round-trip float repr, no NaN: undefined statistics are empty in CSV, null in JSON).
Knows no kind of board: each kind builds its own records and columns from its sections.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from zoo.boards import stats as board_stats
from zoo.runs.files import path_part

SECTION_KEYS = ("protocol_id", "protocol", "dataset", "arch")  # which table a record is from
REGENERATE = "zoo leaderboard --out results --to leaderboards --html site"
# files in the leaderboard folder that `zoo bench` writes, not `zoo leaderboard`
BENCH_FILES = {
    "kernels.md": "activation kernels against their PyTorch reference, written by "
                  "`zoo bench kernels --write` (not from the results database)",
    "quant-kernels.md": "quantization kernels, written by `zoo bench quant --write` (not from "
                        "the results database)",
}


def board_stem(dataset: str, arch: str) -> str:
    """`<dataset>-<arch>`, with characters unsafe in file names replaced by `_`: the name of a
    (dataset, arch) board without `.md`, shared by its CSV, JSON and plot folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}-{arch}")


def stored_part(text: str, what: str) -> str:
    """A field of the results database (`what`: "protocol id", "run id", "arch") as one
    component of a board's file name, or a one-line error: a crafted or damaged database must
    not lead a write outside the leaderboard folder."""
    return path_part(text, f"the results database's {what}")


def section_keys(section: Any) -> dict[str, Any]:
    """The keys of the table a record belongs to: every kind of section has them."""
    return {"protocol_id": section.pid, "protocol": section.name,
            "dataset": section.dataset, "arch": section.arch}


def interval_fields(prefix: str, interval: tuple[float, float] | None
                    ) -> dict[str, float | None]:
    """`<prefix>_low` and `<prefix>_high`, None for both without an interval."""
    low, high = interval if interval is not None else (None, None)
    return {f"{prefix}_low": low, f"{prefix}_high": high}


def mean_std_fields(prefix: str, values: Sequence[float]) -> dict[str, float | None]:
    """`<prefix>_mean` and `<prefix>_std` of the seeds' values."""
    return {f"{prefix}_mean": board_stats.mean(values), f"{prefix}_std": board_stats.std(values)}


def param_count(values: Sequence[float]) -> float | int | None:
    """The parameter count; the mean if seeds disagree (the markdown shows the range)."""
    if not values:
        return None
    if min(values) == max(values) and float(values[0]).is_integer():
        return int(values[0])
    return sum(values) / len(values)


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
