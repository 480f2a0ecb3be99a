"""Parsing the NAME=VALUE options that several commands take (--act-param, --init-param...)."""

from __future__ import annotations

from typing import Any

from zoo.errors import ZooError


def parse_params(items: list[str], flag: str) -> dict[str, float] | None:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ZooError(f"{flag} takes NAME=NUMBER, got '{item}'")
    return params or None


def parse_options(items: list[str], flag: str) -> dict[str, Any] | None:
    # Unlike activation parameters, these may be words (kaiming's mode=fan_out, gpt2's
    # size=tiny) or whole numbers (gpt2's n_layer=3).
    options: dict[str, Any] = {}
    for item in items:
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise ZooError(f"{flag} takes NAME=VALUE, got '{item}'")
        options[name] = option_value(value)
    return options or None


def option_value(text: str) -> Any:
    """A whole number, else a number, else a word; `[a,b,...]` is a list of those (resnet's
    layers=[1,1,1] widths=[16,32,64])."""
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [option_value(part.strip()) for part in inner.split(",")] if inner else []
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    return text
