"""The leaderboards as a static website (`zoo leaderboard --html DIR`), beside the markdown.

Rendered in the same command and from the same records as the markdown boards: the rows come
from each board's JSON records, the protocol blocks and plots from its markdown sections, the
variant pages from the registry. Every page is plain HTML with one small script (sorting and
filtering, no framework) and works from `file://`: links are relative, and plots are the
boards' own PNGs, linked where they are. Like the boards, the output depends only on the
database: no timestamps.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import markdown

from zoo.boards.formatting import DASH
from zoo.errors import ZooError
from zoo.registry import ACTS
from zoo.registry.cards import card_body, card_title
from zoo.registry.core import is_valid_name
from zoo.runs.files import atomic_write_text

INDEX_PAGE = "index.html"
STATIC = ("site.css", "site.js")  # copied from the templates folder as they are
HOLM_LEVEL = 0.05  # a row is marked when its Holm-adjusted p is below this
BAR_WIDTH, BAR_PAD = 160, 6  # the interval drawn in a row, in SVG pixels
PID = re.compile(r"`([0-9a-f]{10})`")
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("zoo.boards", "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


# -- what a page shows --------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How a kind of board's records become rows: which number heads the row, which interval
    is drawn, which further columns it has."""

    value: str  # column header of the headline number
    interval: str  # what the drawn interval is of
    lower_is_better: bool = False


@dataclass
class SiteRow:
    anchor: str
    act: str
    init: str
    quant: str
    mode: str
    n: int
    value: float | None
    value_text: str
    low: float | None
    high: float | None
    point: float | None  # the drawn interval's centre
    delta: float | None
    p: float | None
    p_holm: float | None
    baseline: bool
    notes: str
    extras: list[tuple[float | None, str]]  # (sort value, text), one per extra column
    bar: dict[str, float] | None = None  # SVG x positions, set once the section's scale is known

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < HOLM_LEVEL


@dataclass
class SiteSection:
    heading: str  # inline HTML
    pid: str
    protocol: str  # the protocol's name, else its id: what the protocol filter offers
    block_html: str
    plot: str | None  # relative to the page
    plot_alt: str
    rows: list[SiteRow] = field(default_factory=list)


@dataclass
class SiteBoard:
    stem: str
    title: str
    description: str  # inline HTML
    intro_html: str
    kind: Kind
    extra_headers: list[str]
    sections: list[SiteSection]
    links: dict[str, str]  # label -> relative path of the board's markdown, CSV, JSON

    @property
    def page(self) -> str:
        return f"{self.stem}.html"

    def options(self, attribute: str) -> list[str]:
        values = {getattr(row, attribute) for s in self.sections for row in s.rows}
        return sorted(values - {""})

    @property
    def protocols(self) -> list[str]:
        return sorted({s.protocol for s in self.sections if s.rows})


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.{digits}f}" if signed else f"{value:,.{digits}f}"


def _p_text(p: float | None) -> str:
    if p is None:
        return DASH
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _kind_of(records: Sequence[Mapping[str, Any]]) -> str:
    keys = set().union(*(record.keys() for record in records)) if records else set()
    if "fid_mean" in keys:
        return "generation"
    if "mode" in keys:
        return "quant"
    if "best" in keys:
        return "init_grid"
    return "classification"


KINDS = {
    "classification": Kind("mean ± std", "mean"),
    "language": Kind("test bpb ± std", "mean", lower_is_better=True),
    "quant": Kind("mean ± std", "difference to float"),
    "init_grid": Kind("test acc (%) ± std", "mean"),
    "generation": Kind("FID ± std", "mean", lower_is_better=True),
}
EXTRA_HEADERS = {
    "classification": ["churn (%)", "params", "train time (s)"],
    "language": ["params", "train time (s)", "tokens/s"],
    "quant": ["bits / weight", "size (KiB)", "churn (%)"],
    "init_grid": ["weight change", "feature rank", "diverged"],
    "generation": ["precision", "recall", "params"],
}


