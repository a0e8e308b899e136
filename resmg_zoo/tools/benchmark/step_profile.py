"""Where a training step goes: ``torch.profiler`` over a few steps of the real loop's parts — the
loader's batch (index, crop + flip, normalise), forward, backward, SGD step — with every profiled
op's own (self) CPU time put in one of :data:`CATEGORIES`, as a percentage of the steps' wall time.

"other" is what no op accounts for: Python, autograd's bookkeeping, the profiler itself. Casts
(``aten::to``/``copy_``; under bf16 autocast each convolution casts its fp32 weight) count as
"elementwise", wherever they happen outside the loader and the optimizer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from ...core.hardware import autocast_context
from ...data.loader import GlobalBatch, Materializer

CATEGORIES = ("conv forward", "conv backward", "batch norm", "elementwise", "optimizer", "loader", "other")
CASTS = ("aten::to", "aten::_to_copy", "aten::copy_")


def _category(event: Any) -> str:
    """The category of one profiled op's self time, from its own name and those of its callers."""
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    if "loader" in names:
        return "loader"
    if any(n.startswith("Optimizer.") for n in names):
        return "optimizer"
    if names[0] in CASTS:
        return "elementwise"
    for name in names:  # the nearest caller that says what this is part of
        lowered = name.lower()
        if "convolutionbackward" in lowered or "convolution_backward" in lowered:
            return "conv backward"
        if "batch_norm" in lowered or "batchnorm" in lowered:
            return "batch norm"
        if "conv" in lowered:
            return "conv forward"
    return "elementwise" if names[0].startswith(("aten::", "autograd::")) or "Backward" in names[0] else "other"


def categorize(events: Any, wall_seconds: float) -> dict[str, float]:
    """Percent of ``wall_seconds`` per :data:`CATEGORIES` from the profiler's events (self CPU times
    of the calling thread; "other" takes the rest of the wall time)."""
    micros = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        micros[_category(event)] += event.self_cpu_time_total
    wall = wall_seconds * 1e6
    micros["other"] += max(0.0, wall - sum(micros.values()))
    return {k: 100.0 * v / wall for k, v in micros.items()}


def profile_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Materializer,
    batches: Iterator[GlobalBatch],
    precision: str,
    steps: int = 3,
    warmup: int = 2,
) -> dict[str, float]:
    """The categories of ``steps`` profiled training steps (after ``warmup`` unprofiled ones), each
    a batch of ``batches`` through ``data``, forward and backward under ``precision``, an SGD step."""
    device = next(model.parameters()).device
    model.train()

    def step() -> None:
        with record_function("loader"):
            x, y = data(next(batches))
        with autocast_context(precision, device):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - tic
    return categorize(prof.events(), wall)
