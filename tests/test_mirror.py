"""``resmg-mirror import``: a mirror's folders verified, its entries merged, nothing
changed by a mirror that does not verify; and files a team can share (the usual modes)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import timm
from conftest import HUB_ID, MODEL, TAG, assert_drawn
from huggingface_hub import ModelCard

from resmg_zoo import WeightsIntegrityError
from resmg_zoo.core.atomic import LockedError, current_umask
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.core.paper import paper_result
from resmg_zoo.tools.mirror import main as mirror_main
from resmg_zoo.weights.manifest import MANIFEST_NAME, load_manifest


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
    return f"config.json: architecture is '{MODEL}', the entry says 'resnet18_sharedA'"


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
    cache = [p for p in Path(os.environ["RESMG_ZOO_CACHE"]).glob("*.safetensors") if not p.name.startswith(".")]
    assert cache
    files = [*folder.iterdir(), mirror / MANIFEST_NAME, *run.iterdir(), *(run / "report").iterdir(), *cache]
    usual = {f.name: (0o777 if f.is_dir() else 0o666) & ~umask for f in files}  # the run's report/ is a folder
    assert "report" in usual and "confusion.png" in usual and {f.name: _mode(f) for f in files} == usual
    assert file_sha256(folder / "model.safetensors")  # readable


def test_an_id_that_would_leave_the_mirror_is_refused(copy: Path, target: Path, capsys) -> None:
    """A mirror manifest naming ``../`` is refused by huggingface_hub's rule before any path is made of it."""
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["entries"][0]["hub_id"] = f"../{MODEL}.{TAG}"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert _import(copy, target) == 2
    err = capsys.readouterr().err
    assert f"'../{MODEL}.{TAG}' is not a valid Hugging Face Hub repo id" in err and not target.exists()


def test_a_folder_whose_config_names_another_repo_is_refused(
    copy: Path, target: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = copy / HUB_ID / "config.json"
    config.write_text(config.read_text().replace(HUB_ID, f"someone-else/{MODEL}.{TAG}"))
    assert _import(copy, target) == 2
    assert f"pretrained_cfg.hf_hub_id is 'someone-else/{MODEL}.{TAG}'" in capsys.readouterr().err
    assert not target.exists()
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))  # and loading from such a folder says so
    with pytest.raises(
        WeightsIntegrityError, match=rf"names the repo 'someone-else/.*', but the folder stands for {HUB_ID}"
    ):
        timm.create_model(f"{MODEL}.{TAG}", pretrained=True)


def test_evaluate_refuses_an_entry_whose_top1_the_real_test_split_does_not_give(
    copy: Path, target: Path, capsys
) -> None:
    """An entry (and its folder's metrics) claiming 100 % top-1 for the tiny two-epoch model: the full real
    MNIST test split, evaluated for real, cannot give it (the model scores about a third), so the import is
    refused. The disagreement is made, not left to how close a 30-per-class subset lands to the full split."""
    rows = json.loads((copy / HUB_ID / "metrics.json").read_text())
    rows[-1]["test_top1"] = 100.0
    (copy / HUB_ID / "metrics.json").write_text(json.dumps(rows))
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["entries"][0]["top1"] = 100.0
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert _import(copy, target, "--evaluate") == 2
    err = capsys.readouterr().err
    assert f"{HUB_ID}: top-1 on the full test split is" in err and "the entry says 100.00" in err
    assert "is unchanged" in err and not target.exists()


def _refresh(folder: Path) -> tuple[int, str]:
    code = mirror_main(["refresh", str(folder)])
    return code, (folder / "README.md").read_text()


def test_refresh_rewrites_card_and_config_from_the_folders_own_files(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy / HUB_ID
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "README.md").write_text("an old card\n")
    config = json.loads((folder / "config.json").read_text())
    config.pop("label_names", None)
    (folder / "config.json").write_text(json.dumps(config))
    code, card = _refresh(folder)
    assert code == 0
    assert (folder / "model.safetensors").read_bytes() == weights
    data = ModelCard.load(folder / "README.md").data
    assert data.pipeline_tag == "image-classification" and data.datasets == ["ylecun/mnist"]
    entry = load_manifest(copy / MANIFEST_NAME)["entries"][0]
    assert data.eval_results[0].metric_value == entry["top1"] and "@article{he2019constrained," in card
    assert json.loads((folder / "config.json").read_text())["label_names"] == [str(d) for d in range(10)]
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))  # its manifest lists the folder's id: sha256 checked
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert list(loaded.pretrained_cfg["label_names"]) == [str(d) for d in range(10)]


