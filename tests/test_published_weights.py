"""The published weights' claims, re-checked on the files the project's mirror hosts, as torchvision
re-checks its weights' meta: every entry of ``weights_manifest.json`` is in the mirror, loads through
timm and torch.hub, has its parameter count, and classifies the real test images it did when it was
imported.

The import (``resmg-mirror import --evaluate``) measured each entry on the full real test split (its
top-1 within 0.05 points of the entry's) and recorded the exact number of correct images on a fixed
stratified subset (100 per class); here that count is re-measured, through our loader and through
timm's own data pipeline, in seconds rather than minutes. The mirror is ``$RESMG_ZOO_HUB_DIR``
(``.ci/run`` sets it to ``../shared/hub``). An entry the mirror does not host is a failure, not a skip.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import timm
import torch
from conftest import REPO_ROOT
from PIL import Image
from realdata import real_data_dir
from timm.data import create_transform, resolve_model_data_config

import resmg_zoo
from resmg_zoo.core.counting import count_parameters
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.core.sources import model_source
from resmg_zoo.core.tags import TAGS
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.inference.int8 import count_quantized_convs
from resmg_zoo.inference.int8_source import open_int8
from resmg_zoo.tools.claims import COUNT_TOLERANCE, PER_CLASS, TOP1_TOLERANCE, count_correct, stratified_subset
from resmg_zoo.weights.manifest import load_manifest, packaged_int8_record, repo_manifest_path

ENTRIES = load_manifest(repo_manifest_path())["entries"]


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


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_every_entry_records_its_import_check(entry: dict) -> None:
    check = entry.get("check")
    assert check, f"{entry['hub_id']} has no check: import it with `resmg-mirror import MIRROR --evaluate`"
    assert (check["split"], check["per_class"], check["precision"]) == ("test", PER_CLASS, "fp32")
    assert check["full_images"] == TAGS[entry["tag"]].test_images
    assert abs(check["full_top1"] - entry["top1"]) <= TOP1_TOLERANCE


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_published_claims_hold(entry: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """Loaded via timm and via torch.hub (source="local"), the same weights; the parameter count
    recomputed; the recorded count of correct test images re-measured (fp32)."""
    model = timm.create_model(_name(entry), pretrained=True)
    hub_model = torch.hub.load(str(REPO_ROOT), entry["model"], source="local", pretrained=True, dataset=entry["tag"])
    hub_state, state = hub_model.state_dict(), model.state_dict()
    assert hub_state.keys() == state.keys() and all(torch.equal(hub_state[k], state[k]) for k in state)
    assert count_parameters(model) == count_parameters(hub_model) == entry["params"]

    dataset = load_dataset(entry["dataset"])  # the real archive of $RESMG_ZOO_DATA
    subset = stratified_subset(dataset.split("test"))
    result = count_correct(model.to(memory_format=torch.channels_last).eval(), dataset, subset)
    with capsys.disabled():
        print(
            f"\n{entry['hub_id']}: {result['correct']}/{result['images']} correct, {entry['check']['correct']} recorded"
        )
    assert result["images"] == entry["check"]["images"]
    assert abs(result["correct"] - entry["check"]["correct"]) <= COUNT_TOLERANCE


INT8_ENTRIES = [e for e in ENTRIES if "int8" in e]


@pytest.mark.parametrize("entry", INT8_ENTRIES, ids=_name)
def test_published_int8_claims_hold(entry: dict, shared_hub: Path) -> None:
    """The published int8 record, rebuilt with ``--int8``'s own code (no calibration data): the package ships it
    with the pinned sha256 (and a mirror that hosts a copy holds the same bytes), every convolution is int8, and
    the recorded count of correct images on the stratified subset is re-measured."""
    packaged = packaged_int8_record(entry["model"], entry["tag"])
    assert file_sha256(packaged) == entry["int8"]["sha256"] and packaged.stat().st_size == entry["int8"]["bytes"]
    hosted = shared_hub / entry["hub_id"] / "int8.json"
    if hosted.exists():
        assert file_sha256(hosted) == entry["int8"]["sha256"], f"{hosted} is not the record the package pins"
    opened = open_int8(model_source(_name(entry)))
    assert opened.record_sha256 == entry["int8"]["sha256"]
    assert count_quantized_convs(opened.program.graph).quantized == entry["int8"]["quantized_convs"]
    dataset = load_dataset(entry["dataset"])
    result = count_correct(opened.model, dataset, stratified_subset(dataset.split("test")))
    assert result["images"] == entry["int8"]["check"]["images"]
    assert abs(result["correct"] - entry["int8"]["check"]["correct"]) <= COUNT_TOLERANCE


def _report_agrees_with_itself(report: dict, pin: dict, test_images: int) -> None:
    """A published ``report.json`` against its pin, by recomputation: the confusion matrix holds every test image
    (its rows the per-class counts), its diagonal over the total is the pinned top-1, and the ECE summed again
    from the report's own calibration bins is the pinned ECE."""
    confusion = report["confusion"]
    assert sum(map(sum, confusion)) == report["images"] == pin["images"] == test_images
    assert [r["images"] for r in report["per_class"]] == [sum(row) for row in confusion]
    assert [r["correct"] for r in report["per_class"]] == [confusion[i][i] for i in range(len(confusion))]
    correct = sum(confusion[i][i] for i in range(len(confusion)))
    assert 100 * correct / test_images == pytest.approx(pin["top1"], abs=1e-4)
    bins = report["calibration_bins"]
    assert sum(b["count"] for b in bins) == test_images and len(bins) == pin["ece_bins"]
    ece = sum(b["count"] / test_images * abs(b["accuracy"] - b["confidence"]) for b in bins)
    assert ece == pytest.approx(pin["ece"], abs=1e-6) and 0 < pin["ece"] < 0.5


