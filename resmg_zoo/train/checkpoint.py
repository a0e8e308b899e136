"""Training checkpoints: weights as safetensors, the rest as tensors and plain data.

A checkpoint is two files written atomically — ``ckpt-E-S.safetensors`` (the model's state dict)
and ``ckpt-E-S.state.pt`` (optimizer, schedule position, RNG state — :func:`rng_state`, put back by
:func:`set_rng_state` — partial-epoch sums; read back with ``torch.load(weights_only=True)``, so no
arbitrary pickle) — and then ``checkpoint.json``, the
pointer to them, replaced atomically last. A crash at any point leaves the previous pointer and
its files intact. A run that keeps an EMA of its weights (``--ema-decay``) writes that copy too,
as ``ckpt-E-S.ema.safetensors``. A kill loses the steps since the last checkpoint — at most an epoch, or at most
``--checkpoint-every`` steps — and a resume first removes what the killed writer left
(:func:`remove_leftovers`).

The pointer is data read back from disk: every name in it must be a plain file name inside the run
folder (no path, no ``..``, not hidden, not a link) before anything opens it, and every file is read
once, its sha256 checked and the bytes that were checked loaded.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import save_file
from torch import nn

from ..core.atomic import atomic_path, write_text_atomic
from ..core.errors import IntegrityError, UsageError
from ..core.files import read_json_object, require_keys
from ..core.hashing import file_sha256, read_with_sha256
from ..weights.loading import load_weights

POINTER = "checkpoint.json"
CHECKPOINT_FILE = re.compile(r"^ckpt-e\d{4,}-s\d{6,}\.(safetensors|state\.pt|ema\.safetensors)$")


class CheckpointError(UsageError):
    """A checkpoint that is missing or does not fit the model; the message names the file."""


class CheckpointIntegrityError(IntegrityError):
    """A checkpoint file whose bytes are not the ones its pointer recorded, or a pointer that names a
    file outside its run folder; the message names both."""


@dataclass
class TrainingState:
    """Where training stands: completed ``epoch``s, steps into the next one, and what to restore."""

    epoch: int
    step_in_epoch: int
    global_step: int
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    partial: dict[str, Any]


def rng_state(device: torch.device) -> dict[str, Any]:
    """The random number generators' state a checkpoint keeps: torch's CPU generator and, on CUDA,
    ``device``'s — so that a resumed run draws what the uninterrupted one would have."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back a :func:`rng_state` (its CUDA part only on a CUDA ``device``, where it has one)."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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


# What every pointer the checkpoint writer makes holds (an EMA run adds ema_weights and its sha256).
POINTER_KEYS: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "step_in_epoch": int,
    "global_step": int,
    "weights": str,
    "weights_sha256": str,
    "state": str,
    "state_sha256": str,
}


def read_pointer(run_dir: Path) -> dict[str, Any]:
    """The run's ``checkpoint.json``: a regular file holding a JSON object with the keys the writer puts
    there (:data:`POINTER_KEYS`); a :class:`~resmg_zoo.core.files.UnreadableFileError` naming it otherwise."""
    path = run_dir / POINTER
    if not path.exists() and not path.is_symlink():
        raise CheckpointError(f"no checkpoint in {run_dir}: {path} does not exist")
    pointer = read_json_object(path, "checkpoint pointer")
    require_keys(pointer, POINTER_KEYS, f"checkpoint pointer {path}")
    return pointer


def named_file(run_dir: Path, pointer: dict[str, Any], key: str) -> tuple[Path, str]:
    """The file the pointer names under ``key`` and its recorded sha256. The name must be one the
    checkpoint writer makes (``ckpt-eEEEE-sSSSSSS.<kind>``) and the file a regular file inside
    ``run_dir``, not a link; :class:`CheckpointIntegrityError` otherwise, before anything opens it."""
    name, sha256 = pointer.get(key), pointer.get(f"{key}_sha256")
    where = run_dir / POINTER
    if not isinstance(name, str) or not CHECKPOINT_FILE.match(name) or not isinstance(sha256, str):
        raise CheckpointIntegrityError(
            f"{where} names {key} {name!r}: not a checkpoint file of this folder (ckpt-eEEEE-sSSSSSS.*) "
            "with a sha256; the pointer is damaged or was written by something else"
        )
    path = run_dir / name
    if path.is_symlink():
        raise CheckpointIntegrityError(f"{path} is a symbolic link: a checkpoint file must be inside {run_dir}")
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    return path, sha256


def _verified(run_dir: Path, pointer: dict[str, Any], key: str) -> tuple[Path, bytes]:
    """The file the pointer names under ``key`` and its bytes, whose sha256 is the recorded one."""
    path, sha256 = named_file(run_dir, pointer, key)
    data, actual = read_with_sha256(path)
    if actual != sha256:
        raise CheckpointIntegrityError(f"checkpoint file {path} is corrupt: sha256 {actual} != {sha256} recorded")
    return path, data


def checkpoint_weights(run_dir: Path, ema: bool = False) -> tuple[Path, str]:
    """The weights file of the run's last checkpoint (``ema``: of its EMA copy) and its recorded sha256,
    checked to be a file of the run folder; :func:`~resmg_zoo.weights.loading.load_weights` with that
    sha256 verifies the bytes it loads."""
    pointer = read_pointer(run_dir)
    key = "ema_weights" if ema else "weights"
    if key not in pointer:
        raise CheckpointError(
            f"the last checkpoint of {run_dir} has no EMA weights (the run trained without --ema-decay)"
        )
    return named_file(run_dir, pointer, key)


def checkpoint_weights_path(run_dir: Path, ema: bool = False) -> Path:
    """The weights file of the last checkpoint (``ema``: of its EMA copy), its sha256 verified."""
    return checkpoint_weights_bytes(run_dir, ema)[0]


def checkpoint_weights_bytes(run_dir: Path, ema: bool = False) -> tuple[Path, bytes, str]:
    """The weights file of the last checkpoint (``ema``: of its EMA copy), its bytes and their sha256
    (the recorded one), from one read: what the caller parses or copies is what was verified."""
    pointer = read_pointer(run_dir)
    key = "ema_weights" if ema else "weights"
    if key not in pointer:
        checkpoint_weights(run_dir, ema)  # raises, naming what is missing
    path, data = _verified(run_dir, pointer, key)
    return path, data, pointer[f"{key}_sha256"]


def load_checkpoint(run_dir: Path, model: nn.Module, ema_model: Optional[nn.Module] = None) -> TrainingState:
    """Restore ``model`` (and ``ema_model``) from the run's last checkpoint; return the rest of the state."""
    pointer = read_pointer(run_dir)
    for key, target in (("weights", model), ("ema_weights", ema_model)):
        if target is not None:
            weights, sha256 = checkpoint_weights(run_dir, ema=key == "ema_weights")
            load_weights(target, weights, f"checkpoint {weights}", sha256=sha256)
    path, data = _verified(run_dir, pointer, "state")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # plain tensors, never code
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is not a training state this project wrote ({str(err)[:160]})") from None
    if not isinstance(state, dict) or set(state) != {f.name for f in fields(TrainingState)}:
        raise CheckpointError(f"{path} is not a training state this project wrote (its keys differ)")
    return TrainingState(**state)
