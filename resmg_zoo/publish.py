"""Publish a training run as a Hugging Face Hub model folder and a manifest entry (SPEC §3).

    python scripts/push_to_hub.py --run runs/mnist-quick --mirror ~/resmg_hub        # local mirror
    python scripts/push_to_hub.py --run runs/mnist-quick --repo-id org/name.tag       # the Hub (needs a token)
    python scripts/push_to_hub.py --run runs/mnist-quick --dry-run                   # list what would be sent

The folder — ``model.safetensors``, ``config.json`` in timm's format, a model card ``README.md``,
``metrics.json`` and ``recipe.json`` — loads as is with ``timm.create_model("hf-hub:<id>")`` or
``timm.create_model("local-dir:<folder>")``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import timm
from timm.models._hub import save_config_for_hf

from .atomic import make_shareable, write_text_atomic
from .checkpoint import checkpoint_weights_path, load_weights
from .counting import count_parameters
from .hashing import file_sha256
from .manifest import MANIFEST_NAME, add_entry, repo_manifest_path, validate_entry
from .run_log import read_metrics
from .tags import DEFAULT_HUB_ORG, LICENSE, PAPER_ID, PAPER_TITLE, TAGS, hub_id
from .variants import VARIANTS

WEIGHTS_NAME = "model.safetensors"


class PublishError(ValueError):
    """A run that cannot be published; the message says what is missing."""


def _run_summary(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise PublishError(f"{run_dir} is not a training run folder (no config.json)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    rows = read_metrics(run_dir)
    if not rows or "test_top1" not in rows[-1]:
        raise PublishError(f"{run_dir} has no finished epoch with a test accuracy (metrics.jsonl)")
    epochs = config["recipe_settings"]["epochs"]
    if rows[-1]["epoch"] < epochs:
        raise PublishError(f"{run_dir} stopped at epoch {rows[-1]['epoch']} of {epochs}: finish it with --resume first")
    return config, rows, checkpoint_weights_path(run_dir)


def model_args_of(config: dict[str, Any]) -> dict[str, Any]:
    """Everything ``create_model`` needs to rebuild the trained architecture."""
    return {**config["model_kwargs"], "num_classes": config["num_classes"], "in_chans": config["input_size"][0]}


def build_entry(config: dict[str, Any], rows: list[dict[str, Any]], weights: Path, tag: str, org: str) -> dict:
    model_name = config["model"]
    last = rows[-1]
    return dict(
        model=model_name,
        tag=tag,
        hub_id=hub_id(model_name, tag, org),
        file=WEIGHTS_NAME,
        sha256=file_sha256(weights),
        bytes=weights.stat().st_size,
        params=0,  # filled in from the rebuilt model
        dataset=config["dataset"] if config["dataset"] in TAGS else Path(config["dataset"]).name,
        top1=round(last["test_top1"], 4),
        top5=round(last["test_top5"], 4),
        model_args=model_args_of(config),
        dtype="float32",
        recipe={**config["recipe_settings"], "precision": config["precision"], "seed": config["seed"]},
        hardware=config.get("hardware", "unknown"),
        wall_seconds=round(last["wall_seconds"], 1),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        command=config.get("command") or "",
    )


def model_card(entry: dict[str, Any], config: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The Hub model card: YAML metadata (library, license, datasets, model-index) and a body."""
    model, tag = entry["model"], entry["tag"]
    variant = VARIANTS.get(model)
    dataset_id = {"mnist": "mnist", "cifar10": "cifar10", "cifar100": "cifar100"}.get(
        entry["dataset"], entry["dataset"]
    )
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
    paper_line = variant.docstring().split("\n")[0] if variant else model
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

Measured by the training run that produced these weights, at its last epoch ({rows[-1]["epoch"]}),
in {config["precision"]} on {entry["hardware"]}; {entry["wall_seconds"]:.0f} s of training.
Weights are stored in {entry["dtype"]} exactly as trained. Parameters: {entry["params"]:,}.

## Recipe

