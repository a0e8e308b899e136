"""Datasets from the real archives: layout, cache, torchvision path, broken archives (docs/contract.md §4, §6)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from realdata import REPO_ROOT, real_data_dir, subset_zip

from resmg_zoo.data import datasets as data_module
from resmg_zoo.data.datasets import DatasetError, load_dataset, split_train_val
from resmg_zoo.data.loader import EpochPlan, Materializer

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # shared/data/README.md


@pytest.fixture(scope="module")
def mnist() -> data_module.ImageDataset:
    return load_dataset("mnist", data_dir=real_data_dir())


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    return subset_zip(real_data_dir() / "mnist.zip", folder / "digits.zip", {"train": 20, "test": 5})


def test_real_mnist_by_name(mnist: data_module.ImageDataset) -> None:
    assert mnist.classes == [str(d) for d in range(10)]
    train, test = mnist.split("train"), mnist.split("test")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.bincount().tolist() == MNIST_TEST_COUNTS
    assert mnist.sha256 == "00b9d495e68413e7bc8ef489aed266a46dec82969a55bc3333f5149da9151748"
    assert abs(train.images.float().mean().item() / 255 - 0.1307) < 1e-3  # the README's pixel mean


def test_second_load_reads_the_sha256_keyed_cache(mnist: data_module.ImageDataset, monkeypatch) -> None:
    cache = data_module.default_cache_dir() / f"{mnist.sha256}.L.28x28.v{data_module.CACHE_VERSION}.safetensors"
    assert cache.exists()

    def no_decoding(*_args: object) -> None:
        raise AssertionError("decoded images although the cache holds them")

    monkeypatch.setattr(data_module, "decode_split", no_decoding)
    again = load_dataset("mnist", data_dir=real_data_dir())
    assert torch.equal(again.split("test").images, mnist.split("test").images)


def test_a_corrupt_cache_file_is_rebuilt(small: Path, tmp_path: Path) -> None:
    first = load_dataset(str(small), cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("*.safetensors")
    cache_file.write_bytes(b"garbage")
    second = load_dataset(str(small), cache_dir=tmp_path)
    assert torch.equal(first.split("train").images, second.split("train").images)


def test_image_folder_directory_equals_its_zip(small: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(small) as archive:
        archive.extractall(tmp_path / "tree")
    from_dir, from_zip = load_dataset(str(tmp_path / "tree")), load_dataset(str(small))
    assert from_dir.classes == from_zip.classes
    for split in ("train", "test"):
        assert torch.equal(from_dir.split(split).images, from_zip.split(split).images)
        assert torch.equal(from_dir.split(split).labels, from_zip.split(split).labels)


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | {1: 0x01, 3: 0x03}[array.ndim]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_path_reads_mnist_files(small: Path, tmp_path: Path) -> None:
    """No zip in the data dir: torchvision's own MNIST class reads its raw files (written here from
    the real images, as torchvision's download would leave them)."""
    reference = load_dataset(str(small))
    raw = tmp_path / "torchvision" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", reference.split(split).images[:, 0].numpy())
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", reference.split(split).labels.numpy())
    via_torchvision = load_dataset("mnist", data_dir=tmp_path)
    assert via_torchvision.source.startswith("torchvision:")
    assert torch.equal(via_torchvision.split("train").images, reference.split("train").images)
    assert via_torchvision.classes == reference.classes


def test_missing_dataset_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cifar100 not found: looked for .*cifar100\.zip"):
        load_dataset("cifar100", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="known datasets: cifar10, cifar100, mnist"):
        load_dataset("imagenet", data_dir=tmp_path)


def _rewrite(source: Path, target: Path, edit) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            result = edit(name, src.read(name))
            if result is not None:
                dst.writestr(*result)
    return target


def test_missing_split(small: Path, tmp_path: Path) -> None:
    broken = _rewrite(small, tmp_path / "x.zip", lambda n, b: None if n.startswith("test/") else (n, b))
    with pytest.raises(DatasetError, match=rf"{broken}: no 'test' split"):
        load_dataset(str(broken))


def test_missing_class_folder(small: Path, tmp_path: Path) -> None:
    broken = _rewrite(small, tmp_path / "x.zip", lambda n, b: None if n.startswith("test/7/") else (n, b))
    with pytest.raises(DatasetError, match=r"split 'test' has class folders .* \(missing: \['7'\]"):
        load_dataset(str(broken))


