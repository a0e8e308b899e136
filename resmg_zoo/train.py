"""Train a model of the zoo: the paper's recipe by default, shorter named recipes for CPU budgets.

    python -m resmg_zoo.train --model preact_resnet18_sharedA --dataset mnist --recipe quick \\
        --model-kwargs widths=16,32,64,128 --precision bf16 --channels-last --out runs/mnist-quick
    torchrun --nproc_per_node 2 scripts/train.py ...      # data-parallel (gloo on CPU, NCCL on GPU)

The run folder gets ``config.json`` (every setting), ``metrics.jsonl``/``metrics.csv`` (one row per
epoch), ``curve.png`` and a checkpoint after every epoch; ``--resume`` continues it exactly.

Fine-tuning (see :mod:`resmg_zoo.finetune`): start from ``--pretrained`` (the published weights of
``--init-tag``) or ``--init-from`` a run folder, published folder or safetensors file, on any
ImageFolder ``--dataset`` (``--image-size``/``--channels`` convert its images), with ``--freeze``,
``--head-lr-mult``, ``--warmup-epochs`` and ``--label-smoothing``. ``config.json`` records where the
initial weights came from (hub id or path, and sha256).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import timm
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .atomic import write_text_atomic
from .checkpoint import TrainingState, load_checkpoint, save_checkpoint
from .choices import check_choice
from .data import ImageDataset, load_dataset, split_train_val
from .distributed import DistEnv, all_reduce_sum, barrier, broadcast_buffers, init_distributed, shutdown
from .finetune import FREEZE_HELP, HEAD_CHOICES, apply_init, freeze, hold_frozen_norms, optimizer_groups, resolve_init
from .hardware import describe_hardware
from .loader import AUGMENTATIONS, EpochPlan, Materializer
from .recipes import RECIPES, Recipe, lr_factor, resolve_recipe
from .run_log import plot_curve, read_metrics, write_metrics
from .tags import DEFAULT_TAG, TAGS

EXIT_NONFINITE = 3
# Settings of a run that --resume takes from config.json; given again, they must agree.
RUN_SETTINGS = (
    "model",
    "dataset",
    "recipe",
    "model_kwargs",
    "precision",
    "channels_last",
    "compile",
    "seed",
    "accum_steps",
    "pad_to",
    "image_size",
    "channels",
    "pretrained",
    "init_tag",
    "init_from",
    "head",
    "freeze",
    "head_lr_mult",
)
# Recipe settings a resumed run may change (e.g. train longer, or lower the lr after a NaN).
RESUMABLE_OVERRIDES = ("epochs", "lr", "weight_decay", "label_smoothing")
RECIPE_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "augment", "val_size", "label_smoothing", "warmup_epochs")


def parse_value(text: str) -> Any:
    """``"3"`` → 3, ``"0.5"`` → 0.5, ``"true"`` → True, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_kwargs(items: Optional[list[str]]) -> dict[str, Any]:
    kwargs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-kwargs takes key=value pairs, got {item!r}")
        kwargs[key] = parse_value(value)
    return kwargs


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
    p.add_argument("--warmup-epochs", type=float, default=None)
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
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"), help="bf16 = autocast (CPU AMX, CUDA)")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


DEFAULTS: dict[str, Any] = dict(
    model="preact_resnet18_sharedA",
    dataset="mnist",
    recipe="paper",
    model_kwargs={},
    precision="fp32",
    channels_last=False,
    compile=False,
    seed=0,
    accum_steps=1,
    pad_to=0,
    image_size=None,
    channels=None,
    pretrained=False,
    init_tag=DEFAULT_TAG,
    init_from=None,
    head="auto",
    freeze=None,
    head_lr_mult=1.0,
)


@dataclass
class RunConfig:
    """The complete settings of a run, as written to ``config.json``."""

    settings: dict[str, Any]
    recipe: Recipe

    def to_json(self) -> dict[str, Any]:
        return {**self.settings, "recipe_settings": asdict(self.recipe)}


