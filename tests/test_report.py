"""The evaluation report (``resmg-evaluate --report DIR``): its numbers against an independent count on real
data and on toy predictors whose calibration is known, and pictures that are really drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_drawn, tiny_train_args

from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.tools import evaluate
from resmg_zoo.train.cli import main as train
from resmg_zoo.train.report import Predictions, build_report, expected_calibration_error
from resmg_zoo.weights.manifest import REPORT_PICTURES


def test_the_report_of_a_run_on_real_mnist_agrees_with_an_independent_count(
    run: Path, digits: Path, tmp_path: Path
) -> None:
    """The confusion matrix's rows sum to the split's class counts (counted here from the labels), its diagonal
    over the total is the top-1 that ``evaluate`` prints, and the per-class rows are the diagonal."""
    out = tmp_path / "report"
    args = ["--run", str(run), "--data", str(digits.parent), "--precision", "fp32", "--no-fold"]
    result = evaluate.run_evaluation([*args, "--report", str(out)])
    plain = evaluate.run_evaluation(args)  # evaluate_split's own pass, without the report
    report = json.loads((out / "report.json").read_text())
    labels = load_dataset("mnist", data_dir=str(digits.parent)).split("test").labels
    confusion = np.array(report["confusion"])
    assert confusion.sum(axis=1).tolist() == torch.bincount(labels, minlength=10).tolist()
    assert confusion.sum() == report["images"] == result["count"] == len(labels)
    assert 100.0 * np.trace(confusion) / confusion.sum() == pytest.approx(plain["top1"], abs=1e-9)
    assert result["top1"] == pytest.approx(plain["top1"], abs=1e-9) and result["top5"] == plain["top5"]
    assert result["loss"] == pytest.approx(plain["loss"], rel=1e-5) and report["top5"] >= report["top1"]
    assert [r["correct"] for r in report["per_class"]] == np.diag(confusion).tolist()
    assert (report["model"], report["split"], report["precision"]) == (result["model"], "test", "fp32")
    wrong = confusion.sum() - np.trace(confusion)
    assert len(report["misclassified"]) == min(16, wrong)
    assert all(m["true"] != m["predicted"] for m in report["misclassified"])
    pairs = report["most_confused"]
    assert all(pairs[i]["count"] >= pairs[i + 1]["count"] for i in range(len(pairs) - 1))
    for name in REPORT_PICTURES:
        assert_drawn(out / name)


def _toy(confidences: list[float], per_bin: int, accuracy_of) -> Predictions:
    """Two-class predictions: ``per_bin`` images at each confidence, a fraction ``accuracy_of(c)`` of them right."""
    probs, labels = [], []
    for c in confidences:
        right = round(per_bin * accuracy_of(c))
        for i in range(per_bin):
            probs.append([c, 1 - c])
            labels.append(0 if i < right else 1)
    return Predictions.of_logits(torch.tensor(probs, dtype=torch.float64).log(), torch.tensor(labels))


def test_ece_is_zero_for_a_calibrated_predictor_and_large_for_an_overconfident_one() -> None:
    centres = [0.55 + 0.03 * k for k in range(15)]  # inside (0.5, 1]: the top probability of two classes
    calibrated = _toy(centres, 1000, lambda c: c)
    ece, bins = expected_calibration_error(calibrated)
    assert ece < 1e-3 and sum(b["count"] for b in bins) == 15_000
    overconfident = _toy([0.99], 1000, lambda c: 0.5)
    ece, _ = expected_calibration_error(overconfident)
    assert ece == pytest.approx(0.49, abs=1e-9)
    report = build_report(overconfident, ["a", "b"], dict(model="toy", split="test", precision="fp32"))
    assert report["confusion"] == [[500, 0], [500, 0]] and report["most_confused"][0] == dict(
        true="b", predicted="a", count=500
    )


def test_a_report_never_writes_over_what_it_did_not_write(run: Path, digits: Path, tmp_path: Path, capsys) -> None:
    """A folder of the user's files (also one named like a report's picture), a link, a file, a path under a file,
    an empty path: exit 2 before anything is computed, nothing touched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.json").write_text("my own")
    (mine / "notes.txt").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(mine)
    photo = tmp_path / "photos"  # a report's file name, but not a report's file
    photo.mkdir()
    (photo / "confusion.png").write_bytes(b"my holiday")
    args = ["--run", str(run), "--data", str(digits.parent)]
    for target in (mine, link, mine / "notes.txt", photo, mine / "notes.txt" / "under-a-file", ""):
        assert evaluate.main([*args, "--report", str(target)]) == 2
        assert "report" in capsys.readouterr().err
    assert (photo / "confusion.png").read_bytes() == b"my holiday"
    assert (mine / "report.json").read_text() == "my own" and sorted(p.name for p in mine.iterdir()) == [
        "notes.txt",
        "report.json",
    ]


