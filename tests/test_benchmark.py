"""scripts/benchmark.py: one process, the reference beside every model, JSON rows (timings not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from resmg_zoo.benchmark import REFERENCE, main, reference_resnet18
from resmg_zoo.counting import param_count


def test_benchmark_writes_rows_with_the_reference(tmp_path: Path) -> None:
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
        "--peak-size",
        "256",
    ]
    assert main([*args, "--precision", "bf16", "--channels-last", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"resnet18_sharedA", REFERENCE, "loader (crop+flip)"}
    ours, ref = by_model["resnet18_sharedA"], by_model[REFERENCE]
    assert ours["params"] == param_count("resnet18_sharedA")
    assert ours["flops"] == ref["flops"] > 1e9  # sharing A saves parameters, not FLOPs
    assert ref["train_vs_reference"] == ref["infer_vs_reference"] == 1.0
    assert ours["train_img_s"] > 0 and by_model["loader (crop+flip)"]["loader_img_s"] > 0
    assert 4 * ours["params"] <= ours["checkpoint_bytes"] < 4 * ours["params"] + 200_000  # fp32 + header, BN buffers
    assert 0 < ours["train_pct_peak"] and 0 < ours["infer_pct_peak"] and ours["peak_bf16_flops"] > 0


def test_reference_is_resnet18_unshared_in_size() -> None:
    assert sum(p.numel() for p in reference_resnet18().parameters()) == param_count("resnet18_unshared")
