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
        for parse in (int, float, str):
            try:
                options[name] = parse(value)
                break
            except ValueError:
                continue
    return options or None