`{recipe["name"]}`: {recipe["epochs"]} epochs, batch {recipe["batch_size"]}, SGD lr {recipe["lr"]} (momentum
{recipe["momentum"]}, nesterov {recipe["nesterov"]}), weight decay {recipe["weight_decay"]}, {recipe["schedule"]}
schedule, augmentation `{recipe["augment"]}`, seed {recipe["seed"]}. Command:

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


def write_folder(run_dir: Path, folder: Path, tag: Optional[str], org: str) -> dict[str, Any]:
    """Write the Hub-layout folder for ``run_dir`` into ``folder``; return its manifest entry."""
    config, rows, weights = _run_summary(run_dir)
    dataset_key = config["dataset"] if config["dataset"] in TAGS else None
    tag = tag or dataset_key
    if tag is None:
        raise PublishError(
            f"the run trained on {config['dataset']!r}, not a known tag: pass --tag (one of {list(TAGS)})"
        )
    if tag not in TAGS:
        raise PublishError(f"unknown tag {tag!r}; valid: {', '.join(TAGS)}")
    entry = build_entry(config, rows, weights, tag, org)
    model = timm.create_model(entry["model"], pretrained_cfg=tag, **entry["model_args"])
    load_weights(model, weights)  # the weights fit the architecture the config describes
    entry["params"] = count_parameters(model)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, folder / WEIGHTS_NAME)
    save_config_for_hf(
        model,
        str(folder / "config.json"),
        model_args={k: v for k, v in entry["model_args"].items() if k != "num_classes"},
        model_config={"pretrained_cfg": {"hf_hub_id": entry["hub_id"], "tag": tag}},
    )
    write_text_atomic(folder / "README.md", model_card(entry, config, rows))
    write_text_atomic(folder / "metrics.json", json.dumps(rows, indent=2) + "\n")
    write_text_atomic(
        folder / "recipe.json", json.dumps(dict(entry["recipe"], command=entry["command"]), indent=2) + "\n"
    )
    problems = validate_entry(entry)
    if problems:
        raise PublishError("; ".join(problems))
    return entry


def publish(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    run_dir = Path(args.run)
    if args.mirror:
        mirror = Path(args.mirror)
        staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=mirror if mirror.exists() else None))
        make_shareable(staging)  # the published folder, once renamed: 0755 under umask 022, not 0700
        try:
            entry = write_folder(run_dir, staging, args.tag, args.org)
            target = mirror / entry["hub_id"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(staging), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        add_entry(mirror / MANIFEST_NAME, entry)
        print(f"published {entry['hub_id']} to {target} and {mirror / MANIFEST_NAME}")
        if args.record:
            add_entry(repo_manifest_path(), entry)
            print(f"recorded its entry in {repo_manifest_path()}")
        return entry
    with tempfile.TemporaryDirectory() as tmp:
        entry = write_folder(run_dir, Path(tmp), args.tag, args.org)
        files = sorted(p for p in Path(tmp).iterdir())
        repo_id = args.repo_id or entry["hub_id"]
        if args.dry_run or not args.repo_id:
            print(f"dry run: would upload to {repo_id}:")
            for f in files:
                print(f"  {f.name}  {f.stat().st_size:,} bytes")
            print(json.dumps(entry, indent=2))
            return entry
        from huggingface_hub import HfApi

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
        print(f"uploaded {repo_id}; added its entry to {repo_manifest_path()}")
        return entry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/push_to_hub.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished training run folder")
    p.add_argument("--tag", default=None, help=f"pretrained tag (default: the run's dataset); one of {', '.join(TAGS)}")
    p.add_argument("--org", default=DEFAULT_HUB_ORG, help="Hub organisation of the id <org>/<model>.<tag>")
    p.add_argument(
        "--record", action="store_true", help="with --mirror: also add the entry to the repository's manifest"
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mirror", help="write <mirror>/<hub id>/ and <mirror>/weights_manifest.json")
    where.add_argument("--repo-id", help="upload to this Hub repo with huggingface_hub (token from the usual places)")
    where.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    try:
        publish(argv)
    except (PublishError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
