"""Image-classification datasets as uint8 tensors in memory (docs/contract.md §4).

Sources, in the order :func:`load_dataset` tries them:

1. a path: an ImageFolder directory or a zip of one (``<split>/<class>/<file>``, splits ``train``
   and ``test``, optionally ``val``);
2. a name (``mnist``, ``cifar10``, ``cifar100``): ``<data_dir>/<name>.zip`` or ``<data_dir>/<name>/``
   where ``data_dir`` is the argument or ``$RESMG_ZOO_DATA``;
3. the same name through torchvision's own classes (``download=True`` needs internet).

An archive is decoded once into a safetensors cache keyed by its sha256 (``$RESMG_ZOO_CACHE`` or
``~/.cache/resmg_zoo``); later loads read the tensors back without decoding a single image.

``image_size`` and ``channels`` convert every image while it is decoded (bilinear resize to a
square, PIL's ``L``/``RGB`` conversion), so a folder of mixed sizes or colour images can feed a
1-channel 28×28 model; the cache key then names the format too.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..core.atomic import atomic_path
from ..core.hashing import file_sha256
from ..core.tags import TAGS

CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# What the known datasets must decode to: (PIL mode, width, height).
KNOWN_FORMATS: dict[str, tuple[str, int, int]] = {
    "mnist": ("L", 28, 28),
    "cifar10": ("RGB", 32, 32),
    "cifar100": ("RGB", 32, 32),
}


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message names the file."""


@dataclass
class ImageSplit:
    """One split: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def subset(self, indices: Tensor) -> ImageSplit:
        return ImageSplit(self.images[indices], self.labels[indices])


@dataclass
class ImageDataset:
    """A dataset: its splits, class names, normalisation and where it came from."""

    name: str
    classes: list[str]
    splits: dict[str, ImageSplit]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    sha256: Optional[str] = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> ImageSplit:
        if name not in self.splits:
            raise DatasetError(f"{self.name} has no {name!r} split; it has {', '.join(self.splits)}")
        return self.splits[name]


def default_data_dir() -> Optional[Path]:
    """``$RESMG_ZOO_DATA``, else ``../shared/data`` beside the current directory, if either exists."""
    for candidate in (os.environ.get("RESMG_ZOO_DATA"), Path.cwd().parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def default_cache_dir() -> Path:
    return Path(os.environ.get("RESMG_ZOO_CACHE") or Path.home() / ".cache" / "resmg_zoo")


def load_dataset(
    name_or_path: str,
    data_dir: Optional[str | Path] = None,
    cache_dir: Optional[str | Path] = None,
    download: bool = False,
    image_size: Optional[int] = None,
    channels: Optional[int] = None,
) -> ImageDataset:
    """Load a dataset by name or path into memory (see the module docstring for the order).

    ``image_size``: resize every image to ``image_size``×``image_size``; ``channels``: 1 (grayscale)
    or 3 (RGB). ``None`` keeps the dataset's own format (a custom folder's must then be uniform).
    """
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    convert = Conversion(image_size, channels)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _load_image_folder(path, _name_of(path), cache_dir, convert)
    if name_or_path not in KNOWN_FORMATS:
        raise DatasetError(
            f"{name_or_path!r} is neither an existing ImageFolder directory/zip nor a known dataset; "
            f"known datasets: {', '.join(KNOWN_FORMATS)}"
        )
    looked = []
    folder = Path(data_dir) if data_dir else default_data_dir()
    if folder is not None:
        for candidate in (folder / f"{name_or_path}.zip", folder / name_or_path):
            looked.append(str(candidate))
            if candidate.exists():
                return _load_image_folder(candidate, name_or_path, cache_dir, convert)
    return convert.apply(_load_torchvision(name_or_path, folder, download, looked))


@dataclass(frozen=True)
class Conversion:
    """What every image is converted to on loading: a square size and/or a channel count."""

    image_size: Optional[int] = None
    channels: Optional[int] = None

    @property
    def active(self) -> bool:
        return self.image_size is not None or self.channels is not None

    @property
    def tag(self) -> str:
        """Part of a cache file name: ``""`` without conversion, else e.g. ``".L32x32"``."""
        if not self.active:
            return ""
        mode = {None: "", 1: "L", 3: "RGB"}[self.channels]
        return f".{mode}{self.image_size or ''}"

    def target(self, mode: str, size: Optional[tuple[int, int]]) -> tuple[str, Optional[tuple[int, int]]]:
        if self.channels is not None:
            mode = "L" if self.channels == 1 else "RGB"
        if self.image_size is not None:
            size = (self.image_size, self.image_size)
        return mode, size

    def apply(self, dataset: ImageDataset) -> ImageDataset:
        """Convert decoded uint8 tensors (the torchvision path), as the decoder would."""
        if not self.active:
            return dataset
        splits = {name: ImageSplit(self._images(s.images), s.labels) for name, s in dataset.splits.items()}
        mean, std = _stats(dataset.name, splits["train"].images)
        return ImageDataset(dataset.name, dataset.classes, splits, mean, std, dataset.source, dataset.sha256)

    def _images(self, images: Tensor) -> Tensor:
        x = images.float()
        if self.channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)  # PIL's L
        elif self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = torch.nn.functional.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        return x.round().clamp(0, 255).to(torch.uint8)


def _name_of(path: Path) -> str:
    return path.name[: -len(".zip")] if path.name.endswith(".zip") else path.name


def _stats(name: str, images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The known dataset's standard mean/std, else the per-channel statistics of the train images."""
    if name in TAGS and TAGS[name].in_chans == images.shape[1]:
        return TAGS[name].mean, TAGS[name].std
    x = images.to(torch.float64) / 255.0
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


