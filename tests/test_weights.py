"""Published weights end to end on a real trained checkpoint: publish, manifest, resolution, the Hub client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import HUB_ID, MODEL, ORG, REPO_ROOT, TAG, WIDTHS
from hub_standin import serve
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

import resmg_zoo.weights.publish as publish_module
from resmg_zoo import NotPublishedError, WeightsIntegrityError, WeightsMismatchError
from resmg_zoo.core.cli import EXIT_BUSY
from resmg_zoo.core.counting import param_count
from resmg_zoo.core.hashing import file_sha256
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.tools.push_to_hub import main as publish
from resmg_zoo.train.checkpoint import checkpoint_weights_path
from resmg_zoo.weights.manifest import MANIFEST_NAME, PUBLISHED_FILES, ManifestError, load_manifest, validate_entry


@pytest.fixture
def use_mirror(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(mirror))
    return mirror


def _reference(run: Path) -> torch.nn.Module:
    model = timm.create_model(MODEL, widths=WIDTHS, num_classes=10, in_chans=1)
    model.load_state_dict(load_file(str(checkpoint_weights_path(run))))
    return model.eval()


def _test_accuracy(model: torch.nn.Module, digits: Path) -> float:
    dataset = load_dataset(str(digits))
    test = dataset.split("test")
    x = (test.images.float() / 255 - dataset.mean[0]) / dataset.std[0]
    with torch.no_grad():
        return 100.0 * (model.eval()(x).argmax(1) == test.labels).sum().item() / len(test)


def _last_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_published_folder_and_manifest_entry(mirror: Path, run: Path) -> None:
    folder = mirror / HUB_ID
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
        "recipe.json",
    ]
    (entry,) = load_manifest(mirror / MANIFEST_NAME)["entries"]
    assert validate_entry(entry) == []
    assert entry["hub_id"] == HUB_ID and entry["sha256"] == file_sha256(folder / "model.safetensors")
    assert entry["params"] == param_count(MODEL, widths=WIDTHS, num_classes=10, in_chans=1)
    assert entry["top1"] == round(_last_metrics(run)["test_top1"], 4) and entry["recipe"]["epochs"] == 2
    assert entry["command"].startswith("python -m resmg_zoo.train") and entry["hardware"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == MODEL and config["num_classes"] == 10
    assert config["model_args"]["widths"] == WIDTHS and config["model_args"]["in_chans"] == 1
    assert config["label_names"] == [str(d) for d in range(10)]  # the run's classes
    card = (folder / "README.md").read_text()
    data = ModelCard.load(folder / "README.md").data  # as the Hub reads it
    assert (data.library_name, data.license, data.pipeline_tag) == ("timm", "mit", "image-classification")
    assert data.datasets == ["ylecun/mnist"] and data.model_name == f"{MODEL}.{TAG}"
    top1, top5 = data.eval_results
    assert (top1.metric_type, top1.metric_value, top1.dataset_type, top1.dataset_split) == (
        "accuracy",
        entry["top1"],
        "ylecun/mnist",
        "test",
    )
    assert (top5.metric_type, top5.metric_value) == ("top_5_accuracy", entry["top5"])
    assert "@article{he2019constrained," in card and "arXiv:1911.10428" in card
    # MNIST trains on unflipped digits: no flip-averaged score is logged, and the card shows none
    assert "test_flip_top1" not in _last_metrics(run) and "flip-averaged" not in card
    train_images = json.loads((run / "config.json").read_text())["train_images"]
    assert f"`paper`: 2 epochs on {train_images:,} train images" in card
    assert "label smoothing" not in card and "EMA" not in card  # levers the recipe leaves off are not named


def test_torch_hub_and_timm_load_the_trained_model(use_mirror: Path, run: Path, digits: Path) -> None:
    reference = _reference(run)
    x = torch.randn(5, 1, 28, 28)
    expected = reference(x)
    via_hub = torch.hub.load(str(REPO_ROOT), MODEL, source="local", pretrained=True, dataset=TAG).eval()
    via_timm = timm.create_model(f"{MODEL}.{TAG}", pretrained=True).eval()
    via_dir = timm.create_model(f"local-dir:{use_mirror / HUB_ID}", pretrained=True).eval()
    for model in (via_hub, via_timm, via_dir):
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert _test_accuracy(via_hub, digits) == pytest.approx(_last_metrics(run)["test_top1"], abs=1e-6)
    assert via_timm.pretrained_cfg["hf_hub_id"] == HUB_ID
    assert "state_dict" not in via_timm.pretrained_cfg  # loaded from the verified bytes, then dropped from the cfg


def test_no_pickle_is_loaded(use_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("torch.load was called while loading published weights")

    monkeypatch.setattr(torch, "load", refuse)
    timm.create_model(f"{MODEL}.{TAG}", pretrained=True)


def test_fine_tuning_new_head_and_adapted_stem(use_mirror: Path, run: Path) -> None:
    reference = _reference(run)
    three = timm.create_model(f"{MODEL}.{TAG}", pretrained=True, num_classes=3)
    assert three.fc.out_features == 3
    ref_state, state = reference.state_dict(), three.state_dict()
    assert all(torch.equal(state[k], ref_state[k]) for k in state if not k.startswith("fc."))
    rgb = timm.create_model(f"{MODEL}.{TAG}", pretrained=True, in_chans=3).eval()
    gray = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(rgb(gray.repeat(1, 3, 1, 1)), reference(gray), rtol=1e-4, atol=1e-4)


def test_features_only_from_pretrained(use_mirror: Path) -> None:
    """Every feature class honours ``feature_cls`` with the published weights, and returns the same tensors."""
    x = torch.randn(1, 1, 28, 28)
    outputs = {}
    classes = dict(list="FeatureListNet", getter="FeatureGetterNet", hook="FeatureHookNet", fx="FeatureGraphNet")
    for feature_cls, class_name in classes.items():
        features = timm.create_model(
            f"{MODEL}.{TAG}", pretrained=True, features_only=True, out_indices=(2, 4), feature_cls=feature_cls
        ).eval()
        assert type(features).__name__ == class_name
        outputs[feature_cls] = features(x)
        assert [f.shape[1] for f in outputs[feature_cls]] == [16, 32]
    for feature_cls, outs in outputs.items():
        for got, want in zip(outs, outputs["list"]):
            torch.testing.assert_close(got, want, msg=feature_cls)


def _copy_mirror(mirror: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy)
    return copy


@pytest.mark.parametrize("how", ["by name", "local-dir"])
def test_one_tampered_byte_is_a_sha256_error(how: str, mirror: Path, tmp_path: Path, monkeypatch) -> None:
    """Through the mirror, and through a ``local-dir:`` folder whose config.json names a published id."""
    copy = _copy_mirror(mirror, tmp_path)
    weights = copy / HUB_ID / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
    name, looked = (f"{MODEL}.{TAG}", "mirror") if how == "by name" else (f"local-dir:{copy / HUB_ID}", "local-dir")
    with pytest.raises(WeightsIntegrityError, match=rf"sha256 mismatch for {MODEL}\.{TAG}: .*{looked}"):
        timm.create_model(name, pretrained=True)


def test_a_cache_dir_that_cannot_be_written_is_named(mirror: Path, tmp_path: Path) -> None:
    """``cache_dir`` is the client's cache; one that cannot be written is named before any download
    (as root no folder is read-only, so the test puts a file where the cache would be made)."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with serve(mirror) as (endpoint, _log):
        env = _hub_env(endpoint, mirror, tmp_path)
        cache = str(blocked / "cache")
        code = f"import timm, resmg_zoo; timm.create_model('{MODEL}.{TAG}', pretrained=True, cache_dir={cache!r})"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("resmg_zoo.weights.hub_download.PretrainedWeightsUnavailable")
    assert f"the Hugging Face cache {cache} cannot be written" in done.stderr, done.stderr[-2000:]


