"""One PNG per leaderboard section.

- classification and language-model boards: (a) the mean metric per variant with its 95% CI, the
  baseline highlighted; (b) the validation curve per epoch, mean over seeds, for the runs that
  stored one;
- quantization boards: the mean difference to the float model per format, one colour per
  (act, init), with the 95% CI of the per-seed paired differences (PTQ) or ± the sample std of
  the seeds (QAT, whose difference is to the float mean);
- generation boards: FID per variant with its 95% CI;
- the init grid: test accuracy per initialization, one colour per activation, with 95% CIs.

Drawn on an Agg canvas without pyplot (no global figure state), under a fresh default style in
`rc_context` (the caller's rcParams neither leak in nor out), at a fixed width and dpi, without
the Software tag: same section -> same bytes for a given matplotlib.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from zoo.harness.atomic import atomic_write
from zoo.harness.board_rows import Row, Section

if TYPE_CHECKING:
    from zoo.harness.gen_rows import GenSection
    from zoo.harness.grid_rows import GridSection
    from zoo.harness.quant_rows import QuantSection

# what a board hands the renderer for each PNG: how to draw it and what it draws
Plot = tuple[Callable[[Any, Path], None], Any]

DPI = 100
WIDTH_IN = 12.0
CURVES_SHOWN = 4  # with many variants: the baseline, the best and the worst few by mean
BASE_COLOR, ROW_COLOR = "tab:orange", "tab:blue"
NAN = float("nan")  # no error bar at all (a single seed), rather than a zero-width one


def label(row: Row) -> str:
    return " / ".join(row.variant) + (" (submitted)" if row.submitted else "")


@contextlib.contextmanager
def _figure(height: float) -> Iterator[Any]:
    """A constrained-layout figure on its own Agg canvas, under the default style."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # the default style, whatever the caller configured
        fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI,
                                               metadata={"Software": None}))


def write_section_png(section: Section, path: Path) -> None:
    shown = [row for row in section.rows if row.mean is not None]
    # a fixed height per bar, so labels never overlap; room for the curves' legend below
    floor = 5.0 if any(row.curve for row in section.rows) else 3.5
    with _figure(max(floor, 1.6 + 0.28 * len(shown))) as fig:
        bars, curves = fig.subplots(1, 2, width_ratios=(1.15, 1.0))
        _bars(bars, section, shown)
        _curves(curves, section)
        _save(fig, path)


def _bars(ax, section: Section, rows: list[Row]) -> None:
    unit = "test bpb (lower is better)" if section.language else "test accuracy (%)"
    ax.set_title(f"{unit}: mean and 95% CI over seeds", fontsize=10)
    if not rows:
        ax.text(0.5, 0.5, "no completed run recorded the metric", ha="center", va="center",
                transform=ax.transAxes)
        return
    y = range(len(rows))
    errors = [[row.mean - row.ci95[0] if row.ci95 else NAN for row in rows],
              [row.ci95[1] - row.mean if row.ci95 else NAN for row in rows]]
    ax.barh(y, [row.mean for row in rows], xerr=errors, capsize=2, height=0.7,
            color=[BASE_COLOR if row.is_baseline else ROW_COLOR for row in rows],
            error_kw={"elinewidth": 1})
    ax.set_yticks(list(y), [label(row) for row in rows], fontsize=8)
    ax.invert_yaxis()  # table order, best first
    low = min(row.ci95[0] if row.ci95 else row.mean for row in rows)
    high = max(row.ci95[1] if row.ci95 else row.mean for row in rows)
    pad = 0.15 * (high - low) or max(0.01 * abs(high), 0.01)
    ax.set_xlim(low - pad, high + pad)  # bars from 0 would hide differences of a few tenths
    ax.grid(axis="x", alpha=0.3)
    base = section.baseline_row
    note = (f"orange: baseline {label(base)}" if base is not None else
            f"no baseline row ({' / '.join(section.baseline)})")
    ax.set_xlabel(f"{unit}; {note}", fontsize=8)


