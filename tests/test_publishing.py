"""Publishing that readers can trust at every moment: the publisher killed (``kill -9``) after each of its
steps leaves a mirror that loads, old weights or new, never new bytes against an old sha256;
``resmg-mirror verify``/``import`` say what happened and what to run; running the publication again
finishes it. An id that is published already is replaced only on ``--replace``, which keeps what it
replaced in the entry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import HUB_ID, MODEL, ORG, TAG, WIDTHS
from safetensors.torch import load_file, save_file

from resmg_zoo.core.cli import EXIT_USAGE
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.tools.mirror import main as mirror_main
from resmg_zoo.tools.push_to_hub import main as push
from resmg_zoo.train.checkpoint import read_pointer
from resmg_zoo.weights.manifest import MANIFEST_NAME, load_manifest

KILL_PUBLISHER = """
import os, signal, sys
import resmg_zoo.core.atomic as atomic
import resmg_zoo.weights.publish as publish
from resmg_zoo.tools.push_to_hub import main

step = os.environ["KILL_AT"]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if step == "staged":  # the new folder written and verified beside its place
    real_staged = publish.staged
    publish.staged = lambda *a, **k: (real_staged(*a, **k), die())[0]
elif step == "entry-accepting-both":  # the entry naming both files written, the folder not yet swapped
    publish.replace_folder = die
elif step == "swapped":  # the folder swapped, the final entry not yet written
    real_replace = publish.replace_folder
    publish.replace_folder = lambda new, target: (real_replace(new, target), die())
elif step == "between-renames":  # a system without renameat2: killed between its two renames
    atomic._exchange = lambda a, b: False
    real_rename = os.rename
    def rename(a, b):
        real_rename(a, b)
        if ".old-" in str(b):
            die()
    atomic.os.rename = rename
sys.exit(main(sys.argv[1:]))
"""
STEPS = ("staged", "entry-accepting-both", "swapped", "between-renames")


@pytest.fixture(scope="module")
def retrained(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with other weights (its head's bias moved), its checkpoint pointer updated: a new version."""
    copy = tmp_path_factory.mktemp("retrained") / "run"
    shutil.copytree(run, copy)
    pointer = read_pointer(copy)
    weights = copy / pointer["weights"]
    state = load_file(str(weights))
    state["fc.bias"] = state["fc.bias"] + 0.5
    save_file(state, str(weights))
    pointer["weights_sha256"] = file_sha256(weights)
    (copy / "checkpoint.json").write_text(json.dumps(pointer))
    return copy


def _outputs(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    """What a reader gets from the mirror now: the published model's logits on fixed inputs."""
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    model = timm.create_model(f"{MODEL}.{TAG}", pretrained=True).eval()
    with torch.no_grad():
        return model(torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28))


def _expected(run: Path) -> torch.Tensor:
    model = timm.create_model(MODEL, widths=WIDTHS, num_classes=10, in_chans=1)
    model.load_state_dict(load_file(str(run / read_pointer(run)["weights"])))
    with torch.no_grad():
        return model.eval()(torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28))


def test_an_id_published_already_is_replaced_only_on_replace(
    mirror: Path, retrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy)
    (old,) = load_manifest(copy / MANIFEST_NAME)["entries"]
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert push(["--run", str(retrained), "--mirror", str(copy), "--org", ORG]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{HUB_ID} is already published" in err and "pass --replace" in err
    assert {p: p.read_bytes() for p in before} == before
    assert push(["--run", str(retrained), "--mirror", str(copy), "--org", ORG, "--replace"]) == 0
    (entry,) = load_manifest(copy / MANIFEST_NAME)["entries"]
    assert entry["previous"] == [{k: old[k] for k in ("sha256", "date", "top1")}] and "swap_from" not in entry
    torch.testing.assert_close(_outputs(copy, monkeypatch), _expected(retrained), rtol=0, atol=0)


@pytest.mark.parametrize("step", STEPS)
def test_a_publisher_killed_at_any_step_leaves_a_mirror_that_loads_and_says_what_to_do(
    step: str, mirror: Path, run: Path, retrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy)
    (old,) = load_manifest(copy / MANIFEST_NAME)["entries"]
    args = ["--run", str(retrained), "--mirror", str(copy), "--org", ORG, "--replace"]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_PUBLISHER, *args],
        env=dict(os.environ, KILL_AT=step),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # a reader now gets the old weights or the new ones, verified either way
    now = _outputs(copy, monkeypatch)
    old_out, new_out = _expected(run), _expected(retrained)
    assert torch.equal(now, old_out) or torch.equal(now, new_out)
    # the tools name an interrupted publication and the command that finishes it
    code = mirror_main(["verify", str(copy)])
    err = capsys.readouterr().err
    if step == "staged":  # nothing was published yet: the mirror is as it was
        assert code == 0 and torch.equal(now, old_out)
    else:
        assert code == EXIT_USAGE and "was interrupted" in err and "--replace" in err and "Traceback" not in err
        assert mirror_main(["import", str(copy), "--manifest", str(tmp_path / "m.json")]) == EXIT_USAGE
        assert "was interrupted" in capsys.readouterr().err and not (tmp_path / "m.json").exists()
    # the same publication again finishes it: new weights, one record of what they replaced, nothing left over
    assert push(args) == 0
    assert mirror_main(["verify", str(copy)]) == 0
    torch.testing.assert_close(_outputs(copy, monkeypatch), new_out, rtol=0, atol=0)
    (entry,) = load_manifest(copy / MANIFEST_NAME)["entries"]
    assert [p["sha256"] for p in entry["previous"]] == [old["sha256"]] and "swap_from" not in entry
    assert sorted(p.name for p in (copy / ORG).iterdir() if not p.name.endswith(".lock")) == [HUB_ID.split("/")[1]]