def test_image_that_does_not_decode(small: Path, tmp_path: Path) -> None:
    victim = "train/3/"
    state = {}

    def corrupt(name: str, data: bytes):
        if name.startswith(victim) and "name" not in state:
            state["name"] = name
            return name, data[: len(data) // 3]  # truncated PNG
        return name, data

    broken = _rewrite(small, tmp_path / "x.zip", corrupt)
    with pytest.raises(DatasetError, match=rf"x\.zip:{state['name']}: the image does not decode"):
        load_dataset(str(broken), cache_dir=tmp_path)


def test_image_of_the_wrong_size(small: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(real_data_dir() / "cifar10.zip") as cifar:
        foreign = cifar.read(next(n for n in cifar.namelist() if n.startswith("train/cat/")))
    broken = _rewrite(small, tmp_path / "mnist.zip", lambda n, b: (n, foreign if n == "test/2/" + n[7:] else b))
    with pytest.raises(DatasetError, match=r"mnist\.zip:test/2/\d+\.png: image is 32x32, expected 28x28"):
        load_dataset(str(broken), cache_dir=tmp_path)


def test_not_a_zip(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match=rf"{bogus} is not a readable zip archive"):
        load_dataset(str(bogus))


def test_validation_split_is_seeded_and_disjoint(small: Path) -> None:
    dataset = load_dataset(str(small))
    train, val = split_train_val(dataset, 50, seed=3)
    _, val2 = split_train_val(dataset, 50, seed=3)
    assert len(val) == 50 and len(train) == 150 and torch.equal(val.images, val2.images)
    _, other = split_train_val(dataset, 50, seed=4)
    assert not torch.equal(val.labels, other.labels) or not torch.equal(val.images, other.images)
    rows = {tuple(x.flatten().tolist()) for x in train.images} | {tuple(x.flatten().tolist()) for x in val.images}
    assert len(rows) == 200  # every image once (MNIST has no duplicate images)


def test_loader_is_a_function_of_seed_and_epoch(small: Path) -> None:
    dataset = load_dataset(str(small))
    split = dataset.split("train")
    plan = EpochPlan(len(split), 40, seed=1)
    data = Materializer(split, dataset.mean, dataset.std, "crop_flip")
    a = [data(b)[0] for b in plan.batches(2)]
    b = [data(b)[0] for b in EpochPlan(len(split), 40, seed=1).batches(2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = [data(b)[0] for b in plan.batches(3)]
    assert not torch.equal(a[0], c[0])
    resumed = [data(b)[0] for b in plan.batches(2, start_step=3)]
    assert all(torch.equal(x, y) for x, y in zip(a[3:], resumed))
    batch = next(plan.batches(0))
    halves = torch.cat([data(batch.shard(i, 2))[0] for i in range(2)])
    assert torch.equal(halves, data(batch)[0])


def test_augmentation_keeps_pixels_and_normalises(small: Path) -> None:
    dataset = load_dataset(str(small))
    split = dataset.split("train")
    batch = next(EpochPlan(len(split), 200, seed=0, shuffle=False).batches(0))
    plain, _ = Materializer(split, dataset.mean, dataset.std, "none")(batch)
    assert abs(plain.mean().item()) < 0.2 and abs(plain.std().item() - 1) < 0.2
    shifted = Materializer(split, dataset.mean, dataset.std, "crop_flip")(batch)[0]
    background = (0 - dataset.mean[0]) / dataset.std[0]
    centred = (batch.offsets == 4).all(dim=1) & ~batch.flips
    assert torch.equal(shifted[centred], plain[centred])
    flipped = (batch.offsets == 4).all(dim=1) & batch.flips
    assert torch.equal(shifted[flipped], plain[flipped].flip(3))
    moved = ~(batch.offsets == 4).all(dim=1)
    assert (shifted[moved] == background).float().mean() > (plain[moved] == background).float().mean()


def test_materializer_side_is_that_of_the_batches_it_returns(small: Path) -> None:
    dataset = load_dataset(str(small))
    split = dataset.split("train")
    batch = next(EpochPlan(len(split), 8, seed=0).batches(0))
    for pad_to in (0, 32):
        data = Materializer(split, dataset.mean, dataset.std, "crop", pad_to=pad_to)
        assert data(batch)[0].shape[-2:] == (data.side, data.side) == ((pad_to or 28),) * 2


def test_one_archive_under_two_names_gets_each_names_normalisation(small: Path, tmp_path: Path) -> None:
    """The cache holds what the archive decodes to, not what a name implies: the same digits as
    ``mnist.zip`` take MNIST's standard mean/std, under another name their own measured statistics —
    whichever name was loaded first (the cache used to hand the first name's statistics to the second)."""
    as_mnist = tmp_path / "data" / "mnist.zip"
    as_mnist.parent.mkdir()
    as_mnist.write_bytes(small.read_bytes())
    cache = tmp_path / "cache"
    own = load_dataset(str(small), cache_dir=cache)  # "digits": measured
    known = load_dataset("mnist", data_dir=as_mnist.parent, cache_dir=cache)
    again = load_dataset(str(small), cache_dir=cache)
    assert known.mean == (0.1307,) and known.std == (0.3081,)
    assert own.mean == again.mean != known.mean
    # one cache file per decoded format (MNIST's fixed 28×28 vs the first image's size), none per name
    assert sorted(p.name.split(".", 1)[1] for p in cache.glob("*.safetensors")) == [
        "L.28x28.v2.safetensors",
        "L.native.v2.safetensors",
    ]
    x = own.split("train").images.to(torch.float64) / 255  # the float64 reference, on a small split
    assert own.mean[0] == pytest.approx(x.mean().item(), abs=1e-9) and own.std[0] == pytest.approx(
        x.std().item(), abs=1e-9
    )


def test_pixel_statistics_in_chunks_equal_the_whole_split_in_float64() -> None:
    images = torch.randint(0, 256, (1000, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = data_module.pixel_stats(images, chunk=128)
    x = images.to(torch.float64) / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), x.std(dim=(0, 2, 3)), rtol=0, atol=1e-12)


def test_a_member_that_would_decompress_beyond_the_limit_is_refused_unread(tmp_path: Path, monkeypatch) -> None:
    """A crafted zip: 80 MB of zeros in one "image" is ~80 KB deflated. Refused from the declared size,
    before any member is decompressed."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/a/x.png", b"\0" * (80 << 20))
        archive.writestr("test/a/y.png", b"\0" * 100)

    def no_reading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a member was decompressed")

    monkeypatch.setattr(zipfile.ZipFile, "read", no_reading)
    with pytest.raises(DatasetError, match=r"bomb\.zip: member train/a/x\.png declares 83,886,080 bytes"):
        load_dataset(str(bomb), cache_dir=tmp_path)


def test_a_dataset_is_added_in_one_place(tmp_path: Path) -> None:
    """One entry in the registry, nothing else: a new dataset (here 4 classes of real CIFAR-10, as if it
    were its own) gets its decoded format, mean/std, augmentation, recipe epochs and a model cfg, and trains."""
    data = tmp_path / "data"
    data.mkdir()
    classes = {"airplane": "plane", "automobile": "car", "ship": "boat", "truck": "lorry"}
    subset_zip(real_data_dir() / "cifar10.zip", data / "vehicles.zip", {"train": 25, "test": 5}, rename=classes)
    archive = data / "vehicles.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(data / "v.zip", "w") as dst:
        for name in src.namelist():
            if name.split("/")[1] in classes.values():
                dst.writestr(name, src.read(name))
    (data / "v.zip").replace(archive)
    package = tmp_path / "site" / "resmg_zoo"  # a copy of the package with one entry added to its registry
    shutil.copytree(REPO_ROOT / "resmg_zoo", package, ignore=shutil.ignore_patterns("__pycache__"))
    registry = package / "core" / "tags.py"
    first = '        DatasetTag(\n            name="cifar10",'
    entry = """        DatasetTag(
            name="vehicles",
            label_names=("boat", "car", "lorry", "plane"),
            input_size=(3, 32, 32),
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            augment="crop",
            epochs={"paper": 2, "short": 1, "sprint": 1},
            torchvision="CIFAR10",
            hub_dataset="someone/vehicles",
            train_images=100,
            test_images=20,
        ),
"""
    text = registry.read_text()
    assert text.count(first) == 1
    registry.write_text(text.replace(first, entry + first))
    program = f"""
import json
import timm, resmg_zoo
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.train.cli import main
assert resmg_zoo.__file__.startswith({str(package)!r})
dataset = load_dataset("vehicles", data_dir={str(data)!r})
code = main(["--model", "preact_resnet18_sharedA", "--model-kwargs", "widths=8,8,16,16", "--dataset", "vehicles",
             "--data", {str(data)!r}, "--recipe", "short", "--val-size", "20", "--batch-size", "20", "--quiet",
             "--no-report", "--out", {str(tmp_path / "run")!r}])
config = json.load(open({str(tmp_path / "run" / "config.json")!r}))
cfg = timm.create_model("preact_resnet18_sharedA.vehicles").pretrained_cfg
print(json.dumps(dict(code=code, mean=dataset.mean, classes=dataset.classes, recipe=config["recipe_settings"],
                      labels=list(cfg["label_names"]), input_size=list(cfg["input_size"]))))
"""
    env = dict(os.environ, PYTHONPATH=str(package.parent))
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0 and report["mean"] == [0.5, 0.5, 0.5]
    assert report["classes"] == ["boat", "car", "lorry", "plane"] == report["labels"]
    assert report["recipe"]["epochs"] == 1 and report["recipe"]["augment"] == "crop"
    assert report["input_size"] == [3, 32, 32]
