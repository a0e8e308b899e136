"""Image-classification datasets as uint8 tensors in memory (docs/contract.md §4).

Sources, in the order :func:`load_dataset` tries them:

1. a path: an ImageFolder directory or a zip of one (``<split>/<class>/<file>``, splits ``train``
   and ``test``, optionally ``val``);
2. a name (``mnist``, ``cifar10``, ``cifar100``): ``<data_dir>/<name>.zip`` or ``<data_dir>/<name>/``
   where ``data_dir`` is the argument or ``$RESMG_ZOO_DATA``;
3. the same name through torchvision's own classes (``download=True`` needs internet).

An archive is decoded once into a safetensors cache (``$RESMG_ZOO_CACHE`` or ``~/.cache/resmg_zoo``)
keyed by everything that shapes the decoded tensors — the archive's sha256, the decoded mode and
size, and whether images were resized — so later loads read them back without decoding an image.
Normalisation is not cached: a dataset of the registry (:data:`resmg_zoo.core.tags.TAGS`) takes its
standard mean/std, any other the statistics of its train images (measured while decoding, in
chunks, without a float64 copy of the split).

``image_size`` and ``channels`` convert every image while it is decoded (bilinear resize to a
square, PIL's ``L``/``RGB`` conversion), so a folder of mixed sizes or colour images can feed a
1-channel 28×28 model. Before an image is decoded, the bytes the decoded splits will take (images ×
channels × the size decoded to) are checked against a limit, 8 GiB unless
``$RESMG_ZOO_MAX_DECODED_BYTES`` says otherwise (:func:`~resmg_zoo.data.archive.plan_decoding`): a
small archive of large-dimension images is refused by a :class:`DatasetError`, not allocated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..core.atomic import atomic_path
from ..core.files import UnreadableFileError, parse_json
from ..core.hashing import file_sha256
from ..core.tags import TAGS, dataset_identity
from .archive import (
    IMAGE_SUFFIXES,
    SPLITS,
    DatasetError,
    ImageSplit,
    Members,
    decode_split,
    open_image,
    plan_decoding,
)

CACHE_VERSION = 2  # 2: the key names the decoded format; mean/std are not cached (they depend on the name)
__all__ = ["IMAGE_SUFFIXES", "DatasetError", "ImageDataset", "ImageSplit", "load_dataset", "split_train_val"]


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
    registry_only: bool = False,
) -> ImageDataset:
    """Load a dataset by name or path into memory (see the module docstring for the order).

    What the value names is :func:`~resmg_zoo.core.tags.dataset_identity`'s rule: a registry name is
    that dataset (never a folder of the current directory); a path is read as that path.
    ``registry_only``: the value comes from a file the user did not write (a published manifest) and must
    name a registry dataset; a path is refused, never read.
    ``image_size``: resize every image to ``image_size``×``image_size``; ``channels``: 1 (grayscale)
    or 3 (RGB). ``None`` keeps the dataset's own format (a custom folder's must then be uniform).
    """
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    convert = Conversion(image_size, channels)
    identity = dataset_identity(name_or_path)
    if registry_only and (identity.path is not None or not identity.known):
        raise DatasetError(f"{name_or_path!r} is not a dataset of the registry ({', '.join(TAGS)}); it is not read")
    path = Path(identity.path).expanduser() if identity.path is not None else None
    if path is not None and path.exists():
        return _load_image_folder(path, _name_of(path), cache_dir, convert)
    if not identity.known or path is not None:
        raise DatasetError(
            f"{name_or_path!r} is neither an existing ImageFolder directory/zip nor a known dataset; "
            f"known datasets: {', '.join(TAGS)}"
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
        mean, std = normalisation(dataset.name, splits["train"].images, pixel_stats(splits["train"].images))
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
    """The dataset's name of an ImageFolder path, as :func:`~resmg_zoo.core.tags.dataset_identity` names it."""
    return dataset_identity(str(path)).name


Stats = tuple[tuple[float, ...], tuple[float, ...]]


