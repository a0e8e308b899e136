"""scripts/benchmark.py: one process, the reference beside every model, JSON rows (timings not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resmg_zoo.core.counting import param_count
from resmg_zoo.tools.benchmark.command import REFERENCE, main, reference_resnet18
from resmg_zoo.tools.benchmark.report import check_targets, twin_of
from resmg_zoo.tools.benchmark.step_profile import CATEGORIES


def test_benchmark_writes_rows_with_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = [
        "--models",
        "resnet18_sharedA",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--rounds",
        "1",
        "--peak-sizes",
        "128,256",
    ]
    assert main([*args, "--precision", "bf16", "--channels-last", "--profile", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {
        "resnet18_sharedA",
        REFERENCE,
        "conv ceiling",  # one: the shared A runs the same convolutions as the reference
        "loader (crop+flip)",
        "profile (resnet18_sharedA)",
    }
    ceiling = by_model["conv ceiling"]
    assert ceiling["models"] == ["resnet18_sharedA", REFERENCE]
    # its FLOPs are the models' but the head's (a 512 → 10 linear: forward 2·512·10, training 3×)
    assert ceiling["conv_flops"] == by_model[REFERENCE]["flops"] - 2 * 512 * 10
    assert ceiling["conv_train_flops"] == by_model[REFERENCE]["train_flops"] - 3 * 2 * 512 * 10
    for name in ("resnet18_sharedA", REFERENCE):
        row = by_model[name]
        assert row["conv_ceiling"] == "conv ceiling"
        assert row["train_vs_conv_ceiling"] == pytest.approx(row["train_img_s"] / ceiling["train_img_s"])
    # the fast path (BN folded) is timed for the zoo's models and set against the convolutions alone
    fast = by_model["resnet18_sharedA"]
    assert fast["fast_infer_img_s"] > 0 and by_model[REFERENCE]["fast_infer_img_s"] is None
    assert fast["fast_infer_vs_conv_ceiling"] == pytest.approx(fast["fast_infer_img_s"] / ceiling["infer_img_s"])
    # main() called from Python leaves the allocator alone (only the console entry point sets it, as
    # resmg-train's does: tests/test_hardware.py); page faults are counted where the system counts them
    # (their arithmetic, on known timings and counts: test_rates_ratios_and_faults_follow_from_the_timings)
    faults = by_model["resnet18_sharedA"]["train_faults_per_step"]
    assert by_model["resnet18_sharedA"]["retain_freed_memory"] is False
    assert faults >= 0 and float(faults).is_integer()  # one timed step (--steps 1): a whole count of faults
    profile = by_model["profile (resnet18_sharedA)"]["profile"]
    assert set(profile) == set(CATEGORIES) and sum(profile.values()) == pytest.approx(100.0)
    assert profile["conv forward"] > 0 and profile["conv backward"] > 0 and profile["optimizer"] > 0
    assert profile["loader"] > 0 and profile["batch norm"] > 0
    ours, ref = by_model["resnet18_sharedA"], by_model[REFERENCE]
    assert ours["params"] == param_count("resnet18_sharedA")
    assert ours["flops"] == ref["flops"] > 1e9  # sharing A saves parameters, not FLOPs
    assert ref["train_vs_reference"] == ref["infer_vs_reference"] == 1.0
    assert ours["infer_vs_reference"] == pytest.approx(ours["infer_img_s"] / ref["infer_img_s"])
    assert ours["train_img_s"] > 0 and by_model["loader (crop+flip)"]["loader_img_s"] > 0
    for row in (ours, ref):  # the % of peak is the measured rate × FLOPs over the same run's bf16 peak
        assert row["train_pct_peak"] == pytest.approx(
            100 * row["train_img_s"] * row["train_flops"] / row["peak_bf16_flops"]
        )
        assert row["infer_pct_peak"] == pytest.approx(100 * row["infer_img_s"] * row["flops"] / row["peak_bf16_flops"])
    assert ours["train_vs_reference"] == pytest.approx(ours["train_img_s"] / ref["train_img_s"])
    assert 4 * ours["params"] <= ours["checkpoint_bytes"] < 4 * ours["params"] + 200_000  # fp32 + header, BN buffers
    assert 0 < ours["train_pct_peak"] and 0 < ours["infer_pct_peak"] and ours["peak_bf16_flops"] > 0
    # training FLOPs are counted (forward + backward), about 3 forward passes
    assert 2.9 * ours["flops"] < ours["train_flops"] < 3.0 * ours["flops"]
    assert ours["twin"] is None and ours["train_vs_twin"] is None  # resnet18_unshared was not measured
    printed = capsys.readouterr().out
    assert "resnet18_sharedA train_vs_twin: its twin was not measured" in printed
    assert "resnet18_sharedA train_pct_peak = " in printed
    assert "precision: bf16, as asked (--precision bf16)" in printed
    assert "| training step of | conv forward | conv backward | batch norm |" in printed


def test_rates_ratios_and_faults_follow_from_the_timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timed steps replaced by a clock that each step moves on by a known time (and a page-fault
    counter by a known count), the three rounds 4, 2 and 1 times slower: every rate, ratio, fault count
    and % of peak in the rows is the median round's (2×: neither the first, the last nor the mean),
    computed here by hand, and the peak the best round's."""
    from types import SimpleNamespace

    from resmg_zoo.tools.benchmark import command, timing

    ours = "resnet18_sharedA"
    seconds = {  # one step's time in round 1, by kind and by what is timed
        ("train", ours): 0.4,
        ("train", REFERENCE): 0.5,
        ("train", "conv ceiling"): 0.25,
        ("infer", ours): 0.1,
        ("infer", REFERENCE): 0.2,
        ("infer", "conv ceiling"): 0.08,
        ("fast", ours): 0.05,
    }
    faults = {ours: 7, REFERENCE: 11, "conv ceiling": 3}  # minor page faults of one training step
    slower = [4, 2, 1]  # round r's steps take slower[r] times as long: the median round is the 2× one
    clock = dict(now=0.0, faults=0, round=-1)

    def step(kind: str, name: str) -> None:
        clock["now"] += seconds[kind, name] * slower[clock["round"]]
        clock["faults"] += faults[name] if kind == "train" else 0

    def peak(dtype: torch.dtype, sizes: list[int]) -> float:  # called at each round's start, fp32 first
        clock["round"] += dtype == torch.float32
        return [[1e11, 3e11, 2e11], [4e11, 6e11, 5e11]][dtype == torch.bfloat16][clock["round"]]

    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    monkeypatch.setattr(timing, "minor_faults", lambda: clock["faults"])
    monkeypatch.setattr(command, "matmul_peak", peak)
    for cls in (command.Bench, command.CeilingBench):
        monkeypatch.setattr(cls, "train_step", lambda self: step("train", self.name))
        monkeypatch.setattr(cls, "infer_step", lambda self: step("infer", self.name))
    monkeypatch.setattr(command, "FastPath", lambda model, settings: lambda x: step("fast", ours))
    out = tmp_path / "bench.json"
    args = ["--models", ours, "--batch-size", "2", "--steps", "2", "--warmup", "1", "--rounds", "3"]
    assert main([*args, "--precision", "fp32", "--json", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    # the median round's rate: 2 steps of 2 images in 2 × (2× slower × seconds), so 1 / (2 × seconds) images/s
    mine, ref, ceiling = rows[ours], rows[REFERENCE], rows["conv ceiling"]
    expected_mine = {
        "train_img_s": 2.5,  # 1 / (2 × 0.4)
        "infer_img_s": 10.0,
        "fast_infer_img_s": 20.0,
        "train_vs_reference": 1.25,  # 2.5 / 2.0
        "infer_vs_reference": 2.0,  # 10 / 5
        "train_vs_conv_ceiling": 0.625,  # 2.5 / 4
        "infer_vs_conv_ceiling": 0.8,  # 10 / 12.5
        "fast_infer_vs_conv_ceiling": 1.6,  # 20 / 12.5
        "train_faults_per_step": 7,
        "peak_fp32_flops": 3e11,  # the best round's, not the median one's
        "peak_bf16_flops": 6e11,
    }
    assert {k: mine[k] for k in expected_mine} == pytest.approx(expected_mine, rel=1e-9)
    expected_ref = dict(train_img_s=2.0, infer_img_s=5.0, train_vs_reference=1.0, infer_vs_reference=1.0)
    expected_ref |= dict(train_vs_conv_ceiling=0.5, infer_vs_conv_ceiling=0.4, train_faults_per_step=11)
    assert {k: ref[k] for k in expected_ref} == pytest.approx(expected_ref, rel=1e-9)
    assert ref["fast_infer_img_s"] is None
    assert (ceiling["train_img_s"], ceiling["infer_img_s"]) == pytest.approx((4.0, 12.5), rel=1e-9)
    for row in (mine, ref):  # fp32: the % of the fp32 peak
        assert row["train_pct_peak"] == pytest.approx(100 * row["train_img_s"] * row["train_flops"] / 3e11)
        assert row["infer_pct_peak"] == pytest.approx(100 * row["infer_img_s"] * row["flops"] / 3e11)
    assert ceiling["train_pct_peak"] == pytest.approx(100 * 4.0 * ceiling["conv_train_flops"] / 3e11)


def test_twins_and_targets() -> None:
    assert twin_of("preact_resnet34_sharedAB") == "preact_resnet34_unshared"
    assert twin_of("resnet18_unshared") is None and twin_of(REFERENCE) is None
    row = dict(model="resnet18_sharedA", params=1, precision="fp32", train_vs_twin=0.97, infer_vs_twin=1.0)
    row |= dict(train_vs_reference=1.01, infer_vs_reference=0.99, train_pct_peak=10.0, infer_pct_peak=10.0)
    lines = check_targets([row])
    assert len(lines) == 7  # twin ×2, reference ×2, % of peak ×2 (any precision), the conv ceiling
    assert "train_vs_twin = 0.97 (target ≥ 0.98): MISSED" in lines[0] and lines[1].endswith(": met")
    assert lines[3].endswith("MISSED") and "train_pct_peak = 10 (target ≥ 50): MISSED" in lines[4]
    assert lines[6] == "- resnet18_sharedA train_vs_conv_ceiling: not measured"


def test_reference_is_resnet18_unshared_in_size() -> None:
    assert sum(p.numel() for p in reference_resnet18().parameters()) == param_count("resnet18_unshared")


def test_bad_peak_sizes_are_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--peak-sizes", "1024,big"])
    assert exit_info.value.code == 2
    assert "--peak-sizes must be a sequence of positive integers" in capsys.readouterr().err