def test_pictures_stay_bounded_for_a_strangers_class_names_and_counts() -> None:
    """A 20,000-character class name, matplotlib math in a name (``$\\foo{$``), 900 classes: every picture is
    drawn, none larger than a few MB (names are cut and taken literally, the figure's size is capped)."""
    from resmg_zoo.train.report_pictures import draw_all

    for n in (10, 900):
        generator = torch.Generator().manual_seed(0)
        logits = torch.randn(2000, n, dtype=torch.float64, generator=generator)
        labels = torch.randint(0, n, (2000,), generator=generator)
        names = ["L" * 20000, "$\\foo{$", *[f"c{i}" for i in range(n - 2)]]
        predictions = Predictions.of_logits(logits, labels)
        report = build_report(predictions, names, dict(model="m", split="test", precision="fp32"))
        report["misclassified"] = [dict(index=0, true=names[0], predicted=names[1], confidence=0.9)]
        pictures = draw_all(report, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
        assert sorted(pictures) == sorted(REPORT_PICTURES) and all(
            10_000 < len(png) < 4_000_000 for png in pictures.values()
        )


def test_a_run_never_writes_its_report_over_a_users_files(
    digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run is saved first; a ``report/`` holding someone's files is left as it is, with a note that says how
    to draw the report elsewhere, and the run exits 0."""
    out = tmp_path / "run"
    (out / "report").mkdir(parents=True)
    (out / "report" / "notes.txt").write_text("mine")
    args = [a for a in tiny_train_args(digits, out, "--epochs", "0.05") if a != "--no-report"]
    assert train(args) == 0
    assert (out / "report" / "notes.txt").read_text() == "mine" and not (out / "report" / "report.json").exists()
    assert "note: no evaluation report" in capsys.readouterr().err and (out / "checkpoint.json").exists()


def test_a_report_write_that_fails_half_way_leaves_the_earlier_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: the third rename fails (as onto an immutable file), and the folder holds the earlier report
    byte for byte, with no temporary file left."""
    from resmg_zoo.train import report_folder
    from resmg_zoo.train.report_folder import ReportFolderError, write_report_files

    earlier = {"report.json": json.dumps(dict(confusion=[], per_class=[], calibration_bins=[])).encode()}
    earlier |= {name: f"old {name}".encode() for name in REPORT_PICTURES}
    write_report_files(tmp_path / "r", earlier)
    renames, real = [], report_folder.os.replace

    def third_fails(*args, **kwargs):
        renames.append(args)
        if len(renames) == 3:
            raise PermissionError(1, "Operation not permitted")
        return real(*args, **kwargs)

    monkeypatch.setattr(report_folder.os, "replace", third_fails)
    with pytest.raises(ReportFolderError, match="cannot be written"):
        write_report_files(tmp_path / "r", {name: b"new" for name in earlier})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == earlier


def test_numbers_from_files_too_large_for_a_float_are_not_numbers() -> None:
    from resmg_zoo.core.files import finite_number

    assert finite_number(90.5) and not finite_number(10**400) and not finite_number(True)
    assert not finite_number(float("nan")) and not finite_number("1")
