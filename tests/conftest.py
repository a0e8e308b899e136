"""Shared fixtures: the registered model names and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import resmg_zoo

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_NAMES = resmg_zoo.list_models()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