def _row(record: Mapping[str, Any], kind: str, board: str) -> SiteRow:
    get = record.get
    act, init, quant = str(get("act", "")), str(get("init", "")), str(get("quant", "") or "")
    mode = str(get("mode") or "")
    if kind == "generation":
        value, std = _number(get("fid_mean")), _number(get("fid_std"))
        low, high, point = _number(get("fid_ci95_low")), _number(get("fid_ci95_high")), value
    else:
        value, std = _number(get("mean")), _number(get("std"))
        low, high, point = _number(get("ci95_low")), _number(get("ci95_high")), value
    delta = _number(get("diff_vs_baseline"))
    if kind == "quant":  # the interval worth drawing is that of the difference to float
        delta = _number(get("diff_vs_float"))
        low, high, point = _number(get("diff_ci95_low")), _number(get("diff_ci95_high")), delta
    digits = 3 if kind == "language" else 2
    value_text = _fmt(value, digits) + (f" ± {_fmt(std, digits)}" if std is not None else "")
    notes = []
    if get("baseline"):
        notes.append("baseline")
    if get("companion_init"):
        notes.append("companion init")
    if get("lr_tuned") not in (None, "", 1, 1.0):
        notes.append(f"lr tuned (×{get('lr_tuned')})")
    if get("submitted"):
        notes.append("submitted")
    if get("best"):
        notes.append("best init")
    extras = {
        "classification": [(_number(get("churn")), _fmt(_number(get("churn")))),
                           (_number(get("params")), _fmt(_number(get("params")), 0)),
                           (_number(get("train_time_s")), _fmt(_number(get("train_time_s")), 1))],
        "language": [(_number(get("params")), _fmt(_number(get("params")), 0)),
                     (_number(get("train_time_s")), _fmt(_number(get("train_time_s")), 1)),
                     (_number(get("throughput")), _fmt(_number(get("throughput")), 0))],
        "quant": [(_number(get("bits_per_weight")), _fmt(_number(get("bits_per_weight")))),
                  (_number(get("model_size_kib")), _fmt(_number(get("model_size_kib")), 1)),
                  (_number(get("churn")), _fmt(_number(get("churn"))))],
        "init_grid": [(_number(get("weight_change")), _fmt(_number(get("weight_change")), 3)),
                      (_number(get("feature_rank")), _fmt(_number(get("feature_rank")), 1)),
                      (_number(get("diverged")), _fmt(_number(get("diverged")), 0))],
        "generation": [(_number(get("precision_mean")), _fmt(_number(get("precision_mean")), 3)),
                       (_number(get("recall_mean")), _fmt(_number(get("recall_mean")), 3)),
                       (_number(get("params")), _fmt(_number(get("params")), 0))],
    }[kind]
    pid = str(get("protocol_id", ""))
    anchor = "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", part)
                      for part in (board, pid, act, init, quant, mode) if part)
    return SiteRow(anchor=anchor, act=act, init=init, quant=quant, mode=mode,
                   n=int(get("n") or 0), value=value, value_text=value_text, low=low, high=high,
                   point=point, delta=delta, p=_number(get("p_value")),
                   p_holm=_number(get("p_holm")), baseline=bool(get("baseline")),
                   notes=", ".join(notes), extras=extras)


def _place_bars(rows: list[SiteRow]) -> None:
    """The x positions of each row's interval on the section's common scale."""
    ends = [v for row in rows for v in (row.low, row.high, row.point) if v is not None]
    if not ends:
        return
    lo, hi = min(ends), max(ends)
    span = hi - lo or 1.0

    def x(v: float) -> float:
        return round(BAR_PAD + (v - lo) / span * (BAR_WIDTH - 2 * BAR_PAD), 1)

    for row in rows:
        if row.low is not None and row.high is not None and row.point is not None:
            row.bar = {"low": x(row.low), "high": x(row.high), "point": x(row.point)}


# -- markdown sections --------------------------------------------------------------------------


def _markdown_html(text: str) -> str:
    """Board markdown as HTML. The text holds database fields, so any HTML in it is escaped
    first: it is shown, never run."""
    return markdown.markdown(html.escape(text, quote=False), extensions=["tables"])


def _inline_html(text: str) -> str:
    """One line of board markdown (a heading, a description) as inline HTML."""
    rendered = _markdown_html(text)
    return rendered.removeprefix("<p>").removesuffix("</p>")


def _split_sections(text: str) -> tuple[str, str, list[tuple[str, list[str]]]]:
    """(title, intro, [(heading, lines)]) of a board's markdown."""
    title, intro, sections = "", [], []
    for line in text.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            intro.append(line)
    return title, "\n".join(intro).strip(), sections


def _section_block(lines: list[str]) -> tuple[str, str | None, str]:
    """(the facts above the table, the plot's path, its alt text) of one section."""
    block, plot, alt = [], None, ""
    for line in lines:
        image = IMAGE.fullmatch(line.strip())
        if image:
            plot, alt = plot or image.group(2), alt or image.group(1)
        elif not line.startswith("|") and plot is None:
            block.append(line)
    return "\n".join(block).strip(), plot, alt


# -- the site -----------------------------------------------------------------------------------