def _curves(ax, section: Section) -> None:
    metric = "validation bpb" if section.language else "validation accuracy (%)"
    ax.set_title(f"{metric} per epoch, mean over seeds", fontsize=10)
    chosen, note = curve_rows(section)
    if not chosen:
        ax.text(0.5, 0.5, "no curves stored for these runs", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    # orange marks the baseline's bar; its curve is black, the others take the rest of tab10
    ax.set_prop_cycle(color=[f"tab:{c}" for c in ("blue", "green", "red", "purple", "brown",
                                                  "pink", "gray", "olive", "cyan")])
    for row in chosen:
        epochs, values = zip(*row.curve)
        # drawn on top: a variant that tracks the baseline would otherwise hide it
        style = ({"color": "black", "linewidth": 2.2, "zorder": 3} if row.is_baseline
                 else {"linewidth": 1.2})
        ax.plot(epochs, values, label=label(row), **style)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # no tick at epoch 1.2
    ax.grid(alpha=0.3)
    # below the axes: inside, the legend of nine variants would hide the curves' ends
    ax.legend(fontsize=7, title=note, title_fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.12), ncols=2, frameon=False)


def curve_rows(section: Section) -> tuple[list[Row], str]:
    """The rows whose curves to draw, in table order, and a legend title saying which they are:
    all that stored one, or with many, the baseline and the best and worst few by mean."""
    stored = [row for row in section.rows if row.curve]
    missing = len(section.rows) - len(stored)
    suffix = f"; {missing} of {len(section.rows)} variants stored no curve" if missing else ""
    if len(stored) <= 2 * CURVES_SHOWN + 1:
        return stored, f"all {len(stored)} variants with curves{suffix}"
    better_first = sorted((row for row in stored if row.mean is not None),
                          key=lambda row: (row.mean if section.language else -row.mean,
                                           row.variant, row.submitted))
    picked = better_first[:CURVES_SHOWN] + better_first[-CURVES_SHOWN:]
    picked += [row for row in stored if row.is_baseline]
    chosen = [row for row in stored if any(row is p for p in picked)]  # table order
    return chosen, (f"baseline, best and worst {CURVES_SHOWN} of {len(stored)} variants by "
                    f"mean test {'bpb' if section.language else 'accuracy'}{suffix}")


# -- grouped bars: the quantization boards, the generation boards and the init grid ----------

# one bar per (group, series): value, and the (low, high) ends of its error bar or None
Bar = tuple[float, tuple[float, float] | None]


def write_quant_png(section: QuantSection, path: Path) -> None:
    """Bars of the mean difference to float per format (PTQ formats, then QAT), one colour per
    (act, init); formats ordered by their mean difference over the pairs, best first."""
    from zoo.harness.board_stats import ci95, mean, std

    series = list(dict.fromkeys(row.label for row in section.rows))
    formats: dict[str, dict[str, Bar]] = {}
    for row in section.rows:
        if row.diff is None:
            continue  # the float rows are the zero line
        if row.paired:
            error = ci95(row.deltas)
        else:
            spread = std(row.values)
            error = None if spread is None else (row.diff - spread, row.diff + spread)
        formats.setdefault(f"{row.quant} ({row.mode})", {})[row.label] = (row.diff, error)
    better = -1.0 if section.language else 1.0  # lower bpb is better, higher accuracy

    def rank(name: str) -> tuple:
        return (name.endswith("(QAT)"), -better * mean([v for v, _ in formats[name].values()]),
                name)

    ranked = sorted(formats, key=rank)
    unit = "Δ test bpb (lower is better)" if section.language else "Δ test accuracy (pp)"
    title = (f"{section.dataset} / {section.arch}: {unit} against the float model (the line at "
             f"0), mean per format")
    note = ("error bars: PTQ, 95% CI over the per-seed pairs (quantized minus its own float "
            "model);\nQAT, ± sample std of its seeds (its difference is to the float mean); "
            "none with one seed")
    _grouped_png(path, title, f"{unit}; {note}", ranked, series,
                 [formats[name] for name in ranked], zero_line=True)


