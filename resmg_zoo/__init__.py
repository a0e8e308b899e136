"""resmg_zoo: the models of *Constrained Linear Data-feature Mapping for Image Classification*.

``import resmg_zoo`` registers every model with timm; then ``timm.create_model(name)`` or
:func:`resmg_zoo.create_model` builds it. It imports the models and their weights only; the data,
training and tools subpackages load when used. Layers, lowest first (a layer imports only those
below it): ``core`` → ``weights`` → ``models`` → ``data`` → ``train`` → ``tools``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .core.errors import BusyError, IntegrityError, ResmgError, UnavailableError, UsageError
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
from .models.factory import create_model as _create_model
from .weights.hub_download import NotPublishedError, PretrainedWeightsUnavailable
from .weights.loading import WeightsIntegrityError, WeightsMismatchError

__version__ = "0.1.0"


def list_models() -> list[str]:
    """Every model name this package registers with timm."""
    return list(VARIANTS)


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``name`` (optionally ``name.tag``; an unknown name lists the close valid ones), or an
    ``hf-hub:<id>[@rev]``/``local-dir:<folder>`` name, which is built from the manifest's entry for its
    id and verified whatever the fetched ``config.json`` says (:mod:`resmg_zoo.models.factory`)."""
    return _create_model(name, pretrained=pretrained, **kwargs)


__all__ = [
    "FORM_CHOICES",
    "POOL_BLOCK_CHOICES",
    "SHARE_CHOICES",
    "TAGS",
    "BusyError",
    "FResNet",
    "FResNetLevel",
    "IntegrityError",
    "NotPublishedError",
    "PretrainedWeightsUnavailable",
    "ResMgLevel",
    "ResMgResNet",
    "ResmgError",
    "UnavailableError",
    "UsageError",
    "WeightsIntegrityError",
    "WeightsMismatchError",
    "create_model",
    "list_models",
]