def test_cache_dir_is_honoured(mirror: Path, tmp_path: Path) -> None:
    with serve(mirror) as (endpoint, _log):
        env = _hub_env(endpoint, mirror, tmp_path)
        cache = tmp_path / "my-cache"
        code = (
            f"import timm, resmg_zoo; timm.create_model('hf-hub:{HUB_ID}', pretrained=True, cache_dir={str(cache)!r})"
        )
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name for p in cache.rglob("model.safetensors")] == ["model.safetensors"]
    assert not list((tmp_path / "hf").rglob("model.safetensors"))  # not the default cache


def test_a_truncated_file_is_a_clear_error(mirror: Path, tmp_path: Path, monkeypatch) -> None:
    copy = _copy_mirror(mirror, tmp_path)
    weights = copy / HUB_ID / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
    with pytest.raises(
        WeightsIntegrityError, match=rf"\({size // 2:,} bytes\) but .*weights_manifest.json lists .* \({size:,} bytes\)"
    ):
        torch.hub.load(str(REPO_ROOT), MODEL, source="local", pretrained=True, dataset=TAG)


def test_missing_key_is_named(mirror: Path, tmp_path: Path, monkeypatch) -> None:
    copy = _copy_mirror(mirror, tmp_path)
    weights = copy / HUB_ID / "model.safetensors"
    state = load_file(str(weights))
    state.pop("stages.1.shared_b.weight")
    save_file(state, str(weights))
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["entries"][0].update(sha256=file_sha256(weights), bytes=weights.stat().st_size)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(copy))
    with pytest.raises(WeightsMismatchError, match=r"missing keys \['stages\.1\.shared_b\.weight'\]"):
        timm.create_model(f"{MODEL}.{TAG}", pretrained=True)