def test_refresh_a_copy_of_the_published_cifar10_folder(shared_hub: Path, tmp_path: Path) -> None:
    """The hosted CIFAR-10 weights get the new card and class names without retraining: sha256 unchanged."""
    hub_id = "resmg-zoo/preact_resnet18_sharedA.cifar10"
    mirror = tmp_path / "hub"
    shutil.copytree(shared_hub / hub_id, mirror / hub_id)
    manifest = load_manifest(shared_hub / MANIFEST_NAME)
    manifest["entries"] = [e for e in manifest["entries"] if e["hub_id"] == hub_id]
    (mirror / MANIFEST_NAME).write_text(json.dumps(manifest))
    code, card = _refresh(mirror / hub_id)
    assert code == 0
    assert file_sha256(mirror / hub_id / "model.safetensors") == manifest["entries"][0]["sha256"]
    config = json.loads((mirror / hub_id / "config.json").read_text())
    assert config["label_names"][:3] == ["airplane", "automobile", "bird"] and len(config["label_names"]) == 10
    assert ModelCard.load(mirror / hub_id / "README.md").data.datasets == ["uoft-cs/cifar10"]
    assert "on 50,000 train images" in card and "| cifar10 test | 90.27 % |" in card
    paper = paper_result("preact_resnet18_sharedA", 3)["top1"]  # the paper's figure beside ours, and why they differ
    assert f"ours is 90.27 % where the paper reports {paper:.2f} %" in card and "Table 3" in card
    assert "we trained 30 epochs" in card and "JPEG copy of CIFAR-10" in card and "the paper 120 epochs" in card


def test_refresh_refuses_a_folder_that_does_not_verify(copy: Path, capsys) -> None:
    weights = copy / HUB_ID / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    before = (copy / HUB_ID / "README.md").read_bytes()
    code, _ = _refresh(copy / HUB_ID)
    assert code == 2 and "does not verify, so it is not refreshed" in capsys.readouterr().err
    assert (copy / HUB_ID / "README.md").read_bytes() == before


