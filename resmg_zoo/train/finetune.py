"""Fine-tuning: where a run's initial weights come from, which parameters it freezes, the head's lr.

Initial weights (``python -m resmg_zoo.train --pretrained`` or ``--init-from PATH``):

* ``--pretrained``: the model's published weights for ``--init-tag``, resolved and sha256-checked
  exactly as ``timm.create_model(name + "." + tag, pretrained=True)`` resolves them;
* ``--init-from``: a training run folder (its last verified checkpoint), a published folder
  (``model.safetensors`` + ``config.json``) or a safetensors file.

The head is replaced when the class count differs (``--head auto``), always (``new``) or never
(``keep``: a different class count is then an error); a stem trained for other input channels is
adapted as timm adapts it. Architecture arguments (e.g. ``widths``) come from the source's
config unless the command line sets them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from timm.models import group_parameters
from torch import nn

from ..core.errors import UsageError
from ..core.files import read_json_object
from ..weights.loading import WeightsMismatchError, load_state, parse_state_dict, read_verified
from ..weights.manifest import WEIGHTS_NAME
from ..weights.resolve import listed_hub_id, resolve_weights, verify_local_file
from .checkpoint import POINTER, checkpoint_weights_bytes
from .run import Run, check_architecture_args

HEAD_CHOICES = ("auto", "new", "keep")
FREEZE_HELP = "'body' (all but the head), 'stem', or 'stages.K' (the stem and levels 0..K)"


class InitError(UsageError):
    """Initial weights that cannot be used: missing, another architecture, another class count."""


@dataclass
class InitSource:
    """Initial weights: their file, the tensors parsed from the one read whose sha256 was checked or
    recorded (load these, never the file again), and the model arguments they were trained with."""

    weights: Path
    model_args: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)  # what the run folder records
    where: str = ""  # how errors name it
    sha256: Optional[str] = None  # of the bytes ``state`` was parsed from
    state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def resolve_init(
    model: str, init_from: Optional[str], pretrained: bool, init_tag: str, flag: str = "--init-from"
) -> Optional[InitSource]:
    """Find the initial weights a command line asks for (``None``: train from scratch); ``flag`` is the
    option that named ``init_from`` (``--init-from``; ``resmg-export`` passes ``--checkpoint``), for the
    messages. A run folder's pointer names files inside it (checked); a published folder whose
    ``config.json`` names a listed hub id is verified as ``local-dir:`` is (its architecture and sha256
    the manifest's). Every file is read once: the tensors are parsed from the bytes that were hashed."""
    if init_from and pretrained:
        raise InitError(f"give either --pretrained or {flag}, not both")
    if pretrained:
        resolved = resolve_weights(model, init_tag)
        record = dict(kind="pretrained", hub_id=resolved.hub_id, source=resolved.source, sha256=resolved.sha256)
        args = dict(resolved.published.entry["model_args"])
        return InitSource(resolved.path, args, record, resolved.describe(), resolved.sha256, resolved.state_dict)
    if not init_from:
        return None
    path = Path(init_from).expanduser()
    where = f"{flag} {path}"
    if not path.exists():
        raise InitError(f"{where}: no such file or folder")
    if path.is_dir() and (path / POINTER).exists():
        run = Run.open(path)
        if run.model_name != model:
            raise InitError(f"{where}: that run trained {run.model_name!r}, not {model!r}")
        weights, data, sha256 = checkpoint_weights_bytes(path)
        args, kind, state = run.model_args, "run", parse_state_dict(data, f"{where}: {weights}")
    elif path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.exists():
            raise InitError(f"{where}: neither a run folder (checkpoint.json) nor a published one (model.safetensors)")
        config = _folder_config(path, where)
        published = config.get("architecture")
        if published and published != model:
            raise InitError(f"{where}: those weights are {published!r}, not {model!r}")
        hub = listed_hub_id(path)
        if hub is not None:  # a copy of a published weight: its bytes must be the published ones
            resolved = verify_local_file(model, weights, hub, where)
            args, sha256, state = dict(resolved.published.entry["model_args"]), resolved.sha256, resolved.state_dict
        else:
            model_args = config.get("model_args") or {}
            if not isinstance(model_args, dict):
                raise InitError(f"{where}: {path / 'config.json'} holds model_args that are not a JSON object")
            args = dict(model_args, num_classes=config.get("num_classes"))
            check_architecture_args({k: v for k, v in args.items() if v is not None}, f"{where}: config.json")
            state, sha256 = read_verified(weights, where)
        kind = "published"
    elif path.suffix == ".safetensors":
        weights, args, kind = path, {}, "file"
        state, sha256 = read_verified(path, where)
    else:
        raise InitError(f"{where}: expected a run folder, a published folder or a .safetensors file")
    args = {k: v for k, v in args.items() if v is not None}
    record = dict(kind=kind, path=str(path.resolve()), weights=str(weights.resolve()), sha256=sha256)
    return InitSource(weights, args, record, where, sha256, state)


def _folder_config(path: Path, where: str) -> dict[str, Any]:
    """A published folder's ``config.json`` (empty where it has none); :class:`InitError` naming it
    where it is not a JSON object (see :func:`~resmg_zoo.core.files.read_json_object`)."""
    config_file = path / "config.json"
    if not config_file.exists() and not config_file.is_symlink():
        return {}
    try:
        return read_json_object(config_file, "its config")
    except UsageError as err:
        raise InitError(f"{where}: {err}") from None


def apply_init(model: nn.Module, model_name: str, init: InitSource, head: str) -> dict[str, Any]:
    """Load ``init`` into ``model`` (new head / adapted stem as ``head`` allows); returns the record."""
    classes_before = init.model_args.get("num_classes")
    if head == "keep" and classes_before is not None and classes_before != getattr(model, "num_classes", None):
        raise InitError(
            f"--head keep: the initial weights have a {classes_before}-class head but the dataset has "
            f"{model.num_classes} classes; use --head auto (or new) to train a new head"
        )
    try:
        report = load_state(model, init.state, init.where, strict=False, drop_head=head == "new")
    except WeightsMismatchError as err:
        raise InitError(f"the initial weights do not fit {model_name}: {err}") from None
    if head == "keep" and report["new_head"]:
        raise InitError(f"--head keep, but the initial weights' head does not fit: {report['new_head']}")
    return dict(init.record, new_head=sorted(report["new_head"]), stem_adapted=report["stem_adapted"])


def frozen_names(model: nn.Module, spec: str) -> list[str]:
    """The parameters ``--freeze spec`` freezes, chosen through the model's timm ``group_matcher``."""
    names = [n for n, _ in model.named_parameters()]
    classifier = model.pretrained_cfg.get("classifier", "fc") + "."
    if spec == "body":
        return [n for n in names if not n.startswith(classifier)]
    groups = group_parameters(model, model.group_matcher(coarse=True))
    stem = groups[min(groups)]
    if spec == "stem":
        return list(stem)
    match = re.fullmatch(r"stages\.(\d+)", spec)
    if match is None:
        raise UsageError(f"--freeze {spec!r}: expected {FREEZE_HELP}")
    last = int(match.group(1))
    levels = len(getattr(model, "stages", []))
    if last >= levels:
        raise UsageError(f"--freeze {spec!r}: the model has levels stages.0 .. stages.{levels - 1}")
    in_levels = [n for n in names if (m := re.match(r"stages\.(\d+)\.", n)) and int(m.group(1)) <= last]
    return list(stem) + in_levels


def freeze(model: nn.Module, spec: Optional[str]) -> list[str]:
    """Freeze ``spec``'s parameters; returns their names (empty for ``None``)."""
    if not spec:
        return []
    names = frozen_names(model, spec)
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(False)
    return names


def hold_frozen_norms(model: nn.Module) -> None:
    """Put every BatchNorm whose parameters are all frozen in eval mode, so its running statistics
    stay as loaded too (call after each ``model.train()``)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def optimizer_groups(model: nn.Module, head_lr_mult: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: the body (lr × 1) and the head (lr × ``head_lr_mult``)."""
    classifier = model.pretrained_cfg.get("classifier", "fc") + "."
    body, head = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (head if name.startswith(classifier) else body).append(param)
    groups = [dict(params=body, lr_mult=1.0), dict(params=head, lr_mult=head_lr_mult)]
    return [g for g in groups if g["params"]]
