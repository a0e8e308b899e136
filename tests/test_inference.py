"""The inference fast path (BN folded, channels_last, auto precision) and int8 export folders: the same
function as the trained model, the same answers on real images, every convolution quantized, and bad
input refused with a message and an exit code."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from conftest import HUB_ID, MODEL, MODEL_NAMES, TAG
from realdata import shared_hub_dir
from torch import nn

from resmg_zoo.core.atomic import current_umask
from resmg_zoo.core.errors import EXIT_INTEGRITY, EXIT_USAGE
from resmg_zoo.core.hardware import choose_precision
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.data.loader import EpochPlan, GlobalBatch, Materializer
from resmg_zoo.inference.fast_path import FastPath, FastPathSettings
from resmg_zoo.inference.fold import fold_for_inference
from resmg_zoo.inference.int8 import RECORD_NAME, load_int8
from resmg_zoo.tools import classify, evaluate, export
from resmg_zoo.tools import mirror as mirror_tool
from resmg_zoo.tools.claims import stratified_subset
from resmg_zoo.weights.manifest import MANIFEST_NAME, load_manifest


def _with_trained_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine terms, as a trained model has (identity BNs fold to nothing)."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
    return model.eval()


def _convs_followed_by_bn(gm: torch.fx.GraphModule) -> int:
    modules = dict(gm.named_modules())
    return sum(
        1
        for n in gm.graph.nodes
        if n.op == "call_module"
        and isinstance(modules[n.target], nn.BatchNorm2d)
        and n.args[0].op == "call_module"
        and isinstance(modules[n.args[0].target], nn.Conv2d)
    )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_folding_computes_the_same_function_with_no_bn_after_a_convolution(name: str) -> None:
    model = _with_trained_statistics(timm.create_model(name, num_classes=10, widths=(8, 16, 16, 32)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, report = fold_for_inference(model)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert _convs_followed_by_bn(folded) == 0 and report.folded_bn > 0
    bns_left = sum(type(m) is nn.BatchNorm2d for m in folded.modules())  # timm's BatchNormAct2d is traced through
    bns = sum(type(m) is nn.BatchNorm2d for m in model.modules())
    assert bns_left == bns - report.folded_bn
    # every convolution call is a module of its own: the count of call sites is the count of modules
    assert report.conv_sites == sum(type(m) is nn.Conv2d for m in folded.modules())
    after = model.state_dict()  # the trained model is not touched: same keys, same values
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_a_shared_operator_stays_one_tensor_unless_unshared() -> None:
    """Pre-act sharedA: A_ℓ is followed by the residual sum (no BN), so its sites keep the level's one
    tensor; for int8 every site gets its own copy; the stored float parameters stay the paper's count."""
    model = _with_trained_statistics(timm.create_model("preact_resnet18_sharedA", num_classes=10))
    shared, report = fold_for_inference(model)
    a_weights = {id(model.stages[i].shared_a.weight) for i in range(4)}
    site_weights = [m.weight for m in shared.modules() if type(m) is nn.Conv2d]
    assert report.shared_sites == 8 and sum(id(w) in a_weights for w in site_weights) == 8
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in model.parameters())  # BN a folded
    unshared, _ = fold_for_inference(model, unshare=True)
    assert not any(id(m.weight) in a_weights for m in unshared.modules() if type(m) is nn.Conv2d)


def test_folding_refuses_a_model_in_training_mode() -> None:
    model = timm.create_model("preact_resnet18_sharedA", num_classes=10, widths=(8, 16, 16, 32))
    with pytest.raises(ValueError, match="eval-mode"):
        fold_for_inference(model.train())


def test_the_fast_path_gives_fp32s_answers_on_real_mnist_test_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """The published MNIST weight on 500 real test images: folded fp32 predicts every image as the model
    as trained does; the default fast path (auto precision) within 0.4 points (2 images) of its top-1."""
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub_dir()))
    model = timm.create_model("preact_resnet18_sharedA.mnist", pretrained=True).eval()
    dataset = load_dataset("mnist")
    split = stratified_subset(dataset.split("test"), per_class=50)
    data = Materializer(split, dataset.mean, dataset.std, channels_last=True)
    images = torch.cat([data(b)[0] for b in _batches(len(split))])
    eager = FastPath(model, FastPathSettings("fp32", fold_bn=False))(images).argmax(1)
    folded = FastPath(model, FastPathSettings("fp32"))(images).argmax(1)
    fast = FastPath(model, FastPathSettings(choose_precision("auto").precision))(images).argmax(1)
    assert torch.equal(folded, eager)
    correct_eager, correct_fast = int((eager == split.labels).sum()), int((fast == split.labels).sum())
    assert correct_eager >= 490 and abs(correct_fast - correct_eager) <= 2


def _batches(n: int, size: int = 250) -> Iterator[GlobalBatch]:
    return EpochPlan(n, size, seed=0, shuffle=False, drop_last=False).batches(0)


