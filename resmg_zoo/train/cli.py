"""``python -m resmg_zoo.train``: the paper's recipe by default, shorter named recipes for CPU budgets.

    python -m resmg_zoo.train --model preact_resnet18_sharedA --dataset mnist --recipe quick \\
        --model-kwargs widths=16,32,64,128 --precision bf16 --channels-last --out runs/mnist-quick
    torchrun --nproc_per_node 2 scripts/train.py ...      # data-parallel (gloo on CPU, NCCL on GPU)

The run folder (:mod:`.run`) gets ``config.json`` (every setting), ``metrics.jsonl``/``metrics.csv``
(one row per epoch), ``curve.png`` and a checkpoint after every epoch; ``--resume`` continues it exactly.

Fine-tuning (see :mod:`.finetune`): start from ``--pretrained`` (the published weights of
``--init-tag``) or ``--init-from`` a run folder, published folder or safetensors file, on any
ImageFolder ``--dataset`` (``--image-size``/``--channels`` convert its images), with ``--freeze``,
``--head-lr-mult``, ``--warmup-epochs`` and ``--label-smoothing``. ``config.json`` records where the
initial weights came from (hub id or path, and sha256).

This module reads the command line into a :class:`~.config.TrainConfig` (the run's settings) and
:class:`~.config.RunOptions` (how this invocation runs it); :mod:`.engine` trains it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any, Optional

import torch

from ..core.cli import report_error
from ..core.errors import ResmgError
from ..core.hardware import PRECISIONS, command_line_allocator, pick_device
from ..core.tags import DEFAULT_TAG, TAGS
from ..data.loader import AUGMENTATIONS
from .config import RunOptions, TrainConfig, resolve_config
from .distributed import init_distributed, shutdown
from .engine import Trainer
from .finetune import FREEZE_HELP, HEAD_CHOICES
from .recipes import RECIPES, SCHEDULES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m resmg_zoo.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=None, help="registered model name (default preact_resnet18_sharedA)")
    p.add_argument(
        "--dataset", default=None, help="mnist, cifar10, cifar100, or an ImageFolder dir/zip (default mnist)"
    )
    p.add_argument(
        "--data", default=None, help="folder holding <dataset>.zip (default $RESMG_ZOO_DATA, else ../shared/data)"
    )
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset if not found")
    p.add_argument("--recipe", default=None, help=f"one of {', '.join(RECIPES)} (default paper)")
    p.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (all ranks together)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--warmup-epochs", type=float, default=None, help="linear warmup (onecycle: the rise)")
    p.add_argument("--schedule", default=None, choices=SCHEDULES, help="override the recipe's lr schedule")
    p.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="keep an EMA of the weights with this decay (0: none); its accuracy is logged as ema_*",
    )
    p.add_argument("--low-res", type=int, default=None, metavar="PIXELS", help="train early epochs at this side")
    p.add_argument("--low-res-epochs", type=float, default=None, help="how many epochs --low-res lasts")
    p.add_argument(
        "--augment", default=None, choices=AUGMENTATIONS, help="override the dataset's standard augmentation"
    )
    p.add_argument("--val-size", type=int, default=None, help="train images held out for validation (0: none)")
    p.add_argument(
        "--model-kwargs",
        nargs="*",
        default=None,
        metavar="KEY=VALUE",
        help="passed to create_model, e.g. widths=16,32,64,128 share=A pool_block=restrict",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="bf16 = autocast; auto (default): bf16 where it is measured faster here (CUDA, a CPU whose bf16 "
        "matmuls beat fp32 ones), else fp32. A --resume keeps the run's precision",
    )
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--accum-steps", type=int, default=None, help="split each global batch into this many micro-batches")
    p.add_argument("--pad-to", type=int, default=None, help="zero-pad images to this square size (e.g. 32 for MNIST)")
    ft = p.add_argument_group("fine-tuning and your own data")
    ft.add_argument(
        "--pretrained",
        action="store_true",
        default=None,
        help="start from the model's published weights for --init-tag (resolved like pretrained=True)",
    )
    ft.add_argument("--init-tag", default=None, help=f"tag of --pretrained: {', '.join(TAGS)} (default {DEFAULT_TAG})")
    ft.add_argument("--init-from", default=None, help="start from a run folder, a published folder or a .safetensors")
    ft.add_argument(
        "--head",
        default=None,
        choices=HEAD_CHOICES,
        help="auto: a new head only if the class count differs (default); new: always; keep: never (must fit)",
    )
    ft.add_argument("--freeze", default=None, help=f"parameters that do not train: {FREEZE_HELP}")
    ft.add_argument("--head-lr-mult", type=float, default=None, help="the head's lr = lr × this (default 1)")
    ft.add_argument(
        "--image-size", type=int, default=None, help="resize every image to N×N (bilinear) when loading the dataset"
    )
    ft.add_argument(
        "--channels", type=int, default=None, choices=(1, 3), help="convert every image to 1 (grayscale) or 3 (RGB)"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<dataset>-<recipe>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="also checkpoint every STEPS optimiser steps within an epoch, so that a kill loses at most that many "
        "(0: at the end of each epoch only)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=1,
        metavar="EPOCHS",
        help="evaluate every EPOCHS epochs (and always after the last); the rows between hold training figures only",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no progress lines within an epoch")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (the command line otherwise keeps freed memory mapped: fewer page "
        "faults; GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824 does the same)",
    )
    p.add_argument(
        "--log-every",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="without a terminal: a progress line (loss, images/s, ETA) this often within an epoch",
    )
    return p


def train(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run training as the command line says; returns the final metrics row."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    launcher = "torchrun ... scripts/train.py" if "LOCAL_RANK" in os.environ else "python -m resmg_zoo.train"
    command = f"{launcher} {shlex.join(argv)}"
    device = pick_device(args.device)
    env = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    try:
        options = RunOptions.from_args(args)
        config = resolve_config(args, options.run_dir, device, env)
        if env.is_main:
            print(f"precision: {precision_line(config, args.resume)}", file=sys.stderr, flush=True)
        return Trainer(config, options, env, device, command).fit()
    finally:
        shutdown(env)


def precision_line(config: TrainConfig, resumed: bool) -> str:
    """What the run computes in and why (printed when it starts)."""
    if resumed:
        return f"{config.precision}, as this run's config.json records (a resume keeps it)"
    return config.record["precision_choice"]["reason"]


def main(argv: Optional[list[str]] = None) -> int:
    try:
        row = train(argv)
    except ResmgError as err:  # a usage error (2), a NaN loss (3), weights that do not verify (4), ...
        return report_error(err)
    if row and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: row[k] for k in row if k.startswith(("test_", "val_", "epoch", "train_seconds_total"))}))
        if "test_top1" in row:
            print(f"test top-1: {row['test_top1']:.2f} %")
    return 0


def console_main() -> int:
    """``resmg-train``, ``python -m resmg_zoo.train`` and ``scripts/train.py``: the command line's process,
    whose allocator it may set (:func:`~resmg_zoo.core.hardware.retain_freed_memory`: no page faults for
    each step's activations, docs/measurements.md) unless ``--default-malloc``; then :func:`main`."""
    command_line_allocator(sys.argv[1:])
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(console_main())
