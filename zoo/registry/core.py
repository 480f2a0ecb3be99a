"""A small generic registry: one per kind of thing (arch, act, init, quant, dataset).

An entry is a name, a factory and metadata (paper, formula or rule, defaults, tags). Entries are
added with the `register` decorator; lookups of unknown names fail with a one-line error naming
the closest registered names.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from zoo.errors import ZooError, one_line

# A name becomes part of run ids, and so of folder and file names: only characters that mean
# the same in both, and never `.` or `..`, which name folders themselves.
NAME = re.compile(r"[A-Za-z0-9_.-]+")


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and bool(NAME.fullmatch(name)) and name not in (".", "..")


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str | None = None

    def __str__(self) -> str:
        return f"{self.title} (arXiv:{self.arxiv})" if self.arxiv else self.title


@dataclass(frozen=True)
class Entry:
    """One registered variant. `factory` builds it; the rest describes it for `zoo list`/`info`."""

    kind: str
    name: str
    factory: Callable[..., Any]
    summary: str = ""
    formula: str = ""
    paper: Paper | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    source: str = "builtin"  # "builtin", "plugin:<entry point or file>"
    extra: dict[str, Any] = field(default_factory=dict)

    def create(self, **overrides: Any) -> Any:
        if self.source == "builtin":
            return self.factory(**{**self.defaults, **overrides})
        try:  # a plugin's factory that raises (or exits) is the plugin's problem: one line
            return self.factory(**{**self.defaults, **overrides})
        except ZooError:
            raise
        except (Exception, SystemExit) as exc:
            raise ZooError(f"{self.kind} '{self.name}' ({self.source}) failed to build: "
                           f"{failure(exc)}") from exc


class Registry:
    """Name -> Entry for one kind. Iteration is in name order so listings are deterministic."""

    def __init__(self, kind: str, plural: str):
        self.kind = kind
        self.plural = plural
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        *,
        summary: str = "",
        formula: str = "",
        paper: Paper | tuple[str, str | None] | None = None,
        defaults: dict[str, Any] | None = None,
        tags: tuple[str, ...] | list[str] = (),
        source: str | None = None,
        **extra: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: `@acts.register("golu", formula=..., paper=...)` over the factory."""

        if isinstance(paper, tuple):
            paper = Paper(*paper)

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(
                Entry(
                    kind=self.kind,
                    name=name,
                    factory=factory,
                    summary=summary or _first_doc_line(factory),
                    formula=formula,
                    paper=paper,
                    defaults=dict(defaults or {}),
                    tags=tuple(tags),
                    source=source or _current_source(),
                    extra=extra,
                )
            )
            return factory

        return decorator

    def add(self, entry: Entry) -> None:
        if not is_valid_name(entry.name):
            raise ZooError(
                f"{self.kind} name {entry.name!r} ({entry.source}) is not allowed: names become "
                "part of run ids and file names, so use only letters, digits, '_', '-' and '.' "
                "(and not '.' or '..')"
            )
        if entry.name in self._entries:
            existing = self._entries[entry.name]
            raise ZooError(
                f"{self.kind} '{entry.name}' is already registered (by {existing.source}); "
                "pick another name"
            )
        self._entries[entry.name] = entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ZooError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return (self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown {kind} '{name}'{hint} (`zoo list` shows all)"


def failure(exc: BaseException) -> str:
    """`Type: message` of a third party's exception, on one line (`sys.exit(3)` reads as
    `SystemExit: 3`)."""
    return f"{type(exc).__name__}: {one_line(exc)}"


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# Set while a plugin module is being imported, so its entries record where they came from.
_SOURCE_STACK: list[str] = []


def _current_source() -> str:
    return _SOURCE_STACK[-1] if _SOURCE_STACK else "builtin"


@contextlib.contextmanager
def entries_from(source: str) -> Iterator[None]:
    """Entries registered inside the block record `source` (e.g. "plugin:my_acts.py") as where
    they came from, for `zoo list` and `zoo info`."""
    _SOURCE_STACK.append(source)
    try:
        yield
    finally:
        _SOURCE_STACK.pop()


# --- the registries, one per kind ---------------------------------------------------------------

ARCHS = Registry("arch", "archs")
ACTS = Registry("act", "acts")
INITS = Registry("init", "inits")
QUANTS = Registry("quant", "quants")
DATASETS = Registry("dataset", "datasets")

REGISTRIES: dict[str, Registry] = {r.plural: r for r in (ARCHS, ACTS, INITS, QUANTS, DATASETS)}


def registry_for(kind: str) -> Registry:
    """Accepts singular or plural kind names: 'act', 'acts'."""
    for reg in REGISTRIES.values():
        if kind in (reg.kind, reg.plural):
            return reg
    raise ZooError(unknown_name_message("kind", kind, sorted(REGISTRIES)))


def find(name: str) -> list[Entry]:
    """Every entry called `name`, whatever its kind (`zoo info golu`). `kind:name` narrows it."""
    if ":" in name:
        kind, _, bare = name.partition(":")
        return [registry_for(kind).get(bare)]
    found = [reg.get(name) for reg in REGISTRIES.values() if name in reg]
    if not found:
        every = sorted({n for reg in REGISTRIES.values() for n in reg.names()})
        raise ZooError(unknown_name_message("name", name, every))
    return found