def test_unpublished_tag_names_the_published_ones(use_mirror: Path) -> None:
    with pytest.raises(
        NotPublishedError,
        match=rf"no pretrained weights are published for {MODEL}\.cifar100 .*Published tags of {MODEL}: mnist",
    ):
        timm.create_model(f"{MODEL}.cifar100", pretrained=True)


def test_manifest_validator_catches_bad_entries(mirror: Path) -> None:
    (entry,) = load_manifest(mirror / MANIFEST_NAME)["entries"]
    assert any("sha256" in p for p in validate_entry({**entry, "sha256": "abc"}))
    assert any("params" in p for p in validate_entry({**entry, "params": entry["params"] + 1}))
    assert any("unknown tag" in p for p in validate_entry({**entry, "tag": "imagenet"}))
    assert any("missing key 'command'" in p for p in validate_entry({k: v for k, v in entry.items() if k != "command"}))
    with pytest.raises(ManifestError):
        load_manifest(Path(mirror / HUB_ID / "config.json"))


def test_repository_manifest_is_valid() -> None:
    assert load_manifest(REPO_ROOT / MANIFEST_NAME)["schema_version"] == 1


HUB_SCRIPT = """
import json, sys, warnings, timm, torch, resmg_zoo
torch.manual_seed(0)
x = torch.randn(3, 1, 28, 28)
out = {}
for name in sys.argv[1:]:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = timm.create_model(name, pretrained=True).eval()
        out[name] = dict(logits=model(x).tolist(), warnings=[str(w.message) for w in caught])
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""


def _hub_subprocess(names: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, *names], capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _hub_env(endpoint: str, mirror: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a process that reaches the Hub at ``endpoint`` with its own cache, and whose
    RESMG_ZOO_HUB_DIR holds the mirror's manifest but none of its weights."""
    manifest_only = tmp_path / "manifest-only"
    manifest_only.mkdir(exist_ok=True)
    (manifest_only / MANIFEST_NAME).write_bytes((mirror / MANIFEST_NAME).read_bytes())
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), RESMG_ZOO_HUB_DIR=str(manifest_only))
    env.pop("HF_HUB_OFFLINE", None)
    return env


def _expected(model: torch.nn.Module) -> list:
    torch.manual_seed(0)
    return model.eval()(torch.randn(3, 1, 28, 28)).tolist()


