"""Shared fixtures: the registered model names and the repository root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
import torch
from realdata import real_data_dir, shared_hub_dir, subset_zip

import resmg_zoo
from resmg_zoo.tools.push_to_hub import main as publish
from resmg_zoo.train.cli import main as train

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one torch thread per worker and per process it starts
    os.environ["OMP_NUM_THREADS"] = "1"  # (a dataset's first decoding still uses a process per core, once)
    torch.set_num_threads(1)
MODEL_NAMES = resmg_zoo.list_models()

# The tiny real checkpoint that the weights and fine-tuning tests publish and load, under an org of
# its own so that it never shares a hub id with the project's published weights, and of a model.tag
# that the package pins no weights for (a mirror may add ids; a pinned model.tag always loads the
# package's own file, so ``create_model(f"{MODEL}.{TAG}", pretrained=True)`` finds the mirror's).
MODEL, TAG, ORG = "preact_resnet18_sharedB", "mnist", "resmg-test"
HUB_ID = f"{ORG}/{MODEL}.{TAG}"
WIDTHS = "8,16,16,32"
# --no-report: the report's own tests use the session's ``run`` and a fine-tuning run (it draws four pictures)
TINY_TRAIN = ["--model", "preact_resnet18_sharedA", "--model-kwargs", f"widths={WIDTHS}", "--quiet", "--no-report"]


def assert_drawn(picture_path: Path, min_size: tuple[int, int] = (300, 250)) -> None:
    """``picture_path`` is a PNG of at least ``min_size`` pixels with something drawn in it (not one flat colour)."""
    import numpy as np
    from PIL import Image

    with Image.open(picture_path) as picture:
        assert picture.format == "PNG", picture_path
        array = np.asarray(picture.convert("L"), dtype=np.float64)
        size = picture.size
    assert size[0] >= min_size[0] and size[1] >= min_size[1], f"{picture_path.name}: {size}"
    assert array.std() > 10 and len(np.unique(array)) > 20, f"{picture_path.name} looks blank"


def tiny_train_args(data: Path, out: Path, *extra: str, precision: Optional[str] = "fp32") -> list[str]:
    """``train`` arguments for the tiny model on ``data`` (batch 50, the paper's recipe) into ``out``, in
    fp32 (the same numbers on every machine, and as the tools re-evaluate them); ``precision=None``:
    no ``--precision``, so train's ``auto``."""
    chosen = ["--precision", precision] if precision else []
    return [
        *TINY_TRAIN,
        *chosen,
        "--dataset",
        str(data),
        "--recipe",
        "paper",
        "--batch-size",
        "50",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _allocator_left_alone() -> Iterator[None]:
    """The suite calls the tools' ``main()`` from Python: none of them may change the process's malloc
    (only the command line's entry points do)."""
    yield
    from resmg_zoo.core.hardware import retain_freed_memory

    assert retain_freed_memory.cache_info().currsize == 0, "a library call set the glibc allocator"


@pytest.fixture(autouse=True, scope="session")
def _dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One decoded-dataset cache per test session, never the user's; under ``-n`` the workers share it (the session's
    base folder; a cache file is written under a temporary name and renamed, so two writers are safe)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "dataset-cache"
        shared.mkdir(exist_ok=True)
        os.environ["RESMG_ZOO_CACHE"] = str(shared)
    else:
        os.environ["RESMG_ZOO_CACHE"] = str(tmp_path_factory.mktemp("dataset-cache"))


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    # named mnist.zip so the run's dataset (and so the tag) is mnist
    return subset_zip(real_data_dir() / "mnist.zip", folder / "mnist.zip", {"train": 100, "test": 30})


@pytest.fixture(scope="session")
def run(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    args = [
        "--model",
        MODEL,
        "--model-kwargs",
        f"widths={WIDTHS}",
        "--dataset",
        "mnist",
        "--data",
        str(digits.parent),
        "--recipe",
        "paper",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--precision",
        "fp32",
        "--quiet",
        "--out",
        str(out),
    ]
    assert train(args) == 0
    return out


@pytest.fixture(scope="session")
def mirror(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mirror")
    assert publish(["--run", str(run), "--mirror", str(folder), "--org", ORG]) == 0
    return folder


@pytest.fixture(scope="session")
def shared_hub() -> Path:
    """The project's published weights mirror (``../shared/hub``); read-only."""
    return shared_hub_dir()
