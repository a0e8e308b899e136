"""The reliability battery: plausible mistakes get a clear message and exit 2, with nothing half-written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import TINY_TRAIN
from conftest import tiny_train_args as _args
from PIL import Image
from safetensors.torch import load_file

from resmg_zoo.core.cli import EXIT_USAGE
from resmg_zoo.data.datasets import DatasetError, load_dataset
from resmg_zoo.tools.evaluate import main as evaluate
from resmg_zoo.train.checkpoint import checkpoint_weights_path, read_pointer
from resmg_zoo.train.cli import main as train
from resmg_zoo.train.distributed import DistEnv, all_reduce_sum, backend_for
from resmg_zoo.train.log import read_steps

# ``digits`` (conftest): 1,000 train / 300 test images of the real MNIST, 20 steps an epoch at batch 50.


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_no_epochs_is_refused_and_nothing_is_written(digits: Path, tmp_path: Path, capsys, epochs: str) -> None:
    assert train(_args(digits, tmp_path / "run", "--epochs", epochs)) == EXIT_USAGE
    assert f"--epochs {float(epochs)}: expected a positive number of epochs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_resume_that_would_train_nothing_says_why(digits: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert train(_args(digits, out, "--epochs", "0.05")) == 0  # 1 of 20 steps
    pointer = (out / "checkpoint.json").read_text()
    capsys.readouterr()
    assert train(_args(digits, out, "--epochs", "0.1", "--resume")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "nothing to train" in err and "ended after 1 of 20 steps" in err and "--epochs 2 or more" in err
    assert (out / "checkpoint.json").read_text() == pointer


def test_resume_of_a_run_killed_before_its_first_checkpoint(digits: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a run killed while loading its data leaves
    assert train(_args(digits, out, "--resume")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint, so there is nothing to resume" in err
    assert "Traceback" not in err


def test_an_out_that_cannot_be_created_is_named(digits: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert train(_args(digits, blocker / "run", "--epochs", "1")) == EXIT_USAGE
    assert f"cannot create --out {blocker / 'run'}: {blocker} is a file, not a folder" in capsys.readouterr().err
    assert train(_args(digits, Path("/proc/resmg-zoo-run"), "--epochs", "1")) == EXIT_USAGE
    assert "cannot create --out /proc/resmg-zoo-run: " in capsys.readouterr().err


def test_evaluate_with_other_widths_names_the_tensor_and_the_widths_that_fit(
    digits: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert train(_args(digits, out, "--epochs", "0.05")) == 0
    weights = next(out.glob("ckpt-*.safetensors"))
    capsys.readouterr()
    args = ["--weights", str(weights), "--model", "preact_resnet18_sharedA", "--dataset", str(digits)]
    assert evaluate([*args, "--model-kwargs", "widths=16,32,32,64"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "conv1.weight (8, 1, 3, 3) vs (16, 1, 3, 3)" in err
    assert "pass --model-kwargs widths=8,16,16,32" in err and "Traceback" not in err


def _image_folder(root: Path, classes: dict[str, int]) -> Path:
    for split in ("train", "test"):
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (8, 8), color=i * 40).save(root / split / name / f"{i}.png")
    return root


def test_an_empty_class_folder_is_named(tmp_path: Path, capsys) -> None:
    folder = _image_folder(tmp_path / "shapes", {"circle": 2, "square": 2, "star": 0})
    with pytest.raises(DatasetError, match="class folder\\(s\\) test/star, train/star hold no images"):
        load_dataset(str(folder))
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix() + ("/" if path.is_dir() else ""))
    with pytest.raises(DatasetError, match="test/star, train/star hold no images"):
        load_dataset(str(archive))
    assert train([*TINY_TRAIN, "--dataset", str(archive), "--out", str(tmp_path / "run")]) == EXIT_USAGE
    assert "train/star hold no images" in capsys.readouterr().err


def test_a_damaged_zip_member_names_the_archive_and_the_member(digits: Path, tmp_path: Path, capsys) -> None:
    damaged = tmp_path / "damaged.zip"
    data = bytearray(digits.read_bytes())
    with zipfile.ZipFile(digits) as zf:
        info = zf.infolist()[5]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 20] ^= 0xFF  # a byte of the member's (stored) image data: its CRC-32 no longer matches
    damaged.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"{damaged}: member {info.filename} cannot be read \\(Bad CRC-32"):
        load_dataset(str(damaged))
    assert train([*TINY_TRAIN, "--dataset", str(damaged), "--out", str(tmp_path / "run")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{damaged}: member {info.filename} cannot be read" in err and "Traceback" not in err


def test_a_missing_torchvision_dataset_suggests_the_clis_flag(tmp_path: Path, capsys) -> None:
    assert train([*TINY_TRAIN, "--dataset", "cifar100", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cifar100 not found" in err and "train --download" in err


def _reduce_in_group(rank: int, store_path: str, results: Path) -> None:
    store = dist.FileStore(store_path, 2)
    dist.init_process_group("cpu:gloo", store=store, rank=rank, world_size=2)
    try:
        sums = torch.tensor([rank + 1.0, 10.0 * rank, 1.0], dtype=torch.float64)
        all_reduce_sum(sums, DistEnv(rank, 2, rank))
        (results / f"rank{rank}.json").write_text(json.dumps(sums.tolist()))
    finally:
        dist.destroy_process_group()


def test_the_reductions_run_on_a_device_prefixed_process_group(tmp_path: Path) -> None:
    """On CUDA the group is ``cpu:gloo,cuda:nccl`` so that the loop's CPU tensors (flags, loss sums) reduce;
    a plain ``nccl`` group accepts CUDA tensors only. The device-prefixed form, here with two CPU
    processes, sums the loop's float64 tensors over the ranks."""
    assert backend_for(torch.device("cuda")) == "cpu:gloo,cuda:nccl"
    assert backend_for(torch.device("cpu")) == "gloo"
    torch.multiprocessing.spawn(_reduce_in_group, args=(str(tmp_path / "store"), tmp_path), nprocs=2)
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [3.0, 10.0, 2.0]


