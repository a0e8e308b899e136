"""torch.hub: list/help/load of hubconf.py for all 16 models, through torch.hub's own code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.hub
from conftest import MODEL_NAMES, REPO_ROOT

from resmg_zoo import PretrainedWeightsUnavailable
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
    with pytest.raises(PretrainedWeightsUnavailable, match=r"no pretrained weights are published for .*\.cifar100"):
        torch.hub.load(str(REPO_ROOT), "preact_resnet34_sharedB", source="local", pretrained=True, dataset="cifar100")


def test_unknown_dataset_lists_the_tags() -> None:
    with pytest.raises(ValueError, match=r"cifar10.*cifar100.*mnist"):
        torch.hub.load(str(REPO_ROOT), "resnet18_sharedA", source="local", dataset="imagenet")


def test_hubconf_declares_dependencies() -> None:
    text = Path(REPO_ROOT, "hubconf.py").read_text()
    assert text.index("dependencies =") < text.index("import resmg_zoo")
