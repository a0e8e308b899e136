"""The package's architecture, checked: layers import only the layers below them, ``import resmg_zoo``
loads the models alone, and the tools' extras stay optional."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

LAYERS = ("core", "weights", "models", "data", "train", "tools")
PACKAGE = REPO_ROOT / "resmg_zoo"


def _imported_layers(path) -> set[str]:
    """The subpackages of resmg_zoo that a module imports (relative or absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(PACKAGE).parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:-1])[: len(here) - node.level]  # the package the dots name
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("resmg_zoo"):
                parts = node.module.split(".")[1:]
            else:
                continue
            names = [parts[0]] if parts else [alias.name for alias in node.names]
            found |= {n for n in names if n in LAYERS}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("resmg_zoo.")} & set(LAYERS)
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    modules = sorted((PACKAGE / layer).glob("*.py"))
    assert modules
    wrong = {p.name: sorted(_imported_layers(p) - allowed) for p in modules if _imported_layers(p) - allowed}
    assert not wrong, f"{layer} imports higher layers: {wrong}"


def test_every_module_is_in_a_layer() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py"], f"modules outside the layers: {top}"


def test_import_resmg_zoo_loads_the_models_only() -> None:
    code = (
        "import sys, resmg_zoo, timm; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('resmg_zoo.')})); "
        "print('matplotlib' in sys.modules, len(set(timm.list_models()) & set(resmg_zoo.list_models())))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    layers, extras = done.stdout.strip().splitlines()
    assert layers == str(["core", "models", "weights"])
    assert extras == "False 18"  # every model registered, no plotting library loaded
