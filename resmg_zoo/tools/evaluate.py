"""Top-1/top-5 of a trained model on a dataset split, printed as one JSON object.

The model runs on the inference fast path (:mod:`resmg_zoo.inference.fast_path`): batch norm folded
into the convolutions, channels_last, inference mode, ``--precision auto``; ``--compile`` adds
``torch.compile`` with freezing, ``--no-fold --precision fp32`` is the model exactly as trained.

    python -m resmg_zoo.tools.evaluate --run runs/mnist-quick --split test
    python -m resmg_zoo.tools.evaluate --weights model.safetensors --model preact_resnet18_sharedA \\
        --model-kwargs widths=16,32,64,128 --dataset mnist --split test
    python -m resmg_zoo.tools.evaluate --model preact_resnet18_sharedA.cifar10            # published weights
    python -m resmg_zoo.tools.evaluate --model preact_resnet18_sharedA.cifar10 --int8     # their published int8
    python -m resmg_zoo.tools.evaluate --model ./exports/preact_resnet18_sharedA.cifar10.int8  # an int8 folder

``--model`` alone names a model source by the package's one rule (:mod:`resmg_zoo.core.sources`): a
registered ``model.tag`` (never a folder of the current directory), ``hf-hub:<id>``, or a path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import timm

from ..core.cli import parse_model_kwargs, report_error
from ..core.errors import ResmgError, UsageError
from ..core.hardware import PRECISIONS, choose_precision, pick_device
from ..core.sources import ModelSource, model_source
from ..data.datasets import DatasetError, load_dataset, split_train_val
from ..data.loader import Materializer
from ..inference.fast_path import FastPath, FastPathSettings
from ..inference.int8_record import is_int8_folder
from ..inference.int8_source import open_int8
from ..models.factory import create_model
from ..train.checkpoint import CheckpointError
from ..train.distributed import DistEnv
from ..train.evaluation import evaluate_split
from ..train.run import Run
from ..weights.loading import load_weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resmg_zoo.tools.evaluate", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run", help="a training run folder (its config and last checkpoint)")
    source.add_argument("--weights", help="a safetensors state dict (needs --model, the architecture)")
    p.add_argument(
        "--model",
        help="the architecture for --weights; alone, a published model.tag, hf-hub:<id>, or the path of an int8 "
        "folder (resmg-export --format int8)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="the int8 model: the published one of --model (no calibration data needed), or --model's int8 folder",
    )
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache for downloaded weights")
    p.add_argument("--model-kwargs", nargs="*", default=None, metavar="KEY=VALUE")
    p.add_argument("--dataset", help="dataset name or ImageFolder dir/zip (default: the run's)")
    p.add_argument("--data", default=None, help="folder with <dataset>.zip (default $RESMG_ZOO_DATA)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--ema", action="store_true", help="the run's EMA weights (a run trained with --ema-decay)")
    p.add_argument(
        "--flip-tta",
        action="store_true",
        help="test-time augmentation: average the logits of each image and its mirror",
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 where it is measured faster here, else fp32 (the output says which and why)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile with inductor freezing (weights as constants; a one-off compile of some seconds)",
    )
    p.add_argument(
        "--no-fold",
        action="store_true",
        help="run the model as trained: no batch norm folded into the convolutions (the fast path's reference)",
    )
    return p


def run_evaluation(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if not (args.run or args.weights or args.model):
        raise UsageError("name the model: --run RUN, --weights FILE --model ARCH, or --model SOURCE")
    source = model_source(args.model) if args.model and not (args.run or args.weights) else None
    if args.int8 or (source is not None and source.kind == "path" and is_int8_folder(source.path)):
        if source is None:
            raise UsageError("--int8 takes --model: a published model.tag, hf-hub:<id>, or an int8 folder")
        return int8_evaluation(args, source)
    if source is not None:
        return published_evaluation(args, source)
    run = Run.open(args.run) if args.run else None
    config: dict[str, Any] = run.config if run else {}
    if args.ema and run is None:
        raise UsageError("--ema needs --run (the EMA weights of a training run)")
    if run is None and not args.model:
        raise UsageError("--weights needs --model")
    if run is None and not Path(args.weights).is_file():  # checked before a dataset is decoded
        raise CheckpointError(f"weights file {args.weights} does not exist or is not a regular file")
    if run is not None and args.model and args.model != run.model_name:
        raise UsageError(f"--model {args.model!r}: the run in {run.path} trained {run.model_name!r}")
    dataset_name = args.dataset or config.get("dataset")
    if not dataset_name:
        raise UsageError("--dataset is required with --weights")
    dataset = load_dataset(
        dataset_name, data_dir=args.data, image_size=config.get("image_size"), channels=config.get("channels")
    )
    if args.split == "val":
        recipe = config.get("recipe_settings", {})
        _, split = split_train_val(dataset, recipe.get("val_size", 5000), config.get("seed", 0))
        if split is None:
            raise DatasetError("the run has no validation split (val_size=0); choose --split test or train")
    else:
        split = dataset.split(args.split)
    overrides = parse_model_kwargs(args.model_kwargs) if args.model_kwargs is not None else {}
    if run is not None:
        model_name, weights = run.model_name, run.weights_path(args.ema)
        model = run.build_model(args.ema, **overrides)
    else:
        model_name, weights = args.model, Path(args.weights)
        kwargs = dict(overrides)
        kwargs.setdefault("num_classes", dataset.num_classes)
        kwargs.setdefault("in_chans", dataset.input_size[0])
        model = timm.create_model(model_name, **kwargs)
        load_weights(model, weights, f"--weights {weights} ({model_name}, {kwargs})")
    device = pick_device(args.device)
    choice = choose_precision(args.precision, device)
    settings = FastPathSettings(choice.precision, fold_bn=not args.no_fold, compile=args.compile)
    fast = FastPath(model.to(device), settings)
    data = Materializer(
        split, dataset.mean, dataset.std, device=device, channels_last=True, pad_to=config.get("pad_to", 0)
    )
    result = evaluate_split(fast, data, args.batch_size, choice.precision, DistEnv(), flip=args.flip_tta)
    if args.flip_tta:  # the flip-averaged figures are the result
        result |= {k: result[f"flip_{k}"] for k in ("loss", "top1", "top5")}
    return dict(
        model=model_name,
        weights=str(weights),
        dataset=dataset.name,
        split=args.split,
        **scores(result),
        precision=choice.precision,
        precision_reason=choice.reason,
        ema=args.ema,
        flip_tta=args.flip_tta,
        fast_path=fast.record(),
    )


def scores(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a result reports: images, top-1, top-5 (%) and mean loss."""
    return {k: result[k] for k in ("count", "top1", "top5", "loss")}


