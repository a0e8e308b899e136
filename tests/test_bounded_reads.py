"""Every read of user-supplied image and dataset input bounded, none hanging: only regular files are read
(a FIFO, a device, a link to one or a socket is named and skipped by classify, refused by name in a
dataset), at most ``limit + 1`` bytes of a file, a zip member decompressed only up to its declared size,
a dataset's decoded size checked before it is allocated, and evaluate's ``--weights`` checked before a
dataset is decoded."""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from realdata import real_data_dir

from resmg_zoo.core.errors import UsageError
from resmg_zoo.data import image_files
from resmg_zoo.data.archive import DatasetError, Members, open_image
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.data.image_files import ImageFileStream, ImageSource, Skipped, list_inputs, load_image

LIE_DECLARED = 1_000  # what the lying member's headers say it holds
LIE_HOLDS = 100 << 20  # what it holds: 100 MB of zeros (about 100 KB deflated)
MEMORY_BOUND = 16 << 20  # the peak traced allocation a bounded read stays under (a full read: > LIE_HOLDS)
NOT_REGULAR = "not a regular file"


@pytest.fixture(scope="module")
def digit() -> bytes:
    """One real MNIST digit's PNG bytes."""
    with zipfile.ZipFile(real_data_dir() / "mnist.zip") as archive:
        return archive.read(next(n for n in sorted(archive.namelist()) if n.startswith("test/7/")))


def _unblocked(call: Callable[[], Any], fifo: Path | None = None, seconds: float = 20.0) -> Any:
    """``call()``'s value (or the error it raised, re-raised); fails the test if it has not returned within
    ``seconds``. A call stuck opening or reading ``fifo`` is released first (a writer opens and closes it),
    so a failing test ends instead of hanging the suite."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as err:  # handed back to the test's thread
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    if hung and fifo is not None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader sees end-of-file
        thread.join(seconds)
    assert not hung, f"still reading after {seconds} s: a read that blocks"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _specials(folder: Path, kinds: tuple[str, ...] = ("device", "fifo", "socket")) -> dict[str, Path]:
    """Of ``kinds``: a link to /dev/zero, a FIFO and (where the path fits) a socket, named like images."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {"device": folder / "x.png", "fifo": folder / "y.png"}
    found = {kind: path for kind, path in found.items() if kind in kinds}
    if "device" in kinds:
        found["device"].symlink_to("/dev/zero")
    if "fifo" in kinds:
        os.mkfifo(found["fifo"])
    if "socket" in kinds and len(str(folder / "z.png")) < 100:  # AF_UNIX paths are short
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(folder / "z.png"))
        found["socket"] = folder / "z.png"
    return found


