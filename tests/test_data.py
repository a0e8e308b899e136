"""Datasets from the real archives: layout, cache, torchvision path, broken archives (docs/contract.md §4, §6)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from realdata import real_data_dir, subset_zip

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
    cache = data_module.default_cache_dir() / f"{mnist.sha256}.v{data_module.CACHE_VERSION}.safetensors"
    assert cache.exists()

    def no_decoding(*_args: object) -> None:
        raise AssertionError("decoded images although the cache holds them")

    monkeypatch.setattr(data_module, "_decode_split", no_decoding)
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
    with pytest.raises(DatasetError, match="known datasets: mnist, cifar10, cifar100"):
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
