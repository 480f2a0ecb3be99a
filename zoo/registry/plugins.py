"""Loading third-party entries: installed packages (entry-point group `zoo.plugins`) and single
files (`--plugin path.py`). A plugin is any module whose import registers entries."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from zoo.errors import ZooError
from zoo.registry.core import entries_from, failure

ENTRY_POINT_GROUP = "zoo.plugins"
_loaded: set[str] = set()


def load_entry_point_plugins() -> list[str]:
    """Import every installed plugin once; returns the names loaded by this call."""
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"ep:{ep.value}"
        if key in _loaded:
            continue
        try:
            with entries_from(f"plugin:{ep.name}"):
                target = ep.load()
                if callable(target) and not isinstance(target, type(sys)):
                    target()  # an entry point may also name a `register()` function
        except ZooError:
            raise
        except (Exception, SystemExit) as exc:  # a broken plugin must not look like a zoo crash
            raise ZooError(f"plugin '{ep.name}' ({ep.value}) failed to load: "
                           f"{failure(exc)}") from exc
        _loaded.add(key)
        loaded.append(ep.name)
    return loaded


def load_plugin_file(path: str | Path) -> str:
    """Import a single Python file as a plugin module; returns its module name."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ZooError(f"plugin file not found: {path}")
    if path.suffix != ".py":
        raise ZooError(f"plugin must be a .py file: {path}")
    key = f"file:{path}"
    module_name = f"zoo_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if key in _loaded:
        return module_name
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with entries_from(f"plugin:{path.name}"):
            spec.loader.exec_module(module)
    except ZooError:
        sys.modules.pop(module_name, None)
        raise
    except (Exception, SystemExit) as exc:  # sys.exit() in a plugin must not end zoo silently
        sys.modules.pop(module_name, None)
        raise ZooError(f"plugin {path.name} failed to load: {failure(exc)}") from exc
    _loaded.add(key)
    return module_name
