"""Resolution and loading of published weights for ``pretrained=True`` (SPEC §3).

Order: an explicit path (``pretrained_cfg_overlay=dict(file=...)``, a file or a published folder)
→ the mirror ``$RESMG_ZOO_HUB_DIR/<hub id>/`` (with its ``weights_manifest.json``) → the Hugging
Face Hub through ``huggingface_hub`` (its cache; ``HF_HUB_OFFLINE`` honoured). Every file a
manifest lists is checked against its sha256 before it is read; only safetensors are ever loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import load_file
from torch import nn

from .hashing import file_sha256
from .manifest import MANIFEST_NAME, find_entry, load_manifest, repo_manifest_path
from .tags import DEFAULT_TAG, get_tag, hub_id

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class PretrainedWeightsUnavailable(RuntimeError):
    """No published weights for the model and tag could be found; the message lists where it looked."""


class WeightsIntegrityError(RuntimeError):
    """A weights file whose sha256 or contents do not match what was published."""


@dataclass
class ResolvedWeights:
    """A verified weights file and what was published with it."""

    model: str
    tag: str
    hub_id: str
    weights: Path
    source: str
    config: dict[str, Any] = field(default_factory=dict)
    entry: Optional[dict[str, Any]] = None

    @property
    def model_args(self) -> dict[str, Any]:
        if self.config.get("model_args"):
            args = dict(self.config["model_args"])
            args.setdefault("num_classes", self.config.get("num_classes"))
            return {k: v for k, v in args.items() if v is not None}
        return dict(self.entry["model_args"]) if self.entry else {}


def resolve_tag(pretrained_cfg: Union[str, dict, Any, None]) -> str:
    """The dataset tag a ``pretrained_cfg`` argument names (timm passes the ``.tag`` as a string)."""
    if pretrained_cfg is None or pretrained_cfg == "":
        return DEFAULT_TAG
    if isinstance(pretrained_cfg, str):
        return get_tag(pretrained_cfg).name
    tag = pretrained_cfg.get("tag") if isinstance(pretrained_cfg, dict) else getattr(pretrained_cfg, "tag", None)
    return get_tag(tag).name if tag else DEFAULT_TAG


def hub_dir() -> Optional[Path]:
    value = os.environ.get("RESMG_ZOO_HUB_DIR")
    return Path(value).expanduser() if value else None


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    """The mirror's manifest (if any) first, then the repository's."""
    paths = []
    mirror = hub_dir()
    if mirror is not None:
        paths.append(mirror / MANIFEST_NAME)
    paths.append(repo_manifest_path())
    return [(p, load_manifest(p)) for p in paths if p.exists()]


def published_entry(hub: str) -> Optional[dict[str, Any]]:
    for _path, manifest in _manifests():
        entry = find_entry(manifest, hub)
        if entry is not None:
            return entry
    return None


def verify_sha256(path: Path, entry: dict[str, Any], model: str, tag: str, looked: list[str]) -> None:
    actual = file_sha256(path)
    if actual != entry["sha256"]:
        size = path.stat().st_size
        raise WeightsIntegrityError(
            f"sha256 mismatch for {model}.{tag}: {path} has sha256 {actual} ({size:,} bytes) but the manifest "
            f"entry of {entry['hub_id']} says {entry['sha256']} ({entry['bytes']:,} bytes). The file is corrupt, "
            f"truncated or not the published one; delete it and fetch it again. Looked in: {'; '.join(looked)}"
        )


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def resolve_weights(
    model: str, tag: str, hub: Optional[str] = None, explicit: Optional[Union[str, Path]] = None
) -> ResolvedWeights:
    """Find and verify the weights of ``model.tag`` in SPEC §3's order."""
    hub = hub or hub_id(model, tag)
    entry = published_entry(hub)
    looked: list[str] = []
    if explicit:
        path = Path(explicit).expanduser()
        looked.append(f"explicit path {path}")
        folder, weights = (path, path / WEIGHTS_NAME) if path.is_dir() else (path.parent, path)
        if not weights.exists():
            raise PretrainedWeightsUnavailable(f"weights for {model}.{tag} not found: {weights} does not exist")
        return ResolvedWeights(
            model, tag, hub, weights, f"file:{weights}", _read_config(folder) if path.is_dir() else {}
        )
    mirror = hub_dir()
    if mirror is not None:
        folder = mirror / hub
        looked.append(f"mirror {folder} (RESMG_ZOO_HUB_DIR)")
        if (folder / WEIGHTS_NAME).exists():
            if entry is None:
                raise PretrainedWeightsUnavailable(
                    f"{folder / WEIGHTS_NAME} exists but no weights manifest lists {hub} "
                    f"(looked in {mirror / MANIFEST_NAME} and {repo_manifest_path()}), so its sha256 cannot be checked"
                )
            verify_sha256(folder / WEIGHTS_NAME, entry, model, tag, looked)
            return ResolvedWeights(
                model, tag, hub, folder / WEIGHTS_NAME, f"mirror:{folder}", _read_config(folder), entry
            )
    looked.append(f"the Hugging Face Hub repo {hub}")
    if entry is None:
        raise PretrainedWeightsUnavailable(
            f"no pretrained weights are published for {model}.{tag}: no weights manifest lists {hub}. "
            f"Looked in: {'; '.join(looked)}; manifests read: "
            f"{', '.join(str(p) for p, _ in _manifests()) or 'none'}. Train the model with "
            f"`python -m resmg_zoo.train --model {model} --dataset {tag}` or pass "
            "pretrained_cfg_overlay=dict(file='model.safetensors')."
        )
    weights, config = _download(hub, model, tag, looked)
    verify_sha256(weights, entry, model, tag, looked)
    return ResolvedWeights(model, tag, hub, weights, f"hf-hub:{hub}", config, entry)


