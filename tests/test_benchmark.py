"""scripts/benchmark.py: one process, the reference beside every model, JSON rows (timings not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resmg_zoo.core.counting import param_count
from resmg_zoo.tools.benchmark import REFERENCE, main, reference_resnet18
from resmg_zoo.tools.benchmark_report import check_targets, twin_of
from resmg_zoo.train.step_profile import CATEGORIES


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
    assert (
        by_model["resnet18_sharedA"]["retain_freed_memory"] is False
        and by_model["resnet18_sharedA"]["train_faults_per_step"] >= 0
    )
    profile = by_model["profile (resnet18_sharedA)"]["profile"]
    assert set(profile) == set(CATEGORIES) and sum(profile.values()) == pytest.approx(100.0)
    assert profile["conv forward"] > 0 and profile["conv backward"] > 0 and profile["optimizer"] > 0
    assert profile["loader"] > 0 and profile["batch norm"] > 0
    ours, ref = by_model["resnet18_sharedA"], by_model[REFERENCE]
    assert ours["params"] == param_count("resnet18_sharedA")
    assert ours["flops"] == ref["flops"] > 1e9  # sharing A saves parameters, not FLOPs
    assert ref["train_vs_reference"] == ref["infer_vs_reference"] == 1.0
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
