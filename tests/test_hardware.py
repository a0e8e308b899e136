"""The machine's settings that training makes: the allocator keeps what a step frees."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STEPS = """
import json, resource, sys, torch
from resmg_zoo.core.hardware import retain_freed_memory

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

applied = retain_freed_memory() if sys.argv[1] == "retain" else False
faults, kept = [], []
for _ in range(4):  # a step's activations: 8 buffers of 20 MiB, every page written, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    held = [torch.empty(5 << 20).fill_(1.0) for _ in range(8)]
    peak = rss()
    del held
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    kept.append((rss() - peak) / 2**20)  # MiB the free gave back to the system, as a negative number
print(json.dumps(dict(applied=applied, faults=faults, kept=kept)))
"""


def _steps(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_activations_stay_with_the_process_instead_of_faulting_in_again() -> None:
    """With the setting the 160 MiB a step frees stay mapped: the next steps write them without page
    faults (40,960 pages of 4 KiB each if they were given back). Without it glibc unmaps or trims them,
    all or part (how much depends on the heap's state and transparent huge pages, so that side is only
    reported)."""
    retained, default = _steps("retain"), _steps("default")
    assert retained["applied"] is True
    # after the first step, three steps fault in under a quarter of one step's pages (the heap grows once
    # by one buffer while it settles); given back, they would fault in all 3 × 40,960
    assert sum(retained["faults"][1:]) < 10_240, (retained, default)
    assert min(retained["kept"]) > -8, (retained, default)  # nothing (but a few MiB) given back on free


ENTRY_POINTS = """
import json, sys
from resmg_zoo.core import hardware
from resmg_zoo.train import cli

def state():
    return hardware.retain_freed_memory.cache_info().currsize

argv = ["--epochs", "0", "--out", sys.argv[1]]  # refused at once: exit 2, nothing trained
seen = dict(glibc=hardware.glibc_malloc_in_use())
seen["main"] = (cli.main(argv), state())  # train's main() called from Python
sys.argv = ["resmg-train", *argv, "--default-malloc"]
seen["console_default"] = (cli.console_main(), state())  # the command line, with --default-malloc
sys.argv = ["resmg-train", *argv]
seen["console"] = (cli.console_main(), state(), hardware.freed_memory_retained())  # the command line
print(json.dumps(seen))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_only_the_command_lines_entry_point_sets_the_allocator(tmp_path) -> None:
    """A library does not change process-wide settings: train's ``main()`` called from Python leaves
    malloc alone; ``resmg-train`` (``console_main``) sets it where glibc's malloc is in use, unless
    ``--default-malloc``."""
    done = subprocess.run(
        [sys.executable, "-c", ENTRY_POINTS, str(tmp_path / "run")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == dict(glibc=True, main=[2, 0], console_default=[2, 0], console=[2, 1, True]), seen
