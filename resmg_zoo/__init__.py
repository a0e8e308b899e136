"""resmg_zoo: the models of *Constrained Linear Data-feature Mapping for Image Classification*.

``import resmg_zoo`` registers every model with timm; then ``timm.create_model(name)`` or
:func:`resmg_zoo.create_model` builds it. It imports the models and their weights only; the data,
training and tools subpackages load when used. Layers, lowest first (a layer imports only those
below it): ``core`` → ``weights`` → ``models`` → ``data`` → ``train`` → ``tools``.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from .core.choices import check_choice
from .core.tags import TAGS
from .models import (  # importing the models registers them with timm
    FORM_CHOICES,
    POOL_BLOCK_CHOICES,
    SHARE_CHOICES,
    VARIANTS,
    FResNet,
    FResNetLevel,
    ResMgLevel,
    ResMgResNet,
)
from .weights.loading import WeightsIntegrityError
from .weights.resolve import PretrainedWeightsUnavailable

__version__ = "0.1.0"


def list_models() -> list[str]:
    """Every model name this package registers with timm."""
    return list(VARIANTS)


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``name`` (optionally ``name.tag``); an unknown name lists the close valid ones."""
    arch = name.split(".", 1)[0]
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
