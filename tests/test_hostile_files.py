"""Files a stranger hands us: a run folder, a checkpoint pointer, a published folder or a mirror whose
JSON is not UTF-8, nested 200,000 deep, a list, or short of a key; weights listed by their sha256 that
are no safetensors file; run settings that smuggle loading options into ``create_model``. Each is one
line ``error: ...`` naming the file, with its kind's exit code (usage 2, integrity 4, unavailable 5),
never a traceback; and what is published or loaded is read once, the bytes hashed being the bytes used."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from conftest import HUB_ID, MODEL, ORG, REPO_ROOT, TAG, WIDTHS
from safetensors.torch import load_file
from torch import nn

import resmg_zoo
from resmg_zoo import UsageError, WeightsIntegrityError
from resmg_zoo.core.cli import EXIT_INTEGRITY, EXIT_UNAVAILABLE, EXIT_USAGE
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.inference.fold import fold_for_inference
from resmg_zoo.tools.classify import main as classify
from resmg_zoo.tools.evaluate import main as evaluate
from resmg_zoo.tools.mirror import main as mirror_main
from resmg_zoo.tools.push_to_hub import main as push
from resmg_zoo.train.checkpoint import read_pointer
from resmg_zoo.train.cli import main as train
from resmg_zoo.train.finetune import InitError, apply_init, resolve_init
from resmg_zoo.weights.manifest import MANIFEST_NAME

NOT_UTF8 = b'{"model": "\xff\xfe"}'
TOO_DEEP = b"[" * 200_000 + b"]" * 200_000
HOSTILE_JSON = {"not UTF-8": NOT_UTF8, "nested 200k deep": TOO_DEEP, "a list": b"[1, 2]"}
INPUT = str(REPO_ROOT / "README.md")  # never read: every case fails while the model is loaded


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _one_line(err: str, *names: str) -> None:
    """``err`` holds one error, the line ``error: ...`` naming each of ``names``, and no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err, err
    for name in names:
        assert name in err, err


def _counting_opens(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[str]:
    """The opens of ``path`` from now on (``open``, pathlib's ``io.open`` and ``os.open``; not those of
    libraries that open files from native code, such as safetensors' own ``load_file``)."""
    target, opened = path.resolve(), []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).resolve() == target:
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    real_os_open = os.open

    def counting_os_open(file, *args, **kwargs):  # the bounded reads (core.files) open by descriptor
        if isinstance(file, (str, Path)) and Path(file).resolve() == target:
            opened.append(str(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    return opened


# ----------------------------------------------------------------- a run folder's JSON


@pytest.mark.parametrize("case", [*HOSTILE_JSON, "no model", "an unknown model"])
def test_a_run_config_that_is_not_a_run_config_is_a_usage_error(run: Path, tmp_path: Path, case: str, capsys) -> None:
    copy = _copy(run, tmp_path / "run")
    config = copy / "config.json"
    if case in HOSTILE_JSON:
        config.write_bytes(HOSTILE_JSON[case])
    else:
        _edit_json(config, lambda c: c.pop("model") if case == "no model" else c.update(model="preact_resnet9000"))
    assert classify(["--run", str(copy), INPUT]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(config))
    assert evaluate(["--run", str(copy)]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(config))


@pytest.mark.parametrize("case", [*HOSTILE_JSON, "a folder", "no weights"])
def test_a_checkpoint_pointer_that_is_not_one_is_a_usage_error(run: Path, tmp_path: Path, case: str, capsys) -> None:
    copy = _copy(run, tmp_path / "run")
    pointer = copy / "checkpoint.json"
    if case == "a folder":
        pointer.unlink()
        pointer.mkdir()
    elif case == "no weights":
        _edit_json(pointer, lambda p: p.pop("weights"))
    else:
        pointer.write_bytes(HOSTILE_JSON[case])
    assert classify(["--run", str(copy), INPUT]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(pointer))


@pytest.mark.parametrize("damaged", ["config.json", "checkpoint.json"])
def test_resume_of_a_run_with_damaged_json_is_a_usage_error(
    run: Path, digits: Path, tmp_path: Path, damaged: str, capsys
) -> None:
    copy = _copy(run, tmp_path / "run")
    (copy / damaged).write_bytes(TOO_DEEP if damaged == "config.json" else NOT_UTF8)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    args = ["--resume", "--out", str(copy), "--data", str(digits.parent), "--epochs", "3", "--quiet"]
    assert train(args) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(copy / damaged))
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    "model_kwargs",
    [
        {"pretrained": True, "pretrained_cfg_overlay": {"file": "OUTSIDE"}},
        {"checkpoint_path": "OUTSIDE"},
        {"pretrained_cfg": {"file": "OUTSIDE"}},
        {"features_only": True},
    ],
)
def test_a_run_config_carries_architecture_arguments_only(
    run: Path, tmp_path: Path, model_kwargs: dict, monkeypatch, capsys
) -> None:
    """Loading options in a run's model_kwargs would make ``classify --run`` load a file outside the run."""
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(next(run.glob("ckpt-*.safetensors")), outside)
    copy = _copy(run, tmp_path / "run")
    kwargs = json.loads(json.dumps(model_kwargs).replace("OUTSIDE", str(outside)))
    _edit_json(copy / "config.json", lambda c: c["model_kwargs"].update(kwargs))
    opened = _counting_opens(monkeypatch, outside)
    assert classify(["--run", str(copy), INPUT]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(copy / "config.json"), sorted(kwargs)[0])
    assert not opened


