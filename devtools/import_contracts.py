"""A custom import-linter contract: no module imports another module's private names.

    [[tool.importlinter.contracts]]
    type = "private_names"
    packages = ["zoo"]

A name that starts with one underscore (`_group`) belongs to its module; a module that needs it
from elsewhere means the name is public after all, or lives in the wrong module. Dunder names and
a package's own submodules importing each other through `from . import` are not affected.
"""

from __future__ import annotations

import ast
import importlib.util

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _source(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as handle:
        return handle.read()


def private_name_imports(graph: grimp.ImportGraph, packages: set[str]
                         ) -> list[tuple[str, str, str, int]]:
    """(importer, imported module, private name, line) for every `from X import _name` where X
    is another module of `packages`."""
    found = []
    modules = {m for p in packages for m in graph.find_descendants(p) | {p}}
    for importer in sorted(modules):
        text = _source(importer)
        if text is None:
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module not in modules or node.module == importer:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append((importer, node.module, alias.name, node.lineno))
    return found


class PrivateNamesContract(Contract):
    type_name = "private_names"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        found = private_name_imports(graph, set(self.packages))  # type: ignore[arg-type]
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, module, name, line in check.metadata["found"]:
            output.print_error(f"{importer}:{line} imports the private name {name} of {module}")
