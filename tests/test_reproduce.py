"""scripts/reproduce.py: the paper's rows trained at a budget, printed beside the paper's, row by row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from realdata import real_data_dir, subset_zip
from safetensors.torch import load_file

from resmg_zoo.core.paper import paper_rows
from resmg_zoo.tools import reproduce
from resmg_zoo.train.checkpoint import checkpoint_weights_path


def test_table1_has_the_16_forms_in_the_papers_order() -> None:
    rows = reproduce.table_rows(1)
    assert [r.row_id for r in rows] == [f"{p['a_form']}-{p['b_form']}" for p in paper_rows(1)]
    assert len({r.row_id for r in rows}) == 16 and all(r.model == "fresnet18" for r in rows)


def test_unknown_row_lists_the_rows() -> None:
    with pytest.raises(ValueError, match="resnet18_sharedA"):
        reproduce.select_rows(2, "resnet18_sharedA,resnet99")


def test_command_of_a_row_carries_the_budget_and_the_forms(tmp_path: Path) -> None:
    row = reproduce.select_rows(1, "post-pre")[0]
    cmd = reproduce.train_command(row, reproduce.BUDGETS["cpu-tiny"], 1, tmp_path / "run", None)
    assert cmd[1:4] == ["-m", "resmg_zoo.train", "--quiet"]
    text = " ".join(cmd)
    assert "--dataset cifar10 --recipe short" in text and "--epochs 2" in text and "--channels-last" in text
    assert cmd[-3:] == ["widths=16,32,64,128", "a_form=post", "b_form=pre"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.json").write_text("{}")
    assert reproduce.train_command(row, reproduce.BUDGETS["cpu-tiny"], 1, tmp_path / "run", None)[-1] == "--resume"


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose ``mnist.zip`` is 600 train / 200 test images of the real MNIST."""
    folder = tmp_path_factory.mktemp("data")
    subset_zip(real_data_dir() / "mnist.zip", folder / "mnist.zip", {"train": 60, "test": 20})
    return folder


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/reproduce.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


def test_table2_rows_train_print_beside_the_paper_and_resume(mnist_dir: Path, tmp_path: Path) -> None:
    args = ["--table", "2", "--budget", "smoke", "--rows", "resnet18_sharedA,preact_resnet18_sharedA"]
    args += ["--data", str(mnist_dir), "--out", str(tmp_path)]
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    table = (tmp_path / "table2-smoke" / "results.md").read_text()
    assert table.strip() == first.stdout.strip()
    lines = [line for line in table.splitlines() if line.startswith("| `")]
    assert [line.split("|")[1].strip() for line in lines] == ["`resnet18_sharedA`", "`preact_resnet18_sharedA`"]
    for line, (row, paper) in zip(lines, (("resnet18_sharedA", 99.58), ("preact_resnet18_sharedA", 99.64))):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        # ours is the row's own run: its last metrics line, read here from the file (not by the tool's reader)
        run = tmp_path / "table2-smoke" / row
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        ours = last["test_top1"]
        assert ours * 2 == round(ours * 2)  # a share of the 200 test images: a multiple of 0.5 %
        assert cells[1] == f"{ours:.2f}" and cells[2] == f"{paper:.2f}" and cells[3] == f"{ours - paper:+.2f}"
        weights = load_file(str(checkpoint_weights_path(run)))
        params = sum(t.numel() for k, t in weights.items() if "running_" not in k and "num_batches" not in k)
        assert cells[4] == f"{params:,}" and cells[5] == str(last["epoch"])
        assert cells[6] == f"{last['train_seconds_total'] / 60:.1f}"
    assert "budget `smoke`" in table and "mnist.zip" in table
    # Finished rows are read back, not retrained: the second call starts no training.
    second = _run(*args)
    assert second.returncode == 0 and "[reproduce]" not in second.stderr
    assert second.stdout == first.stdout


def test_seeds_train_in_their_own_folders_and_the_table_shows_their_mean(mnist_dir: Path, tmp_path: Path) -> None:
    args = ["--table", "2", "--budget", "smoke", "--rows", "preact_resnet18_sharedA", "--seeds", "0,3"]
    result = _run(*args, "--data", str(mnist_dir), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    table_dir = tmp_path / "table2-smoke"
    runs = [table_dir / "preact_resnet18_sharedA", table_dir / "preact_resnet18_sharedA-seed3"]
    configs = [json.loads((run / "config.json").read_text()) for run in runs]
    assert [c["seed"] for c in configs] == [0, 3]
    top1 = [reproduce.row_result(run)["test_top1"] for run in runs]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| `preact_resnet18_sharedA` |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == f"{sum(top1) / 2:.2f} (s0: {top1[0]:.2f}, s3: {top1[1]:.2f})"
    assert "mean over seeds 0, 3" in result.stdout
    # A report without --seeds still finds the finished seed-3 run.
    report = _run(
        "--table", "2", "--budget", "smoke", "--rows", "preact_resnet18_sharedA", "--out", str(tmp_path), "--report"
    )
    assert report.stdout == result.stdout


def test_bad_seeds_are_refused_with_the_input_named() -> None:
    result = _run("--table", "2", "--seeds", "0,x", "--report")
    assert result.returncode == 2 and "'0,x'" in result.stderr
    with pytest.raises(ValueError, match="distinct"):
        reproduce.parse_seeds("1,1")


def test_table4_runs_unchanged_on_a_100_class_archive(tmp_path: Path) -> None:
    """No CIFAR-100 here: a 100-class ``cifar100.zip`` of real CIFAR-10 images (each class split in
    ten by image index) exercises Table 4's whole path as it will run where torchvision can fetch it."""
    import zipfile

    data = tmp_path / "data"
    data.mkdir()
    per_class: dict[str, int] = {}
    with zipfile.ZipFile(real_data_dir() / "cifar10.zip") as src, zipfile.ZipFile(data / "cifar100.zip", "w") as dst:
        for name in src.namelist():
            split, cls, file = name.split("/")
            n = per_class.get(f"{split}/{cls}", 0)
            if n >= (50 if split == "train" else 20):
                continue
            per_class[f"{split}/{cls}"] = n + 1
            dst.writestr(f"{split}/{cls}_{n % 10}/{file}", src.read(name))
    result = _run(
        "--table",
        "4",
        "--budget",
        "smoke",
        "--rows",
        "preact_resnet18_sharedA",
        "--data",
        str(data),
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "table4-smoke" / "preact_resnet18_sharedA" / "config.json").read_text())
    assert config["num_classes"] == 100 and config["dataset"] == "cifar100"
    row = next(line for line in result.stdout.splitlines() if line.startswith("| `preact_resnet18_sharedA` |"))
    assert "| 74.51 |" in row  # the paper's Table 4 figure beside ours
