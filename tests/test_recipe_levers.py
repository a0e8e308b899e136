"""The time-to-accuracy levers on real CIFAR-10 images: the one-cycle schedule, an EMA of
the weights, progressive resizing, test-time flip averaging, and the time-to-accuracy report."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional

import pytest
import torch
from conftest import tiny_train_args
from realdata import real_data_dir, subset_zip
from safetensors.torch import load_file

from resmg_zoo.core import hardware
from resmg_zoo.core.cli import EXIT_USAGE
from resmg_zoo.core.hardware import MatmulPeaks, decide_precision, matmul_peak, preferred_precision
from resmg_zoo.data.datasets import ImageSplit, load_dataset
from resmg_zoo.data.loader import Materializer, resize_batch
from resmg_zoo.tools import reproduce, time_to_accuracy
from resmg_zoo.tools.evaluate import run_evaluation
from resmg_zoo.train.checkpoint import CheckpointError, checkpoint_weights_path
from resmg_zoo.train.cli import main as train
from resmg_zoo.train.distributed import DistEnv
from resmg_zoo.train.evaluation import evaluate_split
from resmg_zoo.train.log import read_metrics, read_steps
from resmg_zoo.train.recipes import RECIPES, low_res_at, lr_factor
from resmg_zoo.train.run import Run

# every lever whose schedule does not depend on the run's length (a shorter --epochs changes one-cycle's)
RESUMABLE_LEVERS = ("--ema-decay", "0.9", "--low-res", "16", "--low-res-epochs", "1", "--augment", "crop_flip")
LEVERS = ("--schedule", "onecycle", "--warmup-epochs", "0.5", *RESUMABLE_LEVERS)


def test_onecycle_rises_linearly_to_the_peak_then_falls_linearly_to_zero() -> None:
    recipe = replace(RECIPES["short"], epochs=4, schedule="onecycle", warmup_epochs=1.0)
    factors = [lr_factor(recipe, step, 10) for step in range(40)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # the rise: 0.1 … 1
    fall = factors[10:]
    assert fall[0] == 1.0 and fall == sorted(fall, reverse=True)
    steps = [b - a for a, b in itertools.pairwise(fall)]
    assert steps == pytest.approx([steps[0]] * len(steps))  # linear, not cosine
    assert factors[-1] == pytest.approx(1 / 30) and lr_factor(recipe, 40, 10) == 0.0


def test_low_resolution_lasts_exactly_its_epochs() -> None:
    recipe = replace(RECIPES["short"], epochs=4, low_res=24, low_res_epochs=1.5)
    assert [low_res_at(recipe, s, 10) for s in (0, 14, 15, 39)] == [24, 24, 0, 0]
    assert low_res_at(replace(recipe, low_res=0), 0, 10) == 0


def test_resize_batch_keeps_the_memory_format() -> None:
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    small = resize_batch(x, 24)
    assert small.shape == (4, 3, 24, 24) and small.is_contiguous(memory_format=torch.channels_last)
    assert resize_batch(torch.randn(2, 3, 32, 32), 16).is_contiguous()
    flat = torch.full((1, 3, 32, 32), 0.7)
    assert torch.allclose(resize_batch(flat, 20), torch.full((1, 3, 20, 20), 0.7))  # antialiasing keeps the mean


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--ema-decay", "1"], "--ema-decay 1.0"),
        (["--ema-decay", "-0.5"], "--ema-decay -0.5"),
        (["--low-res", "4"], "--low-res 4"),
        (["--low-res-epochs", "-1"], "--low-res-epochs -1.0"),
    ],
)
def test_a_lever_that_cannot_train_is_refused_before_anything_is_written(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert train(tiny_train_args(real_data_dir() / "mnist.zip", out, *flags)) == EXIT_USAGE
    assert named in capsys.readouterr().err and not out.exists()


def test_an_unknown_schedule_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train(tiny_train_args(real_data_dir() / "mnist.zip", tmp_path / "run", "--schedule", "linear"))
    assert "onecycle" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cifar_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 train / 100 test images of the real CIFAR-10 (JPEG copy)."""
    folder = tmp_path_factory.mktemp("data")
    return subset_zip(real_data_dir() / "cifar10.zip", folder / "cifar_small.zip", {"train": 20, "test": 10})


