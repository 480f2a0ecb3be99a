"""`zoo list` and `zoo info`: the registries as tables and entry cards."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from zoo.registry import REGISTRIES, Entry, find, registry_for


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
    lines = [f"[bold]{entry.name}[/bold]  ({entry.kind}, {entry.source})"]
    if entry.summary:
        lines.append(f"  {entry.summary}")
    if entry.formula:
        lines.append(f"  formula:  {entry.formula}")
    if entry.paper:
        lines.append(f"  paper:    {entry.paper}")
    if entry.defaults:
        lines.append("  defaults: " + ", ".join(f"{k}={v}" for k, v in entry.defaults.items()))
    if entry.tags:
        lines.append("  tags:     " + ", ".join(entry.tags))
    for key, value in entry.extra.items():
        if key == "dataset_recipes":  # one line per data set, as the recipe's own line
            lines += [f"  recipe on {dataset}: " + ", ".join(f"{k}={v}" for k, v in
                                                           recipe.items())
                      for dataset, recipe in value.items()]
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"  {key.replace('_', ' ')}: {value}")
    return "\n".join(lines)
