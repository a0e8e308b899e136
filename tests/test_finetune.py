"""Fine-tuning from published weights on a user's own ImageFolder zip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import HUB_ID, MODEL, WIDTHS, assert_drawn
from realdata import real_data_dir
from safetensors.torch import load_file

from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.tools.relabel import main as relabel
from resmg_zoo.train.checkpoint import checkpoint_weights_path
from resmg_zoo.train.cli import main as train

# The tiny published checkpoint (conftest) saw the first 100 train / 30 test images of each digit;
# the parity task uses the next ones: 20 per digit to train, 50 per digit to test.
PARITY = ["--map", "even=0,2,4,6,8", "odd=1,3,5,7,9", "--per-class", "train=20", "test=50"]
PARITY += ["--offset", "train=100", "test=30"]
BUDGET = ["--recipe", "quick", "--val-size", "0", "--epochs", "3", "--batch-size", "20", "--lr", "0.02", "--quiet"]
BUDGET += ["--no-report"]  # but the fine-tuning from published weights (``pretrained``) writes its report


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-class ImageFolder zip (even/odd digits) cut from the real MNIST."""
    target = tmp_path_factory.mktemp("parity") / "parity.zip"
    assert relabel([str(real_data_dir() / "mnist.zip"), str(target), *PARITY]) == 0
    return target


def _top1(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_top1"]


@pytest.fixture(scope="module")
def scratch(parity: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "scratch"
    assert (
        train(
            [
                "--model",
                MODEL,
                "--model-kwargs",
                f"widths={WIDTHS}",
                "--dataset",
                str(parity),
                *BUDGET,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def pretrained(parity: Path, mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "pretrained"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
        with_report = [a for a in BUDGET if a != "--no-report"]
        args = ["--model", MODEL, "--pretrained", "--init-tag", "mnist", "--dataset", str(parity), *with_report]
        assert train([*args, "--out", str(out)]) == 0
    return out


def test_parity_archive_is_the_users_own_two_class_folder(parity: Path) -> None:
    dataset = load_dataset(str(parity))
    assert dataset.classes == ["even", "odd"]
    assert len(dataset.split("train")) == 200 and len(dataset.split("test")) == 500


def test_fine_tuning_from_published_weights_beats_scratch_at_the_same_budget(scratch: Path, pretrained: Path) -> None:
    print(f"pretrained {_top1(pretrained):.2f} % vs scratch {_top1(scratch):.2f} %")
    # Measured on the dev machine (2 cores): 81.00 % from the tiny published checkpoint vs 59.80 % from
    # scratch (200 training images, 3 epochs): +21.2 points. The bound leaves room for platform noise.
    assert _top1(pretrained) >= _top1(scratch) + 10.0, (_top1(pretrained), _top1(scratch))


def test_a_fine_tuning_run_ends_with_its_evaluation_report(parity: Path, pretrained: Path) -> None:
    """The last epoch writes ``report/`` for the test split: the model as training evaluated it (so the report's
    top-1 is the last metrics row's), the user's own class names, counts from the labels, and drawn pictures."""
    report = json.loads((pretrained / "report" / "report.json").read_text())
    last = json.loads((pretrained / "metrics.jsonl").read_text().splitlines()[-1])
    assert report["top1"] == pytest.approx(last["test_top1"], abs=1e-9) and report["epoch"] == last["epoch"] == 3
    assert report["loss"] == pytest.approx(last["test_loss"], rel=1e-4) and report["split"] == "test"
    labels = load_dataset(str(parity)).split("test").labels
    assert report["classes"] == ["even", "odd"]
    assert [sum(row) for row in report["confusion"]] == torch.bincount(labels).tolist() == [250, 250]
    assert [r["correct"] for r in report["per_class"]] == [report["confusion"][i][i] for i in range(2)]
    for name in ("per_class.png", "confusion.png", "reliability.png", "misclassified.png"):
        assert_drawn(pretrained / "report" / name)
    assert_drawn(pretrained / "curve.png")


def test_run_folder_records_where_the_weights_came_from(pretrained: Path, mirror: Path) -> None:
    config = json.loads((pretrained / "config.json").read_text())
    init = config["init"]
    published = mirror / HUB_ID / "model.safetensors"
    assert init["kind"] == "pretrained" and init["hub_id"] == HUB_ID  # the tag's weights that the mirror hosts
    assert init["sha256"] == file_sha256(published) and init["source"].startswith("mirror:")
    assert init["new_head"] == ["fc.bias", "fc.weight"] and not init["stem_adapted"]
    assert config["model_kwargs"]["widths"] == WIDTHS  # the architecture came with the weights
    assert config["num_classes"] == 2


def test_freeze_leaves_frozen_tensors_bit_identical(parity: Path, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "frozen"
    assert (
        train(
            [
                "--model",
                MODEL,
                "--init-from",
                str(run),
                "--freeze",
                "stages.1",
                "--dataset",
                str(parity),
                *BUDGET,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = load_file(str(checkpoint_weights_path(run)))
    after = load_file(str(checkpoint_weights_path(out)))
    frozen = [k for k in after if k.startswith(("conv1.", "stages.0.", "stages.1."))]
    trained = [k for k in after if k.startswith(("stages.2.", "stages.3."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # BN statistics included
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert json.loads((out / "config.json").read_text())["init"]["kind"] == "run"


def test_in_chans_and_image_size_conversions_with_an_adapted_stem(parity: Path, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rgb"
    extra = ["--channels", "3", "--image-size", "32", "--epochs", "1"]
    args = ["--model", MODEL, "--init-from", str(checkpoint_weights_path(run)), "--model-kwargs", f"widths={WIDTHS}"]
    assert train([*args, "--dataset", str(parity), *BUDGET, *extra, "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["input_size"] == [3, 32, 32] and config["init"]["stem_adapted"] and config["init"]["kind"] == "file"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--init-from", "/nonexistent/run"], "no such file or folder"),
        (["--init-from", "RUN", "--model", "resnet18_sharedA"], f"trained '{MODEL}'"),
        (["--init-from", "WEIGHTS", "--model-kwargs", "widths=8,8,8,8"], "do not fit"),
        (["--init-from", "RUN", "--head", "keep"], "10-class head but the dataset has 2 classes"),
        (["--init-from", "RUN", "--pretrained"], "not both"),
        (["--init-from", "RUN", "--freeze", "stages.9"], "stages.0 .. stages.3"),
    ],
    ids=["missing", "other-model", "other-architecture", "class-count-without-new-head", "both-sources", "bad-freeze"],
)
def test_bad_initial_weights_are_clear_errors(
    extra: list[str], message: str, parity: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [str(run) if e == "RUN" else str(checkpoint_weights_path(run)) if e == "WEIGHTS" else e for e in extra]
    args = ["--model", MODEL, "--dataset", str(parity), *BUDGET, "--out", str(tmp_path / "bad")]
    if "--model" in extra:
        args = args[2:]
    assert train([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "checkpoint.json").exists()


def test_relabel_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = str(real_data_dir() / "mnist.zip")
    assert relabel([source, str(tmp_path / "x.zip"), "--map", "even=0,2,ten"]) == 2
    assert "no class ten" in capsys.readouterr().err and not (tmp_path / "x.zip").exists()
    assert relabel([source, str(tmp_path / "x.zip"), "--map", "a=1,2", "b=2,3"]) == 2
    assert "mapped twice" in capsys.readouterr().err
