"""Opening an int8 model from where a user names it — a published ``model.tag`` (or its ``hf-hub:`` id),
or an int8 folder on disk — as data only: the record (:mod:`.int8_record`) and the float safetensors are
read bounded and hashed, the architecture is the registered one, and the program is rebuilt by
:func:`.int8.rebuild_int8`. No calibration data is needed.

*Published*: the manifest entry's ``int8`` names ``int8.json`` and its sha256, pinned by the package like
the weights; the package ships the records it pins (``weights/int8_records/``, a few KB each), else the record
is read from the mirror folder the weights came from, or from the Hub repo at the weights' revision; either
way it must have that sha256 (:class:`Int8RecordIntegrityError`, exit 4, otherwise).
*A folder*: its ``model.safetensors`` must have the sha256 its record names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from torch import nn

from ..core.errors import IntegrityError, UsageError
from ..core.files import read_regular
from ..core.hashing import sha256_of
from ..core.sources import ModelSource
from ..weights.hub_download import NotPublishedError, download
from ..weights.loading import fit_state_dict, parse_state_dict
from ..weights.manifest import WEIGHTS_NAME, packaged_int8_record, repo_manifest_path
from ..weights.resolve import ResolvedWeights, find_published, resolve_weights
from .int8 import Int8Model, rebuild_int8
from .int8_record import (
    MAX_RECORD_BYTES,
    RECORD_NAME,
    activation_qparams,
    is_int8_folder,
    parse_record,
    read_record,
    record_path,
)


class Int8RecordIntegrityError(IntegrityError):
    """An int8 record or its weights whose bytes are not the ones pinned or recorded (exit 4)."""


@dataclass
class OpenedInt8:
    """A rebuilt int8 model (``model`` runs it; ``program`` is the converted graph, ``float_model`` the float
    model it was rebuilt from), its record and its bytes, and where it came from."""

    model: Int8Model
    record: dict[str, Any]
    source: str
    record_bytes: bytes = field(repr=False)
    program: torch.fx.GraphModule = field(repr=False)
    float_model: nn.Module = field(repr=False)

    @property
    def record_sha256(self) -> str:
        return sha256_of(self.record_bytes)

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self.record["pretrained_cfg"]

    def describe(self) -> dict[str, Any]:
        """What a result records about the model it came from."""
        weights = self.record["weights"]
        return dict(int8=self.source, int8_record_sha256=self.record_sha256, weights_sha256=weights["sha256"])


def _float_model(record: dict[str, Any], state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """The record's registered architecture holding ``state`` exactly; weights that no training makes (not
    finite, a negative running variance) are refused before they reach the quantizer."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise Int8RecordIntegrityError(f"{where}: {key} holds values that are not finite")
        if key.endswith("running_var") and bool((tensor < 0).any()):
            raise Int8RecordIntegrityError(f"{where}: {key} holds a negative variance")
    model = timm.create_model(record["model"], **record["model_args"])
    fit_state_dict(state, model, where)
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return model.eval()


def _rebuilt(record: dict[str, Any], model: nn.Module, source: str, data: bytes, compile: bool) -> OpenedInt8:
    example = torch.zeros(2, *record["pretrained_cfg"]["input_size"])
    program = rebuild_int8(model, activation_qparams(record), example).program
    return OpenedInt8(Int8Model(program, compile=compile), record, source, data, program, model)


def open_int8_folder(path: str | Path, compile: bool = True) -> OpenedInt8:
    """The int8 model of an int8 folder (or its ``int8.json``): the record read and validated, the
    weights it names hashed as read and refused unless they have the recorded sha256."""
    record, data = read_record(path)
    folder = record_path(path).parent
    weights_file = folder / WEIGHTS_NAME
    weights = read_regular(weights_file, record["weights"]["bytes"], "the int8 folder's float weights", follow=False)
    actual = sha256_of(weights)
    if actual != record["weights"]["sha256"]:
        raise Int8RecordIntegrityError(
            f"{weights_file} has sha256 {actual}, not the {record['weights']['sha256']} that "
            f"{folder / RECORD_NAME} was made for: the folder's weights were replaced or damaged"
        )
    state = parse_state_dict(weights, str(weights_file))
    return _rebuilt(record, _float_model(record, state, str(weights_file)), str(folder), data, compile)


