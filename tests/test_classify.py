"""``resmg-classify``: real CIFAR-10 test images (files, a folder, a zip) through the published weights and
timm's data pipeline; top-k names and probabilities as a table, JSON or CSV; bad files named and skipped."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from realdata import real_data_dir

from resmg_zoo.core.tags import CIFAR10_CLASSES
from resmg_zoo.tools.classify import main as classify

MODEL = "preact_resnet18_sharedA.cifar10"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Image 0000 and 0001 of every CIFAR-10 test class: ten files in a folder (one nested), ten in a zip."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "nested").mkdir()
    with zipfile.ZipFile(real_data_dir() / "cifar10.zip") as source, zipfile.ZipFile(folder / "more.zip", "w") as more:
        for c in CIFAR10_CLASSES:
            data = source.read(f"test/{c}/0000.jpg")
            (folder / ("nested" if c == "truck" else ".") / f"{c}.jpg").write_bytes(data)
            more.writestr(f"more/{c}.jpg", source.read(f"test/{c}/0001.jpg"))
    (folder / "notes.txt").write_text("not an image, and not an image name: not looked at")
    return folder


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = classify(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_folder_and_a_zip_as_json(images: Path, shared_hub: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))
    code, out, err = _run(
        capsys, "--model", MODEL, "--topk", "3", "--format", "json", str(images), str(images / "more.zip")
    )
    assert code == 0 and err == ""
    results = json.loads(out)
    assert len(results) == 20
    truth = [Path(r["image"].split(":")[-1]).stem for r in results]
    assert sorted(truth) == sorted(list(CIFAR10_CLASSES) * 2)
    for r in results:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["label"] == CIFAR10_CLASSES[t["index"]] for t in r["top"])
    correct = sum(r["top"][0]["label"] == name for r, name in zip(results, truth))
    assert correct >= 16, f"{correct}/20 real test images right (the weights score 90 % on the test split)"


def test_csv_and_table(images: Path, shared_hub: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))
    code, out, _ = _run(capsys, "--model", MODEL, "--topk", "2", "--format", "csv", str(images / "cat.jpg"))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["rank"] for r in rows] == ["1", "2"] and rows[0]["image"].endswith("cat.jpg")
    code, out, _ = _run(capsys, "--model", MODEL, "--topk", "1", str(images / "ship.jpg"))
    assert code == 0 and out.split()[0].endswith("ship.jpg") and out.strip().endswith("%")


def test_bad_files_are_named_and_skipped(images: Path, shared_hub: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((images / "dog.jpg").read_bytes()[:40])
    code, out, err = _run(
        capsys, "--model", MODEL, "--format", "json", str(broken), str(tmp_path / "gone.png"), str(images / "dog.jpg")
    )
    assert code == 0 and len(json.loads(out)) == 1
    assert f"skipped {broken}: not a readable image" in err and f"skipped {tmp_path / 'gone.png'}: no such file" in err
    code, _, err = _run(capsys, "--model", MODEL, str(broken))
    assert code == 2 and "no image could be classified" in err


def test_a_training_run_and_its_class_names(run: Path, digits: Path, capsys) -> None:
    code, out, _ = _run(capsys, "--run", str(run), "--format", "json", str(digits))
    assert code == 0
    results = json.loads(out)
    assert len(results) == 1300  # every digit of the small archive: 100 train and 30 test per class
    classes = json.loads((run / "config.json").read_text())["classes"]  # the run records its class names
    assert classes == [str(d) for d in range(10)]
    assert all(t["label"] == classes[t["index"]] for r in results for t in r["top"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nosuchmodel.cifar10", "x.jpg"], "unknown model"),
        (["--model", "preact_resnet18_sharedA.cifar100", "x.jpg"], "no pretrained weights are published"),
        (["--model", MODEL, "--topk", "0", "x.jpg"], "--topk must be at least 1"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, shared_hub: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))
    code, _, err = _run(capsys, *args)
    assert code == 2 and message in err
