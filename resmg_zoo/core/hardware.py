"""A one-line description of the machine a number was measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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
