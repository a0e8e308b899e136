"""The pretrained tags (datasets) every model is registered with, and their input statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .choices import check_choice

PAPER_ID = "arXiv:1911.10428"
PAPER_TITLE = "Constrained Linear Data-feature Mapping for Image Classification"
DEFAULT_HUB_ORG = "resmg-zoo"
LICENSE = "mit"


@dataclass(frozen=True)
class DatasetTag:
    """What a ``<model>.<tag>`` checkpoint expects as input and predicts as output."""

    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_chans(self) -> int:
        return self.input_size[0]


# Mean/std are the usual per-channel statistics of each training set (0–1 scale).
TAGS: dict[str, DatasetTag] = {
    "cifar10": DatasetTag("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetTag("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": DatasetTag("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,)),
}
DEFAULT_TAG = "cifar10"


def get_tag(name: str) -> DatasetTag:
    """The tag called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    return TAGS[check_choice("pretrained tag", name, TAGS)]


def resolve_tag(pretrained_cfg: Any) -> str:
    """The tag a ``pretrained_cfg`` argument names: timm passes the ``.tag`` of a name as a string,
    an ``hf-hub:``/``local-dir:`` config as a dict; nothing means the default tag."""
    if pretrained_cfg is None or pretrained_cfg == "":
        return DEFAULT_TAG
    if isinstance(pretrained_cfg, str):
        return get_tag(pretrained_cfg).name
    tag = pretrained_cfg.get("tag") if isinstance(pretrained_cfg, dict) else getattr(pretrained_cfg, "tag", None)
    return get_tag(tag).name if tag else DEFAULT_TAG


def hub_id(model: str, tag: str, org: str = DEFAULT_HUB_ORG) -> str:
    """The Hugging Face Hub repository id ``<org>/<model>.<tag>`` of a published checkpoint."""
    return f"{org}/{model}.{tag}"


def pool_size(input_size: tuple[int, int, int], num_poolings: int = 3) -> tuple[int, int]:
    """Spatial size after ``num_poolings`` stride-2 3×3 convolutions with padding 1 (ceil halving)."""
    h, w = input_size[1:]
    for _ in range(num_poolings):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w