def build_boards(pages: Mapping[str, str], board_dir: Path, site_dir: Path,
                 entries: Sequence[tuple[str, str]]) -> list[SiteBoard]:
    """Every markdown board of `entries` ((file name, description), as in the boards' index)
    with its JSON records, as the site shows it."""
    boards = []
    link = os.path.relpath(Path(board_dir).resolve(), Path(site_dir).resolve())
    for name, description in entries:
        stem = name[:-3]
        records = json.loads(pages.get(f"{stem}.json", "[]"))
        kind = _kind_of(records)
        if kind == "classification" and any(r.get("metric") == "test_bpb" for r in records):
            kind = "language"
        title, intro, parts = _split_sections(pages[name])
        by_pid: dict[str, list[Mapping[str, Any]]] = {}
        for record in records:
            by_pid.setdefault(str(record.get("protocol_id")), []).append(record)
        sections = []
        for heading, lines in parts:
            pids = PID.findall(heading)
            block, plot, alt = _section_block(lines)
            if not pids:  # a note, not a table of runs: shown as written
                sections.append(SiteSection(_inline_html(heading), "", "", _markdown_html(block),
                                            None, ""))
                continue
            pid = pids[-1]
            section_records = by_pid.get(pid, [])
            if len({(r.get("dataset"), r.get("arch")) for r in section_records}) > 1:
                # one protocol id in several tables (a generation board's archs): the heading
                # names the table's arch
                section_records = [r for r in section_records if str(r.get("arch")) in heading]
            names = {r.get("protocol") for r in section_records} - {None}
            protocol = names.pop() if len(names) == 1 else pid
            rows = [_row(r, kind, stem) for r in section_records]
            _place_bars(rows)
            sections.append(SiteSection(
                heading=_inline_html(heading), pid=pid, protocol=protocol,
                block_html=_markdown_html(block),
                plot=f"{link}/{plot}" if plot else None, plot_alt=alt, rows=rows))
        summary = description.split("; [CSV]")[0]
        links = {"markdown": f"{link}/{name}", "CSV": f"{link}/{stem}.csv",
                 "JSON": f"{link}/{stem}.json"}
        boards.append(SiteBoard(stem=stem, title=title or stem,
                                description=_inline_html(summary),
                                intro_html=_markdown_html(intro), kind=KINDS[kind],
                                extra_headers=EXTRA_HEADERS[kind], sections=sections,
                                links=links))
    return boards


def variant_page(act: str) -> str | None:
    """The page of an activation, or None for a name that cannot be a file name."""
    return f"act-{act}.html" if is_valid_name(act) else None


def _variants(boards: list[SiteBoard]) -> dict[str, dict[str, Any]]:
    """act -> what its page shows: the registry's card and every row of it on every board."""
    variants: dict[str, dict[str, Any]] = {}
    for name in ACTS.names():
        entry = ACTS.get(name)
        variants[name] = {"name": name, "title": card_title(entry), "card": card_body(entry),
                          "formula": entry.formula, "paper": entry.paper,
                          "arxiv": entry.paper.arxiv if entry.paper else None, "rows": []}
    for board in boards:
        for section in board.sections:
            for row in section.rows:
                if variant_page(row.act) is None:
                    continue
                variant = variants.setdefault(row.act, {
                    "name": row.act, "title": f"{row.act}  (not registered here)", "card": [],
                    "formula": "", "paper": None, "arxiv": None, "rows": []})
                variant["rows"].append((board, section, row))
    return variants


def render_site(pages: Mapping[str, str], board_dir: Path, site_dir: Path,
                entries: Sequence[tuple[str, str]]) -> list[Path]:
    """Write the site for the boards `entries` names into `site_dir`; return the written paths.
    `pages` maps each board file name (markdown, JSON) to its text, as just rendered."""
    site_dir = Path(site_dir)
    boards = build_boards(pages, board_dir, site_dir, entries)
    variants = _variants(boards)
    files: dict[str, str] = {}
    common = {"boards": boards, "variant_page": variant_page, "p_text": _p_text,
              "fmt": _fmt, "bar_width": BAR_WIDTH, "holm_level": HOLM_LEVEL}
    files[INDEX_PAGE] = _environment.get_template("index.html").render(
        title="zoo leaderboards", variants=sorted(variants.values(), key=lambda v: v["name"]),
        **common)
    for board in boards:
        files[board.page] = _environment.get_template("board.html").render(
            title=board.title, board=board, **common)
    for name, variant in sorted(variants.items()):
        files[variant_page(name)] = _environment.get_template("variant.html").render(
            title=f"{name}: zoo leaderboards", variant=variant, **common)
    for name in STATIC:
        files[name] = _environment.loader.get_source(_environment, name)[0]
    try:
        site_dir.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(files.items()):
            atomic_write_text(site_dir / name, text)
    except OSError as exc:
        raise ZooError(f"cannot write the leaderboard site into {site_dir}: {exc}") from exc
    return sorted(site_dir / name for name in files)
