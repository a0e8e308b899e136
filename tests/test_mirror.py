"""``python -m resmg_zoo.weights.mirror import``: a mirror's folders verified, its entries merged, nothing
changed by a mirror that does not verify; and files a team can share (the usual modes)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import HUB_ID, MODEL, TAG

from resmg_zoo.core.atomic import current_umask
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.weights.manifest import MANIFEST_NAME, load_manifest
from resmg_zoo.weights.mirror import main as mirror_main


@pytest.fixture
def copy(mirror: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny test mirror."""
    target = tmp_path / "mirror"
    shutil.copytree(mirror, target)
    return target


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A manifest to import into, holding one entry of its own."""
    path = tmp_path / "manifest" / MANIFEST_NAME
    path.parent.mkdir()
    return path


def _import(mirror: Path, target: Path, *extra: str) -> int:
    return mirror_main(["import", str(mirror), "--manifest", str(target), *extra])


def test_import_merges_the_verified_entries(mirror: Path, target: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _import(mirror, target) == 0
    assert f"added: {HUB_ID}" in capsys.readouterr().out
    assert load_manifest(target, check_params=True) == load_manifest(mirror / MANIFEST_NAME)
    before = target.read_bytes()
    assert _import(mirror, target) == 0
    assert f"unchanged: {HUB_ID}" in capsys.readouterr().out and target.read_bytes() == before


def test_prune_drops_entries_the_mirror_does_not_host(mirror: Path, target: Path) -> None:
    (entry,) = load_manifest(mirror / MANIFEST_NAME)["entries"]
    elsewhere = dict(entry, hub_id=f"elsewhere/{MODEL}.{TAG}")
    target.write_text(json.dumps({"schema_version": 1, "entries": [elsewhere]}))
    assert _import(mirror, target) == 0
    assert {e["hub_id"] for e in load_manifest(target)["entries"]} == {HUB_ID, elsewhere["hub_id"]}
    assert _import(mirror, target, "--prune") == 0
    assert [e["hub_id"] for e in load_manifest(target)["entries"]] == [HUB_ID]


def _tamper(copy: Path) -> str:
    weights = copy / HUB_ID / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    return "model.safetensors: sha256"


def _truncate(copy: Path) -> str:
    weights = copy / HUB_ID / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return "bytes, the entry says"


def _drop_config(copy: Path) -> str:
    (copy / HUB_ID / "config.json").unlink()
    return "config.json: missing"


def _other_architecture(copy: Path) -> str:
    """The entry (and the folder's name) say resnet18_sharedA; the folder holds the pre-act model."""
    other = f"{HUB_ID.split('/')[0]}/resnet18_sharedA.{TAG}"
    (copy / HUB_ID).rename(copy / other)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["entries"][0].update(model="resnet18_sharedA", hub_id=other)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    return "config.json: architecture is 'preact_resnet18_sharedA', the entry says 'resnet18_sharedA'"


def _other_widths(copy: Path) -> str:
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["entries"][0]["model_args"]["widths"] = "8,8,8,8"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    return "config.json: model_args.widths is '8,16,16,32', the entry says '8,8,8,8'"


def _unlisted_folder(copy: Path) -> str:
    shutil.copytree(copy / HUB_ID, copy / "someone" / f"{MODEL}.{TAG}")
    return "a published folder that"


@pytest.mark.parametrize(
    "spoil",
    [_tamper, _truncate, _drop_config, _other_architecture, _other_widths, _unlisted_folder],
    ids=lambda f: f.__name__[1:],
)
def test_a_mirror_that_does_not_verify_changes_nothing(
    spoil, copy: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target.write_text(json.dumps({"schema_version": 1, "entries": []}))
    before = target.read_bytes()
    expected = spoil(copy)
    assert _import(copy, target) == 2
    err = capsys.readouterr().err
    assert expected in err and str(copy) in err and "is unchanged" in err, err
    assert target.read_bytes() == before


def test_not_a_mirror(tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _import(tmp_path, target) == 2
    assert "is not a weights mirror" in capsys.readouterr().err and not target.exists()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_published_run_and_cache_files_get_the_usual_modes(mirror: Path, run: Path) -> None:
    """0644/0755 under the usual umask 022: the mirror and run folders can be shared, unlike tempfile's 0600/0700."""
    umask = current_umask()
    folder = mirror / HUB_ID
    assert _mode(folder) == 0o777 & ~umask
    cache = [*Path(os.environ["RESMG_ZOO_CACHE"]).glob("*.safetensors")]  # the decoded datasets (run made one)
    assert cache
    files = [*folder.iterdir(), mirror / MANIFEST_NAME, *run.iterdir(), *cache]
    assert files and {f.name: _mode(f) for f in files} == {f.name: 0o666 & ~umask for f in files}
    assert file_sha256(folder / "model.safetensors")  # readable
