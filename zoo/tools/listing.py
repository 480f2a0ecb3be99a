"""`zoo list` and `zoo info`: the registries as tables and entry cards."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from zoo.registry import REGISTRIES, Entry, find, registry_for
from zoo.registry.cards import card_body


def print_listing(kind: str | None = None, console: Console | None = None) -> None:
    console = console or Console()
    registries = [registry_for(kind)] if kind else list(REGISTRIES.values())
    for registry in registries:
        table = Table(title=f"{registry.plural} ({len(registry)})", title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("formula / summary")
        table.add_column("paper")
        for entry in registry:
            table.add_row(entry.name, entry.formula or entry.summary,
                          str(entry.paper) if entry.paper else "")
        console.print(table)


def print_info(name: str, console: Console | None = None) -> None:
    console = console or Console()
    for entry in find(name):
        console.print(_card(entry))


def _card(entry: Entry) -> str:
    return "\n".join([f"[bold]{entry.name}[/bold]  ({entry.kind}, {entry.source})",
                      *card_body(entry)])
