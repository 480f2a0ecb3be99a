"""An entry's card: what `zoo info NAME` prints and the leaderboard site's variant pages show,
as plain lines of text (the callers add their own styling)."""

from __future__ import annotations

from zoo.registry.core import Entry


def card_title(entry: Entry) -> str:
    return f"{entry.name}  ({entry.kind}, {entry.source})"


def card_body(entry: Entry) -> list[str]:
    """The card's lines below its title: summary, formula, paper, defaults, tags, then the
    entry's extra fields (an arch's recipe per data set, an activation's companion init...)."""
    lines = []
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
    return lines


def card_text(entry: Entry) -> str:
    return "\n".join([card_title(entry), *card_body(entry)])
