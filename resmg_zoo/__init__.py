"""resmg_zoo: the models of *Constrained Linear Data-feature Mapping for Image Classification*.

``import resmg_zoo`` registers every model with timm; then ``timm.create_model(name)`` or
:func:`resmg_zoo.create_model` builds it.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from .choices import FORM_CHOICES, POOL_BLOCK_CHOICES, SHARE_CHOICES
from .fresnet import FResNet, FResNetLevel
from .loading import WeightsIntegrityError
from .pretrained import PretrainedWeightsUnavailable
from .resmg_resnet import ResMgLevel, ResMgResNet
from .tags import TAGS
from .variants import VARIANTS
from .zoo import default_cfgs  # noqa: F401  (importing it registers every model with timm)

__version__ = "0.1.0"


def list_models() -> list[str]:
    """Every model name this package registers with timm."""
    return list(VARIANTS)


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``name`` (optionally ``name.tag``); an unknown name lists the close valid ones."""
    arch = name.split(".", 1)[0]
    if arch not in list_models():
        from .choices import check_choice

        check_choice("model", arch, list_models())
    return timm.create_model(name, pretrained=pretrained, **kwargs)


__all__ = [
    "FORM_CHOICES",
    "POOL_BLOCK_CHOICES",
    "SHARE_CHOICES",
    "TAGS",
    "FResNet",
    "FResNetLevel",
    "PretrainedWeightsUnavailable",
    "ResMgLevel",
    "ResMgResNet",
    "WeightsIntegrityError",
    "create_model",
    "list_models",
]
