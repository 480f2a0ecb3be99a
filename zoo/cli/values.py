"""Argument types for numeric flags: each refuses, at parse time, what it cannot mean (nan, inf,
a negative count, a seed no generator takes), so that a bad value is a usage error naming the
flag, before anything is built or written.

argparse turns the `ArgumentTypeError` into `argument --lr: must be ...` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

# numpy's legacy generators (and so many data pipelines) take seeds below 2**32.
MAX_SEED = 2**32 - 1
# Elements one sampled image batch, one benchmark tensor... may hold: far beyond any real use,
# far below what would exhaust memory before the first allocation fails.
MAX_COUNT = 2**31 - 1


def _number(text: str, parse: Callable[[str], float]) -> float:
    try:
        value = parse(text)
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {kind}, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got '{text}'")
    return value


def whole(low: int = 0, high: int = MAX_COUNT, what: str = "") -> Callable[[str], int]:
    """A whole number in [low, high]."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if not low <= value <= high:
            bound = f">= {low}" if high == MAX_COUNT else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {what or 'a whole number'} {bound}, "
                                             f"got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def real(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
         high_open: bool = False) -> Callable[[str], float]:
    """A finite number in the interval given (closed unless `*_open`)."""

    def parse(text: str) -> float:
        value = float(_number(text, float))
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must be {interval(low, high, low_open, high_open)}"
                                             f", got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if high == math.inf:
        return f"{'>' if low_open else '>='} {low:g}" if low > -math.inf else "finite"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


count = whole(1, what="a whole number")  # epochs, batch sizes, workers: at least one
natural = whole(0)  # top-k, few-shot examples: zero allowed
seed = whole(0, MAX_SEED, what="a seed")
positive = real(0, low_open=True)  # learning rates, temperatures
non_negative = real(0)  # weight decay, warmup length
fraction = real(0, 1, high_open=True)  # label smoothing
decay = real(0, 1, low_open=True, high_open=True)  # EMA decay
probability = real(0, 1, low_open=True)  # top-p
