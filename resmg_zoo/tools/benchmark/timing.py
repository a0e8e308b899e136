"""The benchmark's timed steps: one rate per round for training, inference and any further inference
route (the fast path, int8), with the page faults of a training step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Optional


class Timed:
    """Steps timed in each round: training and inference images/s, one rate per round."""

    batch_size: int

    def __init__(self) -> None:
        self.train_rates: list[float] = []
        self.infer_rates: list[float] = []
        self.train_faults: list[float] = []  # minor page faults per training step
        self.extra: dict[str, Callable[[], None]] = {}  # further inference routes, timed like infer_step
        self.extra_rates: dict[str, list[float]] = {}

    def train_step(self) -> None:
        raise NotImplementedError

    def infer_step(self) -> None:
        raise NotImplementedError

    def measure(self, steps: int, warmup: int) -> None:
        """One round: ``warmup`` untimed then ``steps`` timed calls of each step, a rate each (and the
        page faults per timed training step)."""
        rate, faults = self._timed(self.train_step, steps, warmup)
        self.train_rates.append(rate)
        self.train_faults.append(faults)
        self.infer_rates.append(self._timed(self.infer_step, steps, warmup)[0])
        for name, fn in self.extra.items():
            self.extra_rates.setdefault(name, []).append(self._timed(fn, steps, warmup)[0])

    def _timed(self, fn: Callable[[], None], steps: int, warmup: int) -> tuple[float, float]:
        """Images/s of ``steps`` calls after ``warmup`` untimed ones, and their minor page faults per call."""
        for _ in range(warmup):
            fn()
        faults = minor_faults()
        tic = time.perf_counter()
        for _ in range(steps):
            fn()
        rate = steps * self.batch_size / (time.perf_counter() - tic)
        return rate, (minor_faults() - faults) / steps

    def extra_rate(self, name: str) -> Optional[float]:
        """The median images/s of one of the further inference routes, ``None`` where not measured."""
        rates = self.extra_rates.get(name)
        return statistics.median(rates) if rates else None


def minor_faults() -> int:
    """The process's minor page faults so far (0 where the system does not count them)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def ratio(value: Optional[float], base: float) -> Optional[float]:
    """``value / base``, or ``None`` where ``value`` was not measured."""
    return None if value is None else value / base