def _published_record_bytes(resolved: ResolvedWeights, cache_dir: Optional[str | Path]) -> tuple[bytes, str]:
    """The published ``int8.json`` of the resolved weights and where it came from: the package's own copy
    where it ships one (pinned by the same manifest), else the one beside the weights (mirror folder or Hub repo)."""
    entry = resolved.published.entry
    packaged = packaged_int8_record(entry["model"], entry["tag"])
    if resolved.published.manifest == repo_manifest_path() and packaged.is_file():
        return read_regular(packaged, MAX_RECORD_BYTES, "int8 record"), str(packaged)
    if resolved.source.startswith("mirror:"):
        file = resolved.path.parent / RECORD_NAME
        if not file.exists() and not file.is_symlink():
            raise NotPublishedError(
                f"the mirror folder {resolved.path.parent} has no {RECORD_NAME}, though the manifest lists one for "
                f"{resolved.hub_id}: the publisher has not put it there yet (resmg-mirror refresh --int8)"
            )
        return read_regular(file, MAX_RECORD_BYTES, "int8 record"), str(file)
    revision = resolved.source.rpartition("@")[2]
    looked: list[str] = []
    path = download(resolved.published, None if revision == "main" else revision, cache_dir, looked, RECORD_NAME)
    return read_regular(path, MAX_RECORD_BYTES, "int8 record"), str(path)


def open_published_int8(
    source: ModelSource, cache_dir: Optional[str | Path] = None, compile: bool = True
) -> OpenedInt8:
    """The published int8 model of a registered ``model.tag`` or ``hf-hub:`` id (see the module docstring)."""
    if source.kind == "hub":
        found = find_published(None, None, source.value)
        if found is None:
            raise NotPublishedError(f"{source.text}: no manifest lists this hub id, so it has no published int8 model")
        model, tag, hub = found.entry["model"], found.entry["tag"], source.value
    else:
        model, _, tag = source.value.partition(".")
        hub = None
        if not tag:
            raise UsageError(f"--int8 needs a published model.tag (e.g. {model}.cifar10), got {source.text!r}")
    resolved = resolve_weights(model, tag, hub, cache_dir)
    entry = resolved.published.entry
    pin = entry.get("int8")  # file, sha256 and bytes, checked with the manifest (weights.manifest.validate_entry)
    if pin is None:
        raise NotPublishedError(
            f"no int8 model is published for {resolved.published.name} ({resolved.published.manifest} lists no "
            f"{RECORD_NAME} for it); make one with resmg-export --model {resolved.published.name} --pretrained "
            "--format int8"
        )
    data, where = _published_record_bytes(resolved, cache_dir)
    actual = sha256_of(data)
    if actual != pin["sha256"]:
        raise Int8RecordIntegrityError(
            f"{where} has sha256 {actual}, but {resolved.published.manifest} pins {pin['sha256']} for the int8 "
            f"record of {resolved.hub_id}: the file is damaged or not the published one"
        )
    record = parse_record(data, where)
    if record["weights"]["sha256"] != resolved.sha256 or record["model"] != entry["model"]:
        raise Int8RecordIntegrityError(
            f"{where} was made for {record['model']} weights {record['weights']['sha256']}, not for the published "
            f"{entry['model']} weights {resolved.sha256}"
        )
    float_model = _float_model(record, resolved.state_dict, resolved.describe())
    return _rebuilt(record, float_model, f"{resolved.hub_id} ({where})", data, compile)


def open_int8(source: ModelSource, cache_dir: Optional[str | Path] = None, compile: bool = True) -> OpenedInt8:
    """The int8 model a model source names: an int8 folder given as a path, or the published int8 model of
    a registered ``model.tag`` / ``hf-hub:`` id."""
    if source.kind == "path":
        if not is_int8_folder(source.path):
            raise UsageError(
                f"{source.text} is not an int8 folder (no {RECORD_NAME}): make one with resmg-export --format int8"
            )
        return open_int8_folder(source.path, compile)
    return open_published_int8(source, cache_dir, compile)
