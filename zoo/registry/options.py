"""Checking NAME=VALUE options (`--arch-param`, `--init-param`, `--quant-param`, `--act-param`)
before anything is built: a value of the wrong type or outside its range is a one-line usage
error naming the flag, not a traceback from deep inside a model's constructor.

Two sources say what a value may be:
- the factory's signature: an option annotated `int` takes whole numbers, `float` any number,
  `str` words;
- the entry's declared `option_ranges` (`Registry.register(..., option_ranges={...})`), for
  bounds no annotation can express (a depth of at least 1, a dropout below 1).
Whatever the sources, numbers must be finite.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from zoo.errors import ZooError
from zoo.registry.core import Entry


@dataclass(frozen=True)
class Range:
    """The values one option accepts: a closed interval unless an end is `*_open`, whole
    numbers only if `whole`."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    whole: bool = False

    def accepts(self, value: float) -> bool:
        if self.whole and int(value) != value:
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.high == math.inf:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return (f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


AT_LEAST_ONE = Range(1, whole=True)  # depths, widths, heads, sizes in pixels
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
DROP_RATE = Range(0, 1, high_open=True)


def check_options(entry: Entry, options: dict[str, Any] | None, flag: str) -> None:
    """Refuses, with one line, any option of `entry` whose value its signature or declared
    range excludes. Unknown names are left to the factory (its message lists the known ones)."""
    declared: dict[str, Range] = entry.extra.get("option_ranges", {})
    annotations = _annotations(entry)
    for name, value in (options or {}).items():
        where = f"{flag} {name}={value} ({entry.kind} {entry.name})"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ZooError(f"{where}: must be a finite number")
            if annotations.get(name) == "str":
                raise ZooError(f"{where}: must be a word, not a number")
            if annotations.get(name) == "int" and int(value) != value:
                raise ZooError(f"{where}: must be a whole number")
            if name in declared and not declared[name].accepts(value):
                raise ZooError(f"{where}: must be {declared[name]}")
        elif isinstance(value, str) and (annotations.get(name) in ("int", "float")
                                         or name in declared):
            raise ZooError(f"{where}: must be a number")


def _annotations(entry: Entry) -> dict[str, str]:
    """Option name -> "int", "float" or "str", for options annotated with one of those
    (optionally `| None`); others are not checked by type."""
    try:
        parameters = inspect.signature(entry.factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or an object without a signature
        return {}
    simple = {}
    for parameter in parameters:
        text = parameter.annotation if isinstance(parameter.annotation, str) else \
            getattr(parameter.annotation, "__name__", "")
        text = text.replace(" | None", "").replace("Optional[", "").rstrip("]")
        if text in ("int", "float", "str"):
            simple[parameter.name] = text
    return simple
