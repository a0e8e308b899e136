"""Publishing trained weights as a Hugging Face Hub model folder and a manifest entry.

The folder — ``model.safetensors``, ``config.json`` in timm's format, a model card ``README.md``,
``metrics.json`` and ``recipe.json`` — loads as is with ``timm.create_model("hf-hub:<id>")`` or
``timm.create_model("local-dir:<folder>")``. It is written aside and checked against its entry
(:func:`verify_folder`) before it goes anywhere: to a mirror (:func:`to_mirror`, the Hub's layout on
a disk, swapped into place in one step) or to the Hub (:func:`upload`, which records the commit it
made and checks the Hub's sha256 of the weights). One publisher of an id at a time (a lock).
``push_to_hub`` is the command (:mod:`resmg_zoo.tools.push_to_hub`), which reads a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import timm

from ..core.atomic import exclusive_lock, make_shareable, replace_folder, restore_aside, write_text_atomic
from ..core.counting import count_parameters
from ..core.errors import UnavailableError, UsageError
from ..core.files import UnreadableFileError, finite_number, read_json, read_json_object
from ..core.hashing import file_sha256, read_with_sha256
from ..core.tags import TAGS, check_hub_id, dataset_identity
from .card import label_names_for, write_card, write_config
from .loading import WeightsIntegrityError, fit_state_dict, load_state, parse_state_dict
from .manifest import (
    MANIFEST_NAME,
    PUBLISHED_FILES,
    WEIGHTS_NAME,
    add_entry,
    entry_architecture,
    load_manifest,
    validate_entry,
)
from .pins import int8_record_problems, report_problems


class PublishError(UsageError):
    """Weights that cannot be published; the message says what is missing."""


@dataclass(frozen=True)
class TrainedWeights:
    """What publishing needs of a finished training run: its ``config.json``, its metrics rows and
    its verified weights file, with the bytes that were verified and their sha256 where the caller
    read them (:meth:`resmg_zoo.train.run.Run.verified_weights`); else the file is read once, here."""

    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    weights: Path
    data: Optional[bytes] = field(default=None, repr=False, compare=False)
    sha256: Optional[str] = None

    @cached_property
    def verified(self) -> tuple[bytes, str]:
        """The weights' bytes and their sha256, from one read: what is parsed, hashed and published."""
        if self.data is not None:  # read (and checked against the run's pointer) by the caller
            return self.data, self.sha256 or hashlib.sha256(self.data).hexdigest()
        try:
            return read_with_sha256(self.weights)
        except OSError as err:
            raise PublishError(f"{self.weights} cannot be read: {err.strerror or err}") from None

    @property
    def model_args(self) -> dict[str, Any]:
        """Everything ``create_model`` needs to rebuild the trained architecture."""
        config = self.config
        return {**config["model_kwargs"], "num_classes": config["num_classes"], "in_chans": config["input_size"][0]}

    def pretrained_tag(self, tag: str | None) -> str:
        """``tag``, or the run's dataset where that is a known tag."""
        dataset = dataset_identity(self.config["dataset"])
        tag = tag or (dataset.name if dataset.known else None)
        if tag is None:
            raise PublishError(
                f"the run trained on {self.config['dataset']!r}, not a known tag: pass --tag (one of {list(TAGS)})"
            )
        if tag not in TAGS:
            raise PublishError(f"unknown tag {tag!r}; valid: {', '.join(TAGS)}")
        return tag


def build_entry(source: TrainedWeights, tag: str, repo_id: str) -> dict[str, Any]:
    """The manifest entry of ``source`` published as the Hub repo ``repo_id`` (``<org>/<model>.<tag>``);
    its parameter count is that of the model rebuilt from the entry, which must take the weights exactly."""
    config, last, weights = source.config, source.metrics[-1], source.weights
    check_hub_id(repo_id)
    data, sha256 = source.verified  # the bytes parsed here are the bytes hashed and published
    where = f"{weights} ({config['model']}, {source.model_args})"
    model = timm.create_model(config["model"], pretrained_cfg=tag, **source.model_args)
    load_state(model, parse_state_dict(data, where), where)
    entry = dict(
        model=config["model"],
        tag=tag,
        hub_id=repo_id,
        file=WEIGHTS_NAME,
        sha256=sha256,
        bytes=len(data),
        params=count_parameters(model),
        dataset=dataset_identity(config["dataset"]).name,  # a registry name, or the folder's own name: never a path
        top1=round(last["test_top1"], 4),
        top5=round(last["test_top5"], 4),
        model_args=source.model_args,
        dtype="float32",
        recipe={**config["recipe_settings"], "precision": config["precision"], "seed": config["seed"]},
        hardware=config.get("hardware", "unknown"),
        training_seconds=round(last["train_seconds_total"], 1),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        command=config.get("command") or "",
    )
    problems = validate_entry(entry)
    if problems:  # e.g. an id that is not <org>/<model>.<tag>: nothing is written
        raise PublishError("; ".join(problems))
    return entry


