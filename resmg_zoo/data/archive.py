"""ImageFolder trees (``<split>/<class>/<image>``) in a zip or a directory: their layout checked, their
images decoded in parallel into uint8 arrays. Every problem is a :class:`DatasetError` naming the
archive and the member. Every read is bounded and none blocks: only regular files are opened (a FIFO,
a device or a link to one is refused on the open descriptor, never read); a zip member's declared size
is checked against a limit before anything is decompressed, and it is inflated only up to that size
plus one byte (:func:`read_member`), so a member that lies about its size cannot expand without bound;
a file of a directory tree is read by :func:`~resmg_zoo.core.files.read_regular`, at most
:data:`MAX_IMAGE_BYTES` + 1 bytes; an image's pixel count is read from its header and checked against
:data:`MAX_IMAGE_PIXELS` before its pixels are decoded (a 9000×9000 image in a training archive is
refused by name, not allocated); and the bytes of all the decoded splits are counted, from the image
count and the size decoded to, against :func:`max_decoded_bytes` before any is allocated
(:func:`plan_decoding`). :func:`decode_image` is the one place an image's bytes become a PIL image,
for the datasets and for ``resmg-classify``."""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..core.errors import UsageError
from ..core.files import NOT_REGULAR, UnreadableFileError, read_regular
from ..core.files import open_regular as open_file

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_BYTES = 64 << 20  # one image file, decompressed
MAX_ARCHIVE_BYTES = 32 << 30  # every image of an archive, decompressed
MAX_IMAGE_PIXELS = 50_000_000  # one decoded image (a 48-megapixel photo passes; 9000×9000 does not)
MAX_DECODED_BYTES = 8 << 30  # every split of a dataset, decoded (uint8); $RESMG_ZOO_MAX_DECODED_BYTES overrides
DECODED_BYTES_VARIABLE = "RESMG_ZOO_MAX_DECODED_BYTES"
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


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (:func:`resmg_zoo.core.files.open_regular`);
    :class:`DatasetError` naming it otherwise."""
    try:
        return os.fdopen(open_file(path, "dataset file"), "rb")
    except UnreadableFileError as err:
        raise DatasetError(str(err)) from None


class RegularZip(zipfile.ZipFile):
    """A zip archive that is a regular file (:func:`open_regular`); closing it closes the file."""

    def __init__(self, path: str | Path) -> None:
        self._handle = open_regular(path)
        try:
            super().__init__(self._handle)
        except BaseException:
            self._handle.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            handle = getattr(self, "_handle", None)  # none if the file was refused
            if handle is not None:
                handle.close()


def read_member(archive: zipfile.ZipFile, member: str, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of ``member``, inflated only up to its declared size (itself at most ``limit``) plus one
    byte. The reader stops at the declared size and checks the CRC there, so a member holding more than
    it declares is refused (``BadZipFile``) after at most that many bytes — ``ZipFile.read`` would inflate
    its whole first compressed block at once, the 100 MB of a member that declares 1,000 bytes."""
    info = archive.getinfo(member)
    if info.file_size > limit:
        raise zipfile.BadZipFile(f"it declares {info.file_size:,} bytes decompressed, more than the {limit:,} allowed")
    with archive.open(info) as stream:
        data = stream.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise zipfile.BadZipFile(f"it holds more than the {info.file_size:,} bytes it declares")
    return data


def read_file(path: Path) -> bytes:
    """The bytes of the image file ``path`` of a directory tree: a regular file of at most
    :data:`MAX_IMAGE_BYTES` (:func:`~resmg_zoo.core.files.read_regular`); :class:`DatasetError` otherwise."""
    try:
        return read_regular(path, MAX_IMAGE_BYTES, "image")
    except UnreadableFileError as err:
        raise DatasetError(str(err)) from None


class Members:
    """The image files of an ImageFolder tree, in a zip or a directory, by split and class."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_zip = not root.is_dir()
        if self.is_zip:
            try:
                with RegularZip(root) as archive:
                    infos = archive.infolist()
            except (zipfile.BadZipFile, OSError) as err:
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
                if not self.is_zip:
                    _check_regular(root / name)
                self.files.setdefault(parts[0], {}).setdefault(parts[1], []).append(name)
        self.empty = sorted(f"{split}/{c}" for split, c in folders if c not in self.files.get(split, {}))

    def where(self, member: str) -> str:
        """How a message names ``member``: ``archive.zip:member`` or the file's path."""
        return f"{self.root}:{member}" if self.is_zip else str(self.root / member)

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


