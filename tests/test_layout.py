"""The package's architecture, checked: layers import only the layers below them, ``import resmg_zoo``
loads the models alone, and the tools' extras stay optional."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

LAYERS = ("core", "weights", "models", "data", "inference", "train", "tools")
PACKAGE = REPO_ROOT / "resmg_zoo"


# What importing the package itself loads (``resmg_zoo/__init__.py``): a module that imports a name from
# the package root (``from .. import create_model``, ``import resmg_zoo``) imports these layers.
ROOT_LAYERS = {"core", "weights", "models"}


def _imported_layers(path, package=PACKAGE) -> set[str]:
    """The subpackages of resmg_zoo that a module imports (relative or absolute), the package root's
    own imports included where it imports from the root."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(package).parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:-1])[: len(here) - node.level]  # the package the dots name
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "resmg_zoo":
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found |= {parts[0]} & set(LAYERS)
            else:  # from the package root: a layer by name, or a name the root's __init__ imports
                names = {alias.name for alias in node.names}
                found |= (names & set(LAYERS)) | (ROOT_LAYERS if names - set(LAYERS) else set())
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "resmg_zoo":
                    found |= ({parts[1]} & set(LAYERS)) if len(parts) > 1 else ROOT_LAYERS
    return found


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from .. import create_model\n", {"core", "weights", "models"}),
        ("from .. import tools\n", {"tools"}),
        ("from ..train.run import Run\n", {"train"}),
        ("import resmg_zoo\n", {"core", "weights", "models"}),
        ("from resmg_zoo import data\n", {"data"}),
        ("import resmg_zoo.tools.classify\n", {"tools"}),
        ("from . import hashing\n", {"core"}),
    ],
)
def test_the_layer_check_sees_every_spelling_of_an_import(tmp_path, source: str, expected: set[str]) -> None:
    module = tmp_path / "resmg_zoo" / "core" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    assert _imported_layers(module, tmp_path / "resmg_zoo") == expected


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    modules = sorted((PACKAGE / layer).rglob("*.py"))  # its rooms too (tools/benchmark/)
    assert modules
    wrong = {
        str(p.relative_to(PACKAGE)): sorted(_imported_layers(p) - allowed)
        for p in modules
        if _imported_layers(p) - allowed
    }
    assert not wrong, f"{layer} imports higher layers: {wrong}"


ROOMS = {"tools/benchmark": "resmg_zoo.tools.benchmark"}  # a room's modules serve it alone


@pytest.mark.parametrize("room", ROOMS)
def test_a_room_is_imported_only_from_inside_it(room: str) -> None:
    """The benchmark's parts (its command, timing, conv ceiling, step profile, report) live in its room, and
    no other module reaches into it: a tool never borrows another tool's helper."""
    inside = PACKAGE / room
    assert sorted(p.name for p in inside.glob("*.py")) == sorted(
        ["__init__.py", "__main__.py", "command.py", "conv_ceiling.py", "report.py", "step_profile.py", "timing.py"]
    )
    outside = [p for p in PACKAGE.rglob("*.py") if inside not in p.parents]
    reaching = [str(p.relative_to(PACKAGE)) for p in outside if "benchmark" in _imported_modules(p)]
    assert not reaching, f"modules outside {room} import it: {reaching}"


def _imported_modules(path) -> set[str]:
    """The last dotted parts of every module ``path`` imports (``benchmark`` for ``from .benchmark import x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= set(node.module.split("."))
        elif isinstance(node, ast.Import):
            names |= {part for alias in node.names for part in alias.name.split(".")}
    return names


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


def _module_imports(path) -> set[str]:
    """The package's modules that ``path`` imports (``resmg_zoo.x.y`` names; a package's ``__init__`` as itself)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = ["resmg_zoo", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = here if here[-1] == "__init__" else here[:-1]
    package = [p for p in package if p != "__init__"]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{alias.name}" for alias in node.names]
            found |= {n for n in [target, *names] if n in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("resmg_zoo"):
            found |= {node.module} & MODULES
    return found - {".".join(here)}


MODULES = {
    ".".join(["resmg_zoo", *p.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
}


def test_no_two_modules_import_each_other() -> None:
    """No circle between modules (``weights/hub_download`` and ``weights/resolve`` once imported each other):
    the import graph of the package's own modules, lazy imports included, has no cycle."""
    graph = {
        ".".join(["resmg_zoo", *p.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__"): {
            m.removesuffix(".__init__") for m in _module_imports(p)
        }
        for p in PACKAGE.rglob("*.py")
    }
    graph = {k: {m for m in v if m in graph and not k.startswith(m + ".")} for k, v in graph.items()}  # a module
    # may import its own package's __init__ (which re-exports it): that is a package, not a circle

    def cycle_from(start: str) -> list[str]:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return []

    cycles = [c for c in (cycle_from(m) for m in sorted(graph)) if c]
    assert not cycles, f"modules that import each other: {cycles[:3]}"