def write_folder(source: TrainedWeights, folder: Path, entry: dict[str, Any]) -> None:
    """Write the Hub-layout folder of ``source``, published as ``entry``, into ``folder``."""
    config = source.config
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WEIGHTS_NAME).write_bytes(source.verified[0])  # the bytes the entry's sha256 is of
    write_config(folder, entry, label_names_for(entry, config.get("classes")))
    write_card(folder, entry, source.metrics, (config.get("train_images"), config.get("test_images")))
    write_text_atomic(folder / "metrics.json", json.dumps(source.metrics, indent=2) + "\n")
    write_text_atomic(
        folder / "recipe.json", json.dumps(dict(entry["recipe"], command=entry["command"]), indent=2) + "\n"
    )


def verify_folder(folder: Path, entry: dict[str, Any]) -> list[str]:
    """What differs between a published folder and its manifest entry (empty when nothing does).

    Checked: the five files are there; ``model.safetensors`` has the entry's bytes and sha256;
    ``config.json`` names the entry's architecture, tag and hub id and its ``model_args`` agree with
    the entry's; the model rebuilt from the entry's ``model_args`` has the entry's parameter count
    and takes every tensor of the file, shape for shape; ``metrics.json``'s last test top-1 is the entry's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    problems = [f"{name}: missing" for name in PUBLISHED_FILES if not (folder / name).is_file()]
    problems += validate_entry(entry, check_params=False)
    if problems:
        return problems
    weights = folder / WEIGHTS_NAME
    size = weights.stat().st_size
    if size != entry["bytes"]:  # no need to hash what has another size
        problems.append(f"model.safetensors: {size:,} bytes, the entry says {entry['bytes']:,}")
    elif (digest := file_sha256(weights)) != entry["sha256"]:
        problems.append(f"model.safetensors: sha256 {digest}, the entry says {entry['sha256']}")
    problems += int8_record_problems(folder, entry) + report_problems(folder, entry)
    try:
        config = read_json_object(folder / "config.json", "the published config")
        rows = metrics_rows(folder)
    except UnreadableFileError as err:
        return [*problems, str(err)]
    problems += config_problems(config, entry)
    if not finite_number(last_top1 := rows[-1].get("test_top1")) or round(last_top1, 4) != entry["top1"]:
        problems.append(f"metrics.json: last test_top1 is {last_top1!r}, the entry says {entry['top1']}")
    if problems:
        return problems
    try:
        model = entry_architecture(entry)
    except UsageError as err:  # arguments no model takes, or a value the model's own check refuses
        return [f"cannot build {entry['model']} from the entry's model_args {entry['model_args']}: {err}"]
    if count_parameters(model) != entry["params"]:
        problems.append(
            f"the rebuilt model has {count_parameters(model):,} parameters, the entry says {entry['params']:,}"
        )
    try:
        state = load_file(str(weights))
        fit_state_dict(state, model, WEIGHTS_NAME, strict=True)  # every tensor, head and stem included
    except WeightsIntegrityError as err:
        problems.append(str(err))
    except (OSError, SafetensorError) as err:  # a file safetensors cannot read
        problems.append(f"model.safetensors is not a readable safetensors file: {err}")
    return problems


def metrics_rows(folder: Path) -> list[dict[str, Any]]:
    """A published folder's ``metrics.json``: a list of per-epoch rows, each an object with its epoch number
    (:class:`~resmg_zoo.core.files.UnreadableFileError` naming the file otherwise)."""
    rows = read_json(folder / "metrics.json", "the published metrics")
    if not (
        isinstance(rows, list) and rows and all(isinstance(r, dict) and finite_number(r.get("epoch")) for r in rows)
    ):
        raise UnreadableFileError(f"{folder / 'metrics.json'} is not a list of per-epoch rows, each with its epoch")
    return rows


def config_problems(config: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    """Where a folder's ``config.json`` names another architecture, tag, repo or model arguments than the entry."""
    problems = []
    cfg = config.get("pretrained_cfg") or {}
    for what, theirs, ours in (
        ("architecture", config.get("architecture"), entry["model"]),
        ("pretrained_cfg.tag", cfg.get("tag"), entry["tag"]),
        ("pretrained_cfg.hf_hub_id", cfg.get("hf_hub_id"), entry["hub_id"]),
    ):
        if theirs != ours:
            problems.append(f"config.json: {what} is {theirs!r}, the entry says {ours!r}")
    config_args = {**(config.get("model_args") or {}), "num_classes": config.get("num_classes")}
    for key, value in entry["model_args"].items():
        if key in config_args and _same(config_args[key]) != _same(value):
            problems.append(f"config.json: model_args.{key} is {config_args[key]!r}, the entry says {value!r}")
    return problems


