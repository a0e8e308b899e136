"""What the machine is: a one-line description of where a number was measured, the device to run on,
and which autocast precision is the faster one there (and its context)."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import UsageError


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
DECISIVE = 0.1  # ... and not within 10 % of that threshold: two runs on one machine must agree
PRECISIONS = ("auto", "fp32", "bf16")  # what --precision takes; auto resolves to one of the other two


@dataclass(frozen=True)
class MatmulPeaks:
    """What ``auto`` decides from on a CPU: whether it has bf16 hardware, and the best fp32 and bf16
    matmul rates measured on it (FLOP/s; ``None`` where not measured)."""

    bf16_hardware: bool
    fp32: Optional[float] = None
    bf16: Optional[float] = None
    cpu: str = ""


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run computes in (``fp32`` or ``bf16`` autocast) and why: what was asked for,
    or what :func:`choose_precision` measured. Printed at a run's start and recorded beside it."""

    precision: str
    reason: str
    peaks: Optional[MatmulPeaks] = None  # what auto measured on a CPU and decided from


@functools.cache
def measure_peaks() -> MatmulPeaks:
    """This CPU's :class:`MatmulPeaks`, measured once per process (about 0.2 s; nothing where it has no
    bf16 hardware)."""
    if not native_bf16("cpu"):
        return MatmulPeaks(False, cpu=cpu_name())
    # two alternating rounds, the best of each: a process's first matmuls can run at half speed
    rounds = [(matmul_peak(torch.float32, (1024,), 5e9), matmul_peak(torch.bfloat16, (1024,), 5e9)) for _ in range(2)]
    fp32, bf16 = (max(r[i] for r in rounds) for i in (0, 1))
    return MatmulPeaks(True, fp32, bf16, cpu_name())


def decide_precision(device_type: str, peaks: Optional[MatmulPeaks] = None, cuda_bf16: bool = False) -> PrecisionChoice:
    """``auto``'s choice as a pure function of what was measured. CUDA: bf16 where the device supports
    it (``cuda_bf16``, :func:`torch.cuda.is_bf16_supported`), else fp32. Any other accelerator: fp32,
    since nothing was measured on it. A CPU: fp32 without bf16 hardware; bf16 only where its bf16 matmul
    peak is at least :data:`BF16_MARGIN` times the fp32 one *and* not within :data:`DECISIVE` (10 %) of
    that threshold — a ratio near it takes fp32, so that two runs on one machine agree."""
    if device_type == "cuda":
        if cuda_bf16:
            return PrecisionChoice("bf16", "auto: bf16, this CUDA device supports it")
        return PrecisionChoice("fp32", "auto: fp32, this CUDA device does not support bf16")
    if device_type != "cpu":
        return PrecisionChoice("fp32", f"auto: fp32, bf16 was not measured on a {device_type} device")
    if peaks is None or not peaks.bf16_hardware or not peaks.fp32 or not peaks.bf16:
        return PrecisionChoice(
            "fp32", "auto: fp32, this CPU has no bf16 hardware (AVX512-BF16 or AMX), so bf16 would be emulated"
        )
    ratio = peaks.bf16 / peaks.fp32
    measured = (
        f"the bf16 matmul peak measured here is {ratio:.2f}x the fp32 one "
        f"({peaks.bf16 / 1e9:.0f} vs {peaks.fp32 / 1e9:.0f} GFLOP/s on {peaks.cpu or 'this CPU'}"
    )
    if ratio >= BF16_MARGIN * (1 + DECISIVE):
        return PrecisionChoice("bf16", f"auto: bf16, {measured}; bf16 needs {BF16_MARGIN:g}x)", peaks)
    if ratio >= BF16_MARGIN * (1 - DECISIVE):
        return PrecisionChoice(
            "fp32",
            f"auto: fp32, {measured}; within {DECISIVE:.0%} of the {BF16_MARGIN:g}x threshold, so the stable choice)",
            peaks,
        )
    return PrecisionChoice("fp32", f"auto: fp32, {measured}; bf16 needs {BF16_MARGIN:g}x)", peaks)


