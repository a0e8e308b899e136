"""Top-1/top-5 of a model on a dataset split, printed as one JSON object.

The model is named as on every tool (:mod:`.predictor`: a run, a weights file, a published ``model.tag``,
``hf-hub:``, a path, ``--int8``) and runs on the inference fast path (batch norm folded into the
convolutions, channels_last, inference mode, ``--precision auto``); ``--compile`` adds ``torch.compile``
with freezing, ``--no-fold --precision fp32`` is the model exactly as trained.

    python -m resmg_zoo.tools.evaluate --run runs/mnist-quick --split test
    python -m resmg_zoo.tools.evaluate --weights model.safetensors --model preact_resnet18_sharedA \\
        --model-kwargs widths=16,32,64,128 --dataset mnist --split test
    python -m resmg_zoo.tools.evaluate --model preact_resnet18_sharedA.cifar10            # published weights
    python -m resmg_zoo.tools.evaluate --model preact_resnet18_sharedA.cifar10 --int8     # their published int8
    python -m resmg_zoo.tools.evaluate --model ./exports/preact_resnet18_sharedA.cifar10.int8  # an int8 folder
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.cli import report_error
from ..core.errors import ResmgError, UsageError
from ..data.datasets import DatasetError, load_dataset, split_train_val
from ..data.loader import Materializer
from ..train.distributed import DistEnv
from ..train.evaluation import evaluate_split
from ..train.report import build_report, predict_split, write_report
from ..train.report_folder import check_report_folder
from .predictor import add_inference_args, add_model_source_args, open_predictor


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resmg_zoo.tools.evaluate", description=__doc__.split("\n\n")[0])
    add_model_source_args(p)
    p.add_argument("--dataset", help="dataset name or ImageFolder dir/zip (default: the model's own)")
    p.add_argument("--data", default=None, help="folder with <dataset>.zip (default $RESMG_ZOO_DATA)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--flip-tta",
        action="store_true",
        help="test-time augmentation: average the logits of each image and its mirror",
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write report.json and pictures there (a new or empty folder, or an earlier report's, whose files "
        "are replaced): per-class accuracy, confusion matrix, calibration (ECE), most confused pairs, mistakes",
    )
    add_inference_args(p)
    return p


def run_evaluation(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.report is not None:  # before anything is loaded: nothing is computed for a report that may not be written
        if not args.report.strip():
            raise UsageError("--report needs a folder")
        if args.flip_tta:
            raise UsageError("--report describes the plain predictions: drop --flip-tta")
        check_report_folder(Path(args.report))
    predictor = open_predictor(args)  # before any data is decoded: a missing file is named at once
    opened = predictor.opened
    config: dict[str, Any] = opened.run.config if opened.run else {}
    dataset_name = args.dataset or opened.dataset
    if not dataset_name:
        raise UsageError("--dataset is required: the model's source does not say which dataset it was trained on")
    dataset = load_dataset(
        dataset_name, data_dir=args.data, image_size=config.get("image_size"), channels=config.get("channels")
    )
    if args.split == "val":
        if opened.run is None:
            raise UsageError("--split val is a training run's held-out split: it needs --run")
        recipe = config.get("recipe_settings", {})
        _, split = split_train_val(dataset, recipe.get("val_size", 5000), config.get("seed", 0))
        if split is None:
            raise DatasetError("the run has no validation split (val_size=0); choose --split test or train")
    else:
        split = dataset.split(args.split)
    device = predictor.fast_path.device if predictor.fast_path is not None else "cpu"
    data = Materializer(
        split, dataset.mean, dataset.std, device=device, channels_last=True, pad_to=config.get("pad_to", 0)
    )
    record = dict(predictor.record(), dataset=dataset.name, split=args.split)
    if args.report is not None:  # one pass: the report's predictions give the scores too
        predictions = predict_split(predictor, data, args.batch_size)
        report = build_report(predictions, list(dataset.classes), record)
        record["report"] = [str(p) for p in write_report(Path(args.report), report, predictions, split.images)]
        result = dict(count=report["images"], top1=report["top1"], top5=report["top5"], loss=report["loss"])
    else:
        result = evaluate_split(predictor, data, args.batch_size, None, DistEnv(), flip=args.flip_tta)
    if args.flip_tta:  # the flip-averaged figures are the result
        result |= {k: result[f"flip_{k}"] for k in ("loss", "top1", "top5")}
    return dict(record, **scores(result), precision_reason=predictor.reason, flip_tta=args.flip_tta)


def scores(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a result reports: images, top-1, top-5 (%) and mean loss."""
    return {k: result[k] for k in ("count", "top1", "top5", "loss")}


def main(argv: Optional[list[str]] = None) -> int:
    try:
        result = run_evaluation(argv)
    except ResmgError as err:
        return report_error(err)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