def _download(hub: str, model: str, tag: str, looked: list[str]) -> tuple[Path, dict[str, Any]]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        weights = Path(hf_hub_download(repo_id=hub, filename=WEIGHTS_NAME))
        config_path = Path(hf_hub_download(repo_id=hub, filename=CONFIG_NAME))
    except LocalEntryNotFoundError as err:
        raise PretrainedWeightsUnavailable(
            f"the weights of {model}.{tag} are not in the local Hugging Face cache and the Hub cannot be reached "
            f"({type(err).__name__}; HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Looked in: "
            f"{'; '.join(looked)}. To get them: go online once (they are cached), or download the folder "
            f"{hub} and point RESMG_ZOO_HUB_DIR at the folder that holds it."
        ) from None
    except (HfHubHTTPError, OSError) as err:
        raise PretrainedWeightsUnavailable(
            f"could not download {model}.{tag} from the Hub repo {hub}: {err}. Looked in: {'; '.join(looked)}"
        ) from None
    return weights, json.loads(config_path.read_text(encoding="utf-8"))


def load_published_state(
    model: nn.Module,
    resolved: ResolvedWeights,
    first_conv: str = "conv1",
    classifier: str = "fc",
    skip: Collection[str] = (),
) -> dict[str, Any]:
    """Load the verified weights into ``model`` as timm fine-tunes: a head of another size is left
    new, a stem for other input channels is adapted (timm's ``adapt_input_conv``); keys in ``skip``
    keep the model's own initialisation. Any other missing or unexpected key is an error naming the
    file. Returns ``new_head`` (the head keys left new) and ``stem_adapted``."""
    from timm.models import adapt_input_conv

    where = f"{resolved.model}.{resolved.tag} from {resolved.weights}"
    try:
        state = load_file(str(resolved.weights))
    except Exception as err:
        raise WeightsIntegrityError(f"{where} is not a readable safetensors file: {err}") from None
    target = model.state_dict()
    for key in skip:
        state.pop(key, None)
    new_head = []
    for key in (f"{classifier}.weight", f"{classifier}.bias"):
        if key in state and (key not in target or state[key].shape != target[key].shape):
            state.pop(key)
            new_head.append(key)
    stem = f"{first_conv}.weight"
    stem_adapted = stem in state and stem in target and state[stem].shape[1] != target[stem].shape[1]
    if stem_adapted:
        have, want = state[stem].shape[1], target[stem].shape[1]
        if have == 1:
            state[stem] = state[stem].repeat(1, want, 1, 1) / want
        else:
            state[stem] = adapt_input_conv(want, state[stem])
    missing = [k for k in target if k not in state and k not in new_head and k not in skip]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        raise WeightsIntegrityError(
            f"{where} does not fit the model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return dict(new_head=new_head, stem_adapted=stem_adapted)
