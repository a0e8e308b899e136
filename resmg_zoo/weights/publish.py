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

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import timm

from ..core.atomic import exclusive_lock, make_shareable, replace_folder, write_text_atomic
from ..core.counting import count_parameters
from ..core.errors import UsageError
from ..core.hashing import file_sha256
from ..core.tags import TAGS, check_hub_id
from .card import label_names_for, write_card, write_config
from .loading import WeightsIntegrityError, fit_state_dict, load_weights
from .manifest import MANIFEST_NAME, PUBLISHED_FILES, WEIGHTS_NAME, add_entry, validate_entry


class PublishError(UsageError):
    """Weights that cannot be published; the message says what is missing."""


@dataclass(frozen=True)
class TrainedWeights:
    """What publishing needs of a finished training run: its ``config.json``, its metrics rows and
    its verified weights file."""

    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    weights: Path

    @property
    def model_args(self) -> dict[str, Any]:
        """Everything ``create_model`` needs to rebuild the trained architecture."""
        config = self.config
        return {**config["model_kwargs"], "num_classes": config["num_classes"], "in_chans": config["input_size"][0]}

    def pretrained_tag(self, tag: str | None) -> str:
        """``tag``, or the run's dataset where that is a known tag."""
        tag = tag or (self.config["dataset"] if self.config["dataset"] in TAGS else None)
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
    model = timm.create_model(config["model"], pretrained_cfg=tag, **source.model_args)
    load_weights(model, weights, f"{weights} ({config['model']}, {source.model_args})")
    entry = dict(
        model=config["model"],
        tag=tag,
        hub_id=repo_id,
        file=WEIGHTS_NAME,
        sha256=file_sha256(weights),
        bytes=weights.stat().st_size,
        params=count_parameters(model),
        dataset=config["dataset"] if config["dataset"] in TAGS else Path(config["dataset"]).name,
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
    shutil.copyfile(source.weights, folder / WEIGHTS_NAME)
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
    if size != entry["bytes"]:
        problems.append(f"model.safetensors: {size:,} bytes, the entry says {entry['bytes']:,}")
    digest = file_sha256(weights)
    if digest != entry["sha256"]:
        problems.append(f"model.safetensors: sha256 {digest}, the entry says {entry['sha256']}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        rows = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return [*problems, f"not valid JSON: {err}"]
    problems += config_problems(config, entry)
    last_top1 = rows[-1].get("test_top1") if isinstance(rows, list) and rows else None
    if last_top1 is None or round(last_top1, 4) != entry["top1"]:
        problems.append(f"metrics.json: last test_top1 is {last_top1}, the entry says {entry['top1']}")
    if problems:
        return problems
    try:
        model = timm.create_model(entry["model"], pretrained_cfg=entry["tag"], **entry["model_args"])
    except (UsageError, TypeError, RuntimeError) as err:  # bad model_args, an unknown argument or model
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


def staged(source: TrainedWeights, entry: dict[str, Any], parent: Optional[Path] = None) -> Path:
    """The folder of ``entry`` written into a new hidden folder of ``parent`` (a temporary folder
    without one) and verified; a folder that does not verify is removed and raises :class:`PublishError`."""
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=parent))
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


def to_mirror(
    source: TrainedWeights, mirror: Path, tag: str, repo_id: str, record: Optional[Path] = None
) -> tuple[dict, Path]:
    """Publish into ``<mirror>/<repo id>/`` and the mirror's manifest; ``record``: also into that
    manifest (the repository's). The folder is written and verified beside its place, then swapped in
    in one step, so a reader sees the old folder or the new one, complete. Returns the entry and folder."""
    entry = build_entry(source, tag, repo_id)
    target = mirror / entry["hub_id"]
    target.parent.mkdir(parents=True, exist_ok=True)
    with publishing(entry["hub_id"], target.parent):
        staging = staged(source, entry, target.parent)
        try:
            replace_folder(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        add_entry(mirror / MANIFEST_NAME, entry)
        if record is not None:
            add_entry(record, entry)
    return entry, target


def staged_files(source: TrainedWeights, tag: str, repo_id: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The entry and the ``(name, bytes)`` of every file a publication would send, written nowhere."""
    entry = build_entry(source, tag, repo_id)
    folder = staged(source, entry)
    try:
        return entry, [(f.name, f.stat().st_size) for f in sorted(folder.iterdir())]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def upload(source: TrainedWeights, repo_id: str, tag: str, record: Path) -> dict[str, Any]:
    """Upload the verified folder to the Hub repo ``repo_id`` with ``huggingface_hub`` (its token and
    endpoint), check the sha256 that the Hub reports for the uploaded weights (its LFS metadata at the
    new commit), then record the entry, with that commit as ``revision``, in the manifest ``record``."""
    from huggingface_hub import HfApi

    entry = build_entry(source, tag, repo_id)
    with publishing(repo_id, record.parent):
        folder = staged(source, entry)
        try:
            api = HfApi()
            api.create_repo(repo_id, repo_type="model", exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=f"resmg_zoo: {entry['model']}.{entry['tag']}"
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        (remote,) = api.get_paths_info(repo_id, [WEIGHTS_NAME], revision=commit.oid, expand=True)
        hub_sha256 = remote.lfs.sha256 if getattr(remote, "lfs", None) else None
        if hub_sha256 != entry["sha256"]:
            raise PublishError(
                f"the Hub reports sha256 {hub_sha256} for {repo_id}/{WEIGHTS_NAME} at {commit.oid}, but the file "
                f"sent has {entry['sha256']}; {record} is unchanged — upload again"
            )
        entry["revision"] = commit.oid
        add_entry(record, entry)
    return entry