def test_the_hub_path_through_huggingface_hub_against_a_local_standin(
    mirror: Path, run: Path, shared_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real huggingface_hub client downloads, caches and works offline; sha256 checked each time.

    The stand-in serves the tiny test checkpoint and the project's real published weights, so that
    ``<model>.<tag>`` (the repository's own entry, resolved on the Hub) and ``hf-hub:<id>`` both run."""
    served = tmp_path / "served"
    served.mkdir()
    (served / HUB_ID.split("/")[0]).symlink_to(mirror / HUB_ID.split("/")[0])
    (served / "resmg-zoo").symlink_to(shared_hub / "resmg-zoo")
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub))
    ours = "preact_resnet18_sharedA.mnist"  # the package's own entry, pinned
    expected = {ours: _expected(timm.create_model(ours, pretrained=True))}
    expected[f"hf-hub:{HUB_ID}"] = _expected(_reference(run))
    names = list(expected)
    with serve(served) as (endpoint, log):
        env = _hub_env(endpoint, mirror, tmp_path)
        online = _hub_subprocess(names, env)
        assert any(f"/resmg-zoo/{ours}/resolve/main/model.safetensors" in line for line in log)
        assert any(f"/{HUB_ID}/resolve/main/model.safetensors" in line for line in log)
        unlisted = _hub_subprocess([f"hf-hub:{HUB_ID}"], dict(env, RESMG_ZOO_HUB_DIR=str(tmp_path / "no-mirror")))
    for name in names:
        assert isinstance(online[name], dict), online[name]
        torch.testing.assert_close(
            torch.tensor(online[name]["logits"]), torch.tensor(expected[name]), rtol=0, atol=1e-6
        )
        assert online[name]["warnings"] == []  # listed in a manifest: sha256 checked, no warning
    cached = _hub_subprocess(names, dict(env, HF_HUB_OFFLINE="1"))  # the stand-in is gone: from the cache
    assert cached == online
    # an id no manifest lists loads as timm loads it, with one warning that nothing was checked
    (warning,) = unlisted[f"hf-hub:{HUB_ID}"]["warnings"]
    assert "not in any resmg_zoo weights manifest" in warning and "no sha256 check" in warning
    assert unlisted[f"hf-hub:{HUB_ID}"]["logits"] == online[f"hf-hub:{HUB_ID}"]["logits"]
    empty = _hub_subprocess([f"{MODEL}.{TAG}"], dict(env, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty")))
    message = empty[f"{MODEL}.{TAG}"]
    assert message.startswith("PretrainedWeightsUnavailable") and "not in the local Hugging Face cache" in message
    assert "RESMG_ZOO_HUB_DIR" in message and "go online once" in message
    assert "HF_HUB_OFFLINE is set: the Hub was not contacted" in message


def test_an_unreachable_hub_is_said_without_the_clients_retries(mirror: Path, tmp_path: Path) -> None:
    """Nothing listens at the endpoint: one refused connection, then the cache alone (no retry loop)."""
    env = _hub_env("http://127.0.0.1:9", mirror, tmp_path)
    message = _hub_subprocess([f"{MODEL}.{TAG}"], env)[f"{MODEL}.{TAG}"]
    assert message.startswith("PretrainedWeightsUnavailable") and "not in the local Hugging Face cache" in message
    assert "the Hub at http://127.0.0.1:9 cannot be reached: 127.0.0.1:9: Connection refused" in message


def test_a_tampered_file_on_the_hub_is_a_sha256_error(mirror: Path, tmp_path: Path) -> None:
    served = _copy_mirror(mirror, tmp_path)
    weights = served / HUB_ID / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with serve(served) as (endpoint, _log):
        result = _hub_subprocess([f"hf-hub:{HUB_ID}"], _hub_env(endpoint, mirror, tmp_path))
    assert result[f"hf-hub:{HUB_ID}"].startswith("WeightsIntegrityError: sha256 mismatch")


PUSH = [sys.executable, "-m", "resmg_zoo.tools.push_to_hub"]


def _upload_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    """A process that uploads to and downloads from the stand-in with the real client (a token, its own
    cache; Xet storage, which the stand-in does not imitate, off as a user would turn it off)."""
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_TOKEN="hf_standin", HF_HUB_DISABLE_XET="1")
    env |= dict(HF_HOME=str(tmp_path / "hf"), RESMG_ZOO_HUB_DIR=str(tmp_path / "manifests"))
    env.pop("HF_HUB_OFFLINE", None)
    return env


def test_upload_publishes_the_repo_it_names_pinned_to_its_commit(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--repo-id`` through the real huggingface_hub client against the local stand-in: the folder,
    its config.json, its card and the entry all name that repo; the entry records the commit made and
    the Hub's LFS sha256 agreed; loading reads that commit, also after a later push and offline."""
    repo_id = f"alice/{MODEL}.{TAG}"
    record = tmp_path / "manifests" / MANIFEST_NAME  # the manifest RESMG_ZOO_HUB_DIR points the loader at
    served = tmp_path / "served"
    served.mkdir()
    with serve(served) as (endpoint, log):
        env = _upload_env(endpoint, tmp_path)
        push = [*PUSH, "--run", str(run), "--repo-id", repo_id, "--manifest", str(record)]
        first = subprocess.run(push, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        (entry,) = load_manifest(record)["entries"]
        assert entry["hub_id"] == repo_id and len(entry["revision"]) == 40
        assert f"at revision {entry['revision']}" in first.stdout
        assert any(line.startswith("PUT /_lfs/") for line in log)  # the weights went through the LFS API
        assert any(f"/paths-info/{entry['revision']}" in line for line in log)
        # what the Hub now holds, as a user downloads it
        folder = tmp_path / "downloaded"
        fetch = (
            "import sys; from huggingface_hub import hf_hub_download\n"
            "for name in sys.argv[4:]: hf_hub_download(sys.argv[1], name, revision=sys.argv[2], local_dir=sys.argv[3])"
        )
        files = [repo_id, entry["revision"], str(folder), *PUBLISHED_FILES]
        assert subprocess.run([sys.executable, "-c", fetch, *files], env=env, timeout=120).returncode == 0
        assert publish_module.verify_folder(folder, entry) == []
        assert ModelCard.load(folder / "README.md").data.eval_results[0].metric_value == entry["top1"]
        assert f'revision="{entry["revision"]}"' not in (folder / "README.md").read_text()  # made before the commit
        # a later push of other weights to main: the pinned entry still loads its own commit
        pinned_log = len(log)
        name = f"hf-hub:{repo_id}"
        loaded = _hub_subprocess([name], env)
        assert isinstance(loaded[name], dict) and loaded[name]["warnings"] == [], loaded  # sha256 checked
        assert any(f"/{repo_id}/resolve/{entry['revision']}/model.safetensors" in line for line in log[pinned_log:])
        second = subprocess.run(
            [*PUSH, "--run", str(run), "--repo-id", repo_id, "--manifest", str(tmp_path / "other.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        assert load_manifest(tmp_path / "other.json")["entries"][0]["revision"] != entry["revision"]
        later = len(log)
        again = _hub_subprocess([name], dict(env, HF_HOME=str(tmp_path / "fresh-cache")))  # downloads again
        assert again == loaded
        assert any(f"/resolve/{entry['revision']}/" in line for line in log[later:])
        assert not any("/resolve/main/model.safetensors" in line for line in log[later:])
        bogus = "f" * 40  # a revision the Hub does not have: asked for, or recorded in the manifest
        asked = _hub_subprocess([f"{name}@{bogus}"], env)[f"{name}@{bogus}"]
        assert asked.startswith("RevisionNotFoundError") and bogus in asked  # timm reads config.json there first
        record.write_text(record.read_text().replace(entry["revision"], bogus))
        recorded = _hub_subprocess([name], dict(env, HF_HOME=str(tmp_path / "third-cache")))[name]
        assert recorded.startswith("NotPublishedError") and f"has no revision '{bogus}'" in recorded
        record.write_text(record.read_text().replace(bogus, entry["revision"]))
    pinned = f"{name}@{entry['revision']}"
    offline = _hub_subprocess([name, pinned], dict(env, HF_HUB_OFFLINE="1"))  # the stand-in is gone
    assert offline[name] == loaded[name]  # the pinned commit, from the cache
    assert offline[pinned]["logits"] == loaded[name]["logits"]


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--repo-id", "../../etc"], "'../../etc'"),
        (["--repo-id", "alice/x/y"], "'alice/x/y'"),
        (["--repo-id", "alice/my model"], "'alice/my model'"),
        (["--repo-id", "alice/custom.mnist"], "alice/custom.mnist"),  # not <org>/<model>.<tag>
        (["--mirror", "MIRROR", "--org", "../.."], f"'../../{MODEL}.{TAG}'"),
        (["--mirror", "MIRROR", "--org", "a b"], f"'a b/{MODEL}.{TAG}'"),
    ],
)
def test_a_bad_hub_id_is_refused_before_anything_is_written(
    run: Path, tmp_path: Path, flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = tmp_path / "deep" / "mirror"
    record = tmp_path / "manifest.json"
    flags = [str(mirror) if f == "MIRROR" else f for f in flags]
    assert publish(["--run", str(run), *flags, "--manifest", str(record)]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert not mirror.exists() and not record.exists() and sorted(tmp_path.iterdir()) == []


def test_a_publish_racing_another_of_the_same_id_is_refused(
    run: Path, mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resmg_zoo.weights.publish import publishing

    copy = _copy_mirror(mirror, tmp_path)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    with publishing(HUB_ID, copy / ORG):  # another publisher of the id, mid-way
        assert publish(["--run", str(run), "--mirror", str(copy), "--org", ORG, "--replace"]) == EXIT_BUSY
    err = capsys.readouterr().err
    assert "another process is writing the published folder" in err and HUB_ID in err
    assert {p: p.read_bytes() for p in before} == before
    assert publish(["--run", str(run), "--mirror", str(copy), "--org", ORG, "--replace"]) == 0  # once it is done


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2(RENAME_EXCHANGE) is Linux's")
def test_exchange_swaps_two_folders_in_one_call_on_linux(tmp_path: Path) -> None:
    """On Linux :func:`~resmg_zoo.core.atomic._exchange` is a real exchange: it says so, and each path
    now holds the other's folder (the fallback of two renames is for systems without ``renameat2``)."""
    from resmg_zoo.core.atomic import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "from_a").write_text("a"), (b / "from_b").write_text("b")
    inodes = a.stat().st_ino, b.stat().st_ino
    assert _exchange(a, b) is True
    assert [p.name for p in a.iterdir()] == ["from_b"] and [p.name for p in b.iterdir()] == ["from_a"]
    assert (a.stat().st_ino, b.stat().st_ino) == inodes[::-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # nothing moved aside


def test_republishing_swaps_the_folder_in_one_step(
    run: Path, mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is written and verified beside its place, then exchanged: no moment without it,
    nothing left beside it. Every rename, removal and exchange of the publication is watched: after each,
    the published folder must be there, and on Linux the exchange is the step that swapped it."""
    import shutil

    from resmg_zoo.core import atomic

    copy = _copy_mirror(mirror, tmp_path)
    target = copy / HUB_ID
    inode = target.stat().st_ino
    seen: list[tuple[str, str, bool]] = []  # (call, its first path, the folder there after it)

    def watched(name: str, call):
        def wrapper(*args, **kwargs):
            try:
                return call(*args, **kwargs)
            finally:
                seen.append((name, str(args[0]), target.is_dir() and (target / "model.safetensors").is_file()))

        return wrapper

    exchanged: list[bool] = []
    real_exchange = atomic._exchange
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: exchanged.append(real_exchange(a, b)) or exchanged[-1])
    for module, name in ((os, "rename"), (os, "replace"), (shutil, "rmtree"), (atomic, "_exchange")):
        monkeypatch.setattr(module, name, watched(f"{module.__name__}.{name}", getattr(module, name)))
    assert publish(["--run", str(run), "--mirror", str(copy), "--org", ORG, "--replace"]) == 0
    assert seen and all(there for _, _, there in seen), [s for s in seen if not s[2]]  # never a moment without it
    assert not [s for s in seen if s[0] == "os.rename" and s[1] == str(target)]  # the old folder never moved aside
    if sys.platform.startswith("linux"):
        assert exchanged == [True]  # one renameat2 exchange, not the fallback's two renames
    assert target.stat().st_ino != inode  # a new folder took the old one's place
    assert sorted(p.name for p in (copy / ORG).iterdir() if not p.name.endswith(".lock")) == [HUB_ID.split("/")[1]]
    assert publish_module.verify_folder(copy / HUB_ID, load_manifest(copy / MANIFEST_NAME)["entries"][0]) == []


def test_dry_run_lists_the_files(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert publish(["--run", str(run), "--dry-run", "--org", ORG]) == 0
    out = capsys.readouterr().out
    assert f"would upload to {HUB_ID}" in out and "model.safetensors" in out and '"sha256"' in out
