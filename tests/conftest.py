"""Shared fixtures: the registered model names and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import resmg_zoo

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_NAMES = resmg_zoo.list_models()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One decoded-dataset cache per test session, never the user's."""
    os.environ["RESMG_ZOO_CACHE"] = str(tmp_path_factory.mktemp("dataset-cache"))


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
