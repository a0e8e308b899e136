"""int8 as data: an int8 folder (the float weights and ``int8.json``) rebuilt by our own code, every
convolution quantized, the same answers as the calibrated program, int8 top-1 beside fp32 on the same
real images, published int8 records pinned like the weights and loaded without calibration data, and
every crafted file — a pickle payload, a sympify payload, a folder shadowing a model name — refused
or ignored without running anything."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import HUB_ID, MODEL, TAG
from safetensors.torch import load_file

from resmg_zoo.core.atomic import current_umask
from resmg_zoo.core.errors import EXIT_INTEGRITY, EXIT_USAGE
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.data.loader import EpochPlan, Materializer
from resmg_zoo.inference.int8 import count_quantized_convs
from resmg_zoo.inference.int8_record import RECORD_NAME
from resmg_zoo.inference.int8_source import open_int8_folder
from resmg_zoo.tools import classify, evaluate, export
from resmg_zoo.tools import mirror as mirror_tool
from resmg_zoo.weights.manifest import MANIFEST_NAME, load_manifest


class Payload:
    """Unpickling this writes a marker file: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _entry(mirror: Path) -> dict:
    return next(e for e in load_manifest(mirror / MANIFEST_NAME)["entries"] if e["hub_id"] == HUB_ID)


