"""Publishing trained weights as a Hugging Face Hub model folder and a manifest entry (SPEC §3).

The folder — ``model.safetensors``, ``config.json`` in timm's format, a model card ``README.md``,
``metrics.json`` and ``recipe.json`` — loads as is with ``timm.create_model("hf-hub:<id>")`` or
``timm.create_model("local-dir:<folder>")``. It goes to a mirror (:func:`to_mirror`, the Hub's
layout on a disk) or to the Hub (:func:`upload`); ``scripts/push_to_hub.py`` is the command
(:mod:`resmg_zoo.tools.push_to_hub`), which reads a finished training run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import timm
from timm.models import model_entrypoint
from timm.models._hub import save_config_for_hf

from ..core.atomic import make_shareable, write_text_atomic
from ..core.counting import count_parameters
from ..core.hashing import file_sha256
from ..core.tags import LICENSE, PAPER_ID, PAPER_TITLE, TAGS, hub_id
from .loading import load_weights
from .manifest import MANIFEST_NAME, WEIGHTS_NAME, add_entry, repo_manifest_path, validate_entry


class PublishError(ValueError):
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

    def tag(self, tag: str | None) -> str:
        """``tag``, or the run's dataset where that is a known tag."""
        tag = tag or (self.config["dataset"] if self.config["dataset"] in TAGS else None)
        if tag is None:
            raise PublishError(
                f"the run trained on {self.config['dataset']!r}, not a known tag: pass --tag (one of {list(TAGS)})"
            )
        if tag not in TAGS:
            raise PublishError(f"unknown tag {tag!r}; valid: {', '.join(TAGS)}")
        return tag


def build_entry(source: TrainedWeights, tag: str, org: str) -> dict[str, Any]:
    """The manifest entry of ``source`` published as ``<org>/<model>.<tag>``; its parameter count
    is that of the model rebuilt from the entry, which must take the weights exactly."""
    config, last, weights = source.config, source.metrics[-1], source.weights
    model = timm.create_model(config["model"], pretrained_cfg=tag, **source.model_args)
    load_weights(model, weights, f"{weights} ({config['model']}, {source.model_args})")
    return dict(
        model=config["model"],
        tag=tag,
        hub_id=hub_id(config["model"], tag, org),
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
        wall_seconds=round(last["wall_seconds"], 1),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        command=config.get("command") or "",
    )


def recipe_summary(recipe: dict[str, Any], config: dict[str, Any]) -> str:
    """One sentence of every training setting in ``recipe`` (the run's ``recipe_settings`` plus
    precision and seed); the levers a recipe leaves off (EMA, label smoothing, low resolution) only
    where they are on."""
    parts = [
        f"`{recipe['name']}`: {recipe['epochs']:g} epochs on {config['train_images']:,} train images",
        f"batch {recipe['batch_size']}, SGD lr {recipe['lr']} (momentum {recipe['momentum']}, "
        f"nesterov {recipe['nesterov']})",
        f"weight decay {recipe['weight_decay']}",
        f"{recipe['schedule']} schedule after {recipe['warmup_epochs']:g} warm-up epochs",
        f"augmentation `{recipe['augment']}`",
    ]
    if recipe.get("label_smoothing"):
        parts.append(f"label smoothing {recipe['label_smoothing']}")
    if recipe.get("ema_decay"):
        parts.append(f"an EMA of the weights (decay {recipe['ema_decay']}, evaluated as `ema_*`)")
    if recipe.get("low_res"):
        parts.append(f"{recipe['low_res']}-pixel batches for the first {recipe['low_res_epochs']:g} epochs")
    return ", ".join(parts) + f", {recipe['precision']}, seed {recipe['seed']}"


def flip_row(last: dict[str, Any], entry: dict[str, Any], config: dict[str, Any]) -> str:
    """The model card's row for flip-averaged test accuracy, where the run measured it (else empty)."""
    if "test_flip_top1" not in last:
        return ""
    return f"| {entry['dataset']} test, flip-averaged (2 passes) | {last['test_flip_top1']:.2f} % | — | " + (
        f"{config['test_images']:,} |\n"
    )