@pytest.mark.parametrize("option", ["pretrained=true", "checkpoint_path=RUN", "features_only=true"])
def test_training_refuses_loading_options_as_model_kwargs(
    run: Path, digits: Path, tmp_path: Path, option: str, capsys
) -> None:
    option = option.replace("RUN", str(next(run.glob("ckpt-*.safetensors"))))
    args = ["--model", MODEL, "--dataset", str(digits), "--epochs", "0.05", "--batch-size", "50", "--quiet"]
    out = tmp_path / "run"
    assert train([*args, "--model-kwargs", f"widths={WIDTHS}", option, "--out", str(out)]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, f"['{option.split('=')[0]}'] are not arguments of the zoo's models")
    assert not out.exists()  # refused before anything is read or written


# ----------------------------------------------------------------- published folders and mirrors


@pytest.mark.parametrize("case", ["not UTF-8", "nested 200k deep"])
def test_a_mirror_manifest_that_is_not_json_is_a_usage_error(mirror: Path, tmp_path: Path, case: str, capsys) -> None:
    copy = _copy(mirror, tmp_path / "mirror")
    (copy / MANIFEST_NAME).write_bytes(HOSTILE_JSON[case])
    assert mirror_main(["verify", str(copy)]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(copy / MANIFEST_NAME))


def test_a_published_folder_whose_config_is_too_deep_is_a_usage_error(
    mirror: Path, digits: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    folder = _copy(mirror / HUB_ID, tmp_path / "published")
    (folder / "config.json").write_bytes(TOO_DEEP)
    with pytest.raises(UsageError, match="nests deeper"):
        resmg_zoo.create_model(f"local-dir:{folder}", pretrained=True)
    args = ["--model", MODEL, "--dataset", str(digits), "--epochs", "0.05", "--batch-size", "50", "--quiet"]
    assert train([*args, "--init-from", str(folder), "--out", str(tmp_path / "run")]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(folder / "config.json"))
    hub = _copy(mirror, tmp_path / "mirror")
    (hub / HUB_ID / "config.json").write_bytes(NOT_UTF8)
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(hub))
    assert classify(["--model", f"{MODEL}.{TAG}", INPUT]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(hub / HUB_ID / "config.json"))


