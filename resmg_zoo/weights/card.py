"""The metadata of a published folder as the Hub reads it: the model card ``README.md`` (written with
huggingface_hub's ``ModelCard``/``ModelCardData``/``EvalResult``) and ``config.json`` (timm's own
``save_config_for_hf``, with the class names as ``label_names``).

Both are made from a manifest entry, the run's metrics rows and the split sizes, so that
``mirror refresh`` can rewrite them for a folder already published, from its own files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from timm.models import model_entrypoint
from timm.models._hub import save_config_for_hf

from ..core.atomic import atomic_path, write_text_atomic
from ..core.tags import LICENSE, PAPER_BIBTEX, PAPER_ID, PAPER_TITLE, TAGS
from .manifest import WEIGHTS_NAME, entry_architecture


def hub_dataset_id(entry: dict[str, Any]) -> str:
    """The dataset's id on the Hub (``uoft-cs/cifar10``, ``ylecun/mnist``) where the entry trained on a
    standard dataset, else the dataset's own name."""
    known = TAGS.get(entry["dataset"])
    return known.hub_dataset if known is not None else entry["dataset"]


def standard_split_sizes(entry: dict[str, Any]) -> tuple[Optional[int], Optional[int]]:
    """Train and test images of the entry's standard dataset (train less the recipe's held-out
    images); ``(None, None)`` for a dataset of one's own."""
    known = TAGS.get(entry["dataset"])
    if known is None:
        return None, None
    return known.train_images - int(entry["recipe"].get("val_size") or 0), known.test_images


def recipe_summary(recipe: dict[str, Any], train_images: Optional[int]) -> str:
    """One sentence of every training setting in ``recipe`` (the run's ``recipe_settings`` plus
    precision and seed); the levers a recipe leaves off (EMA, label smoothing, low resolution) only
    where they are on."""
    on = f" on {train_images:,} train images" if train_images else ""
    parts = [
        f"`{recipe['name']}`: {recipe['epochs']:g} epochs{on}",
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


def card_data(entry: dict[str, Any]) -> Any:
    """The card's YAML metadata: library, license, pipeline tag, datasets and a ``model-index``."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset = hub_dataset_id(entry)
    common = dict(task_type="image-classification", dataset_type=dataset, dataset_name=entry["dataset"])
    return ModelCardData(
        library_name="timm",
        license=LICENSE,
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "resmg_zoo"],
        datasets=[dataset],
        model_name=f"{entry['model']}.{entry['tag']}",
        eval_results=[
            EvalResult(
                **common, dataset_split="test", metric_type="accuracy", metric_name="top-1 accuracy (%)",
                metric_value=entry["top1"],
            ),
            EvalResult(
                **common, dataset_split="test", metric_type="top_5_accuracy", metric_name="top-5 accuracy (%)",
                metric_value=entry["top5"],
            ),
        ],
    )  # fmt: skip


def model_card(
    entry: dict[str, Any], rows: list[dict[str, Any]], train_images: Optional[int], test_images: Optional[int]
) -> str:
    """The Hub model card of a published entry: the metadata of :func:`card_data` and a body with
    the measured figures, the recipe and its command, usage and the paper's citation."""
    from huggingface_hub import ModelCard

    model, tag, last = entry["model"], entry["tag"], rows[-1]
    images = f"{test_images:,}" if test_images else "—"
    flip = (
        f"| {entry['dataset']} test, flip-averaged (2 passes) | {last['test_flip_top1']:.2f} % | — | {images} |\n"
        if "test_flip_top1" in last
        else ""
    )
    int8 = entry.get("int8")
    int8_row = (
        f"| {entry['dataset']} test, int8 (see below) | {int8['top1']:.2f} % | {int8['top5']:.2f} % "
        f"| {int8['images']:,} |\n"
        if int8
        else ""
    )
    int8_text = (
        f"\nint8: `{int8['command']}` (torchao's PT2E flow, X86InductorQuantizer, {int8['calibration_images']} "
        f"calibration images) wrote `int8.json` beside the weights ({int8['bytes']:,} bytes of data, no program): "
        f"the activations' scales and zero points. `resmg-classify --model {model}.{tag} --int8` rebuilds the int8 "
        f"model from it and these weights ({int8['quantized_convs']} int8 convolutions, no calibration data needed); "
        f"measured on {int8['hardware']} on {int8['date']} (torch {int8['versions']['torch']}, "
        f"torchao {int8['versions']['torchao']}).\n"
        if int8
        else ""
    )
    paper_line = (model_entrypoint(model).__doc__ or model).strip().split("\n")[0]  # the model's own docstring
    pinned = f', revision="{entry["revision"]}"' if entry.get("revision") else ""
    body = f"""
# {model}.{tag}

{paper_line}

From *{PAPER_TITLE}* (He, Chen, Zhang, Xu; {PAPER_ID}), packaged by resmg_zoo.

## Measured

| split | top-1 | top-5 | images |
|---|---|---|---|
| {entry["dataset"]} test | {entry["top1"]:.2f} % | {entry["top5"]:.2f} % | {images} |
{flip}{int8_row}
Measured by the training run that produced these weights, at its last epoch ({last["epoch"]}),
in {entry["recipe"]["precision"]} on {entry["hardware"]}; {entry["training_seconds"]:.0f} s of training.
Weights are stored in {entry["dtype"]} exactly as trained. Parameters: {entry["params"]:,}.
{int8_text}
## Recipe

{recipe_summary(entry["recipe"], train_images)}. Command:

```
{entry["command"]}
```

## Use

```python
import timm, resmg_zoo
model = timm.create_model("hf-hub:{entry["hub_id"]}", pretrained=True)
model = timm.create_model("{model}.{tag}", pretrained=True)           # resolved and sha256-checked by resmg_zoo
import torch
model = torch.hub.load("<owner>/resmg_zoo", "{model}", pretrained=True, dataset="{tag}"{pinned})
```

Model arguments: `{json.dumps(entry["model_args"])}`; sha256 of `{WEIGHTS_NAME}`: `{entry["sha256"]}`.

## Citation

```bibtex
{PAPER_BIBTEX}
```
"""
    return str(ModelCard(f"---\n{card_data(entry).to_yaml()}\n---\n{body}"))


def write_config(folder: Path, entry: dict[str, Any], label_names: Optional[list[str]]) -> None:
    """``config.json`` in timm's format (its ``save_config_for_hf``): the architecture, the model
    arguments, the tag's ``pretrained_cfg`` naming the entry's hub id, and the class names."""
    model = entry_architecture(entry)
    config: dict[str, Any] = {"pretrained_cfg": {"hf_hub_id": entry["hub_id"], "tag": entry["tag"]}}
    if label_names and len(label_names) == entry["model_args"].get("num_classes"):
        config["label_names"] = list(label_names)
    with atomic_path(folder / "config.json") as tmp:
        save_config_for_hf(
            model,
            str(tmp),
            model_args={k: v for k, v in entry["model_args"].items() if k != "num_classes"},
            model_config=config,
        )


def label_names_for(entry: dict[str, Any], run_classes: Optional[list[str]]) -> Optional[list[str]]:
    """The class names of the weights: the run's own, else the standard dataset's."""
    if run_classes:
        return list(run_classes)
    known = TAGS.get(entry["dataset"])
    return list(known.label_names) if known is not None else None


def write_card(folder: Path, entry: dict[str, Any], rows: list[dict[str, Any]], sizes: tuple) -> None:
    write_text_atomic(folder / "README.md", model_card(entry, rows, *sizes))