def pixel_stats(images: Tensor, chunk: int = 2048) -> Stats:
    """Per-channel mean and (unbiased) std, 0–1 scale, of uint8 images: exact integer sums of the
    pixels and their squares over chunks (memory for one chunk, no float64 copy of the split), then
    one float64 division — the same values as the float64 formula to the last bit or two."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.int64)
    squares = torch.zeros(channels, dtype=torch.int64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.int64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total.double() / count
    var = (squares.double() - total.double().square() / count) / max(count - 1, 1)
    return tuple((mean / 255).tolist()), tuple((var.clamp_min(0).sqrt() / 255).tolist())


def normalisation(name: str, images: Tensor, measured: Stats) -> Stats:
    """The registry's standard mean/std for a known dataset of the right channel count, else ``measured``."""
    if name in TAGS and TAGS[name].in_chans == images.shape[1]:
        return TAGS[name].mean, TAGS[name].std
    return measured


# --------------------------------------------------------------------------- ImageFolder (zip or dir)


def _load_image_folder(
    root: Path, name: str, cache_dir: Optional[str | Path], convert: Conversion = Conversion()
) -> ImageDataset:
    members = Members(root)
    classes = members.check()
    mode, size = convert.target(*_target_format(name, members))
    sizes = plan_decoding(members, classes, mode, size)  # the decoded bytes checked before any is allocated
    resize = convert.image_size is not None
    digest = file_sha256(root) if members.is_zip else None
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    shape = f"{size[0]}x{size[1]}" if size else "native"
    key = f"{digest}.{mode}.{shape}{'.resized' if resize else ''}.v{CACHE_VERSION}.safetensors"
    cached = cache / key if digest else None
    found = _read_cache(cached) if cached is not None and cached.exists() else None
    if found is not None and found[0] == classes:
        splits, measured = found[1], found[2]
    else:
        splits = {
            split: decode_split(members, split, classes, mode, sizes[split], resize)
            for split in SPLITS
            if split in members.files
        }
        measured = pixel_stats(splits["train"].images)
        if cached is not None:
            _write_cache(cached, classes, splits, measured)
    mean, std = normalisation(name, splits["train"].images, measured)
    return ImageDataset(name, classes, splits, mean, std, str(root), digest)


def _target_format(name: str, members: Members) -> tuple[str, Optional[tuple[int, int]]]:
    """Mode and size every image must have: the registry's for a known dataset, else the first image's
    mode (read from its header) and each split's first image's size (:func:`plan_decoding`)."""
    if name in TAGS:
        _, height, width = TAGS[name].input_size
        return TAGS[name].pil_mode, (width, height)
    first_class = next(iter(members.files["train"].values()))
    image = open_image(members, first_class[0], load=False)
    return ("L" if image.mode in ("L", "1", "I;16", "I") else "RGB"), None


def _read_cache(path: Path) -> Optional[tuple[list[str], dict[str, ImageSplit], Stats]]:
    """The cached classes, splits and pixel statistics, or ``None`` if the file is unreadable (then it
    is decoded again)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = parse_json(f.metadata()["resmg_zoo"].encode(), f"the dataset cache {path}")
        tensors = load_file(str(path))
        splits = {s: ImageSplit(tensors[f"{s}.images"], tensors[f"{s}.labels"]) for s in meta["splits"]}
        return meta["classes"], splits, (tuple(meta["pixel_mean"]), tuple(meta["pixel_std"]))
    except (OSError, SafetensorError, UnreadableFileError, KeyError, TypeError):
        return None


def _write_cache(path: Path, classes: list[str], splits: dict[str, ImageSplit], measured: Stats) -> None:
    tensors = {}
    for split, data in splits.items():
        tensors[f"{split}.images"] = data.images.contiguous()
        tensors[f"{split}.labels"] = data.labels.contiguous()
    meta = dict(classes=classes, splits=list(splits), pixel_mean=measured[0], pixel_std=measured[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"resmg_zoo": json.dumps(meta)})


# --------------------------------------------------------------------------- torchvision


def _load_torchvision(name: str, folder: Optional[Path], download: bool, looked: list[str]) -> ImageDataset:
    import torchvision.datasets as tvd

    cls = getattr(tvd, TAGS[name].torchvision)
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
    mean, std = TAGS[name].mean, TAGS[name].std  # torchvision's classes decode to the registry's format
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