def write_generation_png(section: GenSection, path: Path) -> None:
    """Bars of the mean FID per variant (table order, lowest first) with its 95% CI; the axis
    starts at 0."""
    from zoo.harness.board_stats import mean

    rows = [row for row in section.rows if row.fid]
    title = (f"{section.dataset} / {section.arch}: FID (lower is better), mean and 95% CI over "
             f"seeds")
    _grouped_png(path, title, "FID in zoo's classifier features; no error bar with one seed",
                 [row.label for row in rows], ["FID"],
                 [{"FID": (mean(row.fid), row.fid_ci95)} for row in rows], from_zero=True)


def write_grid_png(section: GridSection, path: Path) -> None:
    """Bars of test accuracy per initialization (table order), one colour per activation, with
    their 95% CIs."""
    groups = [{cell.act: (cell.mean, cell.ci95) for cell in section.cells
               if cell.init == init and cell.mean is not None} for init in section.inits]
    title = (f"{section.dataset} / {section.arch}: test accuracy (%) per initialization, mean and "
             f"95% CI over seeds")
    _grouped_png(path, title, "test accuracy (%); no error bar with fewer than two seeds",
                 list(section.inits), list(section.acts), groups)


def _grouped_png(path: Path, title: str, xlabel: str, groups: Sequence[str],
                 series: Sequence[str], bars: Sequence[dict[str, Bar]], *,
                 zero_line: bool = False, from_zero: bool = False) -> None:
    """Horizontal bars, one block per group (top to bottom in the given order) with one bar per
    series that has a value there, each series in its own colour. `zero_line`: the values are
    differences to a reference, drawn as a line at 0; `from_zero`: the axis starts at 0 (FID),
    otherwise it is zoomed to the data."""
    per_group = 0.15 + 0.16 * max(1, len(series))  # inches: every bar the same thickness
    legend = len(series) > 1
    height = max(3.0, 1.4 + (0.5 if legend else 0.0) + per_group * max(1, len(groups)))
    with _figure(height) as fig:
        ax = fig.subplots()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        if not any(bars):
            ax.text(0.5, 0.5, "no completed run recorded the metric", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_yticks([])
        else:
            _draw_groups(ax, groups, series, bars, zero_line or from_zero)
            if zero_line:
                ax.axvline(0.0, color="black", linewidth=1)
            if legend:
                fig.legend(loc="outside upper center", ncols=min(len(series), 6), fontsize=8,
                           frameon=False)
        _save(fig, path)


def _draw_groups(ax: Any, groups: Sequence[str], series: Sequence[str],
                 bars: Sequence[dict[str, Bar]], include_zero: bool) -> None:
    width = 0.8 / len(series)
    colors = _colors(len(series))
    ends = []
    for s, name in enumerate(series):
        at = [(g, *group[name]) for g, group in enumerate(bars) if name in group]
        if not at:
            continue
        y = [g - 0.4 + width * (s + 0.5) for g, _, _ in at]
        values = [value for _, value, _ in at]
        errors = [[value - e[0] if e else NAN for _, value, e in at],
                  [e[1] - value if e else NAN for _, value, e in at]]
        ax.barh(y, values, height=0.9 * width, xerr=errors, capsize=2, color=colors[s],
                label=name, error_kw={"elinewidth": 1})
        # a dot at each mean: a difference of exactly 0 has no bar, but it is not missing
        ax.plot(values, y, "o", color=colors[s], markersize=3, markeredgecolor="black",
                markeredgewidth=0.5)
        ends += [end for _, value, e in at for end in (e or (value, value))]
    ax.set_yticks(list(range(len(groups))), list(groups), fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)  # the first group on top
    ax.grid(axis="x", alpha=0.3)
    low, high = min(ends), max(ends)
    if include_zero:  # differences to a reference at 0, or FIDs: the bars' origin is shown
        low, high = min(low, 0.0), max(high, 0.0)
    pad = 0.08 * (high - low) or max(0.01 * abs(high), 0.01)
    # otherwise zoomed to the data: bars from 0 would hide accuracy differences of a few tenths
    ax.set_xlim(0.0 if include_zero and low == 0.0 else low - pad, high + pad)


def _colors(n: int) -> list[Any]:
    """n distinct colours: tab10, tab20 beyond ten, sampled from viridis beyond twenty."""
    import matplotlib

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / (n - 1)) for i in range(n)]
