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
:class:`~.config.RunOptions` (how this invocation runs it); :mod:`.engine` trains it. Their fields
(and the overridable ones of :class:`~.recipes.Recipe`) define the flags: one field per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import Field
from typing import Any, Optional

import torch

from ..core.cli import report_error
from ..core.errors import ResmgError
from ..core.hardware import command_line_allocator, pick_device
from .config import RunOptions, TrainConfig, resolve_config
from .distributed import init_distributed, shutdown
from .engine import Trainer
from .recipes import Recipe, field_default, recipe_default_text, setting_fields, setting_key, setting_of

# The flags that are no field of TrainConfig, Recipe or RunOptions, hand-written in build_parser:
# --device picks the device before any setting is read; --default-malloc is read from the raw argv
# (core.hardware.command_line_allocator) before the parser runs, and only accepted here.
OTHER_FLAGS = ("device", "default_malloc")


def build_parser() -> argparse.ArgumentParser:
    """The command line: a flag for each :func:`~.recipes.setting` field of :class:`~.config.TrainConfig`
    (the run's settings), :class:`~.recipes.Recipe` (its overridable recipe settings) and
    :class:`~.config.RunOptions` (how this invocation runs it) — see :func:`add_setting_flags` —
    and the :data:`OTHER_FLAGS`."""
    p = argparse.ArgumentParser(prog="python -m resmg_zoo.train", description=__doc__.split("\n\n")[0])
    groups: dict[Optional[str], Any] = {None: p}
    add_setting_flags(p, TrainConfig, groups, default_text)
    add_setting_flags(p, Recipe, groups, recipe_default_text)
    add_setting_flags(p, RunOptions, groups, default_text)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda (default: auto)")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (the command line otherwise keeps freed memory mapped: fewer page "
        "faults; GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824 does the same)",
    )
    return p


def add_setting_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    groups: dict[Optional[str], Any],
    shown: Callable[[Field[Any]], str],
) -> None:
    """A flag for each :func:`~.recipes.setting` field of dataclass ``cls``: ``--KEY`` with ``dest``
    ``KEY`` (:func:`~.recipes.setting_key`) and default ``None`` (not given), in the help ``groups``
    by title (a new one added to it), its help ending ``(default: <shown(field)>)``."""
    for f in setting_fields(cls):
        meta, key = setting_of(f), setting_key(f)
        if meta.group not in groups:
            groups[meta.group] = parser.add_argument_group(meta.group)
        groups[meta.group].add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            default=None,
            help=f"{meta.help} (default: {shown(f)})",
            **meta.argparse,
        )


def default_text(f: Field[Any]) -> str:
    """How a setting's default reads in the help: its ``shown`` text, else its value."""
    return setting_of(f).shown or str(field_default(f))


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
            print(f"precision: {precision_line(config, options.resume)}", file=sys.stderr, flush=True)
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
