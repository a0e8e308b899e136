"""The one rule for what a model source names, on every command that takes one.

* ``hf-hub:<id>[@<revision>]`` (or ``hf_hub:``): a Hugging Face Hub repo;
* ``local-dir:<folder>``: a folder on disk;
* a value that is written as a path — it holds a ``/`` (``./x``, ``/x``, ``exports/x.int8``) or
  starts with ``.`` or ``~`` — is that path;
* anything else is a registry name, ``model[.tag]``, and **never** a path: a folder of the current
  directory called ``preact_resnet18_sharedA.cifar10`` is not read when that name is given (name it
  ``./preact_resnet18_sharedA.cifar10`` to mean the folder). The dataset registry keeps the same rule
  (:func:`resmg_zoo.core.tags.dataset_identity`).

A run folder, a weights file or a training checkpoint is given by its own flag (``--run``,
``--weights``, ``--checkpoint``), which always takes a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import UsageError

HUB_PREFIXES = ("hf-hub:", "hf_hub:")
LOCAL_PREFIX = "local-dir:"

SourceKind = Literal["name", "hub", "path"]


@dataclass(frozen=True)
class ModelSource:
    """What a ``--model`` value names: ``kind`` and the name, hub id (``@revision`` kept) or path."""

    kind: SourceKind
    value: str
    text: str

    @property
    def path(self) -> Path:
        return Path(self.value).expanduser()


def is_written_as_path(value: str) -> bool:
    """Whether ``value`` is spelled as a path (a separator, or a leading ``.`` or ``~``)."""
    return "/" in value or os.sep in value or value.startswith((".", "~"))


def model_source(text: str, flag: str = "--model") -> ModelSource:
    """The :class:`ModelSource` that ``text`` names by the module's rule; nothing on disk is looked at."""
    if not text or not text.strip():
        raise UsageError(f"{flag} needs a value: a registered model[.tag], hf-hub:<id>, local-dir:<folder> or a path")
    if text.startswith(HUB_PREFIXES):
        return ModelSource("hub", text.split(":", 1)[1], text)
    if text.startswith(LOCAL_PREFIX):
        folder = text[len(LOCAL_PREFIX) :]
        if not folder:
            raise UsageError(f"{flag} {text}: local-dir: must be followed by a folder")
        return ModelSource("path", folder, text)
    if is_written_as_path(text):
        return ModelSource("path", text, text)
    return ModelSource("name", text, text)
