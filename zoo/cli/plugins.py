"""Plugins named on the command line (`--plugin FILE.py`) and installed ones (the `zoo.plugins`
entry points), loaded before any command runs."""

from __future__ import annotations

from zoo.registry.plugins import load_entry_point_plugins, load_plugin_file


def load_plugins(files: list[str]) -> None:
    load_entry_point_plugins()
    for file in files:
        load_plugin_file(file)
