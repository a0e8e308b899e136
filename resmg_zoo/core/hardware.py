"""What the machine is: a one-line description of where a number was measured, the device to run on,
and which autocast precision is the faster one there (and its context)."""

from __future__ import annotations

import functools
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_hardware(device: torch.device | str = "cpu") -> str:
    """``"AMD EPYC, 2 cores"`` or ``"NVIDIA H100 80GB HBM3 (+ AMD EPYC, 16 cores)"``."""
    cpu = f"{cpu_name()}, {os.cpu_count()} cores"
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (+ {cpu})"
    return cpu


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast runs on bf16 hardware here: CUDA, or a CPU with AVX512-BF16 or AMX.

    Elsewhere (e.g. an AVX2-only CPU) oneDNN emulates bf16, and a training step is several times
    slower than in fp32 (measured about 10× on a 2-core AVX2 EPYC).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048), flops_per_size: float = 2e10) -> float:
    """Best FLOP/s of a square ``torch.mm`` in ``dtype`` over ``sizes`` on the CPU.

    Each size is timed call by call for about ``flops_per_size`` FLOPs (at least 3 calls); the best
    call counts, as the peak is what the hardware and BLAS reach, not an average.
    """
    best_rate = 0.0
    for size in sizes:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(a, b)
        for _ in range(max(3, int(flops_per_size / (2 * size**3)))):
            tic = time.perf_counter()
            torch.mm(a, b)
            best_rate = max(best_rate, 2 * size**3 / (time.perf_counter() - tic))
    return best_rate


BF16_MARGIN = 1.2  # bf16 is chosen on a CPU only where its matmul peak is at least this many times fp32's


@functools.cache
def preferred_precision(device: str = "cpu") -> str:
    """``"bf16"`` where bf16 autocast is the faster precision on ``device``, else ``"fp32"``.

    CUDA: bf16. A CPU: bf16 only where it has bf16 hardware (:func:`native_bf16`) *and* its bf16
    matmul peak is at least :data:`BF16_MARGIN` times the fp32 one, measured here in about a second
    (once per process). Having the hardware is not enough: a 2-core Intel Xeon with AVX512-BF16 and
    no AMX trains 25 % slower in bf16, an AMD EPYC with AVX512-BF16 about 2× faster
    (``docs/measurements.md``, "Speed on an Intel Xeon …").
    """
    if torch.device(device).type == "cuda":
        return "bf16"
    if not native_bf16(device):
        return "fp32"
    faster = matmul_peak(torch.bfloat16) >= BF16_MARGIN * matmul_peak(torch.float32)
    return "bf16" if faster else "fp32"


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu`` or ``cuda[:N]``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(precision: str, device: torch.device) -> Any:
    """bf16 autocast on ``device`` for ``precision="bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