# --------------------------------------------------------------------------- ImageFolder (zip or dir)


class _Members:
    """The image files of an ImageFolder tree, in a zip or a directory, by split and class."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_zip = root.is_file()
        if self.is_zip:
            try:
                with zipfile.ZipFile(root) as archive:
                    entries = [i.filename.rstrip("/") for i in archive.infolist()]
            except zipfile.BadZipFile as err:
                raise DatasetError(f"{root} is not a readable zip archive: {err}") from None
        else:
            entries = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))]
        self.files: dict[str, dict[str, list[str]]] = {}
        folders: set[tuple[str, str]] = set()  # every <split>/<class> folder, with images or not
        for name in sorted(entries):
            parts = name.split("/")
            if len(parts) < 2 or parts[0] not in SPLITS:
                continue
            folders.add((parts[0], parts[1]))
            if len(parts) == 3 and parts[2].lower().endswith(IMAGE_SUFFIXES):
                self.files.setdefault(parts[0], {}).setdefault(parts[1], []).append(name)
        self.empty = sorted(f"{split}/{c}" for split, c in folders if c not in self.files.get(split, {}))

    def check(self) -> list[str]:
        """Validate the layout and return the class names (from ``train``)."""
        if self.empty:
            raise DatasetError(
                f"{self.root}: class folder(s) {', '.join(self.empty)} hold no images "
                f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder(s), so that no class "
                "silently goes missing"
            )
        for split in REQUIRED_SPLITS:
            if split not in self.files:
                raise DatasetError(
                    f"{self.root}: no {split!r} split (expected {split}/<class>/<image> entries; "
                    f"found splits: {', '.join(self.files) or 'none'})"
                )
        classes = sorted(self.files["train"])
        for split, by_class in self.files.items():
            missing = [c for c in classes if c not in by_class]
            extra = [c for c in by_class if c not in classes]
            if missing or extra:
                raise DatasetError(
                    f"{self.root}: split {split!r} has class folders {sorted(by_class)} but train has "
                    f"{classes} (missing: {missing}, not in train: {extra})"
                )
        return classes


def _load_image_folder(
    root: Path, name: str, cache_dir: Optional[str | Path], convert: Conversion = Conversion()
) -> ImageDataset:
    members = _Members(root)
    classes = members.check()
    digest = file_sha256(root) if members.is_zip else None
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache / f"{digest}{convert.tag}.v{CACHE_VERSION}.safetensors" if digest else None
    if cached is not None and cached.exists():
        dataset = _read_cache(cached, name, str(root), digest)
        if dataset is not None and dataset.classes == classes:
            return dataset
    mode, size = convert.target(*_target_format(name, members))
    resize = convert.image_size is not None
    splits = {
        split: _decode_split(members, split, classes, mode, size, resize) for split in SPLITS if split in members.files
    }
    mean, std = _stats(name, splits["train"].images)
    dataset = ImageDataset(name, classes, splits, mean, std, str(root), digest)
    if cached is not None:
        _write_cache(cached, dataset)
    return dataset


def _target_format(name: str, members: _Members) -> tuple[str, Optional[tuple[int, int]]]:
    """Mode and size every image must have: fixed for known datasets, else taken from the first image."""
    if name in KNOWN_FORMATS:
        mode, w, h = KNOWN_FORMATS[name]
        return mode, (w, h)
    first_class = next(iter(members.files["train"].values()))
    image = _open(members, first_class[0])
    return ("L" if image.mode in ("L", "1", "I;16", "I") else "RGB"), None


DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)
"""What ``ZipFile.read`` raises for a damaged member (a bad CRC, a truncated or corrupt stream)."""


def _damaged(root: Path | str, member: str, err: Exception) -> DatasetError:
    return DatasetError(f"{root}: member {member} cannot be read ({err}): the archive is damaged; copy it again")


def _open(members: _Members, member: str, data: Optional[bytes] = None) -> Image.Image:
    where = f"{members.root}:{member}" if members.is_zip else str(members.root / member)
    try:
        if data is None:
            if members.is_zip:
                with zipfile.ZipFile(members.root) as archive:
                    data = archive.read(member)
            else:
                data = (members.root / member).read_bytes()
    except DAMAGED_ZIP_ERRORS as err:
        raise _damaged(members.root, member, err) from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{where}: the image does not decode ({err})") from None


def _decode_split(
    members: _Members, split: str, classes: list[str], mode: str, size: Optional[tuple[int, int]], resize: bool
) -> ImageSplit:
    entries = [(m, label) for label, c in enumerate(classes) for m in members.files[split][c]]
    chunks = [entries[i : i + 2048] for i in range(0, len(entries), 2048)]
    if size is None:  # custom folder: every image must have the first image's size
        size = _open(members, entries[0][0]).size
    jobs = [(str(members.root), members.is_zip, chunk, mode, size, resize) for chunk in chunks]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            arrays = list(pool.map(_decode_chunk, jobs))
    else:
        arrays = [_decode_chunk(job) for job in jobs]
    images = torch.from_numpy(np.concatenate(arrays))
    labels = torch.tensor([label for _, label in entries], dtype=torch.int64)
    return ImageSplit(images, labels)


def _decode_chunk(job: tuple[str, bool, list[tuple[str, int]], str, tuple[int, int], bool]) -> np.ndarray:
    root, is_zip, chunk, mode, (width, height), resize = job
    members = _Members.__new__(_Members)
    members.root, members.is_zip = Path(root), is_zip
    channels = 1 if mode == "L" else 3
    out = np.empty((len(chunk), channels, height, width), dtype=np.uint8)
    archive = zipfile.ZipFile(root) if is_zip else None
    try:
        for i, (member, _label) in enumerate(chunk):
            if archive is None:
                data = (Path(root) / member).read_bytes()
            else:
                try:
                    data = archive.read(member)
                except (*DAMAGED_ZIP_ERRORS, OSError) as err:
                    raise _damaged(root, member, err) from None
            image = _open(members, member, data)
            if resize and image.size != (width, height):
                image = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
            if image.size != (width, height):
                where = f"{root}:{member}" if is_zip else str(Path(root) / member)
                raise DatasetError(
                    f"{where}: image is {image.size[0]}x{image.size[1]}, expected {width}x{height} "
                    "like the rest of the dataset (pass an image size to resize every image)"
                )
            array = np.asarray(image.convert(mode), dtype=np.uint8)
            out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    finally:
        if archive:
            archive.close()
    return out


def _read_cache(path: Path, name: str, source: str, digest: Optional[str]) -> Optional[ImageDataset]:
    """The cached tensors, or ``None`` if the cache file is unreadable (then it is rebuilt)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["resmg_zoo"])
        tensors = load_file(str(path))
    except Exception:
        return None
    splits = {s: ImageSplit(tensors[f"{s}.images"], tensors[f"{s}.labels"]) for s in meta["splits"]}
    return ImageDataset(name, meta["classes"], splits, tuple(meta["mean"]), tuple(meta["std"]), source, digest)