def resolve_config(args: argparse.Namespace, run_dir: Path) -> RunConfig:
    """Settings from the command line and defaults, or — with ``--resume`` — from the run folder."""
    given = {k: getattr(args, k) for k in RUN_SETTINGS if k != "model_kwargs" and getattr(args, k) is not None}
    if args.model_kwargs is not None:
        given["model_kwargs"] = parse_model_kwargs(args.model_kwargs)
    overrides = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None}
    if args.resume:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        saved_recipe = saved["recipe_settings"]
        conflicts = {k: (v, saved.get(k)) for k, v in given.items() if saved.get(k) != v}
        conflicts |= {
            k: (v, saved_recipe.get(k))
            for k, v in overrides.items()
            if k not in RESUMABLE_OVERRIDES and saved_recipe.get(k) != v
        }
        if conflicts:
            raise ValueError(
                "--resume continues the run as configured in "
                f"{run_dir / 'config.json'}; these arguments differ from it (given, saved): {conflicts}. "
                f"Only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)} may change on resume."
            )
        changed = {k: v for k, v in overrides.items() if saved_recipe.get(k) != v}
        recipe = Recipe(**{**saved_recipe, "milestones": tuple(saved_recipe["milestones"]), **changed})
        resumes = [*saved.get("resumes", []), dict(at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), changed=changed)]
        settings = {**saved, "resumes": resumes}
        settings.pop("recipe_settings")
        return RunConfig(settings, recipe)
    settings = {**DEFAULTS, **given}
    check_choice("recipe", settings["recipe"], RECIPES)
    dataset_key = Path(settings["dataset"]).name.removesuffix(".zip")
    recipe = resolve_recipe(settings["recipe"], dataset_key, settings["model"], overrides)
    return RunConfig(settings, recipe)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(precision: str, device: torch.device) -> Any:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def build_model(config: RunConfig, dataset: ImageDataset) -> nn.Module:
    """The model for the dataset's classes and channels (``in_chans`` from the images)."""
    kwargs = dict(config.settings["model_kwargs"])
    kwargs.setdefault("num_classes", dataset.num_classes)
    kwargs.setdefault("in_chans", dataset.input_size[0])
    return timm.create_model(config.settings["model"], **kwargs)


@torch.no_grad()
def evaluate(
    model: nn.Module, materializer: Materializer, batch_size: int, precision: str, env: DistEnv
) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the whole split; ranks share the work."""
    model.eval()
    device = materializer.device
    plan = EpochPlan(len(materializer.split), batch_size, seed=0, shuffle=False, drop_last=False)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for step, batch in enumerate(plan.batches(0)):
        if step % env.world_size != env.rank:
            continue
        x, y = materializer(batch)
        with autocast_context(precision, device):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                (top[:, 0] == y).sum().double(),
                (top == y[:, None]).any(dim=1).sum().double(),
                torch.tensor(float(len(y)), dtype=torch.float64, device=device),
            ]
        )
    all_reduce_sum(sums, env)
    loss, top1, top5, count = sums.tolist()
    return dict(loss=loss / count, top1=100.0 * top1 / count, top5=100.0 * top5 / count, count=int(count))


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop reads after each step."""

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


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
        return _train(args, env, device, command)
    finally:
        shutdown(env)


def _default_out(args: argparse.Namespace) -> Path:
    parts = [args.model or DEFAULTS["model"], Path(args.dataset or DEFAULTS["dataset"]).name, args.recipe or "paper"]
    return Path("runs") / "-".join(parts)