def test_a_local_dir_of_a_listed_id_without_weights_is_a_usage_error(
    mirror: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    folder = _copy(mirror / HUB_ID, tmp_path / "published")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UsageError, match=r"model\.safetensors"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert classify(["--model", f"local-dir:{folder}", INPUT]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(folder / "model.safetensors"))


def test_an_unlisted_hub_id_offline_is_unavailable(tmp_path: Path, monkeypatch, capsys) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("RESMG_ZOO_HUB_DIR", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name = f"hf-hub:nobody-here/{MODEL}.{TAG}"
    with pytest.warns(UserWarning, match="not in any resmg_zoo weights manifest"):
        assert classify(["--model", name, "--cache-dir", str(tmp_path / "empty"), INPUT]) == EXIT_UNAVAILABLE
    _one_line(capsys.readouterr().err, "nobody-here")


def _header_only(dtype: str) -> bytes:
    """A well-formed safetensors header naming a dtype that torch has no type for."""
    header = json.dumps({"fc.bias": {"dtype": dtype, "shape": [8], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 4


@pytest.mark.parametrize("data", [bytes(range(256)) * 40, _header_only("F4")], ids=["random", "unknown dtype"])
def test_listed_bytes_that_are_no_safetensors_file_are_an_integrity_error(
    mirror: Path, tmp_path: Path, data: bytes, monkeypatch, capsys
) -> None:
    copy = _copy(mirror, tmp_path / "mirror")
    weights = copy / HUB_ID / "model.safetensors"
    weights.write_bytes(data)

    def listed(manifest: dict) -> None:
        manifest["entries"][0].update(sha256=file_sha256(weights), bytes=len(data))

    _edit_json(copy / MANIFEST_NAME, listed)
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
    with pytest.raises(WeightsIntegrityError, match="not a readable safetensors file"):
        timm.create_model(f"{MODEL}.{TAG}", pretrained=True)
    assert classify(["--model", f"{MODEL}.{TAG}", INPUT]) == EXIT_INTEGRITY
    _one_line(capsys.readouterr().err, str(weights))


def test_a_missing_checkpoint_is_named_by_the_flag_given() -> None:
    with pytest.raises(InitError, match="--checkpoint /missing: no such file") as caught:
        resolve_init(MODEL, "/missing", False, "", flag="--checkpoint")
    assert "--init-from" not in str(caught.value)


# ----------------------------------------------------------------- folding


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


class _Length(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[: len(x)]


class _Buggy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a bug of ours")


def test_folding_turns_untraceable_models_into_usage_errors_and_nothing_else() -> None:
    for untraceable in (_DataDependent(), _Length()):
        with pytest.raises(UsageError, match="cannot be traced"):
            fold_for_inference(untraceable.eval())
    with pytest.raises(RuntimeError, match="a bug of ours") as caught:
        fold_for_inference(_Buggy().eval())
    assert not isinstance(caught.value, UsageError)


# ----------------------------------------------------------------- publishing


def test_publishing_over_a_symlinked_folder_is_refused(mirror: Path, run: Path, tmp_path: Path, capsys) -> None:
    copy = _copy(mirror, tmp_path / "mirror")
    elsewhere = tmp_path / "elsewhere"
    (copy / HUB_ID).rename(elsewhere)
    (copy / HUB_ID).symlink_to(elsewhere, target_is_directory=True)
    before = {p: p.read_bytes() for p in [*copy.rglob("*"), *elsewhere.rglob("*")] if p.is_file()}
    assert push(["--run", str(run), "--mirror", str(copy), "--org", ORG, "--replace"]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(copy / HUB_ID), "symbolic link")
    assert {p: p.read_bytes() for p in before} == before
    assert (copy / HUB_ID).is_symlink() and not list(copy.rglob(".publish-*"))


def test_publishing_to_a_mirror_that_is_a_file_is_refused(run: Path, tmp_path: Path, capsys) -> None:
    not_a_folder = tmp_path / "mirror"
    not_a_folder.write_text("a file\n")
    assert push(["--run", str(run), "--mirror", str(not_a_folder), "--org", ORG]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(not_a_folder))
    assert not_a_folder.read_text() == "a file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]


def test_publishing_reads_the_checkpoint_once(run: Path, monkeypatch) -> None:
    """The checkpoint's bytes are read once: hashed against the pointer, parsed and published from that read."""
    opened = _counting_opens(monkeypatch, run / read_pointer(run)["weights"])
    assert push(["--run", str(run), "--dry-run", "--org", ORG]) == 0
    assert len(opened) == 1


@pytest.mark.parametrize("listed", [True, False])
def test_initial_weights_from_a_published_folder_are_read_once(
    mirror: Path, run: Path, tmp_path: Path, listed: bool, monkeypatch
) -> None:
    """``--init-from``/``resmg-export --checkpoint`` of a published folder: hashed and loaded from one read."""
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    folder = _copy(mirror / HUB_ID, tmp_path / "published")
    if not listed:
        _edit_json(folder / "config.json", lambda c: c["pretrained_cfg"].update(hf_hub_id=f"nobody/{MODEL}.{TAG}"))
    opened = _counting_opens(monkeypatch, folder / "model.safetensors")
    init = resolve_init(MODEL, str(folder), False, "")
    model = timm.create_model(MODEL, widths=WIDTHS, num_classes=10, in_chans=1)
    apply_init(model, MODEL, init, "keep")
    assert len(opened) == 1
    expected = load_file(str(mirror / HUB_ID / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_a_fifo_in_place_of_a_checkpoint_is_refused_without_hanging(run: Path, tmp_path: Path, capsys) -> None:
    """Every weights read is bounded (core.hashing.read_with_sha256 reads a regular file only): a FIFO where the
    pointer names the weights is refused at once (before, ``read_bytes`` waited for a writer forever)."""
    import os
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / json.loads((copy / "checkpoint.json").read_text())["weights"]
    weights.unlink()
    os.mkfifo(weights)
    assert evaluate(["--run", str(copy)]) == EXIT_USAGE
    assert "not a regular file" in capsys.readouterr().err


class _Payload:
    def __reduce__(self):  # what a crafted pickle would run
        return (os.system, ("touch PAYLOAD-RAN",))


def test_a_training_state_with_its_sha256_edited_to_match_is_refused_and_runs_nothing(
    run: Path, digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A stranger's run folder whose pointer names a pickle payload as the state, with that file's sha256: read with
    ``weights_only`` (nothing runs) and refused with one line, exit 2."""
    import pickle

    monkeypatch.chdir(tmp_path)
    copy = _copy(run, tmp_path / "run")
    pointer = read_pointer(copy)
    state = copy / pointer["state"]
    state.write_bytes(pickle.dumps({"epoch": _Payload()}))
    _edit_json(copy / "checkpoint.json", lambda p: p.update(state_sha256=file_sha256(state)))
    args = ["--resume", "--out", str(copy), "--data", str(digits.parent), "--epochs", "3", "--quiet", "--no-report"]
    assert train(args) == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(state))
    assert not (tmp_path / "PAYLOAD-RAN").exists()


def test_a_folder_of_ones_own_whose_weights_are_no_safetensors_is_a_usage_error(
    mirror: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(mirror / HUB_ID / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(b"precious\n")
    assert classify(["--model", str(folder), INPUT]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, "is not a safetensors file")


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e.update(dataset="mnist <img src=x onerror=alert(1)> | x"),
        lambda e: e["recipe"].pop("warmup_epochs"),
        lambda e: e["recipe"].update(low_res=8) or e["recipe"].pop("low_res_epochs"),
        lambda e: e.update(int8=dict(file="int8.json", sha256="0" * 64, bytes=2)),
    ],
    ids=["dataset-html", "recipe-without-warmup", "low-res-without-epochs", "int8-without-figures"],
)
def test_a_manifest_entry_the_card_cannot_write_does_not_verify(mirror: Path, tmp_path: Path, edit, capsys) -> None:
    copy = _copy(mirror, tmp_path / "mirror")
    _edit_json(copy / MANIFEST_NAME, lambda m: edit(m["entries"][0]))
    before = (copy / HUB_ID / "README.md").read_bytes()
    assert mirror_main(["refresh", str(copy / HUB_ID)]) == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err
    assert (copy / HUB_ID / "README.md").read_bytes() == before
