"""Drawing the leaderboards' PNGs from plain data: the boards decide what a plot shows (which
rows, labels, titles, error bars), this module only how it looks.

- `RankingPlot`, a classification or language-model section: (a) the mean metric per variant
  with its 95% CI, the baseline highlighted; (b) the validation curve per epoch of the chosen
  variants;
- `GroupedBars`, the quantization and generation boards and the init grid: horizontal bars, one
  block per group and one colour per series, each with its error bar.

Drawn on an Agg canvas without pyplot (no global figure state), under a fresh default style in
`rc_context` (the caller's rcParams neither leak in nor out), at a fixed width and dpi, without
the Software tag: same data -> same bytes for a given matplotlib.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zoo.runs.files import atomic_write

# what a board hands the renderer for each PNG: how to draw it and what it draws
Plot = tuple[Callable[[Any, Path], None], Any]
# one bar per (group, series): value, and the (low, high) ends of its error bar or None
Bar = tuple[float, tuple[float, float] | None]

DPI = 100
WIDTH_IN = 12.0
BASE_COLOR, ROW_COLOR = "tab:orange", "tab:blue"
NAN = float("nan")  # no error bar at all (a single seed), rather than a zero-width one


@dataclass(frozen=True)
class MeanBar:
    label: str
    mean: float
    ci95: tuple[float, float] | None
    is_baseline: bool  # drawn in BASE_COLOR


@dataclass(frozen=True)
class Curve:
    label: str
    points: tuple[tuple[int, float], ...]  # (epoch, value)
    is_baseline: bool  # drawn black, on top of the others


@dataclass(frozen=True)
class RankingPlot:
    """A section's means per variant (left) beside its validation curves (right)."""
    unit: str  # the bars' metric, e.g. "test accuracy (%)"
    baseline_note: str  # under the bars: which bar is the baseline
    bars: tuple[MeanBar, ...]  # top to bottom
    curve_metric: str  # e.g. "validation accuracy (%)"
    curves: tuple[Curve, ...]
    curves_note: str  # the legend's title: which variants the curves are
    curves_stored: bool  # whether any variant stored a curve: then room for the legend below


@dataclass(frozen=True)
class GroupedBars:
    """Horizontal bars, one block per group (top to bottom in the given order) with one bar per
    series that has a value there, each series in its own colour."""
    title: str
    xlabel: str
    groups: Sequence[str]
    series: Sequence[str]
    bars: Sequence[dict[str, Bar]]  # per group: series -> its bar
    zero_line: bool = False  # the values are differences to a reference, drawn as a line at 0
    from_zero: bool = False  # the axis starts at 0 (FID); otherwise it is zoomed to the data


@contextlib.contextmanager
def _figure(height: float) -> Iterator[Any]:
    """A constrained-layout figure on its own Agg canvas, under the default style."""
    # imported here, not at the top: matplotlib is slow to import and only drawing needs it
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


def write_ranking_png(plot: RankingPlot, path: Path) -> None:
    # a fixed height per bar, so labels never overlap; room for the curves' legend below
    floor = 5.0 if plot.curves_stored else 3.5
    with _figure(max(floor, 1.6 + 0.28 * len(plot.bars))) as fig:
        bars, curves = fig.subplots(1, 2, width_ratios=(1.15, 1.0))
        _mean_bars(bars, plot)
        _curves(curves, plot)
        _save(fig, path)


def _mean_bars(ax, plot: RankingPlot) -> None:
    unit, rows = plot.unit, plot.bars
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
    ax.set_yticks(list(y), [row.label for row in rows], fontsize=8)
    ax.invert_yaxis()  # table order, best first
    low = min(row.ci95[0] if row.ci95 else row.mean for row in rows)
    high = max(row.ci95[1] if row.ci95 else row.mean for row in rows)
    pad = 0.15 * (high - low) or max(0.01 * abs(high), 0.01)
    ax.set_xlim(low - pad, high + pad)  # bars from 0 would hide differences of a few tenths
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"{unit}; {plot.baseline_note}", fontsize=8)


def _curves(ax, plot: RankingPlot) -> None:
    ax.set_title(f"{plot.curve_metric} per epoch, mean over seeds", fontsize=10)
    if not plot.curves:
        ax.text(0.5, 0.5, "no curves stored for these runs", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    # orange marks the baseline's bar; its curve is black, the others take the rest of tab10
    ax.set_prop_cycle(color=[f"tab:{c}" for c in ("blue", "green", "red", "purple", "brown",
                                                  "pink", "gray", "olive", "cyan")])
    for curve in plot.curves:
        epochs, values = zip(*curve.points)
        # drawn on top: a variant that tracks the baseline would otherwise hide it
        style = ({"color": "black", "linewidth": 2.2, "zorder": 3} if curve.is_baseline
                 else {"linewidth": 1.2})
        ax.plot(epochs, values, label=curve.label, **style)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # no tick at epoch 1.2
    ax.grid(alpha=0.3)
    # below the axes: inside, the legend of nine variants would hide the curves' ends
    ax.legend(fontsize=7, title=plot.curves_note, title_fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.12), ncols=2, frameon=False)


def write_grouped_png(plot: GroupedBars, path: Path) -> None:
    groups, series, bars = plot.groups, plot.series, plot.bars
    per_group = 0.15 + 0.16 * max(1, len(series))  # inches: every bar the same thickness
    legend = len(series) > 1
    height = max(3.0, 1.4 + (0.5 if legend else 0.0) + per_group * max(1, len(groups)))
    with _figure(height) as fig:
        ax = fig.subplots()
        ax.set_title(plot.title, fontsize=10)
        ax.set_xlabel(plot.xlabel, fontsize=8)
        if not any(bars):
            ax.text(0.5, 0.5, "no completed run recorded the metric", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_yticks([])
        else:
            _draw_groups(ax, groups, series, bars, plot.zero_line or plot.from_zero)
            if plot.zero_line:
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
    import matplotlib  # only while drawing, like `_figure`

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / (n - 1)) for i in range(n)]
