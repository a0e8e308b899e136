"""Training checkpoints: weights as safetensors, the rest as tensors and plain data.

A checkpoint is two files written atomically — ``ckpt-E-S.safetensors`` (the model's state dict)
and ``ckpt-E-S.state.pt`` (optimizer, schedule position, RNG, partial-epoch sums; read back with
``torch.load(weights_only=True)``, so no arbitrary pickle) — and then ``checkpoint.json``, the
pointer to them, replaced atomically last. A crash at any point leaves the previous pointer and
its files intact. A run that keeps an EMA of its weights (``--ema-decay``) writes that copy too,
as ``ckpt-E-S.ema.safetensors``. A kill loses the steps since the last checkpoint — at most an epoch, or at most
``--checkpoint-every`` steps — and a resume first removes what the killed writer left
(:func:`remove_leftovers`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import save_file
from torch import nn

from ..core.atomic import atomic_path, write_text_atomic
from ..core.errors import UsageError
from ..core.hashing import file_sha256
from ..weights.loading import load_weights

POINTER = "checkpoint.json"


class CheckpointError(UsageError, RuntimeError):
    """A checkpoint that is missing, corrupt or does not fit the model; the message names the file."""


@dataclass
class TrainingState:
    """Where training stands: completed ``epoch``s, steps into the next one, and what to restore."""

    epoch: int
    step_in_epoch: int
    global_step: int
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    partial: dict[str, Any]


def _save_weights(model: nn.Module, path: Path) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def save_checkpoint(
    run_dir: Path, model: nn.Module, state: TrainingState, ema_model: Optional[nn.Module] = None
) -> Path:
    """Write weights (and the EMA copy's), state and then the pointer; remove older checkpoints' files."""
    stem = f"ckpt-e{state.epoch:04d}-s{state.step_in_epoch:06d}"
    weights, extra = run_dir / f"{stem}.safetensors", run_dir / f"{stem}.state.pt"
    _save_weights(model, weights)
    with atomic_path(extra) as tmp:
        torch.save(asdict(state), tmp)
    pointer = dict(
        epoch=state.epoch,
        step_in_epoch=state.step_in_epoch,
        global_step=state.global_step,
        weights=weights.name,
        weights_sha256=file_sha256(weights),
        state=extra.name,
        state_sha256=file_sha256(extra),
    )
    if ema_model is not None:
        ema = run_dir / f"{stem}.ema.safetensors"
        _save_weights(ema_model, ema)
        pointer |= dict(ema_weights=ema.name, ema_weights_sha256=file_sha256(ema))
    write_text_atomic(run_dir / POINTER, json.dumps(pointer, indent=2) + "\n")
    for old in run_dir.glob("ckpt-e*"):
        if old.name not in _named_files(pointer):
            old.unlink(missing_ok=True)
    return weights


def _named_files(pointer: dict[str, Any]) -> set[str]:
    return {pointer[k] for k in ("weights", "state", "ema_weights") if k in pointer}


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete what a writer killed mid-write leaves in ``run_dir`` (``kill -9``, power loss): the
    temporary files of :func:`~resmg_zoo.core.atomic.atomic_path` and checkpoint files that the pointer
    does not name. Only while no process writes the run (a resume, before training). Returns the names."""
    keep = set()
    if (run_dir / POINTER).exists():
        keep = _named_files(read_pointer(run_dir))
    removed = [p for p in run_dir.glob(".*.tmp") if p.is_file()]
    removed += [p for p in run_dir.glob("ckpt-e*") if p.name not in keep]
    for path in removed:
        path.unlink(missing_ok=True)
    return sorted(p.name for p in removed)


def read_pointer(run_dir: Path) -> dict[str, Any]:
    path = run_dir / POINTER
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {run_dir}: {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None


def _verified(run_dir: Path, name: str, sha256: str) -> Path:
    path = run_dir / name
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    actual = file_sha256(path)
    if actual != sha256:
        raise CheckpointError(f"checkpoint file {path} is corrupt: sha256 {actual} != {sha256} recorded")
    return path


def checkpoint_weights_path(run_dir: Path, ema: bool = False) -> Path:
    """The verified weights file the run's pointer names (``ema``: its EMA copy's)."""
    pointer = read_pointer(run_dir)
    key = "ema_weights" if ema else "weights"
    if key not in pointer:
        raise CheckpointError(
            f"the last checkpoint of {run_dir} has no EMA weights (the run trained without --ema-decay)"
        )
    return _verified(run_dir, pointer[key], pointer[f"{key}_sha256"])


def load_checkpoint(run_dir: Path, model: nn.Module, ema_model: Optional[nn.Module] = None) -> TrainingState:
    """Restore ``model`` (and ``ema_model``) from the run's last checkpoint; return the rest of the state."""
    pointer = read_pointer(run_dir)
    weights = _verified(run_dir, pointer["weights"], pointer["weights_sha256"])
    load_weights(model, weights, f"checkpoint {weights}")
    if ema_model is not None:
        ema = checkpoint_weights_path(run_dir, ema=True)
        load_weights(ema_model, ema, f"checkpoint {ema}")
    extra = _verified(run_dir, pointer["state"], pointer["state_sha256"])
    data = torch.load(extra, map_location="cpu", weights_only=True)
    return TrainingState(**data)