@pytest.fixture(scope="module")
def lever_run(cifar_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs with every lever on: one-cycle, EMA, the first epoch at 16×16, flips."""
    out = tmp_path_factory.mktemp("runs") / "levers"
    assert train(tiny_train_args(cifar_small, out, "--epochs", "2", *LEVERS)) == 0
    return out


def test_the_levers_are_recorded_and_their_metrics_logged(lever_run: Path) -> None:
    settings = json.loads((lever_run / "config.json").read_text())["recipe_settings"]
    assert (settings["schedule"], settings["ema_decay"], settings["low_res"], settings["low_res_epochs"]) == (
        "onecycle",
        0.9,
        16,
        1.0,
    )
    first, last = read_metrics(lever_run)
    assert {"ema_test_top1", "ema_test_loss"} <= first.keys() and "test_flip_top1" not in first
    assert {"test_flip_top1", "ema_test_flip_top1"} <= last.keys()  # flip averaging after the last epoch only
    assert [r["side"] for r in read_steps(lever_run)] == [16] * 4 + [32] * 4
    raw, ema = (
        load_file(str(checkpoint_weights_path(lever_run))),
        load_file(str(checkpoint_weights_path(lever_run, True))),
    )
    assert raw.keys() == ema.keys()
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], ema[k])]
    assert len(moved) > len(raw) // 2  # the average is not the last weights (and BN statistics are averaged too)
    assert any(k.endswith("running_var") for k in moved)


def test_one_epoch_plus_resume_equals_two_with_ema_and_low_resolution(cifar_small: Path, tmp_path: Path) -> None:
    """An exact resume across the switch from 16×16 to 32×32, with the EMA copy restored (the paper's step
    schedule: the same for a 1- and a 2-epoch run, so that 1 + resume + 1 must equal 2 straight)."""
    straight, out = tmp_path / "straight", tmp_path / "resumed"
    assert train(tiny_train_args(cifar_small, straight, "--epochs", "2", *RESUMABLE_LEVERS)) == 0
    assert train(tiny_train_args(cifar_small, out, "--epochs", "1", *RESUMABLE_LEVERS)) == 0
    assert train(tiny_train_args(cifar_small, out, "--epochs", "2", "--resume")) == 0
    for ema in (False, True):
        a = load_file(str(checkpoint_weights_path(out, ema)))
        b = load_file(str(checkpoint_weights_path(straight, ema)))
        assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert [r["test_top1"] for r in read_metrics(out)] == [r["test_top1"] for r in read_metrics(straight)]
    assert read_steps(out) == read_steps(straight)


def test_evaluate_reads_the_ema_weights_and_averages_flips(lever_run: Path) -> None:
    last = read_metrics(lever_run)[-1]
    for flags, key in (
        ([], "test_top1"),
        (["--ema"], "ema_test_top1"),
        (["--ema", "--flip-tta"], "ema_test_flip_top1"),
    ):
        result = run_evaluation(["--run", str(lever_run), "--device", "cpu", *flags])
        assert result["top1"] == pytest.approx(last[key], abs=1e-9), flags


def test_evaluate_ema_of_a_run_without_one_says_so(tmp_path: Path, cifar_small: Path) -> None:
    out = tmp_path / "plain"
    assert train(tiny_train_args(cifar_small, out, "--epochs", "0.25")) == 0
    with pytest.raises(CheckpointError, match="no EMA weights"):
        run_evaluation(["--run", str(out), "--ema"])


def test_flip_averaging_is_the_same_for_an_image_and_its_mirror(lever_run: Path) -> None:
    """With flip averaging the model scores the mirrored test split exactly as the original (it sees both
    views of each); without it the two differ — so the flag does average over the flip."""
    model = Run.open(lever_run).load_model()
    dataset = load_dataset(json.loads((lever_run / "config.json").read_text())["dataset"])
    split = dataset.split("test")
    mirrored = ImageSplit(split.images.flip(3).contiguous(), split.labels)

    def score(s: ImageSplit, flip: bool) -> dict[str, float]:
        result = evaluate_split(model, Materializer(s, dataset.mean, dataset.std), 50, "fp32", DistEnv(), flip=flip)
        return {k: result[f"flip_{k}" if flip else k] for k in ("top1", "loss")}

    with_flip = score(split, True), score(mirrored, True)
    assert with_flip[0]["top1"] == with_flip[1]["top1"] and with_flip[0]["loss"] == pytest.approx(with_flip[1]["loss"])
    plain = score(split, False), score(mirrored, False)
    assert plain[0]["loss"] != pytest.approx(plain[1]["loss"], rel=1e-6)


def test_time_to_accuracy_report_and_plot(lever_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = read_metrics(lever_run)
    target = rows[-1]["test_top1"]
    assert time_to_accuracy.seconds_to(rows, "test_top1", target) == next(
        r["train_seconds_total"] for r in rows if r["test_top1"] >= target
    )
    assert time_to_accuracy.seconds_to(rows, "test_top1", 100.0 + 1e-9) is None
    plot, md = tmp_path / "tta.png", tmp_path / "tta.md"
    args = [str(lever_run), "--targets", f"{target},99.9", "--plot", str(plot), "--markdown", str(md)]
    assert time_to_accuracy.main(args) == 0
    out = capsys.readouterr().out
    assert md.read_text() == out and plot.read_bytes()[:4] == b"\x89PNG"
    cells = [c.strip() for c in out.splitlines()[2].split("|")[1:-1]]
    assert "schedule=onecycle" in cells[1] and "ema_decay=0.9" in cells[1] and cells[2] == "2 / 2"
    assert cells[5] == "—" and cells[6] == f"{rows[-1]['test_top1']:.2f}"  # 99.9 % not reached
    assert cells[7] == f"{rows[-1]['ema_test_top1']:.2f}" and cells[8] == f"{rows[-1]['test_flip_top1']:.2f}"


def test_time_to_accuracy_per_epoch_table(lever_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = read_metrics(lever_run)
    reached = rows[-1]["test_top1"]  # reached at the latest on the last epoch; 100 % never
    first = next(r for r in rows if r["test_top1"] >= reached)
    assert time_to_accuracy.main([str(lever_run), "--per-epoch", "--targets", f"{reached},100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    recipe = json.loads((lever_run / "config.json").read_text())["recipe"]
    assert lines[0].startswith(f"**{lever_run.name}") and f"recipe `{recipe}`," in lines[0]
    assert "schedule=onecycle" in lines[0]
    head = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert head[-2:] == ["EMA test top-1", "flip TTA test top-1"]  # the lever run logged both
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[4:] if line.startswith("|")]
    assert [int(t[0]) for t in table] == [r["epoch"] for r in rows]
    for cells, row in zip(table, rows):
        assert float(cells[2]) == pytest.approx(row["train_seconds_total"] / 3600, abs=0.005)
        flip = row.get("test_flip_top1")  # logged on the last epoch only: "—" on the others
        assert cells[6] == f"{row['test_top1']:.2f}" and cells[-1] == ("—" if flip is None else f"{flip:.2f}")
    assert table[-1][-1] != "—"
    hours = f"{first['train_seconds_total'] / 3600:.2f}"
    assert lines[-1] == (
        f"`test_top1` first reached {reached:g} %: epoch {first['epoch']} ({hours} h); 100 %: not yet"
        f" (of {len(rows)} finished epochs)."
    )


@pytest.mark.parametrize("mode", [[], ["--per-epoch"]])
def test_time_to_accuracy_refuses_a_run_without_a_finished_epoch(
    lever_run: Path, tmp_path: Path, mode: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(lever_run / "config.json", started / "config.json")
    (started / "metrics.jsonl").write_text("")
    assert time_to_accuracy.main([str(started), *mode]) == EXIT_USAGE
    assert "no finished epoch" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--targets", "93,x"], "--targets must be"),
        (["--targets", "130"], "(0, 100]"),
        (["--metric", "foo"], "no 'foo'"),
        (["--per-epoch", "--metric", "foo"], "no 'foo'"),
    ],
)
def test_time_to_accuracy_refuses_bad_input(
    lever_run: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert time_to_accuracy.main([str(lever_run), *args]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_the_full_width_budget_trains_the_new_recipe(tmp_path: Path) -> None:
    budget = reproduce.BUDGETS["cpu-sprint"]
    assert budget.recipe == "sprint" and budget.model_kwargs == () and budget.recipe in RECIPES
    row = reproduce.table_rows(3)[0]
    cmd = reproduce.train_command(row, budget, 3, tmp_path / "row", None)
    assert cmd[cmd.index("--recipe") + 1] == "sprint" and "--model-kwargs" not in cmd
    assert "--precision" not in cmd  # train's --precision auto chooses, and records why


@pytest.mark.parametrize(
    ("device", "peaks", "cuda_bf16", "expected"),
    [
        ("cpu", MatmulPeaks(False), False, "fp32"),  # AVX2 only: bf16 is emulated, nothing is timed
        ("cpu", MatmulPeaks(True, 325e9, 170e9), False, "fp32"),  # the Intel Xeon with AVX512-BF16, no AMX
        ("cpu", MatmulPeaks(True, 300e9, 340e9), False, "fp32"),  # below the 1.2x threshold
        ("cpu", MatmulPeaks(True, 300e9, 375e9), False, "fp32"),  # 1.25x: within 10 % of it, the stable choice
        ("cpu", MatmulPeaks(True, 300e9, 393e9), False, "fp32"),  # 1.31x: still within 10 %
        ("cpu", MatmulPeaks(True, 300e9, 399e9), False, "bf16"),  # 1.33x: clear of the threshold
        ("cpu", MatmulPeaks(True, 330e9, 700e9), False, "bf16"),  # bf16 hardware that pays
        ("cuda", None, True, "bf16"),
        ("cuda", None, False, "fp32"),  # a CUDA device without bf16 (e.g. before Ampere)
        ("mps", None, False, "fp32"),  # nothing was measured on it
        ("xpu", None, False, "fp32"),
    ],
)
def test_auto_precision_is_a_function_of_the_measured_peaks(
    device: str, peaks: Optional[MatmulPeaks], cuda_bf16: bool, expected: str
) -> None:
    choice = decide_precision(device, peaks, cuda_bf16=cuda_bf16)
    assert choice.precision == expected and choice.reason.startswith(f"auto: {expected}")
    if peaks is not None and peaks.fp32:
        assert f"{peaks.bf16 / peaks.fp32:.2f}x the fp32 one" in choice.reason


def test_auto_precision_on_cuda_does_not_time_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU measurement is never run for a CUDA device (the public measurement refuses here)."""
    monkeypatch.setattr(hardware, "measure_peaks", lambda: pytest.fail("timed the CPU for CUDA"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert preferred_precision("cuda") == "fp32"


def test_matmul_peak_is_flops_of_the_fastest_call_over_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a clock on which every call takes 2 ms but the second of the 64×64 ones 1 ms: the peak is
    2·64³ FLOPs over 1 ms, the best call over every size and every call (at least 3 per size)."""
    readings = iter([0.0, 0.002, 1.0, 1.001, 2.0, 2.002] + [10.0 + 0.002 * i for i in range(40)])
    monkeypatch.setattr(hardware.time, "perf_counter", lambda: next(readings))
    assert matmul_peak(torch.float32, sizes=(64, 32), flops_per_size=1) == pytest.approx(2 * 64**3 / 0.001)
    for dtype in (torch.float32, torch.bfloat16):  # and the real clock: both precisions run
        monkeypatch.undo()
        assert matmul_peak(dtype, sizes=(128,), flops_per_size=1e7) > 0
