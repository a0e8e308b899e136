"""The training loop of ``python -m resmg_zoo.train``: :meth:`Trainer.__init__` sets up (settings,
data, model with its initial weights and frozen parameters, optimiser, the run folder or the state a
``--resume`` continues from); :meth:`Trainer.train_epoch` runs one epoch of steps with the NaN/inf
guard and a clean stop on SIGINT/SIGTERM; :meth:`Trainer.end_epoch` writes the epoch's metrics row
(every split evaluated, the EMA copy too, flip averaging after the last epoch) and the checkpoint
(:meth:`Trainer.save`, atomic: :mod:`.checkpoint`); :meth:`Trainer.fit` runs the epochs.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Optional

import timm
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from .. import __version__
from ..core.atomic import write_text_atomic
from ..core.errors import NonFiniteLoss, UsageError
from ..core.hardware import autocast_context, describe_hardware
from ..data.datasets import ImageDataset, load_dataset, split_train_val
from ..data.loader import EpochPlan, Materializer, resize_batch
from .checkpoint import TrainingState, load_checkpoint, remove_leftovers, rng_state, save_checkpoint, set_rng_state
from .config import RunOptions, TrainConfig
from .distributed import DistEnv, all_reduce_sum, barrier, broadcast_buffers
from .evaluation import evaluate_models
from .finetune import apply_init, freeze, hold_frozen_norms, optimizer_groups, resolve_init
from .interrupt import StopSignal
from .log import append_steps, plot_curve, read_metrics, read_steps, write_metrics, write_steps
from .progress import PlainProgress, epoch_line, progress_bar
from .recipes import low_res_at, lr_factor
from .report import write_run_report
from .run import RunError, build_model, make_run_dir

EVAL_BATCH_SIZE = 512


class Trainer:
    """One training run, set up from the command line and ready to :meth:`fit`."""

    def __init__(self, config: TrainConfig, options: RunOptions, env: DistEnv, device: torch.device, command: str):
        """Set up in the order that makes a resumed run exact: the data, the model (seeded), the
        optimiser, the checkpoint or a new ``config.json``, the wrapped model, the batches, the logs."""
        self.env, self.device, self.options = env, device, options
        self.run_dir, self.config, self.recipe = options.run_dir, config, config.recipe
        if env.is_main:
            make_run_dir(self.run_dir)
        dataset, train_split, val_split, init = self._load_data()
        torch.manual_seed(config.seed)
        self.raw_model = self._model_to_train(dataset, init)
        self._make_optimizer(len(train_split))
        self._start_or_resume(dataset, train_split, val_split, command)
        self._wrap_model()
        make = dict(device=device, channels_last=config.channels_last, pad_to=config.pad_to)
        self.train_data = Materializer(train_split, dataset.mean, dataset.std, self.recipe.augment, **make)
        self.eval_sets = {"test": Materializer(dataset.split("test"), dataset.mean, dataset.std, **make)}
        self.classes = list(dataset.classes)
        if val_split is not None:
            self.eval_sets = {"val": Materializer(val_split, dataset.mean, dataset.std, **make), **self.eval_sets}
        self._restore_logs()
        self.show_bar = env.is_main and not options.quiet and sys.stderr.isatty()
        self.plain_log = env.is_main and not options.quiet and not sys.stderr.isatty()

    def _load_data(self) -> tuple[ImageDataset, Any, Any, Any]:
        """The dataset and its train/validation splits, and the initial weights of a new run (checked
        first: a batch that does not divide among the ranks and micro-batches)."""
        c, options, env = self.config, self.options, self.env
        if self.recipe.batch_size % (env.world_size * c.accum_steps):
            raise UsageError(
                f"batch size {self.recipe.batch_size} must divide by world size {env.world_size} "
                f"× accum steps {c.accum_steps}"
            )
        init = None if options.resume else resolve_init(c.model, c.init_from, c.pretrained, c.init_tag)
        dataset = load_dataset(
            c.dataset, data_dir=options.data, download=options.download, image_size=c.image_size, channels=c.channels
        )
        self.dataset_name = dataset.name
        train_split, val_split = split_train_val(dataset, self.recipe.val_size, c.seed)
        return dataset, train_split, val_split, init

    def _make_optimizer(self, train_images: int) -> None:
        """The EMA copy (where the recipe keeps one), SGD, and the plan of epochs and steps."""
        recipe = self.recipe
        # timm's EMA with its decay warmup (1 - (1 + step)^-3/4, capped at ema_decay): early steps do not
        # hold the average at the initial weights; buffers (BN running statistics) are averaged like weights
        self.ema: Optional[ModelEmaV3] = (
            ModelEmaV3(self.raw_model, decay=recipe.ema_decay, use_warmup=True, warmup_power=3 / 4)
            if recipe.ema_decay > 0
            else None
        )
        self.optimizer = torch.optim.SGD(
            optimizer_groups(self.raw_model, self.config.head_lr_mult),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
        self.plan = EpochPlan(train_images, recipe.batch_size, self.config.seed)
        self.steps_per_epoch = len(self.plan)
        self.total_epochs = math.ceil(recipe.epochs)
        self.total_steps = max(1, round(recipe.epochs * self.steps_per_epoch))  # a fraction of an epoch: ≥ 1 step

    def _start_or_resume(self, dataset: ImageDataset, train_split: Any, val_split: Any, command: str) -> None:
        """A new run writes its ``config.json``; a resumed one loads its checkpoint (weights, optimiser,
        RNG) and records the resume in ``config.json`` with its first checkpoint."""
        self.state = TrainingState(0, 0, 0, {}, {}, {})
        self.pending_config: Optional[dict[str, Any]] = None
        if self.options.resume:
            if self.env.is_main:
                remove_leftovers(self.run_dir)
            self.state = load_checkpoint(self.run_dir, self.raw_model, self.ema_model)
            self._check_something_left()
            self.optimizer.load_state_dict(self.state.optimizer)
            set_rng_state(self.state.rng, self.device)
            # config.json records the resume with its changes once the resumed run saves its first checkpoint
            # (a resume that fails at once, e.g. a NaN with a new --lr, leaves the run's record as it was)
            self.pending_config = self.config.to_json()
        elif self.env.is_main:
            self._write_config(dataset, train_split, val_split, command)
        barrier(self.env)

    def _wrap_model(self) -> None:
        """``torch.compile`` where asked, DDP across ranks; evaluation uses the unwrapped model."""
        self.model: nn.Module = self.raw_model
        if self.config.compile:
            self.model = torch.compile(self.model)
        self.eval_model = self.model  # never the DDP wrapper: evaluation runs a different number of batches per rank
        if self.env.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _restore_logs(self) -> None:
        """The metrics rows and per-step log as far as the checkpoint goes (what was logged after it
        is trained again; a kill between a row and its checkpoint leaves one row more)."""
        resumed = self.options.resume
        self.rows = [r for r in read_metrics(self.run_dir) if r["epoch"] <= self.state.epoch] if resumed else []
        self.steps = [r for r in read_steps(self.run_dir) if r["step"] <= self.state.global_step] if resumed else []
        self.steps_on_disk: Optional[int] = None  # rows of self.steps in steps.jsonl; None: rewrite it at first save

    @property
    def ema_model(self) -> Optional[nn.Module]:
        """The EMA copy of the weights, or ``None`` where the recipe keeps none."""
        return self.ema.module if self.ema is not None else None

    def _check_something_left(self) -> None:
        """A resume that would train no step is an error that says why (and writes nothing)."""
        state, per_epoch = self.state, self.steps_per_epoch
        if state.step_in_epoch or state.epoch < self.total_epochs:
            return
        cut = state.global_step < state.epoch * per_epoch  # its last epoch stopped at a fraction
        why = (
            f"; its last epoch ended after {state.global_step - (state.epoch - 1) * per_epoch} of {per_epoch} steps "
            "(a fractional --epochs) and a resume trains the epochs after it, not the rest of that one"
            if cut
            else ""
        )
        raise RunError(
            f"--resume: nothing to train: the run in {self.run_dir} has finished epoch {state.epoch} "
            f"(step {state.global_step}){why}. Pass --epochs {state.epoch + 1} or more to train further"
            + (" (or start a new run with the longer --epochs)" if cut else "")
        )

    def _model_to_train(self, dataset: ImageDataset, init: Any) -> nn.Module:
        """The model on its device: initial weights loaded, frozen parameters frozen. What this learns
        (the initial weights' architecture, where they came from, how many tensors froze) goes into
        a new :attr:`config`."""
        c = self.config
        if init is not None:  # the initial weights' architecture (e.g. widths), unless the command line sets it
            inherited = {k: v for k, v in init.model_args.items() if k not in ("num_classes", "in_chans")}
            c = replace(c, model_kwargs=inherited | c.model_kwargs)
        model = build_model(c.to_json(), num_classes=dataset.num_classes, in_chans=dataset.input_size[0])
        learned = {"init": apply_init(model, c.model, init, c.head)} if init is not None else {}
        learned["frozen_tensors"] = len(freeze(model, c.freeze))
        self.config = replace(c, record={**c.record, **learned})
        model = model.to(self.device)
        memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        return model.to(memory_format=memory_format)

    def _write_config(self, dataset: ImageDataset, train_split: Any, val_split: Any, command: str) -> None:
        """A new run's ``config.json``: every setting, the data, the machine, the command."""
        settings = dict(
            self.config.to_json(),
            dataset_source=dataset.source,
            dataset_sha256=dataset.sha256,
            num_classes=dataset.num_classes,
            classes=list(dataset.classes),
            input_size=list(dataset.input_size),
            train_images=len(train_split),
            val_images=len(val_split) if val_split is not None else 0,
            test_images=len(dataset.split("test")),
            world_size=self.env.world_size,
            device=str(self.device),
            hardware=describe_hardware(self.device),
            versions=dict(resmg_zoo=__version__, torch=torch.__version__, timm=timm.__version__),
            command=command,
            started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        write_text_atomic(self.run_dir / "config.json", json.dumps(settings, indent=2) + "\n")

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the last metrics row (the one before a stop, if stopped)."""
        stop = StopSignal()
        last_row: dict[str, Any] = self.rows[-1] if self.rows else {}
        try:
            for epoch in range(self.state.epoch, self.total_epochs):
                finished = self.train_epoch(epoch, stop)
                if finished is None:  # stopped within the epoch, checkpoint saved
                    return last_row
                last_row = self.end_epoch(epoch, *finished)
                if stop.received is not None:
                    if self.env.is_main:
                        print(
                            f"stopped by {stop.received} after epoch {epoch + 1}; resume with --resume "
                            f"--out {self.run_dir}",
                            file=sys.stderr,
                        )
                    return last_row
        finally:
            stop.restore()
        return last_row

    def train_epoch(self, epoch: int, stop: StopSignal) -> Optional[tuple[torch.Tensor, float]]:
        """The optimiser steps of ``epoch`` (from the saved step on a resumed epoch).

        Returns the epoch's (loss, correct, count) sums and its seconds, or ``None`` after a stop
        signal within the epoch (the checkpoint is then saved at that step).
        """
        recipe, state, env = self.recipe, self.state, self.env
        epoch_steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        start = state.step_in_epoch if epoch == state.epoch else 0
        # A resumed epoch starts from the sums saved at the stop (already reduced over ranks: rank 0 holds them).
        restored = start and env.is_main
        progress = PlainProgress(
            epoch, self.total_epochs, start, epoch_steps, self.options.log_every if self.plain_log else None
        )
        sums = torch.tensor(
            [state.partial.get(k, 0.0) for k in ("loss", "correct", "count")] if restored else [0.0, 0.0, 0.0],
            dtype=torch.float64,
        )
        elapsed = state.partial.get("seconds", 0.0) if start else 0.0
        self.model.train()
        hold_frozen_norms(self.raw_model)
        bar = progress_bar(epoch_steps, start, f"epoch {epoch + 1}/{self.total_epochs}", self.show_bar)
        tic = time.perf_counter()
        for step, batch in enumerate(self.plan.batches(epoch, start), start=start):
            if step >= epoch_steps:
                break
            for group in self.optimizer.param_groups:
                factor = lr_factor(recipe, state.global_step, self.steps_per_epoch)
                group["lr"] = recipe.lr * group["lr_mult"] * factor
            side = low_res_at(recipe, state.global_step, self.steps_per_epoch)
            step_sums = self._step(batch.shard(env.rank, env.world_size), side)
            flags = torch.tensor([float(not math.isfinite(step_sums[0].item())), float(stop.received is not None)])
            all_reduce_sum(flags, env)
            if flags[0] > 0:
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLoss(epoch, step, self.run_dir)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            if self.ema is not None:
                self.ema.update(self.raw_model, step=state.global_step)
            sums += step_sums
            if env.is_main:
                self.steps.append(
                    dict(
                        step=state.global_step,
                        epoch=round(epoch + (step + 1) / epoch_steps, 6),
                        train_loss=step_sums[0].item() / step_sums[2].item(),
                        train_top1=100.0 * step_sums[1].item() / step_sums[2].item(),
                        lr=self.optimizer.param_groups[0]["lr"],
                    )
                    | ({"side": side or self.train_data.side} if recipe.low_res else {})
                )
            progress.update(step + 1, sums, elapsed + time.perf_counter() - tic, env.world_size)
            bar.update(1)
            if self.show_bar:
                bar.set_postfix(
                    loss=f"{step_sums[0].item() / step_sums[2].item():.3f}",
                    img_s=f"{sums[2].item() * env.world_size / (elapsed + time.perf_counter() - tic):.0f}",
                )
            if step + 1 == epoch_steps:  # the epoch's end saves (end_epoch)
                continue
            stopping = flags[1] > 0
            if stopping or (self.options.checkpoint_every and (step + 1) % self.options.checkpoint_every == 0):
                self.save(epoch, step + 1, all_reduce_sum(sums.clone(), env), elapsed + time.perf_counter() - tic)
            if stopping:
                bar.close()
                if env.is_main:
                    print(
                        f"stopped by {stop.received or 'a signal'} at epoch {epoch + 1}, step {step + 1}/"
                        f"{epoch_steps}; checkpoint saved in {self.run_dir}. "
                        f"Continue with --resume --out {self.run_dir}",
                        file=sys.stderr,
                    )
                return None
        bar.close()
        return sums, elapsed + time.perf_counter() - tic

    def _step(self, local: Any, side: int = 0) -> torch.Tensor:
        """Forward and backward of this rank's share of one global batch, in ``accum_steps`` micro-batches,
        at ``side``×``side`` pixels where ``side`` is not 0 (progressive resizing); returns its
        (loss × images, correct, images) sums. The optimiser step is the caller's."""
        c, env, accum = self.config, self.env, self.config.accum_steps
        step_sums = torch.zeros(3, dtype=torch.float64)
        for k in range(accum):
            x, y = self.train_data(local.shard(k, accum))
            if side:
                x = resize_batch(x, side)
            sync = self.model.no_sync() if env.enabled and k < accum - 1 else nullcontext()
            with sync:
                with autocast_context(c.precision, self.device):
                    logits = self.model(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=self.recipe.label_smoothing)
                (loss / accum).backward()
            step_sums += torch.tensor(
                [loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64
            )
        return step_sums

    def end_epoch(self, epoch: int, sums: torch.Tensor, seconds: float) -> dict[str, Any]:
        """The epoch's metrics row (training sums, the evaluation of every split), then the checkpoint,
        the metrics files and the curve; returns the row."""
        all_reduce_sum(sums, self.env)
        row = dict(
            epoch=epoch + 1,
            lr=self.optimizer.param_groups[0]["lr"],
            train_loss=sums[0].item() / sums[2].item(),
            train_top1=100.0 * sums[1].item() / sums[2].item(),
            images_trained=int(sums[2].item()),
            train_seconds=seconds,
            images_per_second=sums[2].item() / seconds,
        )
        broadcast_buffers(self.raw_model, self.env)
        last = epoch + 1 == self.total_epochs
        if last or (epoch + 1) % self.options.eval_every == 0:
            row |= self.evaluate(flip=last and self.recipe.augment == "crop_flip")
        row["train_seconds_total"] = (self.rows[-1]["train_seconds_total"] if self.rows else 0.0) + seconds
        self.rows.append(row)
        self.state.epoch, self.state.step_in_epoch = epoch + 1, 0
        if self.env.is_main:  # before the checkpoint: a kill between them leaves no checkpoint without its row
            write_metrics(self.run_dir, self.rows)  # or its curve (a resume then cleans up and redoes the epoch)
            title = f"{self.config.model} on {self.dataset_name} ({self.config.recipe_name})"
            plot_curve(self.run_dir, self.rows, self.steps, title)
        self.save(epoch + 1, 0, None, 0.0)
        self.pending_config = None
        if last and self.env.is_main and not self.options.no_report:  # after the checkpoint: the run is complete
            what = dict(model=self.config.model, dataset=self.dataset_name, split="test", epoch=epoch + 1)
            what |= dict(precision=self.config.precision)
            write_run_report(self.run_dir, self.eval_model, self.eval_sets["test"], self.classes, what, EVAL_BATCH_SIZE)
        if self.env.is_main and (self.options.quiet or not sys.stderr.isatty()):
            print(epoch_line(row, self.total_epochs), file=sys.stderr, flush=True)
        return row

    def evaluate(self, flip: bool) -> dict[str, float]:
        """Loss, top-1 and top-5 of the model (and its EMA copy) on every split, as metrics columns
        (:func:`~.evaluation.evaluate_models`)."""
        models = {"": self.eval_model} | ({"ema_": self.ema_model} if self.ema_model is not None else {})
        return evaluate_models(models, self.eval_sets, EVAL_BATCH_SIZE, self.config.precision, self.env, flip)

    def save(self, epoch: int, step_in_epoch: int, sums: Optional[torch.Tensor], seconds: float) -> None:
        """Rank 0 writes the checkpoint (and a resumed run's updated config.json); all ranks wait."""
        if self.env.is_main:
            if self.pending_config is not None:
                write_text_atomic(self.run_dir / "config.json", json.dumps(self.pending_config, indent=2) + "\n")
            # before the checkpoint (a resume drops what lies beyond it); a resumed run's first save rewrites the
            # log without the rows past its checkpoint, later saves append only their new rows
            if self.steps_on_disk is None:
                write_steps(self.run_dir, self.steps)
            else:
                append_steps(self.run_dir, self.steps[self.steps_on_disk :])
            self.steps_on_disk = len(self.steps)
            partial = {}
            if sums is not None:
                partial = dict(zip(("loss", "correct", "count"), sums.tolist()), seconds=seconds)
            state = TrainingState(
                epoch,
                step_in_epoch,
                self.state.global_step,
                self.optimizer.state_dict(),
                rng_state(self.device),
                partial,
            )
            save_checkpoint(self.run_dir, self.raw_model, state, self.ema_model)
        barrier(self.env)
