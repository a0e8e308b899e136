"""A training run folder, as ``python -m resmg_zoo.train`` writes it and every tool reads it.

``config.json`` (every setting, the dataset, the hardware, the command), ``metrics.jsonl`` and
``metrics.csv`` (one row per epoch), ``curve.png``, and the last checkpoint (``checkpoint.json``,
the pointer to ``ckpt-*.safetensors`` and ``ckpt-*.state.pt``; see :mod:`.checkpoint`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import timm
from torch import nn

from ..core.choices import check_choice
from ..core.counting import model_args_problem
from ..core.errors import UsageError
from ..core.files import read_json_object, require_keys
from ..core.tags import dataset_identity
from ..data.datasets import ImageDataset, load_dataset
from ..models.variants import VARIANTS
from ..weights.loading import load_weights
from .checkpoint import checkpoint_weights, checkpoint_weights_bytes
from .log import read_metrics

CONFIG_NAME = "config.json"
# The types of what a run's config.json holds and a reader of the run uses, where it holds them.
CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "model_kwargs": dict,
    "num_classes": int,
    "input_size": list,
    "dataset": str,
    "recipe_settings": dict,
}


class RunError(UsageError):
    """A folder that is not the training run asked for; the message names it and says why."""


def make_run_dir(path: Path) -> Path:
    """Create a run folder (and its parents) for writing; a :class:`RunError` naming ``--out`` and why
    where that cannot be (a file in the way, no permission, a read-only or special file system)."""
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise RunError(f"cannot create --out {path}: {blocker} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create --out {path}: {err.strerror or err}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunError(f"cannot write into --out {path}: permission denied")
    return path


def check_architecture_args(args: dict[str, Any], where: str) -> None:
    """``args`` are architecture arguments of the zoo's models only, in range
    (:func:`~resmg_zoo.core.counting.model_args_problem`): a run's ``model_kwargs`` never carry what makes
    ``create_model`` load a file or change its output (``pretrained``, ``pretrained_cfg``,
    ``checkpoint_path``, ``features_only``, ...) nor a value that builds a giant; :class:`RunError` naming
    ``where`` otherwise."""
    problem = model_args_problem(args)
    if problem:
        raise RunError(f"{where}: {problem}")


def check_run_config(config: dict[str, Any], where: str) -> None:
    """What a reader of a run relies on in its ``config.json``: a registered ``model``, the types of
    :data:`CONFIG_TYPES` where present, and ``model_kwargs`` of architecture arguments only
    (:func:`check_architecture_args`); a :class:`~resmg_zoo.core.errors.UsageError` naming ``where``."""
    require_keys(config, {"model": str}, where)
    require_keys(config, {k: v for k, v in CONFIG_TYPES.items() if k in config}, where)
    try:
        check_choice("model", config["model"], VARIANTS)
    except UsageError as err:
        raise RunError(f"{where}: {err}") from None
    check_architecture_args(config.get("model_kwargs", {}), f"{where}: model_kwargs")


def build_model(config: dict[str, Any], **args: Any) -> nn.Module:
    """The one way a model is built from a run's settings (training it, or reading it back): the
    ``model`` with its ``model_kwargs``, the ``num_classes`` and ``in_chans`` it trains for (from
    ``args``, else from the config), and the dataset's tag as ``pretrained_cfg`` where the dataset is
    one of the registry. ``args`` win over the config; both hold architecture arguments only
    (:func:`check_architecture_args`)."""
    check_architecture_args(config.get("model_kwargs", {}), "model_kwargs")
    check_architecture_args(args, "the model arguments")
    kwargs = {**config.get("model_kwargs", {}), **args}
    kwargs.setdefault("num_classes", config.get("num_classes"))
    if config.get("input_size"):
        kwargs.setdefault("in_chans", config["input_size"][0])
    dataset = dataset_identity(config.get("dataset") or "")
    if dataset.known:  # a registry dataset, by name or as the path of its zip: its tag's preprocessing
        kwargs.setdefault("pretrained_cfg", dataset.name)
    return timm.create_model(config["model"], **{k: v for k, v in kwargs.items() if v is not None})


@dataclass(frozen=True)
class Run:
    """A training run folder and its ``config.json``."""

    path: Path
    config: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """The run in ``path``; :class:`RunError` if it has no ``config.json``, a
        :class:`~resmg_zoo.core.errors.UsageError` naming it where that is not a run's settings
        (:func:`~resmg_zoo.core.files.read_json_object`, :func:`check_run_config`)."""
        path = Path(path)
        config_file = path / CONFIG_NAME
        if not config_file.exists() and not config_file.is_symlink():
            raise RunError(f"{path} is not a training run folder (no {CONFIG_NAME})")
        config = read_json_object(config_file, "the run's settings")
        check_run_config(config, f"the run's settings {config_file}")
        return cls(path, config)

    @property
    def model_name(self) -> str:
        return self.config["model"]

    @property
    def model_args(self) -> dict[str, Any]:
        """The ``create_model`` arguments of the trained architecture: its kwargs, classes and channels."""
        args = dict(self.config.get("model_kwargs", {}), num_classes=self.config.get("num_classes"))
        if self.config.get("input_size"):
            args["in_chans"] = self.config["input_size"][0]
        return {k: v for k, v in args.items() if v is not None}

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch metrics rows so far."""
        return read_metrics(self.path)

    def weights_path(self, ema: bool = False) -> Path:
        """The weights file of the last checkpoint (``ema``: of its EMA copy), its sha256 verified."""
        return self.verified_weights(ema)[0]

    def verified_weights(self, ema: bool = False) -> tuple[Path, bytes, str]:
        """The weights file of the last checkpoint (``ema``: of its EMA copy), its bytes and their sha256,
        from one read that was checked against the pointer: use these bytes, not the file again."""
        return checkpoint_weights_bytes(self.path, ema)

    @property
    def epochs(self) -> float:
        """The epochs the run's recipe trains for; :class:`RunError` where its config records none."""
        epochs = self.config.get("recipe_settings", {}).get("epochs")
        if not isinstance(epochs, (int, float)) or isinstance(epochs, bool):
            raise RunError(f"{self.path / CONFIG_NAME} records no recipe_settings.epochs: not a run this project wrote")
        return epochs

    def finished(self) -> Optional[dict[str, Any]]:
        """The last metrics row if every epoch of the recipe is done (with a test accuracy), else ``None``."""
        rows = self.metrics()
        if not rows or rows[-1]["epoch"] < math.ceil(self.epochs) or "test_top1" not in rows[-1]:
            return None
        return rows[-1]

    def require_finished(self) -> dict[str, Any]:
        """The last metrics row; :class:`RunError` naming what is missing while the run is unfinished."""
        rows = self.metrics()
        if not rows or "test_top1" not in rows[-1]:
            raise RunError(f"{self.path} has no finished epoch with a test accuracy (metrics.jsonl)")
        row = self.finished()
        if row is None:
            raise RunError(
                f"{self.path} stopped at epoch {rows[-1]['epoch']} of {self.epochs:g}: finish it with --resume first"
            )
        return row

    def load_model(self, ema: bool = False, **overrides: Any) -> nn.Module:
        """The trained model in eval mode: rebuilt from the config (:func:`build_model`, ``overrides``
        on top) with the last checkpoint's weights (``ema``: its EMA copy's), which must fit it exactly."""
        model = build_model(self.config, **overrides)
        where = f"the last checkpoint of {self.path} ({self.model_name}, {self.model_args | overrides})"
        weights, sha256 = checkpoint_weights(self.path, ema)
        load_weights(model, weights, where, sha256=sha256)  # the bytes checked are the bytes loaded
        return model.eval()

    def dataset(self, data_dir: Optional[str] = None) -> ImageDataset:
        """The run's dataset, converted as it was for training (``--image-size``, ``--channels``)."""
        return load_dataset(
            self.config["dataset"],
            data_dir=data_dir,
            image_size=self.config.get("image_size"),
            channels=self.config.get("channels"),
        )