def _train(args: argparse.Namespace, env: DistEnv, device: torch.device, command: str) -> dict[str, Any]:
    run_dir = Path(args.out) if args.out else _default_out(args)
    if args.resume and not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"--resume: no run to continue in {run_dir} (no config.json)")
    if not args.resume and (run_dir / "checkpoint.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    config = resolve_config(args, run_dir)
    s, recipe = config.settings, config.recipe
    if recipe.batch_size % (env.world_size * s["accum_steps"]):
        raise ValueError(
            f"batch size {recipe.batch_size} must divide by world size {env.world_size} "
            f"× accum steps {s['accum_steps']}"
        )

    init = None if args.resume else resolve_init(s["model"], s["init_from"], s["pretrained"], s["init_tag"])
    dataset = load_dataset(
        s["dataset"], data_dir=args.data, download=args.download, image_size=s["image_size"], channels=s["channels"]
    )
    train_split, val_split = split_train_val(dataset, recipe.val_size, s["seed"])
    torch.manual_seed(s["seed"])
    if init is not None:  # the initial weights' architecture (e.g. widths), unless the command line sets it
        inherited = {k: v for k, v in init.model_args.items() if k not in ("num_classes", "in_chans")}
        s["model_kwargs"] = inherited | s["model_kwargs"]
    raw_model = build_model(config, dataset)
    if init is not None:
        s["init"] = apply_init(raw_model, s["model"], init, s["head"])
    s["frozen_tensors"] = len(freeze(raw_model, s["freeze"]))
    raw_model = raw_model.to(device)
    memory_format = torch.channels_last if s["channels_last"] else torch.contiguous_format
    raw_model = raw_model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(
        optimizer_groups(raw_model, s["head_lr_mult"]),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    plan = EpochPlan(len(train_split), recipe.batch_size, s["seed"])
    steps_per_epoch = len(plan)
    total_epochs = math.ceil(recipe.epochs)
    total_steps = max(1, round(recipe.epochs * steps_per_epoch))  # a fraction of an epoch is at least one step

    state = TrainingState(0, 0, 0, {}, {}, {})
    pending_config: Optional[dict[str, Any]] = None
    if args.resume:
        state = load_checkpoint(run_dir, raw_model)
        optimizer.load_state_dict(state.optimizer)
        _set_rng_state(state.rng, device)
        # config.json records the resume with its changes once the resumed run saves its first checkpoint
        # (a resume that fails at once, e.g. a NaN with a new --lr, leaves the run's record as it was)
        pending_config = config.to_json()
    elif env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        settings = dict(
            config.to_json(),
            dataset_source=dataset.source,
            dataset_sha256=dataset.sha256,
            num_classes=dataset.num_classes,
            input_size=list(dataset.input_size),
            train_images=len(train_split),
            val_images=len(val_split) if val_split is not None else 0,
            test_images=len(dataset.split("test")),
            world_size=env.world_size,
            device=str(device),
            hardware=describe_hardware(device),
            versions=dict(resmg_zoo=__version__, torch=torch.__version__, timm=timm.__version__),
            command=command,
            started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        write_text_atomic(run_dir / "config.json", json.dumps(settings, indent=2) + "\n")
    barrier(env)

    model: nn.Module = raw_model
    if s["compile"]:
        model = torch.compile(model)
    eval_model = model  # never the DDP wrapper: evaluation runs a different number of batches per rank
    if env.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    make = dict(device=device, channels_last=s["channels_last"], pad_to=s["pad_to"])
    train_data = Materializer(train_split, dataset.mean, dataset.std, recipe.augment, **make)
    eval_sets = {"test": Materializer(dataset.split("test"), dataset.mean, dataset.std, **make)}
    if val_split is not None:
        eval_sets = {"val": Materializer(val_split, dataset.mean, dataset.std, **make), **eval_sets}

    rows = read_metrics(run_dir) if args.resume else []
    stop = StopSignal()
    show_bar = env.is_main and not args.quiet and sys.stderr.isatty()
    last_row: dict[str, Any] = rows[-1] if rows else {}
    try:
        for epoch in range(state.epoch, total_epochs):
            epoch_steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            start = state.step_in_epoch if epoch == state.epoch else 0
            # A resumed epoch starts from the sums saved at the stop (already reduced over ranks: rank 0 holds them).
            restored = start and env.is_main
            sums = torch.tensor(
                [state.partial.get(k, 0.0) for k in ("loss", "correct", "count")] if restored else [0.0, 0.0, 0.0],
                dtype=torch.float64,
            )
            elapsed = state.partial.get("seconds", 0.0) if start else 0.0
            model.train()
            hold_frozen_norms(raw_model)
            bar = _progress(epoch_steps, start, f"epoch {epoch + 1}/{total_epochs}", show_bar)
            tic = time.perf_counter()
            for step, batch in enumerate(plan.batches(epoch, start), start=start):
                if step >= epoch_steps:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = recipe.lr * group["lr_mult"] * lr_factor(recipe, state.global_step, steps_per_epoch)
                local = batch.shard(env.rank, env.world_size)
                step_sums = torch.zeros(3, dtype=torch.float64)
                for k in range(s["accum_steps"]):
                    x, y = train_data(local.shard(k, s["accum_steps"]))
                    sync = nullcontext()
                    if env.enabled and k < s["accum_steps"] - 1:
                        sync = model.no_sync()
                    with sync:
                        with autocast_context(s["precision"], device):
                            logits = model(x)
                            loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
                        (loss / s["accum_steps"]).backward()
                    step_sums += torch.tensor(
                        [loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64
                    )
                flags = torch.tensor([float(not math.isfinite(step_sums[0].item())), float(stop.received is not None)])
                all_reduce_sum(flags, env)
                if flags[0] > 0:
                    optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLoss(epoch, step, run_dir)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.global_step += 1
                sums += step_sums
                bar.update(1)
                if show_bar:
                    bar.set_postfix(
                        loss=f"{step_sums[0].item() / step_sums[2].item():.3f}",
                        img_s=f"{sums[2].item() * env.world_size / (elapsed + time.perf_counter() - tic):.0f}",
                    )
                if flags[1] > 0 and step + 1 < epoch_steps:
                    all_reduce_sum(sums, env)
                    _save(
                        run_dir,
                        raw_model,
                        optimizer,
                        state,
                        epoch,
                        step + 1,
                        sums,
                        elapsed + time.perf_counter() - tic,
                        device,
                        env,
                        pending_config,
                    )
                    bar.close()
                    if env.is_main:
                        print(
                            f"stopped by {stop.received or 'a signal'} at epoch {epoch + 1}, step {step + 1}/"
                            f"{epoch_steps}; checkpoint saved in {run_dir}. Continue with --resume --out {run_dir}",
                            file=sys.stderr,
                        )
                    return last_row
            bar.close()
            seconds = elapsed + time.perf_counter() - tic
            all_reduce_sum(sums, env)
            row = dict(
                epoch=epoch + 1,
                lr=optimizer.param_groups[0]["lr"],
                train_loss=sums[0].item() / sums[2].item(),
                train_top1=100.0 * sums[1].item() / sums[2].item(),
                train_images=int(sums[2].item()),
                train_seconds=seconds,
                images_per_second=sums[2].item() / seconds,
            )
            broadcast_buffers(raw_model, env)
            for split, data in eval_sets.items():
                result = evaluate(eval_model, data, 512, s["precision"], env)
                row |= {
                    f"{split}_loss": result["loss"],
                    f"{split}_top1": result["top1"],
                    f"{split}_top5": result["top5"],
                }
            row["wall_seconds"] = (rows[-1]["wall_seconds"] if rows else 0.0) + seconds
            rows.append(row)
            last_row = row
            state.epoch, state.step_in_epoch = epoch + 1, 0
            _save(run_dir, raw_model, optimizer, state, epoch + 1, 0, None, 0.0, device, env, pending_config)
            pending_config = None
            if env.is_main:
                write_metrics(run_dir, rows)
                plot_curve(run_dir, rows, f"{s['model']} on {dataset.name} ({s['recipe']})")
                if args.quiet or not sys.stderr.isatty():
                    summary = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
                    print(f"epoch {epoch + 1}/{total_epochs}: {summary}", file=sys.stderr, flush=True)
            if stop.received is not None:
                if env.is_main:
                    print(
                        f"stopped by {stop.received} after epoch {epoch + 1}; resume with --resume --out {run_dir}",
                        file=sys.stderr,
                    )
                return last_row
    finally:
        stop.restore()
    return last_row


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf: training stops and the last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int, run_dir: Path) -> None:
        super().__init__(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}: training stopped. The last good checkpoint "
            f"in {run_dir} is kept; lower --lr or use --precision fp32, then --resume."
        )


def _save(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    epoch: int,
    step_in_epoch: int,
    sums: Optional[torch.Tensor],
    seconds: float,
    device: torch.device,
    env: DistEnv,
    pending_config: Optional[dict[str, Any]] = None,
) -> None:
    """Rank 0 writes the checkpoint (and a resumed run's updated config.json); all ranks wait."""
    if env.is_main:
        if pending_config is not None:
            write_text_atomic(run_dir / "config.json", json.dumps(pending_config, indent=2) + "\n")
        partial = {}
        if sums is not None:
            partial = dict(zip(("loss", "correct", "count"), sums.tolist()), seconds=seconds)
        save_checkpoint(
            run_dir,
            model,
            TrainingState(epoch, step_in_epoch, state.global_step, optimizer.state_dict(), _rng_state(device), partial),
        )
    barrier(env)


def main(argv: Optional[list[str]] = None) -> int:
    try:
        row = train(argv)
    except NonFiniteLoss as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if row and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: row[k] for k in row if k.startswith(("test_", "val_", "epoch", "wall"))}))
        if "test_top1" in row:
            print(f"test top-1: {row['test_top1']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
