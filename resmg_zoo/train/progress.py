"""What the training loop shows of its progress: a bar on a terminal, a plain line on stderr elsewhere
(:class:`PlainProgress`), and one line per epoch (:func:`epoch_line`).

What it obeys around its steps is elsewhere: SIGINT/SIGTERM in :mod:`.interrupt`, a non-finite loss
as :class:`~resmg_zoo.core.errors.NonFiniteLoss`, the RNG state a checkpoint keeps in :mod:`.checkpoint`."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import torch


class PlainProgress:
    """Where output is not a terminal (a log file, a job scheduler, CI): a plain line on stderr every
    ``every`` seconds within an epoch — step, running loss, images/s, ETA of the epoch. ``None``: silent."""

    def __init__(self, epoch: int, epochs: int, start: int, steps: int, every: Optional[float]) -> None:
        self.epoch, self.epochs, self.start, self.steps, self.every = epoch, epochs, start, steps, every
        self.started = self.last = time.perf_counter()

    def update(self, done: int, sums: torch.Tensor, seconds: float, world_size: int) -> None:
        now = time.perf_counter()
        if self.every is None or now - self.last < self.every or done >= self.steps:
            return
        self.last = now
        rate = sums[2].item() * world_size / max(seconds, 1e-9)
        eta = int((self.steps - done) * (now - self.started) / max(done - self.start, 1))
        loss = sums[0].item() / sums[2].item()
        print(
            f"epoch {self.epoch + 1}/{self.epochs} step {done}/{self.steps}: loss {loss:.4f}, {rate:.0f} img/s, "
            f"epoch ETA {eta // 60}:{eta % 60:02d}",
            file=sys.stderr,
            flush=True,
        )


def epoch_line(row: dict[str, Any], total_epochs: int) -> str:
    """An epoch's metrics row as one line: counts as integers, other figures to 4 significant digits."""
    figures = (f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
    return f"epoch {row['epoch']}/{total_epochs}: {', '.join(figures)}"


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar of an epoch's steps (``enabled``: on a terminal and not ``--quiet``)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
