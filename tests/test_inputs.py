"""Inputs that cannot hurt: classify's flags bounded and its output streamed; oversized, bomb, damaged and
encrypted images named and skipped; a decoded-size limit for training archives; a dataset's identity
decided in one place (a registry zip given by path is that dataset everywhere, a manifest's dataset is
never a path)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import TINY_TRAIN
from PIL import Image
from realdata import real_data_dir

from resmg_zoo.core.cli import EXIT_USAGE
from resmg_zoo.core.tags import TAGS, dataset_identity
from resmg_zoo.data.archive import MAX_IMAGE_BYTES, DatasetError
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.tools.classify import main as classify
from resmg_zoo.train.cli import main as train
from resmg_zoo.train.run import Run
from resmg_zoo.weights.publish import TrainedWeights


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``×``height`` (a decompression bomb's shape) with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture(scope="module")
def digit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("digit")
    with zipfile.ZipFile(real_data_dir() / "mnist.zip") as archive:
        name = next(n for n in sorted(archive.namelist()) if n.startswith("test/7/"))
        (folder / "seven.png").write_bytes(archive.read(name))
    return folder / "seven.png"


@pytest.fixture(scope="module")
def hostile_zip(digit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good digit, and members that must be skipped: oversized, a bomb, damaged, truncated, encrypted."""
    path = tmp_path_factory.mktemp("hostile") / "hostile.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.png", digit.read_bytes())
        archive.writestr("huge.png", b"\0" * (MAX_IMAGE_BYTES + 1))
        archive.writestr("bomb.png", _png_header_only(30_000, 30_000))
        archive.writestr("damaged.png", digit.read_bytes())
        archive.writestr("truncated.png", digit.read_bytes()[:100])
        archive.writestr("secret.png", digit.read_bytes())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        infos = {i.filename: i for i in archive.infolist()}
    damaged = infos["damaged.png"]
    start = damaged.header_offset + 30 + len(damaged.filename.encode()) + len(damaged.extra)
    data[start + 10] ^= 0xFF  # the deflate stream or its CRC no longer holds
    secret = infos["secret.png"]
    data[secret.header_offset + 6] |= 0x1  # the encrypted flag, in the local header
    offset = 0
    while (offset := data.find(b"PK\x01\x02", offset)) != -1:  # and in its central directory record
        name_length = struct.unpack("<H", data[offset + 28 : offset + 30])[0]
        if data[offset + 46 : offset + 46 + name_length] == b"secret.png":
            data[offset + 8] |= 0x1
        offset += 4
    path.write_bytes(bytes(data))
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = classify(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("size", ["0", "-3", "100000"])
def test_classify_bounds_its_batch_size(size: str, capsys) -> None:
    code, _, err = _run(capsys, "--model", "preact_resnet18_sharedA.mnist", "--batch-size", size, "x.png")
    assert code == EXIT_USAGE and "--batch-size must be between 1 and 4096" in err


def test_hostile_members_are_named_and_skipped_and_the_rest_classified(
    hostile_zip: Path, digit: Path, shared_hub: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(9000, 9000))
    code, out, err = _run(
        capsys, "--model", "preact_resnet18_sharedA.mnist", "--format", "jsonl", "--topk", "1",
        str(hostile_zip), str(big), str(digit),
    )  # fmt: skip
    assert code == 0 and "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]  # one JSON object per line, as they come
    assert [r["image"] for r in lines] == [f"{hostile_zip}:good.png", str(digit)]
    assert all(r["top"][0]["label"] == "7" for r in lines)
    for member, why in [
        ("huge.png", f"more than the {MAX_IMAGE_BYTES:,} allowed"),
        ("bomb.png", "could be decompression bomb"),  # PIL's own limit, at twice its default, binds first here
        ("damaged.png", "not a readable image"),
        ("truncated.png", "not a readable image"),
        ("secret.png", "an encrypted zip member"),
    ]:
        line = next(line for line in err.splitlines() if line.startswith(f"skipped {hostile_zip}:{member}: "))
        assert why in line, line
    assert f"skipped {big}: not a readable image ({big}: the image is 9000x9000" not in err  # named once, not twice
    assert f"skipped {big}: " in err and "81,000,000 pixels" in err


def test_json_streams_one_array_and_csv_one_row_per_class(digit: Path, shared_hub: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))
    model = "preact_resnet18_sharedA.mnist"
    code, out, _ = _run(capsys, "--model", model, "--format", "json", str(digit), str(digit))
    assert code == 0 and len(json.loads(out)) == 2 and out.count("\n") == 2  # written as each result came
    code, out, _ = _run(capsys, "--model", model, "--format", "csv", "--topk", "2", str(digit))
    assert code == 0 and out.splitlines()[0] == "image,rank,label,index,prob" and len(out.splitlines()) == 3