def test_the_hosted_evaluation_reports_hold(shared_hub: Path) -> None:
    """The package pins no report the mirror does not host (an import takes a report exactly as the mirror hosts
    it); each report the mirror hosts (``resmg-mirror refresh --report``, pinned by the mirror's entry) is the
    pinned bytes, recomputes to its pin, and has the import's full-split fp32 top-1 (two separate measurements,
    within 0.05 points). Until the publisher refreshes the mirror, only the first holds anything to check."""
    hosted = {e["hub_id"]: e for e in load_manifest(shared_hub / "weights_manifest.json")["entries"] if "report" in e}
    for entry in ENTRIES:
        if "report" in entry:
            assert entry["hub_id"] in hosted, f"the package pins a report of {entry['hub_id']} the mirror does not host"
            assert entry["report"]["files"] == hosted[entry["hub_id"]]["report"]["files"]
    ours = {e["hub_id"]: e for e in ENTRIES}
    for hub_id, entry in hosted.items():
        folder, pin = shared_hub / hub_id, entry["report"]
        assert all(file_sha256(folder / name) == digest for name, digest in pin["files"].items()), hub_id
        report = json.loads((folder / "report.json").read_text())
        _report_agrees_with_itself(report, pin, TAGS[entry["tag"]].test_images)
        check = (ours.get(hub_id) or entry).get("check") or {}
        assert abs(pin["top1"] - check.get("full_top1", entry["top1"])) <= TOP1_TOLERANCE and pin["precision"] == "fp32"


@pytest.mark.parametrize("entry", ENTRIES, ids=_name)
def test_timms_data_pipeline_gives_the_published_accuracy(entry: dict) -> None:
    """The image files themselves, through ``resolve_model_data_config`` + ``create_transform`` as a
    timm user feeds them: the model's ``pretrained_cfg`` (size, crop, interpolation, mean/std) makes
    that pipeline classify the subset as the training pipeline does."""
    model = timm.create_model(_name(entry), pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model))
    mode = "L" if model.pretrained_cfg["input_size"][0] == 1 else "RGB"
    names = list(model.pretrained_cfg["label_names"])
    taken: dict[str, int] = {}
    with zipfile.ZipFile(real_data_dir() / f"{entry['dataset']}.zip") as archive:
        files = []
        for name in sorted(n for n in archive.namelist() if n.startswith("test/")):
            label = name.split("/")[1]
            if taken.get(label, 0) < PER_CLASS:
                taken[label] = taken.get(label, 0) + 1
                files.append(name)
        correct = 0
        for i in range(0, len(files), 250):
            batch = files[i : i + 250]
            x = torch.stack([transform(Image.open(io.BytesIO(archive.read(n))).convert(mode)) for n in batch])
            with torch.no_grad():
                predicted = model(x).argmax(1).tolist()
            correct += sum(names[p] == n.split("/")[1] for p, n in zip(predicted, batch))
    assert len(files) == entry["check"]["images"]
    assert abs(correct - entry["check"]["correct"]) <= COUNT_TOLERANCE, (correct, entry["check"])


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


def test_the_readmes_use_example_runs_verbatim_and_prints_what_it_says(shared_hub: Path) -> None:
    """The README's first example: the used-by line, real CIFAR-10 test images through timm's own data
    pipeline. ``torch.hub.load("<owner>/resmg_zoo", ...)`` fetches this checkout (as in test_hub.py) and
    ``../shared/data`` is wherever this machine has the data; each printed line is the one the README shows."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use\n") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    assert 'torch.hub.load("<owner>/resmg_zoo", "preact_resnet18_sharedA", pretrained=True)' in code
    shown = [line.split("  # ")[-1] for line in code.splitlines() if line.startswith("print(")]
    fetch = f"import torch.hub\ntorch.hub._get_cache_or_reload = lambda *args, **kwargs: {str(REPO_ROOT)!r}\n"
    program = fetch + code.replace("../shared/data", str(real_data_dir()))
    env = dict(os.environ, RESMG_ZOO_HUB_DIR=str(shared_hub))
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == shown
