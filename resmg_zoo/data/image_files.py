"""Image files named on a command line — files, folders (searched recursively), zips — as a stream of
decoded images for inference, with every input that is not a readable image named and skipped.

Nothing is held for the whole input: folders are walked and zips listed lazily, and
:class:`ImageFileStream` decodes in ``DataLoader`` workers, each worker taking whole batches in turn
so that the batches come back in the inputs' order. An input is skipped, with why, when it is missing,
is not a regular file (a FIFO, a device or a link to one, a socket: never opened for reading), holds or
a zip member declares more than :data:`~resmg_zoo.data.archive.MAX_IMAGE_BYTES` (at most that many
bytes + 1 are read, and a member is inflated only up to its declared size + 1:
:func:`~resmg_zoo.data.archive.read_member`), a member is encrypted, its bytes are damaged (a bad CRC,
a truncated stream, more data than declared), or it does not decode, or its header declares more than
:data:`~resmg_zoo.data.archive.MAX_IMAGE_PIXELS` pixels (:func:`~resmg_zoo.data.archive.decode_image`).
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..core.files import UnreadableFileError, read_regular
from .archive import (
    DAMAGED_ZIP_ERRORS,
    IMAGE_SUFFIXES,
    MAX_IMAGE_BYTES,
    NOT_REGULAR,
    DatasetError,
    RegularZip,
    decode_image,
    open_regular,
    read_member,
)


@dataclass(frozen=True)
class ImageSource:
    """One image to read: a file, or a member of a zip (``member`` set)."""

    path: str
    member: Optional[str] = None

    @property
    def name(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

    def read(self, archives: dict[str, zipfile.ZipFile]) -> bytes:
        """The file's bytes, at most :data:`~resmg_zoo.data.archive.MAX_IMAGE_BYTES` of a regular file or
        of a member inflated no further than it declares (a zip stays open in ``archives`` for the next
        member)."""
        if self.member is None:
            return read_regular(self.path, MAX_IMAGE_BYTES, "image")
        if self.path not in archives:
            archives[self.path] = RegularZip(self.path)
        return read_member(archives[self.path], self.member, MAX_IMAGE_BYTES)


@dataclass(frozen=True)
class Skipped:
    """An input that is not classified, and why."""

    name: str
    reason: str


def list_inputs(inputs: list[str]) -> Iterator[Union[ImageSource, Skipped]]:
    """Every image the inputs name, in order (folders walked in sorted order, zip members sorted), or a
    :class:`Skipped` for what cannot be read; nothing is decoded or decompressed here, and only a
    regular file is opened."""
    for item in inputs:
        path = Path(item)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            yield Skipped(item, "no such file or folder")
            continue
        except OSError as err:
            yield Skipped(item, f"cannot be read ({err.strerror or err})")
            continue
        if stat.S_ISDIR(mode):
            yield from _walk(path)
        elif not stat.S_ISREG(mode):
            yield Skipped(item, NOT_REGULAR)
        elif _is_zip(path):
            yield from _zip_members(path)
        else:
            yield _sized(path)


def _is_zip(path: Path) -> bool:
    try:
        with open_regular(path) as handle:
            return zipfile.is_zipfile(handle)
    except DatasetError:
        return False  # not readable as a zip: read (and named) as an image


def _walk(folder: Path) -> Iterator[Union[ImageSource, Skipped]]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield _sized(Path(root) / name)


def _sized(path: Path) -> Union[ImageSource, Skipped]:
    """``path`` to read, or why not: not a regular file (its type read without opening it), or already
    larger than an image may be (the read itself stops at that limit, whatever the size said here)."""
    try:
        status = path.stat()
    except OSError as err:
        return Skipped(str(path), f"cannot be read ({err.strerror or err})")
    if not stat.S_ISREG(status.st_mode):
        return Skipped(str(path), NOT_REGULAR)
    size = status.st_size
    if size > MAX_IMAGE_BYTES:
        return Skipped(str(path), f"{size:,} bytes, more than the {MAX_IMAGE_BYTES:,} an image file may have")
    return ImageSource(str(path))


def _zip_members(path: Path) -> Iterator[Union[ImageSource, Skipped]]:
    try:
        with RegularZip(path) as archive:
            infos = sorted((i for i in archive.infolist() if i.filename.lower().endswith(IMAGE_SUFFIXES)), key=_name)
    except (zipfile.BadZipFile, OSError, DatasetError) as err:
        yield Skipped(str(path), f"not a readable zip archive ({err})")
        return
    for info in infos:
        name = f"{path}:{info.filename}"
        if info.flag_bits & 0x1:
            yield Skipped(name, "an encrypted zip member (no password is asked for)")
        elif info.file_size > MAX_IMAGE_BYTES:
            yield Skipped(
                name, f"declares {info.file_size:,} bytes decompressed, more than the {MAX_IMAGE_BYTES:,} allowed"
            )
        else:
            yield ImageSource(str(path), info.filename)


def _name(info: zipfile.ZipInfo) -> str:
    return info.filename


def load_image(source: ImageSource, mode: str, archives: dict[str, zipfile.ZipFile]) -> Any:
    """The decoded image of ``source`` converted to ``mode``; :class:`DatasetError` saying why not."""
    try:
        data = source.read(archives)
    except (*DAMAGED_ZIP_ERRORS, OSError, KeyError, UnreadableFileError, RuntimeError, NotImplementedError) as err:
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
        raise DatasetError(f"{source.name}: cannot be read ({type(err).__name__}: {err})") from None
    return decode_image(data, source.name).convert(mode)


Batch = tuple[list[str], Optional[torch.Tensor], list[Skipped]]


class ImageFileStream(IterableDataset):
    """Batches of ``(names, images, skipped)`` from :func:`list_inputs`: ``images`` is the stacked
    transformed tensors of the readable ones (``None`` if none was), ``skipped`` a list of :class:`Skipped`.
    With ``DataLoader(stream, batch_size=None, num_workers=W)`` worker ``w`` decodes batches
    ``w, w + W, …``, and the loader's round-robin returns them in the inputs' order."""

    def __init__(self, inputs: list[str], transform: Callable[[Any], torch.Tensor], mode: str, batch_size: int) -> None:
        self.inputs, self.transform, self.mode, self.batch_size = inputs, transform, mode, batch_size

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        index, count = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        batch: list[Union[ImageSource, Skipped]] = []
        number, archives = 0, {}
        try:
            for item in list_inputs(self.inputs):
                batch.append(item)
                if len(batch) == self.batch_size:
                    if number % count == index:
                        yield self._decode(batch, archives)
                    batch, number = [], number + 1
            if batch and number % count == index:
                yield self._decode(batch, archives)
        finally:
            for archive in archives.values():
                archive.close()

    def _decode(self, batch: list[Union[ImageSource, Skipped]], archives: dict[str, zipfile.ZipFile]) -> Batch:
        names, tensors, skipped = [], [], []
        for item in batch:
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            try:
                tensors.append(self.transform(load_image(item, self.mode, archives)))
                names.append(item.name)
            except DatasetError as err:
                skipped.append(Skipped(item.name, f"not a readable image ({str(err).removeprefix(item.name + ': ')})"))
        return names, (torch.stack(tensors) if tensors else None), skipped
