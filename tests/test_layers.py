"""zoo's import structure is a checked contract (README "Layout"): imports run one way, from the
command line down to the kernels; no package has an import cycle; no module reaches into
another's private names; and an import sits inside a function only to defer an optional or
heavy third-party library."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")

# Third-party libraries that zoo imports on use: optional extras (ray, lm-eval, transformers,
# cupy, torchmetrics, wandb...), or heavy imports that most commands never need (datasets,
# matplotlib, tensorboard's writer).
DEFERRED = {"cupy", "ray", "lm_eval", "transformers", "tiktoken", "torchmetrics", "matplotlib",
            "datasets", "pyarrow", "huggingface_hub", "sklearn", "tokenizers", "torchvision",
            "safetensors", "wandb", "torch.utils.tensorboard"}


def is_deferred(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in DEFERRED)


def lint_imports(*args: str, cwd: Path = ROOT, env: dict | None = None):
    return subprocess.run([LINT_IMPORTS, "--no-cache", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)


def test_zoo_keeps_its_import_contracts():
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for contract in ("imports run one way", "no import cycle", "private names"):
        assert contract in result.stdout
    assert "BROKEN" not in result.stdout


def test_the_contracts_catch_an_upward_import_a_cycle_and_a_private_name(tmp_path):
    # a two-layer package that breaks each contract once
    package = tmp_path / "layered"
    for name, text in {
        "__init__.py": "",
        "top.py": "",
        "low/__init__.py": "",
        "low/a.py": "from layered import top\nfrom layered.low.b import _secret\n",
        "low/b.py": "from layered.low import a\n_secret = 1\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    config = tmp_path / "contracts.toml"
    config.write_text("""
[tool.importlinter]
root_package = "layered"
contract_types = ["private_names: devtools.import_contracts.PrivateNamesContract"]

[[tool.importlinter.contracts]]
name = "layers"
type = "layers"
containers = ["layered"]
layers = ["top", "low"]

[[tool.importlinter.contracts]]
name = "acyclic"
type = "acyclic_siblings"
ancestors = ["layered", "layered.**"]

[[tool.importlinter.contracts]]
name = "private"
type = "private_names"
packages = ["layered"]
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = lint_imports("--config", str(config), cwd=ROOT, env=env)
    assert result.returncode != 0
    out = result.stdout
    assert "Contracts: 0 kept, 3 broken." in out, out[-3000:]
    assert "layered.low.a -> layered.top" in out
    assert "imports the private name _secret of" in out


def _modules():
    for path in sorted((ROOT / "zoo").rglob("*.py")):
        yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"))


def _imports_in_functions(tree: ast.Module):
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    yield from (alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    yield ("." * node.level) + (node.module or "")


@pytest.mark.parametrize("path,tree", list(_modules()), ids=lambda v: str(v) if isinstance(
    v, Path) else "")
def test_imports_inside_functions_only_defer_third_party_libraries(path, tree):
    # zoo's own modules are imported at the top: an import hidden in a function to dodge a
    # cycle would mean the layout is wrong
    inside = [name for name in _imports_in_functions(tree) if not is_deferred(name)]
    assert inside == [], f"{path} imports {inside} inside a function"


def test_the_public_entry_points_of_earlier_releases_still_import():
    from zoo.evaluate.lm_eval import ZooLM
    from zoo.harness.lm_eval_adapter import ZooLM as OldZooLM
    from zoo.harness.probe import probe_model as old_probe_model
    from zoo.models.gpt2 import load_hf_gpt2  # noqa: F401
    from zoo.registry import ACTS  # noqa: F401
    from zoo.registry.acts import register_formula  # noqa: F401
    from zoo.tools.probe import probe_model

    assert old_probe_model is probe_model and OldZooLM is ZooLM
