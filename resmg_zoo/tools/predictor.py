"""One way for every tool to name a model and run it: the model-source flags (:func:`add_model_source_args`),
the inference flags (:func:`add_inference_args`), and :func:`open_predictor`, which resolves the source by the
package's one rule (:mod:`resmg_zoo.core.sources`) and prepares it for inference.

Sources, on every tool that takes them (``resmg-evaluate``, ``resmg-classify``):

* ``--run RUN``: a training run's last checkpoint (``--ema``: its EMA weights), its class names;
* ``--weights FILE --model ARCH``: a safetensors state dict of a registered architecture (its classes and
  input channels read from the tensors' shapes unless ``--model-kwargs`` gives them);
* ``--model NAME.TAG`` / ``hf-hub:<id>`` / a path (``./x``, ``local-dir:x``): published weights, a published
  folder, or an int8 folder; with ``--int8`` the published int8 model of the name.

The float models run on the inference fast path (:class:`~resmg_zoo.inference.fast_path.FastPath`: batch
norm folded, channels_last, inference mode), which applies the precision — once, nowhere else; an int8
model runs compiled with freezing. Either way the predictor returns float32 logits.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from timm.data import resolve_data_config, resolve_model_data_config
from torch import nn

from ..core.cli import add_precision_argument, parse_model_kwargs
from ..core.errors import UsageError
from ..core.hardware import choose_precision, pick_device
from ..core.sources import ModelSource, model_source
from ..inference.fast_path import FastPath, FastPathSettings
from ..inference.int8_record import is_int8_folder
from ..inference.int8_source import OpenedInt8, open_int8
from ..models.factory import create_model
from ..train.checkpoint import CheckpointError
from ..train.run import Run
from ..weights.loading import load_state, read_state_dict


def add_model_source_args(p: argparse.ArgumentParser, weights: bool = True, ema: bool = True) -> None:
    """``--run``, ``--weights`` (``weights``), ``--model``, ``--model-kwargs``, ``--int8``, ``--cache-dir``
    and ``--ema`` (``ema``)."""
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run", help="a training run folder (its config and last checkpoint)")
    if weights:
        source.add_argument("--weights", help="a safetensors state dict (with --model, the architecture)")
    p.add_argument(
        "--model",
        help="a registered <model>.<tag> with published weights, hf-hub:<id>[@rev], the path of a published or "
        "int8 folder (./x, /x, local-dir:x); with --weights, the architecture",
    )
    p.add_argument("--model-kwargs", nargs="*", default=None, metavar="KEY=VALUE", help="architecture arguments")
    p.add_argument(
        "--int8", action="store_true", help="the published int8 model of --model (no calibration data needed)"
    )
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache for downloaded weights")
    if ema:
        p.add_argument("--ema", action="store_true", help="the run's EMA weights (a run trained with --ema-decay)")


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """``--precision``, ``--compile``, ``--no-fold`` and ``--device``: how a float model runs."""
    add_precision_argument(p)
    p.add_argument("--compile", action="store_true", help="torch.compile with inductor freezing (a one-off compile)")
    p.add_argument("--no-fold", action="store_true", help="keep batch norm apart from the convolutions (as trained)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")


def class_names(names: Optional[list[str]], classes: int) -> list[str]:
    """``names`` where there is one per class, else the class indices as strings."""
    names = list(names or [])
    return names if len(names) == classes else [str(i) for i in range(classes)]


@dataclass
class OpenedModel:
    """A model as its source gives it, before it is prepared to run: the float model or the int8 one,
    what it is called, where its weights came from, its classes and preprocessing, and the dataset it
    was trained on (``None`` where the source does not say)."""

    name: str
    source: dict[str, Any]
    class_names: list[str]
    data_config: dict[str, Any]
    dataset: Optional[str]
    model: Optional[nn.Module] = None
    int8: Optional[OpenedInt8] = None
    run: Optional[Run] = field(default=None, repr=False)


def _from_weights(args: argparse.Namespace, overrides: dict[str, Any]) -> OpenedModel:
    """``--weights FILE --model ARCH``: the classes and input channels of the file's own tensors."""
    if not args.model:
        raise UsageError("--weights needs --model, the registered architecture its tensors belong to")
    path = Path(args.weights)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist or is not a regular file")
    arch = model_source(args.model)
    if arch.kind != "name" or not timm.is_model(arch.value):
        raise UsageError(f"--model {args.model!r}: with --weights, name a registered architecture")
    state = read_state_dict(path, f"--weights {path}")
    with torch.device("meta"):
        cfg = timm.create_model(arch.value).pretrained_cfg
    head, stem = state.get(f"{cfg['classifier']}.weight"), state.get(f"{cfg['first_conv']}.weight")
    kwargs = dict(overrides)
    if head is not None:
        kwargs.setdefault("num_classes", head.shape[0])
    if stem is not None:
        kwargs.setdefault("in_chans", stem.shape[1])
    model = timm.create_model(arch.value, **kwargs)
    load_state(model, state, f"--weights {path} ({arch.value}, {kwargs})")
    names = class_names(model.pretrained_cfg.get("label_names"), model.num_classes)
    return OpenedModel(arch.value, dict(weights=str(path)), names, resolve_model_data_config(model), None, model.eval())


