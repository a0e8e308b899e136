"""The package as a user installs it: a wheel built from this checkout, used from outside the checkout,
knows its published weights (its manifest travels inside it) and loads them sha256-verified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from resmg_zoo.weights.manifest import MANIFEST_NAME, checkout_manifest_path, load_manifest, repo_manifest_path


def test_the_top_level_manifest_is_the_packaged_one_byte_for_byte() -> None:
    assert repo_manifest_path() == REPO_ROOT / "resmg_zoo" / "weights" / MANIFEST_NAME
    assert checkout_manifest_path() == REPO_ROOT / MANIFEST_NAME
    assert (REPO_ROOT / MANIFEST_NAME).read_bytes() == repo_manifest_path().read_bytes(), (
        "weights_manifest.json differs from resmg_zoo/weights/weights_manifest.json: write manifests with "
        "resmg_zoo.weights.manifest.save_manifest (push_to_hub --record, resmg-mirror import), never by hand"
    )


WHEEL_USER = """
import json, sys, warnings
import timm, torch, resmg_zoo
from resmg_zoo.weights.manifest import checkout_root, repo_manifest_path
warnings.simplefilter("error")  # a load without a sha256 check would warn
model = timm.create_model("preact_resnet18_sharedA.mnist", pretrained=True).eval()
with torch.no_grad():
    logits = model(torch.zeros(1, 1, 28, 28))
print(json.dumps(dict(
    package=resmg_zoo.__file__, manifest=str(repo_manifest_path()), checkout=checkout_root(),
    pretrained=sorted(n for n in timm.list_pretrained() if n.split(".")[0] in resmg_zoo.list_models()),
    logits=logits.tolist(),
)))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout (``pip wheel --no-deps``, no build isolation: setuptools is installed)."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "resmg_zoo"  # a clean copy: no stale build/ of the checkout
    skip = shutil.ignore_patterns(".git", "build", "runs", "exports", "*.egg-info", "__pycache__", ".*cache")
    shutil.copytree(REPO_ROOT, source, ignore=skip)
    build = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)]
    done = subprocess.run([sys.executable, "-m", *build], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("resmg_zoo-*.whl")
    return path


def test_the_wheel_carries_the_manifest_and_the_commands(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        packaged = archive.read(f"resmg_zoo/weights/{MANIFEST_NAME}")
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert packaged == repo_manifest_path().read_bytes()
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    for command in ("resmg-train", "resmg-push", "resmg-mirror", "resmg-classify", "resmg-relabel"):
        assert command in entry_points


def test_an_installed_wheel_lists_and_loads_its_published_weights(
    wheel: Path, shared_hub: Path, tmp_path: Path
) -> None:
    """Unpacked outside the checkout and imported from another folder (as pip installs it), the
    package lists the published tags and loads ``preact_resnet18_sharedA.mnist`` from the mirror."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), RESMG_ZOO_HUB_DIR=str(shared_hub), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", WHEEL_USER], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["package"].startswith(str(site)) and report["manifest"].startswith(str(site))
    assert report["checkout"] is None  # an installed package: never writes its manifest
    published = {f"{e['model']}.{e['tag']}" for e in load_manifest(repo_manifest_path())["entries"]}
    assert set(report["pretrained"]) == published and "preact_resnet18_sharedA.mnist" in published
    assert len(report["logits"][0]) == 10


def test_an_installed_package_refuses_to_record_into_its_own_manifest(wheel: Path, run: Path, tmp_path: Path) -> None:
    """``push_to_hub --record`` from a wheel: exit 2 naming the way out, and nothing written anywhere."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    before = (site / "resmg_zoo" / "weights" / MANIFEST_NAME).read_bytes()
    mirror = tmp_path / "mirror"
    env = dict(os.environ, PYTHONPATH=str(site))
    args = ["-m", "resmg_zoo.tools.push_to_hub", "--run", str(run), "--mirror", str(mirror), "--record"]
    done = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "installed package" in done.stderr and "--manifest" in done.stderr
    assert not mirror.exists()
    assert (site / "resmg_zoo" / "weights" / MANIFEST_NAME).read_bytes() == before
