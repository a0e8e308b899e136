"""The machine's settings that training makes: the allocator keeps what a step frees."""

from __future__ import annotations

import subprocess
import sys

import pytest

FAULTS = """
import resource, sys, torch
from resmg_zoo.core.hardware import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def step():  # a step's activations: 8 buffers of 20 MiB, every page written, then all freed
    held = [torch.empty(5 << 20).fill_(1.0) for _ in range(8)]
    del held
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_activations_stay_with_the_process_instead_of_faulting_in_again() -> None:
    """Without the setting glibc trims the 160 MiB freed at the heap's top, and each step faults
    them in again (40,960 pages of 4 KiB); with it they are reused."""

    def faults_per_step(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    default, retained = faults_per_step("default"), faults_per_step("retain")
    assert default > 30_000 and retained < default / 10, (default, retained)