def _check_regular(path: Path) -> None:
    """Refuse a file of a directory tree that is not a regular file (its type read without opening it,
    so a FIFO does not block); a decoding worker's read checks again on the open descriptor."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise DatasetError(f"{path} cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else NOT_REGULAR
        raise DatasetError(f"{path} is {kind}, not an image: remove it from the dataset; nothing was decoded")


DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)
"""What ``ZipFile.read`` raises for a damaged member (a bad CRC, a truncated or corrupt stream)."""


def _damaged(root: Path | str, member: str, err: Exception) -> DatasetError:
    return DatasetError(f"{root}: member {member} cannot be read ({err}): the archive is damaged; copy it again")


def open_image(members: Members, member: str, data: Optional[bytes] = None, load: bool = True) -> Image.Image:
    """``member`` decoded (:func:`decode_image`; ``load=False``: its header only), read if ``data`` is not
    given (:func:`read_member`, :func:`read_file`)."""
    if data is None:
        data = _read(members, None, member)
    return decode_image(data, members.where(member), load)


def _read(members: Members, archive: Optional[zipfile.ZipFile], member: str) -> bytes:
    """The bytes of ``member``, from ``archive`` if one is open; :class:`DatasetError` naming it if not."""
    if not members.is_zip:
        return read_file(members.root / member)
    try:
        if archive is not None:
            return read_member(archive, member)
        with RegularZip(members.root) as opened:
            return read_member(opened, member)
    except (*DAMAGED_ZIP_ERRORS, OSError, KeyError) as err:
        raise _damaged(members.root, member, err) from None


class ImageTooLarge(DatasetError):
    """An image whose header declares more pixels than :data:`MAX_IMAGE_PIXELS`."""


def decode_image(data: bytes, where: str, load: bool = True) -> Image.Image:
    """The decoded image in ``data``; :class:`DatasetError` naming ``where`` if it does not decode, and
    :class:`ImageTooLarge` if its header declares more than :data:`MAX_IMAGE_PIXELS` pixels (checked
    before the pixels are decoded, so nothing of that size is allocated). ``load=False``: the image with
    its header read (size and mode), its pixels not decoded."""
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
    if not load:
        return image
    try:
        image.load()
        return image
    except IMAGE_ERRORS as err:
        raise DatasetError(f"{where}: the image does not decode ({type(err).__name__}: {err})") from None


def max_decoded_bytes() -> int:
    """The most bytes a dataset's decoded splits may take: ``$RESMG_ZOO_MAX_DECODED_BYTES`` where it is
    set, else :data:`MAX_DECODED_BYTES`."""
    text = os.environ.get(DECODED_BYTES_VARIABLE, "").strip()
    if not text:
        return MAX_DECODED_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DatasetError(f"{DECODED_BYTES_VARIABLE}={text!r}: expected a positive number of bytes")
    return value


def plan_decoding(
    members: Members, classes: list[str], mode: str, size: Optional[tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """The (width, height) each split decodes to — ``size``, else the split's first image's (every image
    must have it; read from its header) — once the bytes of all the decoded splits (images × channels ×
    height × width, uint8) are known to fit in :func:`max_decoded_bytes`; :class:`DatasetError` naming
    the limit and how to raise it otherwise. Nothing is decoded or allocated here."""
    channels = 1 if mode == "L" else 3
    sizes: dict[str, tuple[int, int]] = {}
    total, parts = 0, []
    for split in (s for s in SPLITS if s in members.files):
        count = sum(len(members.files[split][c]) for c in classes)
        sizes[split] = size or open_image(members, members.files[split][classes[0]][0], load=False).size
        width, height = sizes[split]
        total += count * channels * height * width * np.dtype(np.uint8).itemsize
        parts.append(f"{split}: {count:,} images of {channels}x{height}x{width}")
    limit = max_decoded_bytes()
    if total > limit:
        raise DatasetError(
            f"{members.root}: decoded, its images would take {total:,} bytes ({'; '.join(parts)}), more "
            f"than the {limit:,} allowed; nothing was decoded. Pass a smaller image size, or raise the limit "
            f"with {DECODED_BYTES_VARIABLE}=<bytes> if this machine has the memory"
        )
    return sizes


def decode_split(
    members: Members, split: str, classes: list[str], mode: str, size: Optional[tuple[int, int]], resize: bool
) -> ImageSplit:
    """The images of ``split`` decoded to ``mode`` and ``size`` (``None``: the split's first image's; see
    :func:`plan_decoding`, which checks the bytes first), in chunks over worker processes, each chunk
    copied into the one array of the split as it comes."""
    entries = [(m, label) for label, c in enumerate(classes) for m in members.files[split][c]]
    chunks = [entries[i : i + 2048] for i in range(0, len(entries), 2048)]
    if size is None:  # custom folder: every image must have the first image's size
        size = open_image(members, entries[0][0], load=False).size
    jobs = [(str(members.root), members.is_zip, chunk, mode, size, resize) for chunk in chunks]
    images = torch.empty((len(entries), 1 if mode == "L" else 3, size[1], size[0]), dtype=torch.uint8)
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            _fill(images, pool.map(_decode_chunk, jobs))
    else:
        _fill(images, map(_decode_chunk, jobs))
    labels = torch.tensor([label for _, label in entries], dtype=torch.int64)
    return ImageSplit(images, labels)


def _fill(images: Tensor, arrays: Iterator[np.ndarray]) -> None:
    """Copy the decoded chunks into ``images`` in order, each as it comes (never all held at once)."""
    start = 0
    for array in arrays:
        images[start : start + len(array)] = torch.from_numpy(array)
        start += len(array)


def _decode_chunk(job: tuple[str, bool, list[tuple[str, int]], str, tuple[int, int], bool]) -> np.ndarray:
    root, is_zip, chunk, mode, (width, height), resize = job
    members = Members.__new__(Members)
    members.root, members.is_zip = Path(root), is_zip
    channels = 1 if mode == "L" else 3
    out = np.empty((len(chunk), channels, height, width), dtype=np.uint8)
    archive = RegularZip(root) if is_zip else None
    try:
        for i, (member, _label) in enumerate(chunk):
            image = open_image(members, member, _read(members, archive, member))
            if resize and image.size != (width, height):
                image = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
            if image.size != (width, height):
                raise DatasetError(
                    f"{members.where(member)}: image is {image.size[0]}x{image.size[1]}, expected {width}x{height} "
                    "like the rest of the dataset (pass an image size to resize every image)"
                )
            array = np.asarray(image.convert(mode), dtype=np.uint8)
            out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    finally:
        if archive:
            archive.close()
    return out