def model_card(entry: dict[str, Any], source: TrainedWeights) -> str:
    """The Hub model card: YAML metadata (library, license, datasets, model-index) and a body."""
    model, tag = entry["model"], entry["tag"]
    config, rows = source.config, source.metrics
    dataset_id = entry["dataset"]
    recipe = entry["recipe"]
    front = f"""---
library_name: timm
license: {LICENSE}
tags:
- image-classification
- timm
- resmg_zoo
datasets:
- {dataset_id}
model-index:
- name: {model}.{tag}
  results:
  - task:
      type: image-classification
    dataset:
      name: {entry["dataset"]}
      type: {dataset_id}
      split: test
    metrics:
    - type: accuracy
      name: top-1 accuracy
      value: {entry["top1"]}
    - type: top_5_accuracy
      name: top-5 accuracy
      value: {entry["top5"]}
---
"""
    paper_line = (model_entrypoint(model).__doc__ or model).strip().split("\n")[0]  # the model's own docstring
    return (
        front
        + f"""
# {model}.{tag}

{paper_line}

From *{PAPER_TITLE}* (He, Chen, Zhang, Xu; {PAPER_ID}), packaged by resmg_zoo.

## Measured

| split | top-1 | top-5 | images |
|---|---|---|---|
| {entry["dataset"]} test | {entry["top1"]:.2f} % | {entry["top5"]:.2f} % | {config["test_images"]:,} |
{flip_row(rows[-1], entry, config)}
Measured by the training run that produced these weights, at its last epoch ({rows[-1]["epoch"]}),
in {config["precision"]} on {entry["hardware"]}; {entry["wall_seconds"]:.0f} s of training.
Weights are stored in {entry["dtype"]} exactly as trained. Parameters: {entry["params"]:,}.

## Recipe

{recipe_summary(recipe, config)}. Command:

```
{entry["command"]}
```

## Use

```python
import timm, resmg_zoo
model = timm.create_model("hf-hub:{entry["hub_id"]}", pretrained=True)
model = timm.create_model("{model}.{tag}", pretrained=True)           # resolved by resmg_zoo
import torch
model = torch.hub.load("<owner>/resmg_zoo", "{model}", pretrained=True, dataset="{tag}")
```

Model arguments: `{json.dumps(entry["model_args"])}`; sha256 of `{WEIGHTS_NAME}`: `{entry["sha256"]}`.
"""
    )


def write_folder(source: TrainedWeights, folder: Path, tag: str, org: str) -> dict[str, Any]:
    """Write the Hub-layout folder of ``source`` into ``folder``; return its manifest entry."""
    entry = build_entry(source, tag, org)
    problems = validate_entry(entry)
    if problems:
        raise PublishError("; ".join(problems))
    model = timm.create_model(entry["model"], pretrained_cfg=tag, **entry["model_args"])
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.weights, folder / WEIGHTS_NAME)
    save_config_for_hf(
        model,
        str(folder / "config.json"),
        model_args={k: v for k, v in entry["model_args"].items() if k != "num_classes"},
        model_config={"pretrained_cfg": {"hf_hub_id": entry["hub_id"], "tag": tag}},
    )
    write_text_atomic(folder / "README.md", model_card(entry, source))
    write_text_atomic(folder / "metrics.json", json.dumps(source.metrics, indent=2) + "\n")
    write_text_atomic(
        folder / "recipe.json", json.dumps(dict(entry["recipe"], command=entry["command"]), indent=2) + "\n"
    )
    return entry


def to_mirror(source: TrainedWeights, mirror: Path, tag: str, org: str, record: bool = False) -> tuple[dict, Path]:
    """Publish into ``<mirror>/<hub id>/`` (written aside, then renamed into place) and the mirror's
    manifest; ``record`` also adds the entry to the repository's manifest. Returns the entry and folder."""
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=mirror if mirror.exists() else None))
    make_shareable(staging)  # the published folder, once renamed: 0755 under umask 022, not 0700
    try:
        entry = write_folder(source, staging, tag, org)
        target = mirror / entry["hub_id"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    add_entry(mirror / MANIFEST_NAME, entry)
    if record:
        add_entry(repo_manifest_path(), entry)
    return entry, target


def staged_files(source: TrainedWeights, tag: str, org: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The entry and the ``(name, bytes)`` of every file a publication would send, written nowhere."""
    with tempfile.TemporaryDirectory() as tmp:
        entry = write_folder(source, Path(tmp), tag, org)
        return entry, [(f.name, f.stat().st_size) for f in sorted(Path(tmp).iterdir())]


def upload(source: TrainedWeights, repo_id: str, tag: str, org: str) -> dict[str, Any]:
    """Upload the folder to the Hub repo ``repo_id`` with ``huggingface_hub`` (its token), then add
    the entry to the repository's manifest. The id must be ``<org>/<model>.<tag>``."""
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        entry = write_folder(source, Path(tmp), tag, org)
        entry["hub_id"] = repo_id
        problems = validate_entry(entry, check_params=False)
        if problems:  # checked before anything is sent
            raise PublishError("; ".join(problems))
        api = HfApi()
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=tmp, commit_message=f"resmg_zoo: {entry['model']}.{entry['tag']}"
        )
    add_entry(repo_manifest_path(), entry)
    return entry
