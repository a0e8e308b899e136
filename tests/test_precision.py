"""``--precision auto`` (measured, printed, recorded, kept on resume), evaluation in one pass with flip
averaging only where training flips, ``--eval-every``, and the end-of-epoch line."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_train_args
from realdata import real_data_dir, subset_zip

from resmg_zoo.core import hardware
from resmg_zoo.core.cli import EXIT_USAGE
from resmg_zoo.core.errors import UsageError
from resmg_zoo.core.hardware import MatmulPeaks, PrecisionChoice, choose_precision
from resmg_zoo.data.loader import EpochPlan, Materializer
from resmg_zoo.train.cli import main as train
from resmg_zoo.train.config import agreed_precision
from resmg_zoo.train.distributed import DistEnv
from resmg_zoo.train.evaluation import evaluate_split
from resmg_zoo.train.log import read_metrics
from resmg_zoo.train.run import Run


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 train / 100 test images of the real MNIST (augmentation: none)."""
    folder = tmp_path_factory.mktemp("data")
    return subset_zip(real_data_dir() / "mnist.zip", folder / "mnist.zip", {"train": 20, "test": 10})


# The reason ``auto`` gives for the peaks :func:`_measures` sets, written out by hand from the rule (bf16 where its
# matmul peak is at least 1.2x fp32's and not within 10 % of that: 300 / 100 = 3.00x takes bf16, 1.00x fp32).
REASONS = {
    "bf16": "auto: bf16, the bf16 matmul peak measured here is 3.00x the fp32 one "
    "(300 vs 100 GFLOP/s on a test CPU; bf16 needs 1.2x)",
    "fp32": "auto: fp32, the bf16 matmul peak measured here is 1.00x the fp32 one "
    "(100 vs 100 GFLOP/s on a test CPU; bf16 needs 1.2x)",
}


def _measures(monkeypatch: pytest.MonkeyPatch, precision: str) -> str:
    """Make this machine's measured matmul peaks say ``precision`` (the public measurement, replaced);
    returns the reason ``auto`` then gives (:data:`REASONS`, not computed by the code under test)."""
    peaks = MatmulPeaks(True, 100e9, 300e9 if precision == "bf16" else 100e9, "a test CPU")
    monkeypatch.setattr(hardware, "measure_peaks", lambda: peaks)
    return REASONS[precision]


