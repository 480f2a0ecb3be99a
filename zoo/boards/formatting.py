"""Numbers and config values as leaderboard text: means with their spread, counts, intervals,
signed differences, p-values; "—" (`DASH`) wherever a value is missing.

Pure functions of plain values, shared by every kind of board so that a number reads the same
everywhere.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

DASH = "—"


def format_mean_std(values: Sequence[float], *, scale: float = 100.0, digits: int = 2) -> str:
    """`mean ± std` of `values * scale`; sample std (n - 1), "—" for it when n = 1."""
    if not values:
        return DASH
    scaled = [v * scale for v in values]
    mean = f"{statistics.mean(scaled):.{digits}f}"
    std = f"{statistics.stdev(scaled):.{digits}f}" if len(scaled) > 1 else DASH
    return f"{mean} ± {std}"


def format_mean(values: Sequence[float], *, digits: int = 1) -> str:
    return f"{statistics.mean(values):,.{digits}f}" if values else DASH


def format_count(values: Sequence[float]) -> str:
    """An integer with thousands separators; `min–max` if the runs disagree."""
    if not values:
        return DASH
    low, high = round(min(values)), round(max(values))
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def format_number(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def format_interval(interval: tuple[float, float] | None, digits: int = 2) -> str:
    return DASH if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def format_signed(value: float | None, digits: int = 2) -> str:
    """`+0.12` / `-0.12`; a value that rounds to zero is `+0.00`, never `-0.00`."""
    if value is None:
        return DASH
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


def format_p(p: float | None) -> str:
    """Three decimals; below 0.001 in scientific notation, so a tiny p never reads as 0."""
    if p is None:
        return DASH
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def format_value(value: Any) -> str:
    """A protocol or config value: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def format_list(values: Iterable[Any]) -> str:
    distinct = sorted({str(v) for v in values})
    return ", ".join(distinct) if distinct else DASH