def test_classify_skips_and_names_inputs_that_are_not_regular_files(digit: bytes, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    specials = _specials(folder)
    (folder / "good.png").write_bytes(digit)
    (tmp_path / "w.zip").symlink_to("/dev/zero")
    inputs = [str(folder), str(specials["device"]), str(specials["fifo"]), str(tmp_path / "w.zip")]
    listed = _unblocked(lambda: list(list_inputs(inputs)))
    assert [i.name for i in listed if isinstance(i, ImageSource)] == [str(folder / "good.png")]
    skipped = {i.name: i.reason for i in listed if isinstance(i, Skipped)}
    expected = [*map(str, specials.values()), str(specials["device"]), str(specials["fifo"]), str(tmp_path / "w.zip")]
    assert sorted(skipped) == sorted(set(expected)) and len(listed) == 1 + len(expected)
    assert all(NOT_REGULAR in why for why in skipped.values()), skipped

    stream = ImageFileStream(inputs, lambda image: torch.zeros(1), "L", batch_size=8)
    batches = _unblocked(lambda: list(stream))
    assert [n for names, _, _ in batches for n in names] == [str(folder / "good.png")]


def test_an_image_that_becomes_a_fifo_or_grows_after_listing_is_refused_without_hanging(
    digit: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "grows.png"
    path.write_bytes(digit)
    (source,) = list_inputs([str(path)])
    monkeypatch.setattr(image_files, "MAX_IMAGE_BYTES", len(digit) + 10)
    path.write_bytes(digit + b"\0" * 100)  # st_size was fine when listed; what it holds now is not
    with pytest.raises(DatasetError, match=f"{len(digit) + 10:,} bytes"):
        load_image(source, "L", {})
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(UsageError, match=NOT_REGULAR):
        _unblocked(lambda: load_image(source, "L", {}), fifo=path)


def _patch_declared_size(path: Path, member: str, size: int) -> None:
    """Make ``member``'s local header and central directory record declare ``size`` bytes decompressed."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, size)
    offset = struct.unpack_from("<I", data, data.rfind(b"PK\x05\x06") + 16)[0]  # the central directory
    while data[offset : offset + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        if data[offset + 46 : offset + 46 + name_length] == member.encode():
            struct.pack_into("<I", data, offset + 24, size)
        offset += 46 + name_length + extra_length + comment_length
    path.write_bytes(bytes(data))


def _lying_zip(path: Path, member: str, digits: Path | None = None) -> Path:
    """A zip whose ``member`` declares :data:`LIE_DECLARED` bytes but inflates to :data:`LIE_HOLDS`; with
    ``digits``, beside every member of that real dataset zip."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if digits is not None:
            with zipfile.ZipFile(digits) as source:
                for name in source.namelist():
                    archive.writestr(name, source.read(name))
        with archive.open(member, "w") as stream:
            zeros = bytes(1 << 20)
            for _ in range(LIE_HOLDS >> 20):
                stream.write(zeros)
    _patch_declared_size(path, member, LIE_DECLARED)
    return path


def _peak(call: Callable[[], Any]) -> tuple[int, float, BaseException | None]:
    """The peak traced allocation (bytes), the seconds ``call`` took and what it raised."""
    tracemalloc.start()
    start, raised = time.perf_counter(), None
    try:
        call()
    except BaseException as err:  # returned to the test
        raised = err
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, seconds, raised


def test_classify_decompresses_a_lying_zip_member_only_to_its_declared_size(tmp_path: Path) -> None:
    archive = _lying_zip(tmp_path / "lie.zip", "lie.png")
    (source,) = list_inputs([str(archive)])
    assert isinstance(source, ImageSource) and source.member == "lie.png"
    peak, seconds, raised = _peak(lambda: load_image(source, "L", {}))
    assert isinstance(raised, DatasetError) and f"{archive}:lie.png" in str(raised), raised
    assert peak < MEMORY_BOUND, f"{peak:,} bytes allocated to read a member declaring {LIE_DECLARED:,}"
    assert seconds < 5


@pytest.mark.parametrize("name", ["lying.zip", "mnist.zip"])  # first image read for its format; decoding
def test_a_dataset_decompresses_a_lying_zip_member_only_to_its_declared_size(
    name: str, digits: Path, tmp_path: Path
) -> None:
    archive = _lying_zip(tmp_path / name, "train/0/0.png", digits)
    peak, _, raised = _peak(lambda: load_dataset(str(archive)))
    assert isinstance(raised, DatasetError) and "train/0/0.png" in str(raised), raised
    assert peak < MEMORY_BOUND, f"{peak:,} bytes allocated to read a member declaring {LIE_DECLARED:,}"


@pytest.fixture
def tree(digits: Path, tmp_path: Path) -> Path:
    """The real digits as an ImageFolder directory."""
    with zipfile.ZipFile(digits) as archive:
        archive.extractall(tmp_path / "tree")
    return tmp_path / "tree"


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_an_image_folder_directory_with_a_special_file_is_refused_by_name(kind: str, tree: Path) -> None:
    special = _specials(tree / "train" / "3", (kind,))[kind]
    with pytest.raises(DatasetError, match=f"{re.escape(str(special))}.*{re.escape(NOT_REGULAR)}"):
        Members(tree)
    members = Members.__new__(Members)  # as a decoding worker sees it: listed before the file changed
    members.root, members.is_zip = tree, False
    with pytest.raises(DatasetError, match=NOT_REGULAR):
        _unblocked(lambda: open_image(members, f"train/3/{special.name}"), fifo=special)


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_dataset_path_that_is_not_a_regular_file_or_folder_is_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "data.zip"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(DatasetError, match=f"{re.escape(str(path))}.*{re.escape(NOT_REGULAR)}"):
        _unblocked(lambda: load_dataset(str(path)), fifo=path if kind == "fifo" else None)


def _wide_digit_zip(path: Path, digit: bytes, side: int, copies: int) -> Path:
    """``copies`` per class and split of a real digit enlarged to ``side``×``side`` (a few KB as a PNG)."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(digit)).resize((side, side), Image.Resampling.NEAREST).save(buffer, format="PNG")
    with zipfile.ZipFile(path, "w") as archive:
        for split in ("train", "test"):
            for label in ("a", "b"):
                for i in range(copies):
                    archive.writestr(f"{split}/{label}/{i}.png", buffer.getvalue())
    return path


def test_a_dataset_too_large_once_decoded_is_refused_before_anything_is_allocated(
    digit: bytes, digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _wide_digit_zip(tmp_path / "wide.zip", digit, side=2000, copies=3)  # 12 × 4,000,000 bytes decoded
    assert archive.stat().st_size < 1 << 20
    monkeypatch.setenv("RESMG_ZOO_MAX_DECODED_BYTES", "10000000")
    peak, _, raised = _peak(lambda: load_dataset(str(archive)))
    assert isinstance(raised, DatasetError) and isinstance(raised, UsageError), raised
    message = str(raised)
    assert "48,000,000 bytes" in message and "10,000,000" in message and "RESMG_ZOO_MAX_DECODED_BYTES" in message
    assert peak < MEMORY_BOUND, f"{peak:,} bytes allocated before refusing"
    # the size decoded to is the one asked for: 1,300 digits at 128×128 take 21,299,200 bytes
    with pytest.raises(DatasetError, match="21,299,200 bytes"):
        load_dataset(str(digits), image_size=128)
    monkeypatch.setenv("RESMG_ZOO_MAX_DECODED_BYTES", "lots")
    with pytest.raises(DatasetError, match="RESMG_ZOO_MAX_DECODED_BYTES"):
        load_dataset(str(archive))


def test_evaluate_checks_the_weights_file_before_decoding_a_dataset(
    digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("decoded a dataset before checking --weights")

    from resmg_zoo.tools.evaluate import main as evaluate

    monkeypatch.setattr("resmg_zoo.tools.evaluate.load_dataset", no_decoding)
    for weights in (tmp_path / "missing.safetensors", tmp_path):
        code = evaluate(["--weights", str(weights), "--model", "preact_resnet18_sharedA", "--dataset", str(digits)])
        assert code == 2 and f"weights file {weights} " in capsys.readouterr().err
