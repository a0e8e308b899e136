"""What the model families share around timm's builder: a pretrained cfg per dataset tag, and the
build itself with the published weights (docs/contract.md §2, docs/weights.md).

Every registered name gets a cfg per tag of :data:`resmg_zoo.core.tags.TAGS` (``.cifar10`` the
default). Only a tag that the repository's ``weights_manifest.json`` lists carries a hub id, so
``timm.list_pretrained()`` lists real weights only; every tag stays creatable.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, Optional, TypeVar

from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from ..core.tags import DEFAULT_TAG, LICENSE, PAPER_ID, PAPER_TITLE, TAGS, pool_size, resolve_tag
from ..weights.loading import fit_state_dict
from ..weights.manifest import load_manifest, repo_manifest_path
from ..weights.resolve import (
    ResolvedWeights,
    find_published,
    resolve_weights,
    split_revision,
    verify_local_file,
    verify_local_folder,
    warn_unchecked,
)

ModelT = TypeVar("ModelT", bound=nn.Module)


def _cfg(model: str, tag: str, entries: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    info = TAGS[tag]
    entry = entries.get((model, tag))
    return {
        "hf_hub_id": entry["hub_id"] if entry else None,
        "num_classes": info.num_classes,
        "input_size": info.input_size,
        "pool_size": pool_size(info.input_size),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": info.mean,
        "std": info.std,
        "label_names": info.label_names,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": LICENSE,
        "paper_ids": PAPER_ID,
        "paper_name": PAPER_TITLE,
        "origin_url": "https://arxiv.org/abs/1911.10428",
    }


def tagged_cfgs(names: Iterable[str]) -> dict[str, Any]:
    """timm's ``default_cfgs`` for ``names``: one cfg per tag, ``.cifar10`` first (the default)."""
    published = load_manifest(repo_manifest_path())["entries"]
    entries = {(e["model"], e["tag"]): e for e in reversed(published)}  # the first listed wins
    cfgs = generate_default_cfgs({f"{name}.{tag}": _cfg(name, tag, entries) for name in names for tag in TAGS})
    for default in cfgs.values():
        # ``create_model(name)`` without a tag builds the CIFAR-10 model even where only another tag has
        # weights (timm makes the first tag with weights the default, and a '*' tag without any loses to it).
        default.tags.remove(DEFAULT_TAG)
        default.tags.appendleft(DEFAULT_TAG)
    return cfgs


def build_zoo_model(
    model_cls: type[ModelT], variant: str, pretrained: bool, family_feature_cfg: dict[str, Any], **kwargs: Any
) -> ModelT:
    """Build ``variant`` through timm's ``build_model_with_cfg``, published weights included.

    With ``pretrained=True`` the published weights are resolved and sha256-checked by
    :mod:`resmg_zoo.weights.resolve` whichever way they are named: the tag's, an ``hf-hub:<id>[@rev]``
    name or an overlay's ``hf_hub_id``, a ``local-dir:`` folder or an overlay ``file`` whose hub id a
    manifest lists. Their tensors — parsed from the bytes that were hashed — go to timm's own
    ``load_pretrained``; the architecture is the manifest's ``model_args`` under the caller's own
    kwargs (a value that only a fetched ``config.json`` gave is not taken), and for a listed
    ``hf-hub:``/``local-dir:`` id the package's cfg of the entry's tag replaces the fetched one. timm
    then adapts the head (``num_classes``) and stem (``in_chans``), and ``features_only``/``out_indices``/
    ``feature_cls``/``global_pool`` work as without weights. A caller's ``feature_cfg`` is merged over
    the family's ``family_feature_cfg``. A source that no manifest lists (the caller's own file or
    tensors, an unlisted ``hf-hub:`` id) is loaded as timm loads it (unlisted ids with a warning).
    A file that does not fit is an error naming it (``fit_state_dict``).
    """
    feature_cfg = {**family_feature_cfg, **(kwargs.pop("feature_cfg", None) or {})}  # the caller's keys win
    pretrained_cfg = kwargs.pop("pretrained_cfg", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    fetched_args = kwargs.pop("pretrained_model_args", None) or {}  # a fetched config.json's model_args (timm)
    tag = resolve_tag(pretrained_cfg)  # an unknown tag fails here, naming the valid ones
    where = f"the weights of {variant}.{tag}"
    if pretrained:
        resolved = _published_weights(variant, tag, pretrained_cfg, overlay, kwargs.get("cache_dir"))
        if resolved is not None:
            if _cfg_value(pretrained_cfg, "source") in ("hf-hub", "local-dir"):
                pretrained_cfg = resolved.tag  # the package's cfg of the tag, not one read from the fetched files
            overlay = {k: v for k, v in overlay.items() if k not in ("file", "hf_hub_id")} | resolved.cfg_overlay()
            kwargs = resolved.model_kwargs(kwargs, fetched_args)
            fetched_args = dict(resolved.published.entry["model_args"])
            where = resolved.describe()
        elif overlay.get("file"):
            where = f"{variant}.{tag} from {overlay['file']}"
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_cfg_overlay=overlay or None,
        feature_cfg=feature_cfg,
        pretrained_filter_fn=partial(_check_fit, where=where),
        pretrained_model_args=fetched_args or None,
        **kwargs,
    )
    for cfg in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None)):
        if isinstance(cfg, dict):
            cfg.pop("state_dict", None)  # loaded: the model keeps no second copy of its weights in its cfg
    return model


def _published_weights(
    variant: str, tag: str, pretrained_cfg: Any, overlay: dict[str, Any], cache_dir: Any = None
) -> Optional[ResolvedWeights]:
    """The verified published tensors, or ``None`` where the caller names a source no manifest lists
    (their own tensors or file, an unlisted ``hf-hub:`` id or ``local-dir:`` folder)."""
    source = _cfg_value(pretrained_cfg, "source")
    if overlay.get("state_dict") is not None:
        return None
    if source == "local-dir":
        folder = Path(_cfg_value(pretrained_cfg, "file"))
        resolved = verify_local_folder(variant, folder, _cfg_value(pretrained_cfg, "hf_hub_id"))
        if resolved is None:
            warn_unchecked(f"local-dir:{folder}", stacklevel=4)
        return resolved
    hub = overlay.get("hf_hub_id")
    if overlay.get("file"):  # the caller's file: checked where it claims to be a listed id
        if hub and find_published(variant, tag, hub) is not None:
            return verify_local_file(variant, Path(overlay["file"]), split_revision(hub)[0], f"file {overlay['file']}")
        return None
    if hub:  # the caller names the Hub repo
        return resolve_weights(variant, tag, hub, cache_dir)
    if source == "hf-hub":
        hub = _cfg_value(pretrained_cfg, "hf_hub_id")
        if find_published(variant, tag, hub) is None:
            warn_unchecked(f"hf-hub:{hub}", stacklevel=4)
            return None
        return resolve_weights(variant, tag, hub, cache_dir)
    return resolve_weights(variant, tag, cache_dir=cache_dir)


def _check_fit(state: dict[str, Any], model: nn.Module, where: str) -> dict[str, Any]:
    """timm's ``pretrained_filter_fn``: a clear error for a file that does not fit."""
    fit_state_dict(state, model, where)
    return state


def _cfg_value(cfg: Any, key: str) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(key)
    return getattr(cfg, key, None)
