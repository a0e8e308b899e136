"""Classify image files with a published model or a training run: top-k class names and probabilities.

    resmg-classify --model preact_resnet18_sharedA.cifar10 photo.jpg more/ batch.zip
    resmg-classify --run runs/mnist-quick --topk 3 --format jsonl digits/
    resmg-classify --model preact_resnet18_sharedA.cifar10 --int8 photo.jpg  # its published int8 model
    resmg-classify --model ./exports/preact_resnet18_sharedA.cifar10.int8 photo.jpg   # an int8 folder

The model is named as on every tool (:mod:`.predictor`, ``--weights`` included): a registered
``model.tag`` is never a folder of the current directory; a folder is given as a path (``./x``, ``/x``,
``local-dir:x``). An int8 model is rebuilt from its record and float weights by our own code
(:mod:`resmg_zoo.inference.int8_source`): nothing read from a file runs.

Inputs are image files, folders (searched recursively for image files) and zips of images; each image goes
through timm's own ``resolve_model_data_config`` + ``create_transform`` for the model (the preprocessing its
``pretrained_cfg`` names), as timm's ``inference.py`` does, decoded in ``DataLoader`` workers. The model runs
on the inference fast path (:mod:`resmg_zoo.inference.fast_path`): batch norm folded into the convolutions,
inference mode, channels_last, in the precision ``--precision`` names (``auto``: bf16 where it is measured
faster here); ``--compile`` adds ``torch.compile`` with freezing. Results are written as they come (a table
line, a JSON-lines or CSV row per image; ``json`` streams one array), so a million images never sit in memory.
An input that is not a readable image — missing, damaged, too large, a decompression bomb, an encrypted zip
member — is named on stderr and skipped; the exit code is 0 if anything was classified, 2 if nothing could be.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, Optional, TextIO

from timm.data import create_transform
from torch.utils.data import DataLoader

from ..core.cli import report_error
from ..core.errors import ResmgError, UsageError
from ..data.image_files import ImageFileStream, Skipped
from .predictor import add_inference_args, add_model_source_args, open_predictor

FORMATS = ("table", "json", "jsonl", "csv")
MAX_BATCH = 4096


class ClassifyError(UsageError):
    """Input the user can fix (no model, no images); the message says which."""


def default_workers() -> int:
    """Decoding workers beside the model: a quarter of the cores, at least one (one on 2 cores)."""
    return max(1, (os.cpu_count() or 1) // 4)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resmg-classify", description=__doc__.split("\n\n")[0])
    add_model_source_args(p)
    p.add_argument("inputs", nargs="+", help="image files, folders of images, zips of images")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument(
        "--format",
        default="table",
        choices=FORMATS,
        help="table (default), json (one array), jsonl or csv (a line each)",
    )
    p.add_argument("--batch-size", type=int, default=64, help=f"images per forward pass, 1 to {MAX_BATCH} (default 64)")
    p.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default: a quarter of the cores, ≥ 1)"
    )
    add_inference_args(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.topk < 1:
        raise ClassifyError(f"--topk must be at least 1, got {args.topk}")
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise ClassifyError(f"--batch-size must be between 1 and {MAX_BATCH}, got {args.batch_size}")
    if args.workers is not None and not 0 <= args.workers <= 64:
        raise ClassifyError(f"--workers must be between 0 and 64, got {args.workers}")


def predictions(args: argparse.Namespace, skipped: list[Skipped]) -> Iterator[dict[str, Any]]:
    """One dict per classified image, in the inputs' order; what is skipped is appended to ``skipped``
    (and named on stderr) as it is met."""
    predictor = open_predictor(args)
    names, config = predictor.opened.class_names, predictor.opened.data_config
    stream = ImageFileStream(
        args.inputs, create_transform(**config), "L" if config["input_size"][0] == 1 else "RGB", args.batch_size
    )
    workers = default_workers() if args.workers is None else args.workers
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    k = min(args.topk, len(names))
    for batch_names, images, batch_skipped in loader:
        for item in batch_skipped:
            skipped.append(item)
            print(f"skipped {item.name}: {item.reason}", file=sys.stderr, flush=True)
        if images is None:
            continue
        top = predictor(images).softmax(dim=1).topk(k, dim=1)
        for name, p, i in zip(batch_names, top.values.tolist(), top.indices.tolist()):
            yield dict(image=name, top=[dict(label=names[j], index=j, prob=q) for j, q in zip(i, p)])


class Writer:
    """Writes each result as it comes, in one of :data:`FORMATS`."""

    def __init__(self, fmt: str, out: TextIO) -> None:
        self.fmt, self.out, self.count = fmt, out, 0
        self.csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None

    def write(self, result: dict[str, Any]) -> None:
        if self.fmt == "json":
            self.out.write(("[" if not self.count else ",\n") + json.dumps(result))
        elif self.fmt == "jsonl":
            self.out.write(json.dumps(result) + "\n")
        elif self.csv is not None:
            if not self.count:
                self.csv.writerow(["image", "rank", "label", "index", "prob"])
            for rank, t in enumerate(result["top"], 1):
                self.csv.writerow([result["image"], rank, t["label"], t["index"], f"{t['prob']:.6f}"])
        else:
            line = "  ".join(f"{t['label']} {100 * t['prob']:5.1f}%" for t in result["top"])
            self.out.write(f"{result['image']}  {line}\n")
        self.count += 1
        self.out.flush()

    def close(self) -> None:
        if self.fmt == "json" and self.count:
            self.out.write("]\n")


def classify(argv: Optional[list[str]] = None, out: Optional[TextIO] = None) -> tuple[int, list[Skipped]]:
    """Classify and write to ``out`` (stdout) as the command line says; returns how many images were
    classified and what was skipped."""
    args = build_parser().parse_args(argv)
    check_args(args)
    writer, skipped = Writer(args.format, out or sys.stdout), []
    for result in predictions(args, skipped):
        writer.write(result)
    writer.close()
    return writer.count, skipped


def main(argv: Optional[list[str]] = None) -> int:
    try:
        count, _ = classify(argv)
    except ResmgError as err:
        return report_error(err)
    except BrokenPipeError:  # the reader stopped (``| head``): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if not count:
        print("error: no image could be classified", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
