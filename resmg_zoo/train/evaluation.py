"""Loss, top-1 and top-5 of a model over a whole split (used after every epoch and by the tools)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..core.hardware import autocast_context
from ..data.loader import EpochPlan, Materializer
from .distributed import DistEnv, all_reduce_sum


def top_classes(logits: torch.Tensor) -> torch.Tensor:
    """The classes of the (up to) five largest logits of each row, largest first: the prediction and the top-5
    that every score of the project counts from (the evaluation report too), so ties break the same way."""
    return logits.topk(min(5, logits.shape[1]), dim=1).indices


def _sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """This batch's summed loss, top-1 hits and top-5 hits (float64)."""
    top = top_classes(logits)
    return torch.stack(
        [
            F.cross_entropy(logits, y, reduction="sum").double(),
            (top[:, 0] == y).sum().double(),
            (top == y[:, None]).any(dim=1).sum().double(),
        ]
    )


@torch.no_grad()
def evaluate_split(
    model: Union[nn.Module, Callable[[torch.Tensor], torch.Tensor]],
    materializer: Materializer,
    batch_size: int,
    precision: Optional[str],
    env: DistEnv,
    flip: bool = False,
) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the whole split of ``materializer``; ranks share the work.
    ``model``: a module (set to eval mode here) or a callable such as the inference fast path.
    ``precision``: the autocast to run ``model`` under (training's evaluation); ``None`` where the model
    applies its own (the fast path, an int8 model: precision is applied once, by the model).

    ``flip``: also test-time flip averaging, in the same pass over the data: ``flip_loss``,
    ``flip_top1``, ``flip_top5`` of the mean of the logits of each image and its mirror. (A mirror is
    a view the model saw in training only where the augmentation flips.)"""
    if isinstance(model, nn.Module):
        model.eval()
    device = materializer.device
    plan = EpochPlan(len(materializer.split), batch_size, seed=0, shuffle=False, drop_last=False)
    sums = torch.zeros(7, dtype=torch.float64, device=device)  # plain (3), flipped (3), count
    for step, batch in enumerate(plan.batches(0)):
        if step % env.world_size != env.rank:
            continue
        x, y = materializer(batch)
        with autocast_context(precision, device) if precision else contextlib.nullcontext():
            logits = model(x).float()
            sums[:3] += _sums(logits, y)
            if flip:
                sums[3:6] += _sums((logits + model(x.flip(3)).float()) / 2, y)
        sums[6] += len(y)
    all_reduce_sum(sums, env)
    values = sums.tolist()
    count = values[6]
    result = dict(loss=values[0] / count, top1=100.0 * values[1] / count, top5=100.0 * values[2] / count)
    if flip:
        result |= dict(
            flip_loss=values[3] / count, flip_top1=100.0 * values[4] / count, flip_top5=100.0 * values[5] / count
        )
    return result | {"count": int(count)}


def evaluate_models(
    models: dict[str, nn.Module],
    splits: dict[str, Materializer],
    batch_size: int,
    precision: Optional[str],
    env: DistEnv,
    flip: bool,
) -> dict[str, float]:
    """Every model (by its columns' prefix: ``""``, ``"ema_"``) on every split, as a metrics row's columns
    ``{prefix}{split}_loss/top1/top5``; ``flip``: with ``{prefix}{split}_flip_top1``, from the same pass (only
    where training flips images: on other data a mirrored image is one the model never saw)."""
    columns: dict[str, float] = {}
    for prefix, model in models.items():
        for split, data in splits.items():
            result = evaluate_split(model, data, batch_size, precision, env, flip=flip)
            columns |= {f"{prefix}{split}_{k}": result[k] for k in ("loss", "top1", "top5")}
            if flip:
                columns[f"{prefix}{split}_flip_top1"] = result["flip_top1"]
    return columns
