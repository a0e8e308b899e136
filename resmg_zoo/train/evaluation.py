"""Loss, top-1 and top-5 of a model over a whole split (used after every epoch and by the tools)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.hardware import autocast_context
from ..data.loader import EpochPlan, Materializer
from .distributed import DistEnv, all_reduce_sum


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    materializer: Materializer,
    batch_size: int,
    precision: str,
    env: DistEnv,
    flip: bool = False,
) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the whole split of ``materializer``; ranks share the work.

    ``flip``: test-time augmentation — the logits are the mean of the image's and its mirror's."""
    model.eval()
    device = materializer.device
    plan = EpochPlan(len(materializer.split), batch_size, seed=0, shuffle=False, drop_last=False)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    for step, batch in enumerate(plan.batches(0)):
        if step % env.world_size != env.rank:
            continue
        x, y = materializer(batch)
        with autocast_context(precision, device):
            logits = model(x).float()
            if flip:
                logits = (logits + model(x.flip(3)).float()) / 2
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