def _same(value: Any) -> Any:
    """``"8,16"``, ``[8, 16]`` and ``(8, 16)`` are one value of ``model_args``."""
    if isinstance(value, str) and re.fullmatch(r"\d+(,\d+)+", value.replace(" ", "")):
        return [int(v) for v in value.replace(" ", "").split(",")]
    return list(value) if isinstance(value, (list, tuple)) else value


@contextmanager
def publishing(repo_id: str, where: Path) -> Iterator[None]:
    """One publisher of ``repo_id`` at a time: a lock file in ``where`` (the mirror's org folder, or
    the folder of the manifest an upload records in); a second publisher fails at once."""
    namespace, name = check_hub_id(repo_id).split("/")
    with exclusive_lock(where / f".{namespace}.{name}.publish.lock", f"the published folder {repo_id}"):
        yield


def staging_prefix(hub: str) -> str:
    """The name a publication's staging folder starts with (beside the published folder of ``hub``)."""
    return f".publish-{hub.split('/')[1]}-"


def staged(source: TrainedWeights, entry: dict[str, Any], parent: Optional[Path] = None) -> Path:
    """The folder of ``entry`` written into a new hidden folder of ``parent`` (a temporary folder
    without one) and verified; a folder that does not verify is removed and raises :class:`PublishError`."""
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(entry["hub_id"]), dir=parent))
    make_shareable(staging)  # the published folder, once renamed: 0755 under umask 022, not 0700
    try:
        write_folder(source, staging, entry)
        problems = verify_folder(staging, entry)
        if problems:
            raise PublishError(f"the folder written for {entry['hub_id']} does not verify: " + "; ".join(problems))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def prepare_replacement(entry: dict[str, Any], old: Optional[dict[str, Any]], replace: bool, where: str) -> None:
    """Refuse to publish over an existing entry of the same hub id unless ``replace``; with it, the
    entry keeps what it replaces in ``previous`` (its sha256, date, top-1 and Hub revision)."""
    if old is None:
        return
    if "swap_from" in old and old["sha256"] == entry["sha256"]:  # finishing this same, interrupted publication
        entry["previous"] = list(old.get("previous", []))
        return
    if not replace:
        raise PublishError(
            f"{entry['hub_id']} is already published ({where}: sha256 {old['sha256'][:12]}…, {old['date']}); "
            "pass --replace to publish over it (the entry then records what it replaced)"
        )
    replaced = {k: old[k] for k in ("sha256", "date", "top1", "revision") if k in old}
    entry["previous"] = [*old.get("previous", []), replaced]


def listed_entry(manifest: Path, hub: str) -> Optional[dict[str, Any]]:
    """The entry of ``hub`` in the manifest at ``manifest`` (``None`` where it lists none)."""
    return next((e for e in load_manifest(manifest)["entries"] if e["hub_id"] == hub), None)