def _folder_zip(path: Path, images: dict[str, Image.Image]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, image in images.items():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())
    return path


def test_a_training_archive_with_a_huge_image_is_refused_by_name(tmp_path: Path, capsys) -> None:
    small = Image.new("L", (8, 8))
    archive = _folder_zip(
        tmp_path / "shapes.zip",
        {"train/a/0.png": small, "train/b/0.png": small, "test/a/0.png": small, "test/b/0.png": small},
    )
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("train/b/1.png", _png_header_only(9000, 9000))
    with pytest.raises(DatasetError, match=r"train/b/1.png: the image is 9000x9000 \(81,000,000 pixels\)"):
        load_dataset(str(archive), image_size=8)
    assert train([*TINY_TRAIN, "--dataset", str(archive), "--image-size", "8", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "train/b/1.png: the image is 9000x9000" in err and "Traceback" not in err


def test_a_dataset_value_names_one_identity() -> None:
    assert dataset_identity("mnist").name == "mnist" and dataset_identity("mnist").path is None
    zipped = dataset_identity("../shared/data/mnist.zip")
    assert (zipped.name, zipped.path, zipped.known) == ("mnist", "../shared/data/mnist.zip", True)
    own = dataset_identity("/data/photos.zip")
    assert (own.name, own.known) == ("photos", False)


def test_a_registry_name_is_never_a_folder_of_the_current_directory(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "cwd" / "mnist"
    for split in ("train", "test"):
        (decoy / split / "x").mkdir(parents=True)
        Image.new("L", (5, 5)).save(decoy / split / "x" / "0.png")
    monkeypatch.chdir(tmp_path / "cwd")
    dataset = load_dataset("mnist", data_dir=digits.parent)
    assert dataset.classes == [str(d) for d in range(10)] and dataset.source == str(digits)
    with pytest.raises(DatasetError, match="is not a dataset of the registry"):  # a manifest's value: never a path
        load_dataset(str(digits), registry_only=True)
    with pytest.raises(DatasetError, match="is not a dataset of the registry"):
        load_dataset("../../etc", registry_only=True)


def test_a_registry_zip_given_by_path_is_that_dataset_everywhere(digits: Path, tmp_path: Path, capsys) -> None:
    """Trained on the path of mnist.zip: the run, publishing and classify --run all take MNIST's tag."""
    out = tmp_path / "run"
    args = [*TINY_TRAIN, "--dataset", str(digits), "--epochs", "0.1", "--batch-size", "50", "--precision", "fp32"]
    assert train([*args, "--out", str(out)]) == 0
    run = Run.open(out)
    model = run.load_model()
    assert model.pretrained_cfg["tag"] == "mnist" and tuple(model.pretrained_cfg["mean"]) == TAGS["mnist"].mean
    assert TrainedWeights(run.config, run.metrics(), run.weights_path()).pretrained_tag(None) == "mnist"
    image = tmp_path / "digit.png"
    with zipfile.ZipFile(digits) as archive:
        image.write_bytes(archive.read(next(n for n in sorted(archive.namelist()) if n.startswith("test/3/"))))
    capsys.readouterr()
    assert classify(["--run", str(out), "--format", "jsonl", str(image)]) == 0
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert result["image"] == str(image) and result["top"][0]["label"] in [str(d) for d in range(10)]
