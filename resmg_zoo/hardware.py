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