def _from_source(source: ModelSource, args: argparse.Namespace) -> OpenedModel:
    """``--model SOURCE``: published weights, a published folder, or an int8 model (``--int8``/an int8 folder)."""
    if args.int8 or (source.kind == "path" and is_int8_folder(source.path)):
        opened = open_int8(source, args.cache_dir)
        cfg = opened.pretrained_cfg
        names = class_names(cfg.get("label_names"), cfg["num_classes"])
        dataset = opened.record.get("calibration", {}).get("dataset")
        return OpenedModel(
            opened.name, opened.describe(), names, resolve_data_config(pretrained_cfg=cfg), dataset, int8=opened
        )
    name = f"local-dir:{source.value}" if source.kind == "path" else source.text
    model = create_model(name, pretrained=True, cache_dir=args.cache_dir).eval()
    names = class_names(model.pretrained_cfg.get("label_names"), model.num_classes)
    tag = model.pretrained_cfg.get("tag")
    return OpenedModel(source.text, dict(source=source.text), names, resolve_model_data_config(model), tag, model)


def open_model(args: argparse.Namespace) -> OpenedModel:
    """The model the source flags name (see the module docstring); :class:`UsageError` for a combination
    that names none or two."""
    overrides = parse_model_kwargs(args.model_kwargs) if args.model_kwargs is not None else {}
    ema = getattr(args, "ema", False)
    weights = getattr(args, "weights", None)
    if args.run:
        if args.int8:
            raise UsageError("--int8 takes --model; export a run first: resmg-export --checkpoint RUN --format int8")
        if args.model and args.model != Run.open(args.run).model_name:
            raise UsageError(f"--model {args.model!r}: the run in {args.run} trained {Run.open(args.run).model_name!r}")
        run = Run.open(args.run)
        model = run.load_model(ema, **overrides)
        names = class_names(run.config.get("classes") or model.pretrained_cfg.get("label_names"), model.num_classes)
        source = dict(run=str(run.path), weights=str(run.weights_path(ema)), ema=ema)
        data = resolve_model_data_config(model)
        return OpenedModel(run.model_name, source, names, data, run.config.get("dataset"), model, run=run)
    if ema:
        raise UsageError("--ema needs --run (the EMA weights of a training run)")
    if weights:
        if args.int8:
            raise UsageError("--int8 takes --model (a published model or an int8 folder), not --weights")
        return _from_weights(args, overrides)
    if not args.model:
        raise UsageError("name the model: --model NAME.TAG (or hf-hub:<id>, a path), --run RUN, --weights FILE")
    if overrides:
        raise UsageError("--model-kwargs go with --run or --weights: a published model's architecture is its own")
    return _from_source(model_source(args.model), args)


@dataclass
class Predictor:
    """An opened model ready to run on batches: ``predictor(x)`` gives float32 logits; ``precision`` and
    ``reason`` say what it computes in (``int8`` for an int8 model)."""

    opened: OpenedModel
    run: Callable[[torch.Tensor], torch.Tensor]
    precision: str
    reason: str
    fast_path: Optional[FastPath] = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def record(self) -> dict[str, Any]:
        """What a result records about the model and how it ran."""
        how = dict(fast_path=self.fast_path.record()) if self.fast_path is not None else {}
        return {**self.opened.source, "model": self.opened.name, "precision": self.precision, **how}


def open_predictor(args: argparse.Namespace) -> Predictor:
    """:func:`open_model`, then the fast path with the inference flags (:func:`add_inference_args`), or the
    int8 model as it is (it folds and compiles itself: ``--no-fold`` and ``--precision`` do not apply)."""
    opened = open_model(args)
    if opened.int8 is not None:
        if args.no_fold or args.precision != "auto":
            raise UsageError("an int8 model always folds batch norm and computes in int8: drop --no-fold/--precision")
        return Predictor(opened, opened.int8.model, "int8", "an int8 model (its record's scales and zero points)")
    assert opened.model is not None
    device = pick_device(args.device)
    choice = choose_precision(args.precision, device)
    fast = FastPath(opened.model.to(device), FastPathSettings(choice.precision, not args.no_fold, args.compile))
    return Predictor(opened, fast, choice.precision, choice.reason, fast)
