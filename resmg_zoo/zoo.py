"""The timm registration of every model, each with a cfg per dataset tag.

``{resnet18, resnet34, preact_resnet18, preact_resnet34}_{unshared, sharedA, sharedB, sharedAB}``,
``fresnet18`` and ``mgnet`` (SPEC §2; :mod:`resmg_zoo.variants` says what each name means).
Importing this module registers them with timm, so ``timm.create_model(name)`` works after
``import resmg_zoo``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, Optional

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from .loading import fit_state_dict
from .manifest import load_manifest, repo_manifest_path
from .pretrained import ResolvedWeights, find_published, resolve_weights
from .tags import DEFAULT_TAG, LICENSE, PAPER_ID, TAGS, pool_size, resolve_tag
from .variants import VARIANTS


def _cfg(model: str, tag: str) -> dict[str, Any]:
    info = TAGS[tag]
    entry = _REPO_ENTRIES.get((model, tag))
    return {
        # Only a tag whose weights the repository's manifest lists carries a hub id, so that
        # timm.list_pretrained() lists real weights only; every other tag stays creatable.
        "hf_hub_id": entry["hub_id"] if entry else None,
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


_REPO_ENTRIES = {(e["model"], e["tag"]): e for e in reversed(load_manifest(repo_manifest_path())["entries"])}
default_cfgs = generate_default_cfgs({f"{name}.{tag}": _cfg(name, tag) for name in VARIANTS for tag in TAGS})
for _default in default_cfgs.values():
    # ``create_model(name)`` without a tag builds the CIFAR-10 model even where only another tag has
    # weights (timm makes the first tag with weights the default, and a '*' tag without any loses to it).
    _default.tags.remove(DEFAULT_TAG)
    _default.tags.appendleft(DEFAULT_TAG)


def create_variant(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered variant through timm's builder, published weights included.

    With ``pretrained=True`` and no weight source of the caller's (``pretrained_cfg_overlay=dict(file=...)``,
    ``local-dir:``), the published weights of the tag (or of the ``hf-hub:`` id) are resolved and
    sha256-checked by :mod:`resmg_zoo.pretrained`, the architecture takes the published ``model_args``
    (the caller's kwargs win), and timm's own ``load_pretrained`` loads the verified file: a
    ``num_classes`` unlike the file's gets a new head, an ``in_chans`` unlike it an adapted stem,
    and ``features_only``/``out_indices``/``feature_cls``/``global_pool`` work as without weights.
    An ``hf-hub:`` id that no manifest lists is loaded as timm loads it, with a warning.
    """
    spec = VARIANTS[variant]
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    tag = resolve_tag(pretrained_cfg)  # an unknown tag fails here, naming the valid ones
    args = spec.model_args()
    where = f"the weights of {variant}.{tag}"
    if pretrained:
        resolved = _published_weights(variant, tag, pretrained_cfg, overlay)
        if resolved is not None:
            overlay |= resolved.cfg_overlay()
            args |= resolved.architecture_args
            where = resolved.describe()
        elif overlay.get("file"):
            where = f"{variant}.{tag} from {overlay['file']}"
    return build_model_with_cfg(
        spec.model_cls,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=overlay or None,
        feature_cfg=dict(feature_cls="getter") if spec.feature_cls == "getter" else dict(flatten_sequential=True),
        pretrained_filter_fn=partial(_check_fit, where=where),
        **{**args, **kwargs},
    )


def _published_weights(
    variant: str, tag: str, pretrained_cfg: Any, overlay: dict[str, Any]
) -> Optional[ResolvedWeights]:
    """The verified published file, or ``None`` where the caller names the weights' source."""
    source = _cfg_value(pretrained_cfg, "source")
    if overlay.get("file") or overlay.get("state_dict") or source == "local-dir":
        return None
    if overlay.get("hf_hub_id"):  # the caller names the Hub repo
        return resolve_weights(variant, tag, overlay["hf_hub_id"])
    if source == "hf-hub":
        hub = _cfg_value(pretrained_cfg, "hf_hub_id")
        if find_published(variant, tag, hub) is None:
            warnings.warn(
                f"hf-hub:{hub} is not in any resmg_zoo weights manifest: loading it as timm does, with no sha256 check",
                stacklevel=3,
            )
            return None
        return resolve_weights(variant, tag, hub)
    return resolve_weights(variant, tag)


def _check_fit(state: dict[str, Any], model: nn.Module, where: str) -> dict[str, Any]:
    """timm's ``pretrained_filter_fn``: a clear error for a file that does not fit (see ``fit_state_dict``)."""
    fit_state_dict(state, model, where)
    return state


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