def _write_cache(path: Path, dataset: ImageDataset) -> None:
    tensors = {}
    for split, data in dataset.splits.items():
        tensors[f"{split}.images"] = data.images.contiguous()
        tensors[f"{split}.labels"] = data.labels.contiguous()
    meta = dict(classes=dataset.classes, splits=list(dataset.splits), mean=dataset.mean, std=dataset.std)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"resmg_zoo": json.dumps(meta)})


# --------------------------------------------------------------------------- torchvision


def _load_torchvision(name: str, folder: Optional[Path], download: bool, looked: list[str]) -> ImageDataset:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    root = (folder or default_cache_dir()) / "torchvision"
    try:
        train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    except RuntimeError as err:
        raise DatasetError(
            f"{name} not found: looked for {', '.join(looked) or '(no data dir: set RESMG_ZOO_DATA)'} and for "
            f"torchvision's files under {root} ({err}). Put {name}.zip in RESMG_ZOO_DATA, pass a path, "
            "or let torchvision download it on a machine with internet (train --download; download=True from Python)."
        ) from None
    splits = {}
    for split, ds in (("train", train), ("test", test)):
        data = torch.as_tensor(np.asarray(ds.data))
        images = data[:, None] if data.dim() == 3 else data.permute(0, 3, 1, 2)
        splits[split] = ImageSplit(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64))
    classes = [str(c).split(" - ")[0] for c in train.classes]
    mean, std = _stats(name, splits["train"].images)
    return ImageDataset(name, classes, splits, mean, std, f"torchvision:{root}")


def split_train_val(dataset: ImageDataset, val_size: int, seed: int) -> tuple[ImageSplit, Optional[ImageSplit]]:
    """Train and validation splits: the archive's ``val`` if it has one, else ``val_size`` images
    carved from train by a seeded permutation (``val_size=0``: all of train, no validation)."""
    train = dataset.split("train")
    if "val" in dataset.splits:
        return train, dataset.splits["val"]
    if val_size <= 0:
        return train, None
    if val_size >= len(train):
        raise DatasetError(f"val_size={val_size} leaves no training images ({dataset.name} has {len(train)})")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:].sort().values), train.subset(order[:val_size].sort().values)
