"""Training checkpoints: weights as safetensors, the rest as tensors and plain data.

A checkpoint is two files written atomically — ``ckpt-E-S.safetensors`` (the model's state dict)
and ``ckpt-E-S.state.pt`` (optimizer, schedule position, RNG, partial-epoch sums; read back with
``torch.load(weights_only=True)``, so no arbitrary pickle) — and then ``checkpoint.json``, the
pointer to them, replaced atomically last. A crash at any point leaves the previous pointer and
its files intact: a kill loses the steps since the last checkpoint — at most an epoch, or at most
``--checkpoint-every`` steps — and a resume first removes what the killed writer left
(:func:`remove_leftovers`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..core.atomic import atomic_path, write_text_atomic
from ..core.hashing import file_sha256
from ..weights.loading import load_weights

POINTER = "checkpoint.json"


class CheckpointError(RuntimeError):
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


def save_checkpoint(run_dir: Path, model: nn.Module, state: TrainingState) -> Path:
    """Write weights, state and then the pointer; remove the files of older checkpoints."""
    stem = f"ckpt-e{state.epoch:04d}-s{state.step_in_epoch:06d}"
    weights, extra = run_dir / f"{stem}.safetensors", run_dir / f"{stem}.state.pt"
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
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
    write_text_atomic(run_dir / POINTER, json.dumps(pointer, indent=2) + "\n")
    for old in run_dir.glob("ckpt-e*"):
        if old.name not in (weights.name, extra.name):
            old.unlink(missing_ok=True)
    return weights


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete what a writer killed mid-write leaves in ``run_dir`` (``kill -9``, power loss): the
    temporary files of :func:`~resmg_zoo.core.atomic.atomic_path` and checkpoint files that the pointer
    does not name. Only while no process writes the run (a resume, before training). Returns the names."""
    keep = set()
    if (run_dir / POINTER).exists():
        pointer = read_pointer(run_dir)
        keep = {pointer["weights"], pointer["state"]}
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


def checkpoint_weights_path(run_dir: Path) -> Path:
    """The verified weights file the run's pointer names."""
    pointer = read_pointer(run_dir)
    return _verified(run_dir, pointer["weights"], pointer["weights_sha256"])


def load_checkpoint(run_dir: Path, model: nn.Module) -> TrainingState:
    """Restore ``model`` from the run's last checkpoint and return the rest of the training state."""
    pointer = read_pointer(run_dir)
    weights = _verified(run_dir, pointer["weights"], pointer["weights_sha256"])
    load_weights(model, weights, f"checkpoint {weights}")
    extra = _verified(run_dir, pointer["state"], pointer["state_sha256"])
    data = torch.load(extra, map_location="cpu", weights_only=True)
    return TrainingState(**data)