def test_refresh_report_publishes_pinned_pictures_that_the_card_embeds(
    copy: Path, digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``refresh --report``: the weights evaluated on the test split, ``report.json``, its pictures and the
    training curve written beside them and pinned in the entry; the card links each picture (relative, as the Hub
    renders them), lists every class and carries the ECE in its model-index; a changed picture no longer verifies."""
    folder = copy / HUB_ID
    weights = (folder / "model.safetensors").read_bytes()
    assert mirror_main(["refresh", str(folder), "--report", "--data", str(digits.parent)]) == 0
    entry = load_manifest(copy / MANIFEST_NAME)["entries"][0]
    pin, card = entry["report"], (folder / "README.md").read_text()
    assert set(pin["files"]) == {"report.json", "per_class.png", "confusion.png", "reliability.png",
                                 "misclassified.png", "curve.png"}  # fmt: skip
    assert all(file_sha256(folder / name) == digest for name, digest in pin["files"].items())
    assert (folder / "model.safetensors").read_bytes() == weights
    report = json.loads((folder / "report.json").read_text())
    assert [sum(row) for row in report["confusion"]] == [30] * 10  # the 300-image test split, 30 per digit
    assert pin["top1"] == pytest.approx(100 * sum(report["confusion"][i][i] for i in range(10)) / 300, abs=1e-4)
    assert pin["top1"] == pytest.approx(entry["top1"], abs=0.05) and pin["ece"] == round(report["ece"], 6)
    for name in pin["files"]:
        if name.endswith(".png"):
            assert_drawn(folder / name)
            assert f"]({name})" in card, f"the card does not show {name}"
    for row in report["per_class"]:
        assert f"| {row['name']} | {row['images']:,} | {row['correct']:,} | {row['accuracy']:.2f} % |" in card
    metrics = {r.metric_type: r.metric_value for r in ModelCard.load(folder / "README.md").data.eval_results}
    assert metrics["expected_calibration_error"] == round(100 * report["ece"], 2)
    assert "no epoch or checkpoint was picked on the test split" in card
    assert mirror_main(["verify", str(copy)]) == 0
    (folder / "confusion.png").write_bytes((folder / "per_class.png").read_bytes())
    assert mirror_main(["verify", str(copy)]) == 2
    assert "confusion.png: sha256" in capsys.readouterr().err


def test_crafted_report_pins_and_files_are_refused_without_a_traceback(
    copy: Path, digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mirror is data: a report pin naming a path out of the folder does not verify, and a pinned ``report.json``
    that is not what the card reads stops the refresh with exit 2 naming it, the card left as it was."""
    folder, manifest = copy / HUB_ID, copy / MANIFEST_NAME
    assert mirror_main(["refresh", str(folder), "--report", "--data", str(digits.parent)]) == 0
    good = json.loads(manifest.read_text())
    hostile = json.loads(manifest.read_text())  # a mirror's strings reach the card inert
    hostile["entries"][0] |= dict(hardware="<img src=x onerror=alert(1)>\n# Injected", command="x\n```\n<script>")
    hostile["entries"][0]["recipe"]["name"] = "`<script>`"
    manifest.write_text(json.dumps(hostile))
    assert mirror_main(["refresh", str(folder)]) == 0
    card = (folder / "README.md").read_text()
    assert "\\<img src=x onerror=alert(1)\\>" in card and "\n# Injected" not in card  # escaped, one line
    assert "`'<script>'`" in card and "\n```\n<script>" not in card  # inside code, never closing the fence
    manifest.write_text(json.dumps(good))
    assert mirror_main(["refresh", str(folder)]) == 0
    crafted = json.loads(manifest.read_text())
    crafted["entries"][0]["report"]["files"]["../../outside.png"] = "0" * 64
    manifest.write_text(json.dumps(crafted))
    assert mirror_main(["verify", str(copy)]) == 2
    assert "report must pin report.json and its pictures" in capsys.readouterr().err
    report = json.loads((folder / "report.json").read_text())
    report["per_class"] = ["not a row"]
    (folder / "report.json").write_text(json.dumps(report))
    good["entries"][0]["report"]["files"]["report.json"] = file_sha256(folder / "report.json")
    manifest.write_text(json.dumps(good))
    card = (folder / "README.md").read_bytes()
    assert mirror_main(["refresh", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "report.json" in err and "a row is a str" in err and "Traceback" not in err
    assert (folder / "README.md").read_bytes() == card


def test_a_refresh_whose_manifest_is_locked_puts_the_old_report_back(
    copy: Path, digits: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new files are written, then the manifest's lock cannot be had (exit 6): the folder holds the report it
    held before, byte for byte, and still verifies against the entry that pins it."""
    folder = copy / HUB_ID
    assert mirror_main(["refresh", str(folder), "--report", "--data", str(digits.parent)]) == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "metrics.json").write_text(json.dumps(json.loads((folder / "metrics.json").read_text()) * 2))

    def locked(*_args, **_kwargs):
        raise LockedError("the manifest is locked by another publisher")

    monkeypatch.setattr("resmg_zoo.tools.mirror.add_entry", locked)
    assert mirror_main(["refresh", str(folder), "--report", "--data", str(digits.parent)]) == 6
    assert "locked" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {k: v for k, v in after.items() if k != "metrics.json"} == {
        k: v for k, v in before.items() if k != "metrics.json"
    }
    monkeypatch.undo()
    assert mirror_main(["verify", str(copy)]) == 0


def test_a_pin_that_is_not_its_report_and_a_stale_picture_do_not_verify(
    copy: Path, digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The card shows the pinned figures: they must be the pinned ``report.json``'s; a report's picture the entry
    does not pin is stale. Huge but finite values in ``metrics.json`` still draw a curve."""
    folder, manifest = copy / HUB_ID, copy / MANIFEST_NAME
    rows = json.loads((folder / "metrics.json").read_text())
    rows[0] |= dict(train_loss=1e308, test_loss=-1e308)
    (folder / "metrics.json").write_text(json.dumps(rows))
    assert mirror_main(["refresh", str(folder), "--report", "--data", str(digits.parent)]) == 0
    good = manifest.read_text()
    lying = json.loads(good)
    lying["entries"][0]["report"] |= dict(top1=99.9, ece=0.0001)
    manifest.write_text(json.dumps(lying))
    assert mirror_main(["verify", str(copy)]) == 2
    assert "report.json: top1 is" in capsys.readouterr().err
    stale = json.loads(good)
    del stale["entries"][0]["report"]["files"]["curve.png"]
    manifest.write_text(json.dumps(stale))
    assert mirror_main(["verify", str(copy)]) == 2
    assert "curve.png: in the folder, but the entry's report does not pin it" in capsys.readouterr().err


def test_text_from_files_is_shown_inert_in_cards_and_pictures() -> None:
    """Class names and record strings reach a card as one escaped line and a picture as printable text."""
    from resmg_zoo.core.cli import shown_text
    from resmg_zoo.weights.card import _cell

    assert shown_text("a\x1b[2Jb\u202ec\nd", 40) == "a\ufffd[2Jb\ufffdc d" and len(shown_text("x" * 99, 40)) == 40
    assert _cell("<img src=x onerror=alert(1)>") == "\\<img src=x onerror=alert(1)\\>"
    assert _cell("![x](http://e.vil) | `c` <!--") == "!\\[x\\](http://e.vil) \\| \\`c\\` \\<!--"