def choose_precision(asked: str, device: torch.device | str = "cpu") -> PrecisionChoice:
    """``fp32`` or ``bf16`` as asked, or for ``auto`` :func:`decide_precision` of what this machine
    measures (:func:`measure_peaks`, timed once per process). The hardware alone does not decide: a 2-core
    Intel Xeon with AVX512-BF16 and no AMX trains 25 % slower in bf16, an AMD EPYC with AVX512-BF16 about
    2× faster, an AMX Xeon 2.8× faster (``docs/measurements.md``)."""
    if asked not in PRECISIONS:
        raise UsageError(f"precision {asked!r}: expected one of {', '.join(PRECISIONS)}")
    if asked != "auto":
        return PrecisionChoice(asked, f"{asked}, as asked (--precision {asked})")
    device_type = torch.device(device).type
    if device_type == "cuda":
        return decide_precision("cuda", cuda_bf16=torch.cuda.is_bf16_supported())
    return decide_precision(device_type, measure_peaks() if device_type == "cpu" else None)


def preferred_precision(device: str = "cpu") -> str:
    """``"bf16"`` where bf16 autocast is the faster precision on ``device``, else ``"fp32"``
    (:func:`choose_precision` of ``auto``)."""
    return choose_precision("auto", device).precision


TRIM_THRESHOLD = 1 << 30  # the heap gives memory back to the system only above 1 GiB free at its top


def glibc_malloc_in_use() -> bool:
    """Whether the process's ``malloc`` is glibc's own (Linux, and no preloaded allocator such as
    tcmalloc or jemalloc answering for it)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        process = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    address = ctypes.c_void_p
    return ctypes.cast(process.malloc, address).value == ctypes.cast(libc.malloc, address).value


@functools.cache
def retain_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a step frees for the next step (once per process; ``True``
    where it was set): no mmap for large buffers, and no trimming of the heap below 1 GiB free.

    By default a buffer above a threshold that moves with the program (128 KiB up to 32 MiB) is
    mmap-ed and given back when freed, and a free heap top above a few hundred KiB is trimmed: each
    step then faults its activations in again, page by page. Measured on a 2-core AMD EPYC
    (full-width ResNet18, batch 128, channels_last): 38,000–53,000 minor page faults per training
    step in bf16 and 232,000 in fp32, 7–22 % of the wall time in the kernel, and 8.4 million
    faults in evaluating 10,000 CIFAR-10 images twice at batch 512 (its 67 MB activations are
    above any mmap threshold). With this setting: 500–1,500 per training step in bf16 and 4,100 in
    fp32, 177,000 in that evaluation; fp32 training 20 % faster (bf16 within the noise), that
    evaluation 19 % faster, for about 0.4 GB more peak memory (``docs/measurements.md``).

    Process-wide, so only the command-line entry points call it (``resmg-train``, ``python -m
    resmg_zoo.train``, ``resmg-benchmark``; never ``train()`` or ``main()`` called from Python, never the
    tests), only where glibc's malloc is the allocator in use (:func:`glibc_malloc_in_use`: not under a
    preloaded tcmalloc or jemalloc), and not with ``--default-malloc``. The same setting without this
    code: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824``."""
    if not glibc_malloc_in_use():
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    no_mmap = libc.mallopt(m_mmap_max, 0)
    return bool(no_mmap and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD))


def command_line_allocator(argv: list[str]) -> None:
    """What a console entry point (``resmg-train``, ``resmg-benchmark``) does before its ``main``: set
    :func:`retain_freed_memory` unless its command line has ``--default-malloc``."""
    if "--default-malloc" not in argv:
        retain_freed_memory()


def freed_memory_retained() -> bool:
    """Whether this process's entry point set :func:`retain_freed_memory` (and it took effect)."""
    return bool(retain_freed_memory.cache_info().currsize) and retain_freed_memory()


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
