"""The metadata of a published folder as the Hub reads it: the model card ``README.md`` (written with
huggingface_hub's ``ModelCard``/``ModelCardData``/``EvalResult``) and ``config.json`` (timm's own
``save_config_for_hf``, with the class names as ``label_names``).

Both are made from a manifest entry, the run's metrics rows and the split sizes, so that
``mirror refresh`` can rewrite them for a folder already published, from its own files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from timm.models import model_entrypoint
from timm.models._hub import save_config_for_hf

from ..core.atomic import atomic_path, write_text_atomic
from ..core.cli import shown_text
from ..core.files import UnreadableFileError, finite_number, require_keys
from ..core.paper import TABLE_OF_DATASET, paper_result
from ..core.tags import LICENSE, PAPER_BIBTEX, PAPER_ID, PAPER_TITLE, TAGS
from .manifest import CURVE_PNG, REPORT_MAX_CLASSES, REPORT_PICTURES, WEIGHTS_NAME, entry_architecture

MAX_TABLE_ROWS = 100  # classes listed in the card's per-class table
PICTURE_ALT = dict(zip(REPORT_PICTURES, (  # the report's pictures, in the card's order, with their alt text
    "Per-class top-1 accuracy",
    "Confusion matrix: true class per row, predicted per column, images in the cells",
    "Reliability diagram: accuracy per confidence bin against perfect calibration",
    "The most confident mistakes: true → predicted class",
)))  # fmt: skip


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
        f"`{_code(recipe['name'])}`: {recipe['epochs']:g} epochs{on}",
        f"batch {_cell(recipe['batch_size'])}, SGD lr {_cell(recipe['lr'])} (momentum {_cell(recipe['momentum'])}, "
        f"nesterov {_cell(recipe['nesterov'])})",
        f"weight decay {_cell(recipe['weight_decay'])}",
        f"{_cell(recipe['schedule'])} schedule after {recipe['warmup_epochs']:g} warm-up epochs",
        f"augmentation `{_code(recipe['augment'])}`",
    ]
    if recipe.get("label_smoothing"):
        parts.append(f"label smoothing {_cell(recipe['label_smoothing'])}")
    if recipe.get("ema_decay"):
        parts.append(f"an EMA of the weights (decay {_cell(recipe['ema_decay'])}, evaluated as `ema_*`)")
    if recipe.get("low_res"):
        parts.append(f"{_cell(recipe['low_res'])}-pixel batches for the first {recipe['low_res_epochs']:g} epochs")
    return ", ".join(parts) + f", {_cell(recipe['precision'])}, seed {_cell(recipe['seed'])}"


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
            *([EvalResult(
                **common, dataset_split="test", metric_type="expected_calibration_error",
                metric_name=f"expected calibration error (%, {entry['report']['ece_bins']} bins, fp32 re-evaluation)",
                metric_value=round(100 * entry["report"]["ece"], 2),
            )] if "report" in entry else []),
        ],
    )  # fmt: skip


def model_card(
    entry: dict[str, Any],
    rows: list[dict[str, Any]],
    train_images: Optional[int],
    test_images: Optional[int],
    report: Optional[dict[str, Any]] = None,
) -> str:
    """The Hub model card of a published entry: the metadata of :func:`card_data` and a body with
    the measured figures beside the paper's, the evaluation report (``report``: the folder's ``report.json``,
    which the entry pins) with its pictures and the training curve, the recipe and its command, usage and
    the paper's citation."""
    from huggingface_hub import ModelCard

    model, tag, last = entry["model"], entry["tag"], rows[-1]
    images = f"{test_images:,}" if test_images else "—"
    flip = (
        f"| {entry['dataset']} test, flip-averaged (2 passes) | {last['test_flip_top1']:.2f} % | — | {images} |\n"
        if finite_number(last.get("test_flip_top1"))
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
        f"\nint8: `{_code(int8['command'])}` (torchao's PT2E flow, X86InductorQuantizer, {int8['calibration_images']} "
        f"calibration images) wrote `int8.json` beside the weights ({int8['bytes']:,} bytes of data, no program): "
        f"the activations' scales and zero points. `resmg-classify --model {model}.{tag} --int8` rebuilds the int8 "
        f"model from it and these weights ({int8['quantized_convs']} int8 convolutions, no calibration data needed); "
        f"measured on {_cell(int8['hardware'], 80)} on {_cell(int8['date'])} "
        f"(torch {_cell(int8['versions']['torch'])}, torchao {_cell(int8['versions']['torchao'])}).\n"
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
Measured by the training run that produced these weights, at its last epoch ({last["epoch"]}), in
the precision {_cell(entry["recipe"]["precision"])} on {_cell(entry["hardware"], 80)}; {entry["training_seconds"]:.0f} s
of training.
Weights are stored in {_cell(entry["dtype"])} exactly as trained. Parameters: {entry["params"]:,}.

{beside_the_paper(entry, last["epoch"])}
{int8_text}{report_section(entry, report)}
## Recipe

{recipe_summary(entry["recipe"], train_images)}. Command:

```
{shown_text(entry["command"], 2000).replace("`", "'")}
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


def beside_the_paper(entry: dict[str, Any], epochs: int) -> str:
    """Two sentences: the paper's figure for this model and dataset beside ours, why they differ (epochs, the
    images trained on, the hardware), and that ours is the last epoch's (no pick on the test split). The first only
    where the weights are the paper's architecture (no model argument but the class count and input channels)."""
    known, table = TAGS.get(entry["dataset"]), TABLE_OF_DATASET.get(entry["dataset"])
    paper_size = set(entry["model_args"]) <= {"num_classes", "in_chans"}  # the paper's widths and depth, not ours
    row = paper_result(entry["model"], table) if table and paper_size else None
    last_epoch = (
        "It is the last epoch's test accuracy, as the paper reports its own: no epoch or checkpoint was picked on "
        "the test split."
    )
    if row is None or known is None:
        return last_epoch
    train_images, _ = standard_split_sizes(entry)
    some = f"{train_images:,} of its {known.train_images:,}" if train_images != known.train_images else ""
    images = f" on {some or f'all {known.train_images:,} of its'} training images" if train_images else ""
    copy = f", {known.data_copy}" if known.data_copy else ""
    recipe = f"the `{_code(entry['recipe']['name'])}` recipe, on {_cell(entry['hardware'], 80)}"
    return (
        f"**Beside the paper:** ours is {entry['top1']:.2f} % where the paper reports {row['top1']:.2f} % for this "
        f"model on {entry['dataset']} (its Table {table}): we trained {epochs} epoch{'s' if epochs != 1 else ''} "
        f"({recipe}){images}{copy}, the paper {known.epochs['paper']} epochs on all of the original images. "
        f"{last_epoch}"
    )


def report_section(entry: dict[str, Any], report: Optional[dict[str, Any]]) -> str:
    """The card's evaluation report: the figures the entry's ``report`` pins, the per-class table, the most
    confused pairs, and the pictures and training curve as relative image links (as the Hub renders them)."""
    pin = entry.get("report")
    if not pin or report is None:
        return ""
    rows, known = report["per_class"], TAGS.get(entry["dataset"])
    full = known is not None and report["images"] == known.test_images
    split = f"full {entry['dataset']} test split" if full else f"{entry['dataset']} test split"
    shown = rows if len(rows) <= MAX_TABLE_ROWS else sorted(rows, key=lambda r: r["accuracy"])[:MAX_TABLE_ROWS]
    table = "\n".join(
        f"| {_cell(r['name'])} | {r['images']:,} | {r['correct']:,} | {r['accuracy']:.2f} % |" for r in shown
    )
    which = "" if shown is rows else f" (the {MAX_TABLE_ROWS} least accurate of {len(rows):,} classes)"
    confused = ", ".join(
        f"{_cell(p['true'])} → {_cell(p['predicted'])} ({p['count']})" for p in report["most_confused"]
    )
    pictures = "\n\n".join(f"![{alt}]({name})" for name, alt in PICTURE_ALT.items() if name in pin["files"])
    curve = f"\n## Training curve\n\n![The training run's loss and top-1 per epoch]({CURVE_PNG})\n" if (
        CURVE_PNG in pin["files"]) else ""  # fmt: skip
    return f"""
## Where it errs

Re-evaluated from these weights on the {split} ({report["images"]:,} images) in {_cell(pin["precision"])} on the
machine {_cell(pin["hardware"], 80)} ({_cell(pin["date"])}): top-1 {report["top1"]:.2f} %, top-5 {report["top5"]:.2f} %,
expected calibration error {100 * report["ece"]:.2f} % ({len(report["calibration_bins"])} equal-width confidence
bins). Every number is in `report.json`, written by `{_code(pin["command"])}`. Per class{which}:

| class | test images | correct | top-1 |
|---|---|---|---|
{table}

Most confused (true → predicted, images): {confused or "none"}.

{pictures}
{curve}"""


def check_card_report(report: dict[str, Any], where: str) -> dict[str, Any]:
    """``report`` (a folder's ``report.json``) if it holds what the card reads, each value of its type: top-1, top-5,
    ECE, images, the bins, the per-class rows (name, images, correct, accuracy) and the most confused pairs;
    :class:`~resmg_zoo.core.files.UnreadableFileError` naming ``where`` otherwise."""
    require_keys(report, {"per_class": list, "most_confused": list, "calibration_bins": list, "images": int}, where)
    if not (all(_within(report.get(k), 100) for k in ("top1", "top5")) and _within(report.get("ece"), 1)):
        raise UnreadableFileError(f"{where}: top1 and top5 must be percentages, ece a fraction")
    if len(report["per_class"]) > REPORT_MAX_CLASSES or len(report["most_confused"]) > 100:
        raise UnreadableFileError(f"{where}: more classes or pairs than a report holds")
    row = {"name": str, "images": int, "correct": int, "accuracy": (int, float)}
    pair = {"true": str, "predicted": str, "count": int}
    for kind, rows in ((row, report["per_class"]), (pair, report["most_confused"])):
        for item in rows:
            if not isinstance(item, dict):
                raise UnreadableFileError(f"{where}: a row is a {type(item).__name__}, not an object")
            require_keys(item, kind, where)
    if not all(
        _within(r["accuracy"], 100) and 0 <= r["correct"] <= r["images"] <= report["images"]
        for r in report["per_class"]
    ):
        raise UnreadableFileError(f"{where}: a class row's counts or accuracy are not possible")
    return report


def _within(value: Any, top: float) -> bool:
    return finite_number(value) and 0 <= value <= top


def _cell(name: Any, limit: int = 40) -> str:
    """Text from a file as Markdown in the card: :func:`~resmg_zoo.core.cli.shown_text` (one line, printable, at
    most ``limit`` characters), each character Markdown or HTML would read as syntax (``|``, ``*``, backticks,
    ``<`` ...) escaped, so it is shown as written and does nothing."""
    return re.sub(r"([\\`*_\[\]<>|~&$])", r"\\\1", shown_text(name, limit))  # mid-line: no # - +; no [: no (


def _code(text: Any) -> str:
    """Text from a file inside a Markdown code span: one printable line without backticks (nothing is read as
    syntax inside a code span)."""
    return shown_text(text, 200).replace("`", "'")


def write_card(
    folder: Path, entry: dict[str, Any], rows: list[dict[str, Any]], sizes: tuple, report: Optional[dict] = None
) -> None:
    write_text_atomic(folder / "README.md", model_card(entry, rows, *sizes, report))