@pytest.fixture(scope="module")
def int8_export(mirror: Path, digits: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """The tiny published model (a writable copy of the test mirror) exported to an int8 folder: the
    folder, its record, and the mirror copy it was exported from."""
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
def int8_folder(int8_export: tuple[Path, dict, Path], tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the exported folder, for a test to spoil."""
    folder = tmp_path / "copy.int8"
    shutil.copytree(int8_export[0], folder)
    return folder, int8_export[1]


def _digit(digits: Path, folder: Path) -> Path:
    with zipfile.ZipFile(digits) as zf:
        name = next(n for n in zf.namelist() if n.startswith("test/") and n.endswith(".png"))
        (folder / "digit.png").write_bytes(zf.read(name))
    return folder / "digit.png"


def test_an_int8_folder_is_the_published_weights_and_a_record_of_numbers(int8_export, mirror: Path) -> None:
    folder, record, copy = int8_export
    assert sorted(p.name for p in folder.iterdir()) == [RECORD_NAME, "model.safetensors"]  # no program file
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no staging folder left
    assert folder.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    # the very bytes that were published, and the record names them
    assert file_sha256(folder / "model.safetensors") == _entry(copy)["sha256"] == record["weights"]["sha256"]
    assert record["weights"]["source"] == dict(hub_id=HUB_ID, sha256=_entry(copy)["sha256"])
    assert record["calibration"] == dict(dataset="mnist", split="train", images=64, seed=0)
    assert record["quantized_convs"] == record["conv_sites"] > 0
    # one activation quantizer per quantized input at least, each a finite scale and a uint8 zero point
    assert len(record["activations"]) >= record["conv_sites"] - record["shared_sites"]
    assert all(q["scale"] > 0 and 0 <= q["zero_point"] <= 255 for q in record["activations"])
    assert record["check"]["rebuilt_max_abs_diff_from_calibrated"] <= 1e-5
    assert record["check"]["real"] and record["check"]["top1_agreement_with_float"] >= 0.75


def test_the_rebuilt_program_quantizes_every_convolution_and_keeps_no_float_weight(int8_export) -> None:
    folder, record, _ = int8_export
    program = open_int8_folder(folder, compile=False).program
    count = count_quantized_convs(program.graph)
    assert count.convs == count.quantized == record["conv_sites"]
    int8_weights = [t for t in program.state_dict().values() if t.dtype == torch.int8 and t.dim() == 4]
    assert len(int8_weights) == record["conv_sites"]


def test_int8_top1_beside_fp32_on_the_same_real_images(int8_export, digits: Path) -> None:
    """The int8 folder and the float weights it holds, on the 300 real MNIST test images of the subset:
    the same images counted, top-1 within 3 points (9 images), and at least 95 % of the labels the same."""
    folder, _, copy = int8_export
    base = ["--dataset", str(digits), "--batch-size", "100"]
    int8 = evaluate.run_evaluation(["--model", str(folder), *base])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
        fp32 = evaluate.run_evaluation(["--model", f"{MODEL}.{TAG}", "--precision", "fp32", "--no-fold", *base])
    assert int8["precision"] == "int8" and int8["count"] == fp32["count"] == 300
    assert int8["int8_record_sha256"] == file_sha256(folder / RECORD_NAME)
    assert abs(int8["top1"] - fp32["top1"]) <= 3.0
    opened = open_int8_folder(folder)
    dataset = load_dataset(str(digits))
    data = Materializer(dataset.split("test"), dataset.mean, dataset.std, channels_last=True)
    images = torch.cat([data(b)[0] for b in EpochPlan(300, 100, seed=0, shuffle=False, drop_last=False).batches(0)])
    with torch.no_grad():
        same = (opened.model(images).argmax(1) == opened.float_model(images).argmax(1)).float().mean()
    assert same >= 0.95


def test_an_int8_folder_classifies_an_image(int8_export, digits: Path, tmp_path: Path) -> None:
    folder, _, _ = int8_export
    count, skipped = classify.classify(["--model", str(folder), str(_digit(digits, tmp_path)), "--format", "json"])
    assert count == 1 and not skipped


def test_weights_that_are_not_the_recorded_ones_are_refused(int8_folder, tmp_path: Path, capsys) -> None:
    folder, _ = int8_folder
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert evaluate.main(["--model", str(folder)]) == EXIT_INTEGRITY
    assert "sha256" in capsys.readouterr().err
    assert classify.main(["--model", str(folder / RECORD_NAME), str(tmp_path)]) == EXIT_INTEGRITY


def _first_activation(record: dict, **change) -> list:
    return [record["activations"][0] | change, *record["activations"][1:]]


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda r: r | {"model": "__import__('os').system('id')"}, "not a model of the zoo"),
        (lambda r: r | {"model_args": r["model_args"] | {"pretrained_cfg_overlay": {"file": "/x"}}}, "model_args"),
        (lambda r: r | {"model_args": r["model_args"] | {"num_classes": 10**10}}, "out of range"),
        (lambda r: r | {"pretrained_cfg": r["pretrained_cfg"] | {"input_size": [3, 28, 28]}}, "input channels"),
        (lambda r: r | {"pretrained_cfg": r["pretrained_cfg"] | {"input_size": [1, 4096, 4096]}}, "input_size"),
        (lambda r: {k: v for k, v in r.items() if k != "calibration"}, "'calibration'"),
        (lambda r: r | {"model": "resnet18"}, "not a model of the zoo"),
        (lambda r: r | {"model_args": r["model_args"] | {"widths": [4096] * 4, "layers": [64] * 4}}, "parameters"),
        (lambda r: r | {"activations": _first_activation(r, scale=10**400)}, "scale"),
        (lambda r: r | {"pretrained_cfg": r["pretrained_cfg"] | {"label_names": ["\x1b[2J"] * 10}}, "printable"),
        (lambda r: r | {"pretrained_cfg": r["pretrained_cfg"] | {"mean": [0.1, 0.2, 0.3, 0.4]}}, "per channel"),
        (lambda r: r | {"activations": _first_activation(r, scale=float("nan"))}, "scale"),
        (lambda r: r | {"activations": _first_activation(r, dtype="torch.float32")}, "dtype"),
        (lambda r: r | {"activations": [r["activations"][0] | {"observes": "s0*__import__('os')"}]}, "not describe"),
        (lambda r: r | {"quantizer": {"name": "pickle"}}, "another quantizer"),
        (lambda r: r | {"pretrained_cfg": r["pretrained_cfg"] | {"interpolation": "eval"}}, "interpolation"),
        (lambda r: {k: v for k, v in r.items() if k != "weights"}, "'weights'"),
        (lambda r: [r], "not an int8 record"),
    ],
    ids=[
        "model", "model-args", "classes", "channels", "size", "no-calibration", "timm-model", "giant",
        "huge-int-scale", "ansi-label", "four-means", "scale", "dtype", "observes",
        "quantizer", "cfg", "missing-key", "a-list",
    ],
)
def test_a_crafted_record_is_refused_with_exit_2_and_runs_nothing(int8_folder, spoil, message: str, capsys) -> None:
    folder, record = int8_folder
    (folder / RECORD_NAME).write_text(json.dumps(spoil(record)))
    assert evaluate.main(["--model", str(folder)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe{}", b"[" * 200_000 + b"]" * 200_000, b"{}", b'{"format": ' + b"1" * 5000 + b"}", b" " * (1 << 21)],
    ids=["utf8", "deep", "empty", "huge-integer", "too-large"],
)
def test_a_damaged_record_exits_2_with_a_message(int8_folder, content: bytes, capsys) -> None:
    folder, _ = int8_folder
    (folder / RECORD_NAME).write_bytes(content)
    assert evaluate.main(["--model", str(folder)]) == EXIT_USAGE
    assert str(folder / RECORD_NAME) in capsys.readouterr().err


def test_program_files_with_payloads_are_never_loaded(int8_folder, tmp_path: Path, capsys) -> None:
    """The pre-record format (a ``torch.export`` program) is refused, not unpickled; the same payloads beside a
    record are ignored: nothing but ``int8.json`` and ``model.safetensors`` is read."""
    folder, _ = int8_folder
    marker = tmp_path / "ran"
    payload = pickle.dumps(Payload(marker))
    old = tmp_path / "old.int8"
    old.mkdir()
    with zipfile.ZipFile(old / "model.pt2", "w") as zf:  # the archive torch.export.load would unpickle/sympify
        zf.writestr("model/data/weights/w", payload)
        zf.writestr("model/models/model.json", json.dumps({"range_constraints": {"s0*__import__('os')": {}}}))
    (old / "export.json").write_text(json.dumps({"format": "resmg-zoo int8 pt2e v1", "file": "model.pt2"}))
    assert evaluate.main(["--model", str(old)]) == EXIT_USAGE
    assert "old format" in capsys.readouterr().err
    assert classify.main(["--model", str(old), str(tmp_path)]) == EXIT_USAGE
    shutil.copy(old / "model.pt2", folder / "model.pt2")
    (folder / "sample_inputs.pt").write_bytes(payload)
    count, _ = classify.classify(["--model", str(folder), str(_digit_from_record(folder, tmp_path))])
    assert count == 1
    assert not marker.exists()


def _digit_from_record(folder: Path, tmp_path: Path) -> Path:
    """A real MNIST test digit (from the dataset the record was calibrated on is not needed: any image)."""
    from realdata import real_data_dir

    return _digit(real_data_dir() / "mnist.zip", tmp_path)


def test_a_folder_named_like_a_model_does_not_shadow_it(int8_export, tmp_path: Path, monkeypatch) -> None:
    """``--model NAME.TAG`` is the registry's, never a folder of the working directory: a crafted folder of
    that name (a record naming other weights, a pickle payload) is not read."""
    folder, record, copy = int8_export
    marker = tmp_path / "ran"
    shadow = tmp_path / "cwd" / f"{MODEL}.{TAG}"
    shadow.mkdir(parents=True)
    (shadow / "model.pt2").write_bytes(pickle.dumps(Payload(marker)))
    (shadow / "export.json").write_text(json.dumps({"format": "resmg-zoo int8 pt2e v1", "file": "model.pt2"}))
    (shadow / RECORD_NAME).write_text(json.dumps(record | {"model": "not-a-model"}))
    image = _digit_from_record(folder, tmp_path)
    monkeypatch.chdir(shadow.parent)
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
    count, skipped = classify.classify(["--model", f"{MODEL}.{TAG}", str(image)])
    assert count == 1 and not skipped and not marker.exists()
    # the folder itself, named as a path, is read — and refused for what it is
    assert classify.main(["--model", f"./{MODEL}.{TAG}", str(image)]) == EXIT_USAGE
    assert not marker.exists()


def test_export_never_replaces_a_folder_that_is_not_an_int8_export(int8_export, tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    base = ["--model", f"{MODEL}.{TAG}", "--pretrained", "--format", "int8"]
    assert export.main([*base, "--out", str(notes), "--replace"]) == EXIT_USAGE
    assert "not an int8 export folder" in capsys.readouterr().err
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
    folder, _, _ = int8_export
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert export.main([*base, "--out", str(folder)]) == EXIT_USAGE  # an earlier export: only with --replace
    assert "--replace" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert export.main([*base, "--out", str(blocker / "x.int8")]) == EXIT_USAGE
    assert export.main(["--model", f"{MODEL}.{TAG}", "--format", "pt2", "--out", str(notes)]) == EXIT_USAGE
    assert export.main(["--model", "nope", "--format", "pt2", "--out", str(tmp_path / "n.pt2")]) == EXIT_USAGE
    assert "unknown --model 'nope'" in capsys.readouterr().err


def test_published_int8_is_pinned_and_loads_without_calibration_data(
    int8_export, digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """``resmg-mirror refresh --int8`` measures the folder and publishes its record beside the weights,
    pinned in the entry; ``--model NAME.TAG --int8`` then rebuilds it from the mirror with no dataset at
    hand and gives the entry's top-1; a record that is not the pinned one is refused with exit 4."""
    folder, record, built_from = int8_export
    copy = tmp_path / "mirror"
    shutil.copytree(built_from, copy)
    published = copy / HUB_ID
    assert mirror_tool.main(["refresh", str(published), "--int8", str(folder), "--data", str(digits.parent)]) == 0
    entry = _entry(copy)
    assert (published / RECORD_NAME).read_bytes() == (folder / RECORD_NAME).read_bytes()
    assert entry["int8"]["sha256"] == file_sha256(published / RECORD_NAME) and entry["int8"]["images"] == 300
    card = (published / "README.md").read_text()
    assert f"int8 (see below) | {entry['int8']['top1']:.2f} %" in card and "--int8" in card
    assert mirror_tool.main(["verify", str(copy)]) == 0
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
    monkeypatch.delenv("RESMG_ZOO_DATA", raising=False)
    count, _ = classify.classify(["--model", f"{MODEL}.{TAG}", "--int8", str(_digit(digits, tmp_path))])
    assert count == 1
    result = evaluate.run_evaluation(["--model", f"{MODEL}.{TAG}", "--int8", "--dataset", str(digits)])
    assert result["count"] == 300 and abs(result["top1"] - entry["int8"]["top1"]) <= 0.34  # one image
    spoiled = json.loads((published / RECORD_NAME).read_text())
    spoiled["activations"][0]["scale"] *= 2
    (published / RECORD_NAME).write_text(json.dumps(spoiled))
    assert evaluate.main(["--model", f"{MODEL}.{TAG}", "--int8", "--dataset", str(digits)]) == EXIT_INTEGRITY
    assert "pins" in capsys.readouterr().err
    # an int8 folder of other weights is refused by refresh, and nothing changes
    other = tmp_path / "other.int8"
    shutil.copytree(folder, other)
    (other / RECORD_NAME).write_text(json.dumps(record | {"model_args": record["model_args"] | {"drop_rate": 0.5}}))
    assert mirror_tool.main(["refresh", str(published), "--int8", str(other)]) == EXIT_USAGE
    assert _entry(copy) == entry


def test_a_refresh_never_reverts_a_replacement_finished_while_it_measured(
    int8_export, digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A publisher's ``--replace`` lands while the refresh measures: the refresh writes nothing."""
    folder, _, built_from = int8_export
    copy = tmp_path / "mirror"
    shutil.copytree(built_from, copy)
    manifest = copy / MANIFEST_NAME
    measure = mirror_tool.measure_int8

    def measure_while_replaced(*args, **kwargs):
        result = measure(*args, **kwargs)
        data = json.loads(manifest.read_text())
        data["entries"][0]["sha256"] = "1" * 64  # what a --replace would have recorded meanwhile
        manifest.write_text(json.dumps(data))
        return result

    monkeypatch.setattr(mirror_tool, "measure_int8", measure_while_replaced)
    args = ["refresh", str(copy / HUB_ID), "--int8", str(folder), "--data", str(digits.parent)]
    assert mirror_tool.main(args) == EXIT_USAGE
    assert "changed while it was measured" in capsys.readouterr().err
    assert _entry(copy)["sha256"] == "1" * 64 and "int8" not in _entry(copy)
    assert not (copy / HUB_ID / RECORD_NAME).exists()


def test_int8_export_without_calibration_data_exits_2(run: Path, tmp_path: Path, capsys) -> None:
    base = ["--model", MODEL, "--checkpoint", str(run), "--format", "int8", "--out", str(tmp_path / "q")]
    assert export.main([*base, "--calibration-data", str(tmp_path / "missing.zip")]) == EXIT_USAGE
    assert "missing.zip" in capsys.readouterr().err
    assert export.main([*base, "--calibration-images", "0"]) == EXIT_USAGE
    assert "--calibration-images" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_an_int8_folder_from_a_run_holds_its_checkpoints_weights(run: Path, digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.int8"
    args = ["--model", MODEL, "--checkpoint", str(run), "--format", "int8", "--out", str(out)]
    assert export.main([*args, "--calibration-images", "32", "--real-images", "0"]) == 0
    pointer = json.loads((run / "checkpoint.json").read_text())
    weights = load_file(str(run / pointer["weights"]))
    assert load_file(str(out / "model.safetensors")).keys() == weights.keys()
    assert json.loads((out / RECORD_NAME).read_text())["weights"]["source"] == dict(checkpoint=str(run))
    assert open_int8_folder(out, compile=False).name == MODEL
    assert json.loads((out / RECORD_NAME).read_text())["check"]["rebuilt_max_abs_diff_from_calibrated"] <= 1e-5


def test_export_replaces_a_file_only_when_told_and_only_an_export_of_its_format(
    run: Path, tmp_path: Path, capsys
) -> None:
    base = ["--model", MODEL, "--checkpoint", str(run), "--format", "pt2", "--real-images", "0"]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert export.main([*base, "--out", str(notes), "--replace"]) == EXIT_USAGE  # not a .pt2
    assert notes.read_text() == "mine" and "not a .pt2 export" in capsys.readouterr().err
    out = tmp_path / "model.pt2"
    out.write_bytes(b"an earlier export")
    assert export.main([*base, "--out", str(out)]) == EXIT_USAGE
    assert out.read_bytes() == b"an earlier export" and "--replace" in capsys.readouterr().err
    assert export.main([*base, "--out", str(out), "--replace"]) == 0
    assert out.read_bytes() != b"an earlier export"


def test_onnx_int8_quantizes_every_convolution(run: Path, digits: Path, tmp_path: Path, capsys) -> None:
    """The portable writer shares the calibration draw and the check images, and refuses a float convolution."""
    out = tmp_path / "model.int8.onnx"
    args = ["--model", MODEL, "--checkpoint", str(run), "--format", "onnx-int8", "--out", str(out)]
    assert export.main([*args, "--calibration-images", "32"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # torch.onnx prints its steps before
    assert record["convs"] == record["quantized_convs"] > 0 and out.is_file()
    assert record["check"]["real"] and record["check"]["top1_agreement_with_float"] >= 0.75
    from resmg_zoo.inference.onnx_int8 import count_qdq_convs

    assert count_qdq_convs(out) == (record["convs"], record["convs"])


def test_an_export_whose_rebuild_differs_is_refused_and_writes_nothing(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A record that would not reproduce the calibrated program (here: every scale recorded doubled) is a
    typed error, exit 1, and --out stays as it was."""
    from resmg_zoo.inference import int8 as int8_module

    quantize = int8_module.quantize_int8

    def doubled_scales(*args, **kwargs):
        q = quantize(*args, **kwargs)
        q.activations = [type(a)(**(a.to_json() | {"scale": a.scale * 2})) for a in q.activations]
        return q

    monkeypatch.setattr("resmg_zoo.tools.export_int8.quantize_int8", doubled_scales)
    out = tmp_path / "x.int8"
    args = ["--model", MODEL, "--checkpoint", str(run), "--format", "int8", "--out", str(out)]
    assert export.main([*args, "--calibration-images", "32"]) == 1
    assert "rebuilt from int8.json differs" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_refresh_that_would_not_verify_publishes_no_record(int8_export, digits: Path, tmp_path: Path) -> None:
    folder, _, built_from = int8_export
    copy = tmp_path / "mirror"
    shutil.copytree(built_from, copy)
    metrics = copy / HUB_ID / "metrics.json"
    metrics.write_text("[]")  # the folder no longer verifies
    args = ["refresh", str(copy / HUB_ID), "--int8", str(folder), "--data", str(digits.parent)]
    assert mirror_tool.main(args) == EXIT_USAGE
    assert not (copy / HUB_ID / RECORD_NAME).exists() and "int8" not in _entry(copy)


def test_replace_never_deletes_what_is_not_an_export(int8_export, tmp_path: Path, capsys) -> None:
    """An export folder whose ``model.safetensors`` is a folder of the user's files, or a link, is not an export:
    ``--replace`` refuses it. And the swap itself re-checks what it took out before deleting it."""
    from resmg_zoo.core.atomic import NotReplaceable, replace_folder

    folder, _, copy = int8_export
    victim = tmp_path / "v.int8"
    shutil.copytree(folder, victim)
    (victim / "model.safetensors").unlink()
    (victim / "model.safetensors" / "d").mkdir(parents=True)
    (victim / "model.safetensors" / "d" / "thesis.tex").write_text("work")
    args = ["--model", f"{MODEL}.{TAG}", "--pretrained", "--format", "int8", "--out", str(victim), "--replace"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
        assert export.main(args) == EXIT_USAGE
    assert (victim / "model.safetensors" / "d" / "thesis.tex").read_text() == "work"
    # the last step: what the swap took out is checked before it is deleted, and put back if it is not an export
    target, new = tmp_path / "target", tmp_path / "new"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    new.mkdir()
    with pytest.raises(NotReplaceable):
        replace_folder(new, target, replaceable=lambda old: False)
    assert (target / "notes.txt").read_text() == "mine"


def test_an_int8_folder_reads_only_its_own_files(int8_folder, tmp_path: Path, capsys) -> None:
    """A record or weights that are links (to bytes outside the folder) are refused; weights that no training
    makes (NaN), with a sha256 matching a record made for them, are refused before they reach the quantizer."""
    folder, record = int8_folder
    outside = tmp_path / "outside.safetensors"
    (folder / "model.safetensors").rename(outside)
    (folder / "model.safetensors").symlink_to(outside)
    assert evaluate.main(["--model", str(folder)]) == EXIT_USAGE
    assert "symbolic link" in capsys.readouterr().err
    (folder / "model.safetensors").unlink()
    from safetensors.torch import save

    state = load_file(str(outside))
    first = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    state[first] = torch.full_like(state[first], float("nan"))
    data = save(state)
    (folder / "model.safetensors").write_bytes(data)
    weights = record["weights"] | {"sha256": file_sha256(folder / "model.safetensors"), "bytes": len(data)}
    (folder / RECORD_NAME).write_text(json.dumps(record | {"weights": weights}))
    assert evaluate.main(["--model", str(folder)]) == EXIT_INTEGRITY
    assert "not finite" in capsys.readouterr().err


def test_spellings_a_stranger_might_try_exit_with_a_message(tmp_path: Path, capsys) -> None:
    """A hub id that would leave a path, a float folder holding a pickle instead of safetensors, a refresh of
    ``/``: one line each, no traceback."""
    assert classify.main(["--model", "hf-hub:../../etc/passwd", str(tmp_path)]) == EXIT_USAGE
    folder = tmp_path / "float"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": MODEL, "num_classes": 10}))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(tmp_path / "ran")))
    assert classify.main(["--model", str(folder), str(tmp_path)]) == EXIT_USAGE
    assert not (tmp_path / "ran").exists()
    assert mirror_tool.main(["refresh", "/"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 3


def test_a_run_on_its_own_28_pixel_images_exports_to_int8_at_28_pixels(
    digits: Path, tmp_path: Path
) -> None:
    """The int8 program is traced and checked at the size of the images it is calibrated on, not at the model's
    default cfg (a run on a user's ImageFolder of 28-pixel images once failed inductor's guard at 32)."""
    from conftest import tiny_train_args

    from resmg_zoo.train.cli import main as train

    own = tmp_path / "digits28.zip"
    shutil.copy(digits, own)
    run = tmp_path / "run"
    assert train(tiny_train_args(own, run, "--epochs", "1")) == 0
    out = tmp_path / "run.int8"
    args = ["--model", "preact_resnet18_sharedA", "--checkpoint", str(run), "--format", "int8", "--out", str(out)]
    assert export.main([*args, "--calibration-images", "32"]) == 0
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["pretrained_cfg"]["input_size"][1:] == [28, 28] and record["check"]["real"]