def _test_split(args: argparse.Namespace, dataset_name: str) -> tuple[Any, Any]:
    """The dataset (``--dataset`` or the model's own) and its ``--split``, for a model that is not a run."""
    if args.split == "val" or args.ema or args.flip_tta or args.model_kwargs is not None:
        raise UsageError("--model SOURCE takes --dataset, --split train|test and --batch-size (no EMA, TTA or kwargs)")
    dataset = load_dataset(args.dataset or dataset_name, data_dir=args.data)
    return dataset, dataset.split(args.split)


def int8_evaluation(args: argparse.Namespace, source: ModelSource) -> dict[str, Any]:
    """Top-1/top-5 of an int8 model (published, or an int8 folder), rebuilt from its record and compiled
    with freezing (oneDNN's int8 convolutions)."""
    if args.no_fold:
        raise UsageError("--int8 always folds batch norm (it is part of the int8 model): drop --no-fold")
    opened = open_int8(source, args.cache_dir)
    dataset, split = _test_split(args, opened.record["calibration"]["dataset"])
    data = Materializer(split, dataset.mean, dataset.std, channels_last=True)
    result = evaluate_split(opened.model, data, args.batch_size, "fp32", DistEnv())
    return dict(
        model=opened.name,
        **opened.describe(),
        dataset=dataset.name,
        split=args.split,
        **scores(result),
        precision="int8",
    )


def published_evaluation(args: argparse.Namespace, source: ModelSource) -> dict[str, Any]:
    """Top-1/top-5 of a published model (``model.tag``, ``hf-hub:``, ``local-dir:``) on the fast path."""
    model = create_model(source.text if source.kind != "path" else f"local-dir:{source.value}", pretrained=True)
    dataset, split = _test_split(args, model.pretrained_cfg.get("tag") or "")
    device = pick_device(args.device)
    choice = choose_precision(args.precision, device)
    fast = FastPath(model.to(device), FastPathSettings(choice.precision, not args.no_fold, args.compile))
    data = Materializer(split, dataset.mean, dataset.std, device=device, channels_last=True)
    result = evaluate_split(fast, data, args.batch_size, choice.precision, DistEnv())
    return dict(
        model=source.text,
        dataset=dataset.name,
        split=args.split,
        **scores(result),
        precision=choice.precision,
        precision_reason=choice.reason,
        fast_path=fast.record(),
    )


def main(argv: Optional[list[str]] = None) -> int:
    try:
        result = run_evaluation(argv)
    except ResmgError as err:
        return report_error(err)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
