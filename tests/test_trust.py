"""Weights a stranger can trust: every load verified whatever the files beside the weights say, a pinned
weight that no mirror can replace, checkpoint pointers that stay inside their folder, the bytes loaded
being the bytes hashed, and errors whose kind says what happened (integrity, offline, busy, usage)."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import timm
import timm.models._helpers
import torch
from conftest import HUB_ID, MODEL, ORG, REPO_ROOT, TAG, WIDTHS
from safetensors.torch import load_file, save_file

import resmg_zoo
from resmg_zoo import (
    IntegrityError,
    PretrainedWeightsUnavailable,
    ResmgError,
    UsageError,
    WeightsIntegrityError,
)
from resmg_zoo.core.atomic import LockedError, exclusive_lock
from resmg_zoo.core.cli import EXIT_BUSY, EXIT_INTEGRITY, EXIT_UNAVAILABLE, EXIT_USAGE
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.core.tags import TAGS
from resmg_zoo.tools.classify import main as classify
from resmg_zoo.tools.evaluate import main as evaluate
from resmg_zoo.train.checkpoint import CheckpointIntegrityError, read_pointer
from resmg_zoo.train.cli import main as train
from resmg_zoo.weights.manifest import MANIFEST_NAME, repo_manifest_path

PINNED = "preact_resnet18_sharedA.mnist"  # a weight the package's manifest pins (resmg-zoo/...)


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def _config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _reference(run: Path) -> torch.nn.Module:
    from resmg_zoo.train.checkpoint import checkpoint_weights_path

    model = timm.create_model(MODEL, widths=WIDTHS, num_classes=10, in_chans=1)
    model.load_state_dict(load_file(str(checkpoint_weights_path(run))))
    return model.eval()


# ----------------------------------------------------------------- every load verified


def test_a_listed_id_whose_config_names_another_model_is_refused(mirror: Path, tmp_path: Path, monkeypatch) -> None:
    """The folder's config.json names a plain timm model (which would take the file unchecked) or another
    zoo model: the package's door refuses both, naming the manifest's architecture."""
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    folder = _copy(mirror / HUB_ID, tmp_path / "copy")
    for other in ("resnet18", "preact_resnet18_sharedA"):
        _config(folder, architecture=other)
        with pytest.raises(WeightsIntegrityError, match=f"names the architecture '{other}' for {HUB_ID}.*'{MODEL}'"):
            resmg_zoo.create_model(f"local-dir:{folder}", pretrained=True)
    # timm's own door picks the zoo model the config names: the builder refuses it too
    with pytest.raises(WeightsIntegrityError, match=f"lists '{MODEL}' for it"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)


def test_a_fetched_config_does_not_override_the_manifest(mirror: Path, run: Path, tmp_path: Path, monkeypatch) -> None:
    """timm passes a fetched config.json's model_args and pretrained_cfg to the builder; for a listed id
    the manifest's architecture and the package's cfg of the tag are taken instead."""
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    folder = _copy(mirror / HUB_ID, tmp_path / "copy")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["widths"] = "8,8,8,8"
    config["pretrained_cfg"]["mean"] = [0.9]
    (folder / "config.json").write_text(json.dumps(config))
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # timm's real local-dir path
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), _reference(run)(x), rtol=0, atol=0)
    assert tuple(model.pretrained_cfg["mean"]) == TAGS["mnist"].mean


def test_hf_hub_names_of_listed_ids_are_built_from_the_manifest_without_fetching_a_config(
    mirror: Path, run: Path, tmp_path: Path, monkeypatch
) -> None:
    """Offline, with an empty Hugging Face cache: the door never asks the Hub for config.json, and the
    weights come verified from the mirror."""
    import huggingface_hub.constants

    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    model = resmg_zoo.create_model(f"hf-hub:{HUB_ID}", pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), _reference(run)(x), rtol=0, atol=0)


@pytest.mark.parametrize("revision", ["../../x", "main/../../etc", "a b", "x.lock", "-rf"])
def test_a_revision_is_checked_before_it_is_used(revision: str, capsys) -> None:
    name = f"hf-hub:resmg-zoo/{PINNED}@{revision}"
    with pytest.raises(UsageError, match="neither a commit id"):
        resmg_zoo.create_model(name, pretrained=True)
    assert classify(["--model", name, "x.jpg"]) == EXIT_USAGE
    assert "neither a commit id" in capsys.readouterr().err


def _modified(weights: Path, target: Path) -> str:
    """A valid safetensors file with other values than ``weights``; returns its sha256."""
    state = load_file(str(weights))
    state["fc.bias"] = state["fc.bias"] + 1.0
    save_file(state, str(target))
    return file_sha256(target)


def test_a_mirror_cannot_replace_a_pinned_weight(shared_hub: Path, tmp_path: Path, monkeypatch) -> None:
    """A mirror whose own manifest lists other bytes for a pinned id, or another id for a pinned
    ``model.tag``: the package's sha256 decides, and the mirror's file is never loaded."""
    import huggingface_hub.constants

    entry = next(
        e for e in json.loads(repo_manifest_path().read_text())["entries"] if e["hub_id"] == f"resmg-zoo/{PINNED}"
    )
    mirror = tmp_path / "mirror"
    folder = _copy(shared_hub / entry["hub_id"], mirror / entry["hub_id"])
    sha256 = _modified(folder / "model.safetensors", folder / "model.safetensors")
    (mirror / MANIFEST_NAME).write_text(json.dumps({"schema_version": 1, "entries": [dict(entry, sha256=sha256)]}))
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    with pytest.raises(WeightsIntegrityError, match="a mirror cannot replace a pinned weight"):
        timm.create_model(PINNED, pretrained=True)
    # another id for the same model.tag, hosted with its own valid entry: the pinned id is still the one
    other = "someone/" + PINNED
    (mirror / "someone").mkdir()
    (mirror / entry["hub_id"]).rename(mirror / other)
    _config(
        mirror / other,
        pretrained_cfg=dict(
            json.loads((mirror / other / "config.json").read_text())["pretrained_cfg"], hf_hub_id=other
        ),
    )
    (mirror / MANIFEST_NAME).write_text(
        json.dumps({"schema_version": 1, "entries": [dict(entry, sha256=sha256, hub_id=other)]})
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedWeightsUnavailable) as caught:  # the pinned id's file, from the Hub: offline
        timm.create_model(PINNED, pretrained=True, cache_dir=str(tmp_path / "empty"))
    assert f"resmg-zoo/{PINNED}" in str(caught.value) and isinstance(caught.value, OSError)
    assert resmg_zoo.create_model(f"hf-hub:{other}", pretrained=True) is not None  # an added id loads as itself


def test_loading_reads_the_weights_once_and_loads_those_bytes(mirror: Path, monkeypatch) -> None:
    """The file is opened once (hashed and parsed from one read); no path-based loader runs after the check."""
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    weights = (mirror / HUB_ID / "model.safetensors").resolve()
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if Path(str(file)).resolve() == weights:
            opened.append(file)
        return real_open(file, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("a path-based loader read the weights after their check")

    real_os_open = os.open

    def counting_os_open(file, *args, **kwargs):  # the bounded read (core.files.read_regular)
        if Path(str(file)).resolve() == weights:
            opened.append(file)
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # what pathlib's read_bytes calls
    monkeypatch.setattr(os, "open", counting_os_open)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(timm.models._helpers, "load_state_dict", refuse)
    timm.create_model(f"{MODEL}.{TAG}", pretrained=True)
    assert len(opened) == 1


# ----------------------------------------------------------------- run folders and published folders


def _pointer(run: Path, **changes: object) -> None:
    pointer = read_pointer(run)
    pointer.update(changes)
    (run / "checkpoint.json").write_text(json.dumps(pointer))


def test_a_checkpoint_pointer_names_a_file_inside_its_run_folder(run: Path, tmp_path: Path, capsys) -> None:
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(next(run.glob("ckpt-*.safetensors")), outside)
    cases = {
        "absolute": dict(weights=str(outside)),
        "parent": dict(weights="../outside.safetensors"),
        "hidden": dict(weights=".ckpt-e0002-s000000.safetensors"),
    }
    for name, change in cases.items():
        copy = _copy(run, tmp_path / name)
        _pointer(copy, **change)
        with pytest.raises(CheckpointIntegrityError, match="not a checkpoint file of this folder"):
            resmg_zoo.train.run.Run.open(copy).load_model()
        assert evaluate(["--run", str(copy)]) == EXIT_INTEGRITY
        assert "not a checkpoint file of this folder" in capsys.readouterr().err
    linked = _copy(run, tmp_path / "linked")
    weights = linked / read_pointer(linked)["weights"]
    weights.unlink()
    weights.symlink_to(outside)
    assert evaluate(["--run", str(linked)]) == EXIT_INTEGRITY
    assert "is a symbolic link" in capsys.readouterr().err
    assert outside.read_bytes() == next(run.glob("ckpt-*.safetensors")).read_bytes()  # untouched


def test_a_tampered_checkpoint_is_an_integrity_error(run: Path, tmp_path: Path, capsys) -> None:
    copy = _copy(run, tmp_path / "run")
    weights = copy / read_pointer(copy)["weights"]
    _modified(weights, weights)
    assert evaluate(["--run", str(copy)]) == EXIT_INTEGRITY
    err = capsys.readouterr().err
    assert "sha256" in err and "corrupt" in err and "Traceback" not in err


def test_init_from_a_copy_of_a_published_folder_is_verified(
    mirror: Path, digits: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    folder = _copy(mirror / HUB_ID, tmp_path / "published")
    _modified(folder / "model.safetensors", folder / "model.safetensors")
    args = ["--model", MODEL, "--dataset", str(digits), "--epochs", "0.05", "--batch-size", "50", "--quiet"]
    assert train([*args, "--init-from", str(folder), "--out", str(tmp_path / "run")]) == EXIT_INTEGRITY
    assert f"sha256 mismatch for {MODEL}.{TAG}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.json").exists()


# ----------------------------------------------------------------- errors that say what happened


def test_error_kinds_are_catchable_as_what_happened(mirror: Path, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    assert issubclass(IntegrityError, ResmgError) and not issubclass(IntegrityError, ValueError)
    assert issubclass(PretrainedWeightsUnavailable, OSError) and not issubclass(
        PretrainedWeightsUnavailable, ValueError
    )
    assert issubclass(LockedError, OSError) and issubclass(UsageError, ValueError)
    monkeypatch.delenv("RESMG_ZOO_HUB_DIR", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="not in the local Hugging Face cache"):  # offline, as a user catches it
        timm.create_model(PINNED, pretrained=True, cache_dir=str(tmp_path / "empty"))
    with exclusive_lock(tmp_path / "lock", "a test"), pytest.raises(OSError, match="holds the lock"):
        with exclusive_lock(tmp_path / "lock", "a test"):
            pass


def test_the_command_line_exits_with_the_kind_of_error(
    mirror: Path, run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Offline: 5; another publisher holds the lock: 6; a tampered file: 4 (tests above); a flag: 2."""
    import huggingface_hub.constants

    from resmg_zoo.tools.push_to_hub import main as push
    from resmg_zoo.weights.publish import publishing

    monkeypatch.delenv("RESMG_ZOO_HUB_DIR", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = ["--model", PINNED, "--cache-dir", str(tmp_path / "empty"), str(REPO_ROOT / "README.md")]
    assert classify(args) == EXIT_UNAVAILABLE
    assert "not in the local Hugging Face cache" in capsys.readouterr().err
    copy = _copy(mirror, tmp_path / "mirror")
    with publishing(HUB_ID, copy / ORG):
        assert push(["--run", str(run), "--mirror", str(copy), "--org", ORG, "--replace"]) == EXIT_BUSY
    assert "another process is writing the published folder" in capsys.readouterr().err
    assert classify(["--model", PINNED, "--topk", "0", "x.png"]) == EXIT_USAGE


def test_a_bug_while_verifying_a_folder_is_not_turned_into_a_message(mirror: Path, monkeypatch) -> None:
    """verify_folder checks model_args itself; a TypeError from inside a constructor is a bug and propagates."""
    from resmg_zoo.models.resnet import ResMgResNet
    from resmg_zoo.weights.manifest import load_manifest
    from resmg_zoo.weights.publish import verify_folder

    (entry,) = load_manifest(mirror / MANIFEST_NAME)["entries"]
    problems = verify_folder(mirror / HUB_ID, dict(entry, model_args=dict(entry["model_args"], widht="8")))
    assert any("are not arguments of the zoo's models" in p for p in problems)

    def broken(self, *args, **kwargs):
        raise TypeError("an injected bug")

    monkeypatch.setattr(ResMgResNet, "__init__", broken)
    with pytest.raises(TypeError, match="an injected bug"):
        verify_folder(mirror / HUB_ID, entry)
