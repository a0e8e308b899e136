"""ImageFolder trees (``<split>/<class>/<image>``) in a zip or a directory: their layout checked, their
images decoded in parallel into uint8 arrays. Every problem is a :class:`DatasetError` naming the
archive and the member; a zip member's declared size is checked against a limit before anything is
decompressed, so a crafted archive cannot expand without bound, and an image's pixel count is read
from its header and checked against :data:`MAX_IMAGE_PIXELS` before its pixels are decoded (a
9000×9000 image in a training archive is refused by name, not allocated). :func:`decode_image` is
the one place an image's bytes become a PIL image, for the datasets and for ``resmg-classify``."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..core.errors import UsageError

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_BYTES = 64 << 20  # one image file, decompressed
MAX_ARCHIVE_BYTES = 32 << 30  # every image of an archive, decompressed
MAX_IMAGE_PIXELS = 50_000_000  # one decoded image (a 48-megapixel photo passes; 9000×9000 does not)
IMAGE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    zlib.error,
    Image.DecompressionBombError,
)
"""What decoding a damaged, foreign or crafted image raises (PIL's bomb check included)."""


class DatasetError(UsageError):
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


def check_sizes(root: Path, images: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive whose images would decompress beyond :data:`MAX_IMAGE_BYTES` each or
    :data:`MAX_ARCHIVE_BYTES` in all, before anything is decompressed. The declared sizes bind: the
    zip reader stops at a member's declared size and fails its CRC if the data run longer."""
    for info in images:
        if info.file_size > MAX_IMAGE_BYTES:
            raise DatasetError(
                f"{root}: member {info.filename} declares {info.file_size:,} bytes decompressed "
                f"({info.compress_size:,} compressed), more than the {MAX_IMAGE_BYTES:,} any image may have: "
                "the archive is damaged or crafted; nothing was decoded"
            )
    total = sum(i.file_size for i in images)
    if total > MAX_ARCHIVE_BYTES:
        raise DatasetError(
            f"{root}: its images declare {total:,} bytes decompressed, more than {MAX_ARCHIVE_BYTES:,}; "
            "nothing was decoded"
        )


class Members:
    """The image files of an ImageFolder tree, in a zip or a directory, by split and class."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_zip = root.is_file()
        if self.is_zip:
            try:
                with zipfile.ZipFile(root) as archive:
                    infos = archive.infolist()
            except zipfile.BadZipFile as err:
                raise DatasetError(f"{root} is not a readable zip archive: {err}") from None
            check_sizes(root, [i for i in infos if i.filename.lower().endswith(IMAGE_SUFFIXES)])
            entries = [i.filename.rstrip("/") for i in infos]
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


DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)
"""What ``ZipFile.read`` raises for a damaged member (a bad CRC, a truncated or corrupt stream)."""


def _damaged(root: Path | str, member: str, err: Exception) -> DatasetError:
    return DatasetError(f"{root}: member {member} cannot be read ({err}): the archive is damaged; copy it again")


def open_image(members: Members, member: str, data: Optional[bytes] = None) -> Image.Image:
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
    return decode_image(data, where)


class ImageTooLarge(DatasetError):
    """An image whose header declares more pixels than :data:`MAX_IMAGE_PIXELS`."""


def decode_image(data: bytes, where: str) -> Image.Image:
    """The decoded image in ``data``; :class:`DatasetError` naming ``where`` if it does not decode, and
    :class:`ImageTooLarge` if its header declares more than :data:`MAX_IMAGE_PIXELS` pixels (checked
    before the pixels are decoded, so nothing of that size is allocated)."""
    try:
        with warnings.catch_warnings():  # PIL warns between its own limit and twice it; ours is lower and an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except IMAGE_ERRORS as err:
        raise DatasetError(f"{where}: the image does not decode ({type(err).__name__}: {err})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"{where}: the image is {width}x{height} ({width * height:,} pixels), more than the "
            f"{MAX_IMAGE_PIXELS:,} any image may have here; resize it first"
        )
    try:
        image.load()
        return image
    except IMAGE_ERRORS as err:
        raise DatasetError(f"{where}: the image does not decode ({type(err).__name__}: {err})") from None


def decode_split(
    members: Members, split: str, classes: list[str], mode: str, size: Optional[tuple[int, int]], resize: bool
) -> ImageSplit:
    entries = [(m, label) for label, c in enumerate(classes) for m in members.files[split][c]]
    chunks = [entries[i : i + 2048] for i in range(0, len(entries), 2048)]
    if size is None:  # custom folder: every image must have the first image's size
        size = open_image(members, entries[0][0]).size
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
    members = Members.__new__(Members)
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
            image = open_image(members, member, data)
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