def test_auto_is_measured_printed_recorded_and_kept_on_resume(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    reason = _measures(monkeypatch, "bf16")
    assert train(tiny_train_args(digits, out, "--epochs", "1", precision=None)) == 0  # no --precision: auto
    config = json.loads((out / "config.json").read_text())
    assert config["precision"] == "bf16" and config["precision_choice"]["reason"] == reason
    assert config["precision_choice"]["asked"] == "auto" and config["precision_choice"]["peaks"]["bf16"] == 300e9
    assert f"precision: {reason}" in capsys.readouterr().err
    # the machine now measures fp32 faster: a resume keeps what the run was started with, flag or not
    _measures(monkeypatch, "fp32")
    assert train(tiny_train_args(digits, out, "--epochs", "2", "--resume", precision=None)) == 0
    assert train(tiny_train_args(digits, out, "--epochs", "3", "--resume", precision="auto")) == 0
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    assert "precision: bf16, as this run's config.json records" in capsys.readouterr().err
    # an explicit other precision on a resume is refused, and nothing changes
    before = (out / "config.json").read_bytes()
    assert train(tiny_train_args(digits, out, "--epochs", "4", "--resume")) == EXIT_USAGE  # fp32
    assert "'precision': ('fp32', 'bf16')" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == before and [r["epoch"] for r in read_metrics(out)] == [1, 2, 3]


def test_an_explicit_precision_is_taken_without_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit precision times nothing, whatever an earlier test left in :func:`measure_peaks`' cache
    (emptied here, before and after); ``auto`` does time the CPU, and chooses what that measurement says."""
    timed: list[torch.dtype] = []
    bf16_rate = {"now": 300e9}

    def matmul_peak(dtype: torch.dtype, *args: Any, **kwargs: Any) -> float:
        timed.append(dtype)
        return bf16_rate["now"] if dtype == torch.bfloat16 else 100e9

    monkeypatch.setattr(hardware, "matmul_peak", matmul_peak)
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": True)
    hardware.measure_peaks.cache_clear()  # else a peak measured by an earlier test answers without timing
    try:
        assert choose_precision("fp32") == PrecisionChoice("fp32", "fp32, as asked (--precision fp32)")
        assert choose_precision("bf16", "cpu") == PrecisionChoice("bf16", "bf16, as asked (--precision bf16)")
        with pytest.raises(UsageError, match="'fp16': expected one of auto, fp32, bf16"):
            choose_precision("fp16")
        assert timed == [] and hardware.measure_peaks.cache_info().currsize == 0  # nothing timed, nothing kept
        # the spy sees a measurement where there is one: auto times both dtypes, and follows what it measured
        choice = choose_precision("auto", "cpu")
        assert set(timed) == {torch.float32, torch.bfloat16}
        assert choice.precision == "bf16" and choice.peaks == MatmulPeaks(True, 100e9, 300e9, hardware.cpu_name())
        hardware.measure_peaks.cache_clear()
        bf16_rate["now"] = 100e9  # the same CPU measured with bf16 no faster: fp32
        assert choose_precision("auto", "cpu").precision == "fp32"
    finally:
        hardware.measure_peaks.cache_clear()  # the fake peaks must not answer a later test


def test_eval_every_flips_only_where_training_flips_and_counts_print_as_integers(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = tiny_train_args(digits, out, "--epochs", "3", "--eval-every", "2")
    assert train(args) == 0
    rows = read_metrics(out)
    evaluated = [r["epoch"] for r in rows if "test_top1" in r]
    assert evaluated == [2, 3]  # every second epoch, and always the last
    assert rows[0]["images_trained"] == 200 and "train_loss" in rows[0]
    assert not [k for r in rows for k in r if "flip" in k]  # MNIST trains unflipped: no flip-averaged score
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    err = capsys.readouterr().err
    assert "epoch 1/3: lr " in err and "images_trained 200," in err and "e+0" not in err
    assert train(tiny_train_args(digits, tmp_path / "bad", "--eval-every", "0")) == EXIT_USAGE
    assert "--eval-every 0: expected a number of epochs, at least 1" in capsys.readouterr().err


def test_flip_averaging_comes_from_the_same_pass_as_the_plain_scores(digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(tiny_train_args(digits, out, "--epochs", "1")) == 0
    run = Run.open(out)
    model, dataset = run.load_model(), run.dataset(str(digits.parent))
    data = Materializer(dataset.split("test"), dataset.mean, dataset.std)
    both = evaluate_split(model, data, 32, "fp32", DistEnv(), flip=True)
    plain = evaluate_split(model, data, 32, "fp32", DistEnv())
    assert {k: both[k] for k in plain} == plain  # the plain scores are unchanged by the flip
    everything = EpochPlan(len(data.split), len(data.split), seed=0, shuffle=False, drop_last=False)
    x, y = data(next(everything.batches(0)))
    with torch.no_grad():
        averaged = (model(x) + model(x.flip(3))) / 2
    assert both["flip_top1"] == pytest.approx(100.0 * (averaged.argmax(1) == y).float().mean().item())


def _agree(rank: int, port: int, results: Any) -> None:
    """One rank of :func:`test_every_rank_takes_rank_0s_choice`: this rank's machine measures its own choice."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        peaks = MatmulPeaks(True, 100e9, 300e9 if rank == 0 else 100e9, f"rank {rank}'s CPU")
        hardware.measure_peaks = lambda: peaks  # type: ignore[assignment]
        choice = agreed_precision("auto", torch.device("cpu"), DistEnv(rank, 2))
        results.put((rank, choice.precision))
    finally:
        dist.destroy_process_group()


def test_every_rank_takes_rank_0s_choice() -> None:
    """Two ranks whose own measurements disagree both compute in rank 0's precision."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    ranks = [context.Process(target=_agree, args=(rank, port, results)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    assert [p.exitcode for p in ranks] == [0, 0]
    assert sorted(results.get(timeout=5) for _ in ranks) == [(0, "bf16"), (1, "bf16")]
