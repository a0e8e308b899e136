"""The published weights' claims, re-checked on the files the project's mirror hosts, as torchvision
re-checks its weights' meta: every entry of ``weights_manifest.json`` is in the mirror, loads through
timm and torch.hub, has its parameter count and reaches its top-1 on the real test set.

The mirror is ``$RESMG_ZOO_HUB_DIR`` (``.ci/run`` sets it to ``../shared/hub``). An entry the mirror
does not host is a failure, not a skip: the manifest must list exactly what is hosted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import REPO_ROOT

import resmg_zoo
from resmg_zoo.core.counting import count_parameters
from resmg_zoo.core.hardware import native_bf16
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.data.loader import Materializer
from resmg_zoo.train.distributed import DistEnv
from resmg_zoo.train.evaluation import evaluate_split as evaluate
from resmg_zoo.weights.manifest import load_manifest, repo_manifest_path

ENTRIES = load_manifest(repo_manifest_path())["entries"]
# The test split has 10,000 images: 0.05 points are 5 images.
TOP1_TOLERANCE = 0.05


@pytest.fixture(autouse=True)
def _use_shared_hub(shared_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))


def _name(entry: dict) -> str:
    return f"{entry['model']}.{entry['tag']}"


def test_the_manifest_is_not_empty() -> None:
    assert ENTRIES, "weights_manifest.json lists no published weights"


def test_timm_lists_exactly_the_published_weights() -> None:
    ours = set(resmg_zoo.list_models())
    listed = {n for n in timm.list_pretrained() if n.split(".")[0] in ours}
    assert listed == {_name(e) for e in ENTRIES}
    assert {n for n in timm.list_models(pretrained=True) if n.split(".")[0] in ours} == listed


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_every_entry_is_hosted_in_the_mirror(entry: dict, shared_hub: Path) -> None:
    weights = shared_hub / entry["hub_id"] / entry["file"]
    assert weights.is_file(), f"{entry['hub_id']} is in the manifest but {weights} does not exist"
    assert weights.stat().st_size == entry["bytes"] and file_sha256(weights) == entry["sha256"]


def _precision(entry: dict) -> str:
    """The run's precision where this machine has it in hardware; fp32 where it would emulate bf16
    (10× slower, and the recorded figures agree within 0.01 points in fp32: see the README)."""
    recorded = entry["recipe"]["precision"]
    return recorded if recorded == "fp32" or native_bf16() else "fp32"


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_published_claims_hold(entry: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """Loaded via timm and via torch.hub (source="local"), the same weights; the parameter count
    recomputed; the top-1 on the real test split within 0.05 points of the manifest's."""
    model = timm.create_model(_name(entry), pretrained=True)
    hub_model = torch.hub.load(str(REPO_ROOT), entry["model"], source="local", pretrained=True, dataset=entry["tag"])
    hub_state, state = hub_model.state_dict(), model.state_dict()
    assert hub_state.keys() == state.keys() and all(torch.equal(hub_state[k], state[k]) for k in state)
    assert count_parameters(model) == count_parameters(hub_model) == entry["params"]

    dataset = load_dataset(entry["dataset"])  # the real archive of $RESMG_ZOO_DATA
    precision = _precision(entry)
    model = model.to(memory_format=torch.channels_last)
    data = Materializer(dataset.split("test"), dataset.mean, dataset.std, channels_last=True)
    result = evaluate(model, data, 500, precision, DistEnv())
    with capsys.disabled():
        print(f"\n{entry['hub_id']}: top-1 {result['top1']:.2f} ({precision}) vs {entry['top1']:.2f} published")
    assert result["count"] == len(dataset.split("test"))
    assert abs(result["top1"] - entry["top1"]) <= TOP1_TOLERANCE, (result, entry["top1"])


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_timm_generic_pretrained_checks(entry: dict) -> None:
    """timm's ``test_model_load_pretrained`` and ``test_model_features_pretrained`` on every listed tag."""
    name = _name(entry)
    five = timm.create_model(name, pretrained=True, in_chans=1, num_classes=5).eval()
    pooled = timm.create_model(name, pretrained=True, in_chans=1, num_classes=0).eval()
    x = torch.randn(1, 1, *five.pretrained_cfg["input_size"][1:])
    assert five(x).shape == (1, 5) and pooled(x).shape == (1, pooled.num_features)
    features = timm.create_model(name, pretrained=True, features_only=True)
    info = features.feature_info.channels()
    x = torch.randn(1, *features.pretrained_cfg["input_size"])
    assert [f.shape[1] for f in features(x)] == info


def test_the_readmes_pretrained_examples_run_verbatim(shared_hub: Path) -> None:
    """The README says its ``pretrained=True`` examples run as written with RESMG_ZOO_HUB_DIR=../shared/hub."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Pretrained weights") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    assert code.count("pretrained=True") >= 5
    code = code.replace("../shared/hub", str(shared_hub))  # the mirror wherever this machine has it
    env = dict(os.environ, RESMG_ZOO_HUB_DIR=str(shared_hub))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
