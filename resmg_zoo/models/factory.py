"""The package's door to a model by name: ``resmg_zoo.create_model`` and every command that takes a name.

A registered ``name[.tag]`` goes to timm as it is. An ``hf-hub:<id>[@<revision>]`` or ``local-dir:<folder>``
name whose hub id a manifest lists is built from the **manifest**, not from the ``config.json`` that
came with the files: timm's own ``create_model("hf-hub:…")`` picks the entry point that the fetched
config's ``architecture`` names (from the Hub's ``main`` unless a revision is given), so a config naming
another model (a plain ``resnet18``, say) would build that model and load the file unchecked. Here the
entry's architecture, tag and ``model_args`` are taken, the revision is checked before it is used, and
the weights are verified by their sha256 (:mod:`resmg_zoo.models.builder`); a ``local-dir:`` folder whose
config names another architecture than its listed hub id is refused. An id that no manifest lists is
left to timm, with a warning that nothing is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from safetensors import SafetensorError
from torch import nn

from ..core.choices import check_choice
from ..core.errors import UsageError
from ..core.files import read_json_object
from ..core.sources import HUB_PREFIXES, LOCAL_PREFIX
from ..core.tags import check_hub_id
from ..weights.hub_download import hub_errors
from ..weights.manifest import WEIGHTS_NAME
from ..weights.resolve import check_architecture, configured_hub_id, find_published, split_revision, warn_unchecked
from .variants import VARIANTS


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``name``: a registered ``model[.tag]`` (an unknown one lists the close valid names), or an
    ``hf-hub:``/``local-dir:`` name, verified against the manifest where it lists the id (module docstring)."""
    if name.startswith(HUB_PREFIXES):
        return _from_hub(name.split(":", 1)[1], pretrained, kwargs)
    if name.startswith(LOCAL_PREFIX):
        return _from_folder(Path(name[len(LOCAL_PREFIX) :]).expanduser(), pretrained, kwargs)
    check_choice("model", name.split(".", 1)[0], VARIANTS)
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def _from_hub(hub: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    repo_id, _ = split_revision(hub)  # the revision is checked before anything uses it
    check_hub_id(repo_id, f"the hub id of hf-hub:{hub}")  # before it reaches a URL or a cache path
    found = find_published(None, None, repo_id)
    if found is None:
        warn_unchecked(f"hf-hub:{hub}")
        with hub_errors(f"hf-hub:{hub}"):  # timm fetches its config.json (and weights) through huggingface_hub
            return timm.create_model(f"hf-hub:{hub}", pretrained=pretrained, **kwargs)
    entry = found.entry
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {}, hf_hub_id=hub)
    return _build(entry, pretrained, overlay, kwargs)


def _from_folder(folder: Path, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    config_file = folder / "config.json"
    config = read_json_object(config_file, f"local-dir:{folder}: its config")
    hub = configured_hub_id(config)
    found = find_published(None, None, split_revision(hub)[0]) if hub is not None else None
    if found is None:  # the user's own folder: a zoo architecture, its safetensors (never a pickle), unchecked
        check_choice(f"architecture in {config_file}", str(config.get("architecture")), VARIANTS)
        if pretrained and not (folder / WEIGHTS_NAME).is_file():
            raise UsageError(f"local-dir:{folder} has no {WEIGHTS_NAME}: only safetensors weights are read")
        warn_unchecked(f"local-dir:{folder}")
        try:
            return timm.create_model(f"local-dir:{folder}", pretrained=pretrained, **kwargs)
        except SafetensorError as err:  # timm reads the folder's weights: bytes that are no safetensors file
            raise UsageError(f"local-dir:{folder}: {WEIGHTS_NAME} is not a safetensors file ({err})") from None
    check_architecture(found, str(config.get("architecture")), f"{config_file}")
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {}, hf_hub_id=found.hub_id)
    overlay["file"] = str(folder / WEIGHTS_NAME)
    return _build(found.entry, pretrained, overlay, kwargs)


def _build(entry: dict[str, Any], pretrained: bool, overlay: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    """The entry's architecture (its ``model_args`` under the caller's kwargs) and, with ``pretrained``,
    its weights from where ``overlay`` says, verified by the builder."""
    args = {k: v for k, v in entry["model_args"].items() if k not in ("num_classes", "in_chans")}
    name = f"{entry['model']}.{entry['tag']}"
    if not pretrained:
        return timm.create_model(name, **{**args, **kwargs})
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
