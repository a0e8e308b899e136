"""Classify image files with a published model or a training run: top-k class names and probabilities.

    resmg-classify --model preact_resnet18_sharedA.cifar10 photo.jpg more/ batch.zip
    resmg-classify --run runs/mnist-quick --topk 3 --format json digits/

Inputs are image files, folders (searched recursively for image files) and zips of images; each image goes through
timm's own ``resolve_model_data_config`` + ``create_transform`` for the model (the preprocessing its
``pretrained_cfg`` names), as timm's ``inference.py`` does. A file that is not a readable image is
named on stderr and skipped; the exit code is 2 only if nothing could be classified.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform, resolve_model_data_config

from ..core.choices import check_choice
from ..core.cli import EXIT_USAGE
from ..core.errors import UsageError
from ..data.datasets import IMAGE_SUFFIXES
from ..models.variants import VARIANTS
from ..train.run import Run

FORMATS = ("table", "json", "csv")


class ClassifyError(UsageError):
    """Input the user can fix (no model, no images); the message says which."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resmg-classify", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a registered <model>.<tag> with published weights, or hf-hub:<id>")
    source.add_argument("--run", help="a training run folder (its last checkpoint)")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, zips of images")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--format", default="table", choices=FORMATS, help="table (default), json (one line) or csv")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache for downloaded weights")
    return p


def load_classifier(args: argparse.Namespace) -> tuple[torch.nn.Module, list[str]]:
    """The model in eval mode and its class names (``label_names`` of its cfg, the run's classes, or indices)."""
    if args.run:
        run = Run.open(args.run)
        model = run.build_model()
        names = run.config.get("classes")
    else:
        if not args.model.startswith(("hf-hub:", "local-dir:")):
            check_choice("model", args.model.split(".")[0], VARIANTS)  # close names, not timm's bare word
        model = timm.create_model(args.model, pretrained=True, cache_dir=args.cache_dir).eval()
        names = None
    names = names or list(model.pretrained_cfg.get("label_names") or [])
    if len(names) != model.num_classes:
        names = [str(i) for i in range(model.num_classes)]
    return model, list(names)


def images(inputs: list[str], skipped: list[str]) -> Iterator[tuple[str, Image.Image]]:
    """``(name, image)`` of every image the inputs hold; unreadable ones are added to ``skipped``."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                yield from _open(str(file), file.read_bytes, skipped)
        elif path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in sorted(n for n in archive.namelist() if n.lower().endswith(IMAGE_SUFFIXES)):
                    yield from _open(f"{path}:{member}", lambda m=member: archive.read(m), skipped)
        elif path.is_file():
            yield from _open(str(path), path.read_bytes, skipped)
        else:
            skipped.append(f"{item}: no such file or folder")


def _open(name: str, read: Any, skipped: list[str]) -> Iterator[tuple[str, Image.Image]]:
    try:
        image = Image.open(io.BytesIO(read()))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, zipfile.BadZipFile) as err:
        skipped.append(f"{name}: not a readable image ({err})")
        return
    yield name, image


def classify(argv: Optional[list[str]] = None) -> tuple[list[dict[str, Any]], list[str], str]:
    """The predictions (one dict per image), the skipped inputs with why, and the output format."""
    args = build_parser().parse_args(argv)
    if args.topk < 1:
        raise ClassifyError(f"--topk must be at least 1, got {args.topk}")
    model, names = load_classifier(args)
    config = resolve_model_data_config(model)
    transform = create_transform(**config)
    mode = "L" if config["input_size"][0] == 1 else "RGB"
    k = min(args.topk, len(names))
    skipped: list[str] = []
    results: list[dict[str, Any]] = []
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        with torch.no_grad():
            probs = model(torch.stack([x for _, x in batch])).softmax(dim=1)
        top = probs.topk(k, dim=1)
        for (name, _), p, i in zip(batch, top.values.tolist(), top.indices.tolist()):
            results.append(dict(image=name, top=[dict(label=names[j], index=j, prob=q) for j, q in zip(i, p)]))
        batch.clear()

    for name, image in images(args.inputs, skipped):
        batch.append((name, transform(image.convert(mode))))
        if len(batch) == args.batch_size:
            flush()
    if batch:
        flush()
    return results, skipped, args.format


def render(results: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(results)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["image", "rank", "label", "index", "prob"])
        for r in results:
            for rank, t in enumerate(r["top"], 1):
                writer.writerow([r["image"], rank, t["label"], t["index"], f"{t['prob']:.6f}"])
        return out.getvalue().rstrip("\n")
    width = max(len(r["image"]) for r in results)
    return "\n".join(
        f"{r['image']:<{width}}  " + "  ".join(f"{t['label']} {100 * t['prob']:5.1f}%" for t in r["top"])
        for r in results
    )


def main(argv: Optional[list[str]] = None) -> int:
    try:
        results, skipped, fmt = classify(argv)
    except (UsageError, HfHubHTTPError) as err:  # HfHubHTTPError: e.g. hf-hub:<id>@<revision> the Hub lacks
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not results:
        print("error: no image could be classified", file=sys.stderr)
        return EXIT_USAGE
    print(render(results, fmt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