def check_mirror_target(mirror: Path, target: Path) -> None:
    """Refuse (:class:`PublishError`) a mirror that is no folder, and a published or org folder that is a
    symbolic link: the swap would replace, then remove, what it points to outside the mirror."""
    blocker = next((p for p in [target, *target.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise PublishError(f"the mirror {mirror} cannot hold {target}: {blocker} is a file, not a folder")
    link = next((p for p in (target, target.parent) if p.is_symlink()), None)
    if link is not None:
        raise PublishError(f"{link} is a symbolic link (to {os.readlink(link)}): publish into the folder itself")


def to_mirror(
    source: TrainedWeights,
    mirror: Path,
    tag: str,
    repo_id: str,
    record: Optional[Path] = None,
    replace: bool = False,
) -> tuple[dict, Path]:
    """Publish into ``<mirror>/<repo id>/`` and the mirror's manifest; ``record``: also into that
    manifest (the repository's). Returns the entry and folder. An id already published is refused
    unless ``replace``. The steps, each leaving a state that loads (a reader sees the old folder with
    an entry that accepts it, or the new one with an entry that accepts it, never new bytes against an
    old sha256):

    1. write the folder beside its place and verify it (a kill leaves a hidden ``.publish-*`` folder,
       removed by the next publication);
    2. where a folder with other weights is there: write the new entry with ``swap_from`` naming the
       old file's sha256 into the manifests, so that either file is accepted;
    3. swap the folder in, in one step (``renameat2``; without it two renames, which the next
       publication or a reader undoes or follows: :func:`~resmg_zoo.core.atomic.restore_aside`);
    4. write the final entry, without ``swap_from``.

    ``resmg-mirror verify`` names an interrupted publication and what to run; running the same
    ``resmg-push --replace`` again finishes it."""
    target = mirror / check_hub_id(repo_id)
    check_mirror_target(mirror, target)  # before anything is built, written or locked
    entry = build_entry(source, tag, repo_id)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PublishError(f"cannot create {target.parent} in the mirror {mirror}: {err.strerror or err}") from None
    manifests = [mirror / MANIFEST_NAME, *([record] if record is not None else [])]
    with publishing(entry["hub_id"], target.parent):
        check_mirror_target(mirror, target)  # again, under the lock
        restore_aside(target)
        for stale in target.parent.glob(staging_prefix(entry["hub_id"]) + "*"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed publication's staging folder (we hold the lock)
        old = listed_entry(mirror / MANIFEST_NAME, entry["hub_id"])
        current = target / WEIGHTS_NAME
        old_sha256 = file_sha256(current) if current.is_file() else None
        if old is None and target.exists() and old_sha256 != entry["sha256"]:
            raise PublishError(
                f"{target} exists but {mirror / MANIFEST_NAME} lists no {entry['hub_id']}: a folder this mirror does "
                "not vouch for; move it away first"
            )  # (with these very weights it is this publication, killed before its entry: it is finished here)
        prepare_replacement(entry, old, replace, str(mirror / MANIFEST_NAME))
        staging = staged(source, entry, target.parent)
        try:
            if old_sha256 is not None and old_sha256 != entry["sha256"]:
                for manifest in manifests:
                    add_entry(manifest, dict(entry, swap_from={"sha256": old_sha256}))
            replace_folder(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for manifest in manifests:
            add_entry(manifest, entry)
    return entry, target


def staged_files(source: TrainedWeights, tag: str, repo_id: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The entry and the ``(name, bytes)`` of every file a publication would send, written nowhere."""
    entry = build_entry(source, tag, repo_id)
    folder = staged(source, entry)
    try:
        return entry, [(f.name, f.stat().st_size) for f in sorted(folder.iterdir())]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class HubRefusedError(UnavailableError):
    """The Hub did not take an upload (no token, no write access, a server error); nothing was recorded."""


def upload(source: TrainedWeights, repo_id: str, tag: str, record: Path, replace: bool = False) -> dict[str, Any]:
    """Upload the verified folder to the Hub repo ``repo_id`` with ``huggingface_hub`` (its token and
    endpoint), check the sha256 that the Hub reports for the uploaded weights (its LFS metadata at the
    new commit), then record the entry, with that commit as ``revision``, in the manifest ``record``.
    An id that ``record`` lists already is refused unless ``replace`` (then the entry keeps the old
    one's revision in ``previous``: the Hub keeps the old commit too)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    entry = build_entry(source, tag, repo_id)
    with publishing(repo_id, record.parent):
        prepare_replacement(entry, listed_entry(record, repo_id), replace, str(record))
        folder = staged(source, entry)
        try:
            api = HfApi()
            api.create_repo(repo_id, repo_type="model", exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=f"resmg_zoo: {entry['model']}.{entry['tag']}"
            )
            (remote,) = api.get_paths_info(repo_id, [WEIGHTS_NAME], revision=commit.oid, expand=True)
        except HfHubHTTPError as err:
            raise HubRefusedError(f"the Hub refused the upload of {repo_id}: {err}; {record} is unchanged") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        hub_sha256 = remote.lfs.sha256 if getattr(remote, "lfs", None) else None
        if hub_sha256 != entry["sha256"]:
            raise PublishError(
                f"the Hub reports sha256 {hub_sha256} for {repo_id}/{WEIGHTS_NAME} at {commit.oid}, but the file "
                f"sent has {entry['sha256']}; {record} is unchanged — upload again"
            )
        entry["revision"] = commit.oid
        add_entry(record, entry)
    return entry
