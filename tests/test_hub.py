"""torch.hub: list/help/load of hubconf.py for every registered model, through torch.hub's own code."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest
import tomllib
import torch
import torch.hub
from conftest import MODEL_NAMES, REPO_ROOT

from resmg_zoo import NotPublishedError
from resmg_zoo.core.counting import param_count
from resmg_zoo.models.variants import VARIANTS


@pytest.fixture
def hub_repo(monkeypatch: pytest.MonkeyPatch) -> str:
    """torch.hub.list/help only take "owner/repo" and download it; stand in for the download with
    this checkout, so everything after the fetch (importing hubconf, reading entry points) is real."""
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(REPO_ROOT))
    return "resmg-zoo/resmg_zoo"


def test_list_names_every_model(hub_repo: str) -> None:
    assert sorted(torch.hub.list(hub_repo)) == sorted(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_help_and_load(hub_repo: str, name: str) -> None:
    doc = torch.hub.help(hub_repo, name)
    assert doc.startswith(VARIANTS[name].paper_name) and "dataset" in doc
    assert f"cifar10 head: {param_count(name):,}" in doc
    model = torch.hub.load(str(REPO_ROOT), name, source="local")
    assert model.num_classes == 10 and model.in_chans == 3
    mnist = torch.hub.load(str(REPO_ROOT), name, source="local", dataset="mnist")
    assert mnist.in_chans == 1
    assert mnist.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert torch.hub.load(str(REPO_ROOT), name, source="local", dataset="cifar100").num_classes == 100


def test_kwargs_pass_through() -> None:
    model = torch.hub.load(str(REPO_ROOT), "resnet18_unshared", source="local", num_classes=5, share="A")
    assert model.num_classes == 5 and model.share == "A"


def test_pretrained_true_for_an_unpublished_tag_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESMG_ZOO_HUB_DIR", raising=False)
    with pytest.raises(NotPublishedError, match=r"no pretrained weights are published for .*\.cifar100"):
        torch.hub.load(str(REPO_ROOT), "preact_resnet34_sharedB", source="local", pretrained=True, dataset="cifar100")


def test_unknown_dataset_lists_the_tags() -> None:
    with pytest.raises(ValueError, match=r"cifar10.*cifar100.*mnist"):
        torch.hub.load(str(REPO_ROOT), "resnet18_sharedA", source="local", dataset="imagenet")


def test_hubconf_declares_importable_dependencies_before_importing_the_package() -> None:
    """torch.hub checks ``dependencies`` before it runs the rest of hubconf: the list must be assigned
    before the first import of resmg_zoo, and every name in it must be a declared, importable package."""
    tree = ast.parse(Path(REPO_ROOT, "hubconf.py").read_text())
    statements = list(tree.body)
    declared = next(
        i for i, n in enumerate(statements) if isinstance(n, ast.Assign) and n.targets[0].id == "dependencies"
    )
    first_import = next(
        i
        for i, n in enumerate(statements)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        and any("resmg_zoo" in (getattr(n, "module", None) or a.name) for a in n.names)
    )
    assert declared < first_import
    names = ast.literal_eval(statements[declared].value)
    requirements = tomllib.loads(Path(REPO_ROOT, "pyproject.toml").read_text())["project"]["dependencies"]
    required = {re.split(r"[<>=\s]", r)[0].replace("-", "_").lower() for r in requirements}
    for name in names:
        assert name.lower() in required, f"{name} is not a dependency in pyproject.toml"
        importlib.import_module(name)
    torch.hub._check_dependencies(importlib.import_module("hubconf"))  # torch.hub's own check passes


def test_importing_hubconf_builds_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points carry their docstrings lazily: importing hubconf counts no parameters, builds no model."""
    import resmg_zoo.models.hub as hub

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a model was built while importing hubconf")

    monkeypatch.setattr(hub, "param_count", refuse)
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    monkeypatch.delitem(sys.modules, "hubconf", raising=False)
    module = importlib.import_module("hubconf")
    assert callable(module.preact_resnet18_sharedA)
    with pytest.raises(AssertionError, match="while importing hubconf"):
        module.preact_resnet18_sharedA.__doc__  # noqa: B018  (the first read builds the docstring)