KILLER = """
import os, signal, sys
import resmg_zoo.train.checkpoint as checkpoint
from resmg_zoo.train.cli import main

at, calls = int(os.environ.get("KILL_AT_WEIGHTS_WRITE", "0")), [0]
real_save_file = checkpoint.save_file

def save_file(tensors, path):  # kill -9 in the middle of the n-th checkpoint's weights file
    calls[0] += 1
    if calls[0] == at:
        with open(path, "wb") as f:
            f.write(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    real_save_file(tensors, path)

checkpoint.save_file = save_file
sys.exit(main(sys.argv[1:]))
"""


def test_kill_minus_nine_anywhere_then_resume_ends_bit_identical(digits: Path, tmp_path: Path) -> None:
    """kill -9 before the first checkpoint, while a checkpoint's weights are written, and at random
    moments; each time the run is resumed (or restarted where no checkpoint exists). It ends with the
    weights of an uninterrupted run, and no temporary or stray checkpoint file is left."""

    assert train(_args(digits, tmp_path / "straight", "--epochs", "2", "--checkpoint-every", "3")) == 0
    expected = load_file(str(checkpoint_weights_path(tmp_path / "straight")))

    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = [("time", 0.3), ("weights", 2), ("weights", 3), ("time", rng.uniform(2, 6)), ("time", rng.uniform(2, 6))]
    seen_steps, finished = [], False
    for kind, when in [*kills, ("none", 0)]:
        if finished:
            break
        resume = ["--resume"] if (out / "checkpoint.json").exists() else []
        env = dict(os.environ, KILL_AT_WEIGHTS_WRITE=str(when if kind == "weights" else 0))
        cmd = [sys.executable, "-c", KILLER, *_args(digits, out, "--epochs", "2", "--checkpoint-every", "3"), *resume]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kind == "time":
            time.sleep(when)
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
        # a timed kill can land after the last checkpoint (while the curve is drawn): the run is finished then too
        finished = proc.returncode == 0 or (
            (out / "checkpoint.json").exists()
            and read_pointer(out)["global_step"] == 40
            and not read_pointer(out)["step_in_epoch"]
        )
        if kind == "weights":  # the run has steps enough left for these: they always land
            assert proc.returncode == -signal.SIGKILL, err[-2000:]
            assert list(out.glob(".ckpt-*.safetensors.*.tmp")), "the kill left no half-written file to clean up"
        else:  # a timed kill may come after the run ended; the last launch must end it
            assert proc.returncode in ((0,) if kind == "none" else (-signal.SIGKILL, 0)), err[-2000:]
        if (out / "checkpoint.json").exists():
            seen_steps.append(read_pointer(out)["global_step"])
    assert finished
    assert seen_steps == sorted(seen_steps)  # a kill never moves the run backwards
    assert any(0 < s < 40 and s % 20 for s in seen_steps), seen_steps  # a kill landed after a mid-epoch checkpoint
    assert read_steps(out) == read_steps(tmp_path / "straight")  # appended, torn and rewritten, it ends the same
    got = load_file(str(checkpoint_weights_path(out)))
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    pointer = read_pointer(out)
    assert sorted(p.name for p in out.glob("ckpt-*")) == sorted([pointer["weights"], pointer["state"]])
    assert not list(out.glob(".*.tmp"))


def test_a_truncated_config_on_resume_is_a_usage_error_naming_the_file(digits: Path, tmp_path: Path, capsys) -> None:
    """A run's config.json cut to 40 bytes, then --resume: exit 2 and one line that names the file."""
    out = tmp_path / "run"
    assert train(_args(digits, out, "--epochs", "1")) == 0
    config = out / "config.json"
    config.write_bytes(config.read_bytes()[:40])
    capsys.readouterr()
    assert train(_args(digits, out, "--epochs", "2", "--resume")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: --resume:") and str(config) in err and "not valid JSON" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_bug_inside_the_model_keeps_its_traceback(digits: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Only a UsageError is the user's to fix: a ValueError raised inside the model (here injected in the
    forward of a level) is a bug, and reaches the caller as itself — the command line exits 1 with its traceback."""
    from resmg_zoo.models.resnet import ResMgLevel

    def broken(self, x):
        raise ValueError("an injected fault inside the model")

    monkeypatch.setattr(ResMgLevel, "forward", broken)
    with pytest.raises(ValueError, match="an injected fault inside the model"):
        train(_args(digits, tmp_path / "run", "--epochs", "1"))
    script = (
        "import sys, resmg_zoo.models.resnet as r\n"
        "r.ResMgLevel.forward = lambda self, x: (_ for _ in ()).throw(ValueError('an injected fault'))\n"
        "from resmg_zoo.train.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *_args(digits, tmp_path / "run2", "--epochs", "1")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError: an injected fault" in done.stderr
