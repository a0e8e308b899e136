"""The timm registration of every model, each with a cfg per dataset tag.

``{resnet18, resnet34, preact_resnet18, preact_resnet34}_{unshared, sharedA, sharedB, sharedAB}``,
``fresnet18`` and ``mgnet`` (SPEC §2; :mod:`resmg_zoo.variants` says what each name means).
Importing this module registers them with timm, so ``timm.create_model(name)`` works after
``import resmg_zoo``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from timm.models import FeatureListNet, build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import FeatureGetterNet
from torch import nn

from .pretrained import load_published_state, resolve_tag, resolve_weights
from .tags import DEFAULT_HUB_ORG, DEFAULT_TAG, LICENSE, PAPER_ID, TAGS, hub_id, pool_size
from .variants import VARIANTS


def _cfg(model: str, tag: str) -> dict[str, Any]:
    info = TAGS[tag]
    return {
        "hf_hub_id": hub_id(model, tag, DEFAULT_HUB_ORG),
        "num_classes": info.num_classes,
        "input_size": info.input_size,
        "pool_size": pool_size(info.input_size),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": info.mean,
        "std": info.std,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": LICENSE,
        "paper_ids": PAPER_ID,
        "paper_name": "Constrained Linear Data-feature Mapping for Image Classification",
        "origin_url": "https://arxiv.org/abs/1911.10428",
    }


# The default tag comes first: it is what ``create_model(name)`` without a tag resolves to.
_TAG_ORDER = [DEFAULT_TAG] + [t for t in TAGS if t != DEFAULT_TAG]
default_cfgs = generate_default_cfgs({f"{name}.{tag}": _cfg(name, tag) for name in VARIANTS for tag in _TAG_ORDER})


def create_variant(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered variant through timm's builder (cfg resolution, features_only).

    With ``pretrained=True`` the weights are resolved and verified by :mod:`resmg_zoo.pretrained`
    (explicit file → ``RESMG_ZOO_HUB_DIR`` mirror → the Hub), the architecture is rebuilt from the
    published ``model_args`` (caller's kwargs win: another ``num_classes`` gets a new head, another
    ``in_chans`` an adapted stem), and only then is a feature wrapper put around it.
    """
    spec = VARIANTS[variant]
    pretrained_cfg = kwargs.get("pretrained_cfg")
    tag = resolve_tag(pretrained_cfg)  # an unknown tag fails here, naming the valid ones
    if not pretrained:
        return _build(variant, {**spec.model_args(), **kwargs})
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    explicit, hub = overlay.pop("file", None), None
    source = _cfg_value(pretrained_cfg, "source")
    if source == "local-dir":
        explicit = explicit or _cfg_value(pretrained_cfg, "file")
    elif source == "hf-hub":
        hub = _cfg_value(pretrained_cfg, "hf_hub_id")
    resolved = resolve_weights(variant, tag, hub=hub, explicit=explicit)
    features_only = kwargs.pop("features_only", False)
    feature_args = {k: kwargs.pop(k) for k in ("out_indices", "feature_cls") if k in kwargs}
    args = {**spec.model_args(), **resolved.model_args, **kwargs}
    if overlay:
        args["pretrained_cfg_overlay"] = overlay
    model = _build(variant, args)
    load_published_state(model, resolved)
    model.pretrained_cfg = {**model.pretrained_cfg, "hf_hub_id": resolved.hub_id, "resolved_from": resolved.source}
    if features_only:
        out_indices = feature_args.get("out_indices", (0, 1, 2, 3, 4))
        if spec.feature_cls == "getter":
            model = FeatureGetterNet(model, out_indices=out_indices)
        else:
            model = FeatureListNet(model, out_indices=out_indices, flatten_sequential=True)
    return model


def _build(variant: str, args: dict[str, Any]) -> nn.Module:
    spec = VARIANTS[variant]
    feature_cfg = dict(feature_cls="getter") if spec.feature_cls == "getter" else dict(flatten_sequential=True)
    return build_model_with_cfg(spec.model_cls, variant, False, feature_cfg=feature_cfg, **args)


def _cfg_value(cfg: Any, key: str) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(key)
    return getattr(cfg, key, None)


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_variant(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = VARIANTS[name].docstring()
    return entrypoint


for _name in VARIANTS:
    setattr(sys.modules[__name__], _name, register_model(_entrypoint(_name)))
