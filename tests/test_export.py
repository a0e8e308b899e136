"""Export to torch.export (.pt2), ONNX and TorchScript: every registered model round-trips, shared operators
stay shared, and no deprecation warning escapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import MODEL, MODEL_NAMES
from realdata import real_data_dir

from resmg_zoo.models.variants import VARIANTS, FResNetVariant
from resmg_zoo.tools.export import ExportMismatch, export, main, real_inputs

SMALL = {"widths": (8, 8, 16, 16)}


def _small(name: str) -> torch.nn.Module:
    return timm.create_model(f"{name}.mnist", **SMALL).eval()


def _shares(name: str) -> bool:
    variant = VARIANTS[name]
    return isinstance(variant, FResNetVariant) or variant.share != "none"


@pytest.fixture(scope="module")
def real_digits() -> torch.Tensor:
    real_data_dir()  # raises under CI when the real data are missing
    model = _small(MODEL_NAMES[0])
    images, where = real_inputs(model, str(real_data_dir() / "mnist.zip"), count=6)
    assert images is not None, where
    return images


# ONNX export costs ~5 s a model whatever its width; a depth-34 model repeats the block types of its
# depth-18 sibling, so ONNX runs for depth 18 and F-ResNet, torch.export and TorchScript for all 18 models.
ROUND_TRIPS = (
    [("pt2", n) for n in MODEL_NAMES]
    + [("torchscript", n) for n in MODEL_NAMES]
    + [("onnx", n) for n in MODEL_NAMES if "34" not in n]
)


@pytest.mark.filterwarnings("error::FutureWarning")  # torch's TorchScript deprecation stays inside the tool
@pytest.mark.parametrize("fmt, name", ROUND_TRIPS)
def test_every_model_round_trips_on_random_and_real_images(
    name: str, fmt: str, real_digits: torch.Tensor, tmp_path: Path
) -> None:
    model = _small(name)
    report = export(model, name, fmt, tmp_path / f"{name}.{fmt}", real_digits)
    # export() itself raises unless the file matches eager within rtol = atol = 1e-4
    assert report.max_abs_diff_random < 1e-3 and report.max_abs_diff_real is not None
    assert report.real_images == len(real_digits)
    if fmt == "onnx":
        # A shared A_ℓ (or B_ℓ) is ONE initializer read by several Conv nodes.
        assert (report.conv_weights < report.conv_nodes) == _shares(name), (report.conv_weights, report.conv_nodes)


def test_shared_export_is_smaller_than_unshared(tmp_path: Path) -> None:
    sizes = {}
    for name in ("preact_resnet18_unshared", "preact_resnet18_sharedA"):
        model = timm.create_model(f"{name}.mnist", widths=(16, 32, 64, 64)).eval()
        sizes[name] = export(model, name, "onnx", tmp_path / f"{name}.onnx", None).bytes
    saved = sizes["preact_resnet18_unshared"] - sizes["preact_resnet18_sharedA"]
    # one 3×3 C×C kernel saved per level beyond the first block: 9·(16² + 32² + 64² + 64²) floats
    assert saved >= 4 * 9 * (16**2 + 32**2 + 64**2 + 64**2)


def test_cli_exports_a_trained_run(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.onnx"
    assert (
        main(
            [
                "--model",
                f"{MODEL}.mnist",
                "--checkpoint",
                str(run),
                "--format",
                "onnx",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert out.exists() and '"real_images": 8' in printed


def test_cli_errors(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["--model", "resnet18_sharedA", "--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert f"trained '{MODEL}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "resnet18_sharedA", "--format", "tflite"])


def test_a_file_that_fails_its_check_is_never_left_at_out(tmp_path: Path) -> None:
    """Export writes aside and renames only after the numerical check: a failed check leaves the old
    file (or none) where ``--out`` points, and no partial file beside it."""
    model = timm.create_model("preact_resnet18_sharedA.mnist", widths=(8, 8, 16, 16), drop_rate=0.9).train()
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous export")
    with pytest.raises(ExportMismatch, match="does not match eager PyTorch"):  # dropout on: the outputs differ
        export(model, "preact_resnet18_sharedA", "torchscript", out, None)
    assert out.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