@pytest.fixture(scope="module")
def int8_export(mirror: Path, digits: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """The tiny published model (a writable copy of the test mirror) exported to int8: the folder, its
    record, and the mirror copy it was exported from."""
    base = tmp_path_factory.mktemp("int8")
    copy = base / "mirror"
    shutil.copytree(mirror, copy)
    folder = base / "exports" / f"{MODEL}.{TAG}.int8"
    args = ["--model", f"{MODEL}.{TAG}", "--pretrained", "--format", "int8", "--out", str(folder)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
        assert export.main([*args, "--calibration-data", str(digits), "--calibration-images", "64"]) == 0
    return folder, json.loads((folder / RECORD_NAME).read_text()), copy


@pytest.fixture
def int8_folder(int8_export: tuple[Path, dict, Path]) -> tuple[Path, dict]:
    return int8_export[0], int8_export[1]


def test_int8_export_quantizes_every_convolution_and_stays_close_to_float(int8_folder: tuple[Path, dict]) -> None:
    folder, record = int8_folder
    assert record["quantized_convs"] == record["conv_sites"] > 0
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging folder left
    assert folder.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    assert record["calibration"] == dict(dataset="mnist", split="train", images=64, seed=0)
    # the file keeps int8 convolution weights only, no float copy of one (a tiny model's file is mostly
    # program text; at full width the file is ~1/4 of the float weights: docs/inference.md)
    saved = torch.export.load(folder / "model.pt2").state_dict
    assert sum(t.dtype == torch.int8 and t.dim() == 4 for t in saved.values()) == record["conv_sites"]
    assert not any(t.is_floating_point() and t.dim() == 4 for t in saved.values())
    program, loaded = load_int8(folder)
    assert loaded == record
    x = torch.randn(4, *record["pretrained_cfg"]["input_size"])
    with torch.no_grad():
        out = program(x)
    assert out.shape == (4, record["pretrained_cfg"]["num_classes"]) and torch.isfinite(out).all()
    assert record["check"]["real"] and record["check"]["top1_agreement_with_float"] >= 0.75


def test_an_int8_folder_evaluates_and_classifies(int8_folder: tuple[Path, dict], digits: Path, tmp_path: Path) -> None:
    folder, record = int8_folder
    result = evaluate.run_evaluation(["--int8", str(folder), "--dataset", str(digits), "--batch-size", "16"])
    assert result["precision"] == "int8" and result["sha256"] == record["sha256"] and result["count"] == 300
    with zipfile.ZipFile(digits) as zf:
        name = next(n for n in zf.namelist() if n.startswith("test/") and n.endswith(".png"))
        (tmp_path / "digit.png").write_bytes(zf.read(name))
    count, skipped = classify.classify(["--model", str(folder), str(tmp_path / "digit.png"), "--format", "json"])
    assert count == 1 and not skipped


def test_an_int8_file_with_another_sha256_is_refused(
    int8_folder: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, record = int8_folder
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "model.pt2").write_bytes((folder / "model.pt2").read_bytes() + b"\0")
    (tampered / RECORD_NAME).write_text(json.dumps(record))
    assert evaluate.main(["--int8", str(tampered)]) == EXIT_INTEGRITY
    assert "sha256" in capsys.readouterr().err
    assert classify.main(["--model", str(tampered / "model.pt2"), str(tmp_path)]) == EXIT_INTEGRITY


def test_int8_export_without_calibration_data_exits_2(run: Path, tmp_path: Path, capsys) -> None:
    base = ["--model", MODEL, "--checkpoint", str(run), "--format", "int8", "--out", str(tmp_path / "q")]
    assert export.main([*base, "--calibration-data", str(tmp_path / "missing.zip")]) == EXIT_USAGE
    assert "missing.zip" in capsys.readouterr().err
    assert export.main([*base, "--calibration-images", "0"]) == EXIT_USAGE
    assert "--calibration-images" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_a_mirror_refresh_measures_an_int8_export_into_the_entry_and_card(
    int8_export: tuple[Path, dict, Path], digits: Path, tmp_path: Path
) -> None:
    out, record, copy = int8_export
    assert record["weights"]["hub_id"] == HUB_ID
    folder = copy / HUB_ID
    # measured on the test split of --data's mnist.zip (the 300 test images of the real MNIST subset)
    assert mirror_tool.main(["refresh", str(folder), "--int8", str(out), "--data", str(digits.parent)]) == 0
    entry = next(e for e in load_manifest(copy / MANIFEST_NAME)["entries"] if e["hub_id"] == HUB_ID)
    assert entry["int8"]["images"] == 300 and entry["int8"]["quantized_convs"] == 20
    assert entry["int8"]["bytes"] == record["bytes"]
    card = (folder / "README.md").read_text()
    assert f"int8 (see below) | {entry['int8']['top1']:.2f} %" in card and entry["int8"]["command"] in card
    assert mirror_tool.main(["verify", str(copy)]) == 0
    # an export of other weights (its record names another sha256) is refused, and nothing changes
    other = tmp_path / "other.int8"
    shutil.copytree(out, other)
    (other / RECORD_NAME).write_text(json.dumps(record | {"weights": {"hub_id": HUB_ID, "sha256": "0" * 64}}))
    assert mirror_tool.main(["refresh", str(folder), "--int8", str(other)]) == EXIT_USAGE
    assert next(e for e in load_manifest(copy / MANIFEST_NAME)["entries"] if e["hub_id"] == HUB_ID) == entry
