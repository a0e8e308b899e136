"""Resolution of ``pretrained=True``.

No checkpoint of this zoo is published yet (the weights manifest and the Hub/mirror resolution
come with the weights issue), so asking for pretrained weights raises a clear error — unless the
caller hands timm an explicit source (``pretrained_cfg_overlay=dict(file=...)`` or ``state_dict``),
which timm's own loader then reads.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from .tags import DEFAULT_TAG, get_tag

_EXPLICIT_SOURCES = ("file", "state_dict", "url", "hf_hub_id")


class PretrainedWeightsUnavailable(RuntimeError):
    """Raised when ``pretrained=True`` names weights that do not exist."""


def resolve_tag(pretrained_cfg: Union[str, dict, Any, None]) -> str:
    """The dataset tag a ``pretrained_cfg`` argument names (timm passes the ``.tag`` as a string)."""
    if pretrained_cfg is None or pretrained_cfg == "":
        return DEFAULT_TAG
    if isinstance(pretrained_cfg, str):
        return get_tag(pretrained_cfg).name
    tag = pretrained_cfg.get("tag") if isinstance(pretrained_cfg, dict) else getattr(pretrained_cfg, "tag", None)
    return get_tag(tag).name if tag else DEFAULT_TAG


def require_published_weights(
    model: str,
    pretrained_cfg: Union[str, dict, Any, None],
    pretrained_cfg_overlay: Optional[dict] = None,
) -> None:
    """Raise :class:`PretrainedWeightsUnavailable` unless the caller gave an explicit weight source."""
    overlay = pretrained_cfg_overlay or {}
    if any(overlay.get(k) for k in _EXPLICIT_SOURCES):
        return
    tag = resolve_tag(pretrained_cfg)
    raise PretrainedWeightsUnavailable(
        f"no pretrained weights are published yet for {model}.{tag}: resmg_zoo has released no "
        f"checkpoints so far. Build the model with pretrained=False and train it, or pass your own "
        f"file with timm.create_model('{model}.{tag}', pretrained=True, "
        f"pretrained_cfg_overlay=dict(file='model.safetensors'))."
    )
