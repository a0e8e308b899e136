"""What the training loop reports and obeys around its steps: SIGINT/SIGTERM turned into a flag, a
non-finite loss turned into a stop, the progress shown (a bar on a terminal, a plain line elsewhere),
and the RNG state a checkpoint keeps."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from ..core.errors import EXIT_NONFINITE, ResmgError


class NonFiniteLoss(ResmgError, RuntimeError):
    """The loss became NaN/inf: training stops and the last good checkpoint is kept (exit 3)."""

    exit_code = EXIT_NONFINITE

    def __init__(self, epoch: int, step: int, run_dir: Path) -> None:
        super().__init__(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}: training stopped. The last good checkpoint "
            f"in {run_dir} is kept; lower --lr or use --precision fp32, then --resume."
        )


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


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
