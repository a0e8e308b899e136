"""``weights_manifest.json``: every published checkpoint, with the run behind it.

Schema (version 1)::

    {"schema_version": 1,
     "entries": [{"model", "tag", "hub_id", "file", "sha256", "bytes", "params", "dataset", "top1", "top5",
                  "model_args", "dtype", "recipe", "hardware", "training_seconds", "date", "command",
                  optional: "revision", "check", "previous", "swap_from"}, ...]}

``revision`` is the Hub commit that the upload created (loading pins it); an entry published to a
mirror has none, since a mirror has no commits. ``check`` is the re-evaluation recorded when the
entry was imported (see :mod:`resmg_zoo.tools.mirror`). ``previous`` lists what a ``--replace``
replaced (``sha256``, ``date``, ``top1`` and, where it had one, ``revision``), oldest first.
``swap_from`` (``{"sha256": ...}``) is present only while a publisher swaps the folder: the file it
replaces is accepted too until the swap is done (:mod:`resmg_zoo.weights.publish`).

An entry is written only by ``push_to_hub`` from a real training run, or imported from a mirror that
it wrote (:mod:`resmg_zoo.tools.mirror`, which verifies every folder first).

**Where the manifest lives.** The package carries it (``resmg_zoo/weights/weights_manifest.json``),
so an installed wheel knows its weights; that copy is the one read. A source checkout also has the
top-level ``weights_manifest.json`` that the project's layout names: :func:`save_manifest` writes
both, byte for byte, and a test fails if they ever differ. An installed (non-editable) package never
writes its manifest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.atomic import exclusive_lock, write_text_atomic
from ..core.errors import UsageError
from ..core.files import UnreadableFileError, finite_number, read_json
from ..core.tags import TAGS, HubIdError, check_hub_id

MANIFEST_NAME = "weights_manifest.json"
WEIGHTS_NAME = "model.safetensors"
INT8_RECORD_NAME = "int8.json"  # a published int8 record (resmg_zoo.inference.int8_record), where there is one
# A published evaluation report (resmg_zoo.train.report): its record, its pictures and the training curve, the
# files a report pins (exactly these names); a report covers at most REPORT_MAX_CLASSES classes (a matrix of classes²)
REPORT_JSON = "report.json"
REPORT_PICTURES = ("per_class.png", "confusion.png", "reliability.png", "misclassified.png")
CURVE_PNG = "curve.png"
REPORT_FILES = (REPORT_JSON, *REPORT_PICTURES, CURVE_PNG)
REPORT_MAX_CLASSES = 1000


def packaged_int8_record(model: str, tag: str) -> Path:
    """Where the package keeps the published int8 record of ``model.tag`` (``int8_records/<model>.<tag>.json``):
    a few KB of numbers, shipped beside the manifest that pins them, so ``--int8`` works before a mirror or the
    Hub hosts the file."""
    return Path(__file__).resolve().with_name("int8_records") / f"{model}.{tag}.json"


# A published folder, in the layout of a Hugging Face Hub model repo.
PUBLISHED_FILES = (WEIGHTS_NAME, "config.json", "README.md", "metrics.json", "recipe.json")
SCHEMA_VERSION = 1
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "tag": str,
    "hub_id": str,
    "file": str,
    "sha256": str,
    "bytes": int,
    "params": int,
    "dataset": str,
    "top1": (int, float),
    "top5": (int, float),
    "model_args": dict,
    "dtype": str,
    "recipe": dict,
    "hardware": str,
    "training_seconds": (int, float),
    "date": str,
    "command": str,
}
# int8: the published int8 record of the weights (``file`` int8.json beside them, its ``sha256`` and ``bytes``,
# pinned like the weights) and its figures, measured by resmg-mirror refresh --int8.
# report: the published evaluation report (``files``: report.json and its pictures, name -> sha256) and its
# figures (top-1, top-5, ECE ...), measured by resmg-mirror refresh --report
OPTIONAL_KEYS: dict[str, type] = {
    "revision": str, "check": dict, "previous": list, "swap_from": dict, "int8": dict, "report": dict,
}  # fmt: skip
RENAMED_KEYS = {"wall_seconds": "training_seconds"}  # the run's training time, never wall time
SHA256 = re.compile(r"^[0-9a-f]{64}$")
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# what a model card writes of an entry's recipe and of its int8 figures
RECIPE_KEYS: dict[str, type] = {
    "name": str,
    "epochs": float,
    "batch_size": int,
    "lr": float,
    "momentum": float,
    "nesterov": bool,
    "weight_decay": float,
    "schedule": str,
    "warmup_epochs": float,
    "augment": str,
    "precision": str,
    "seed": int,
}
INT8_FIGURES: dict[str, type] = {
    "top1": float, "top5": float, "images": int, "calibration_images": int, "quantized_convs": int, "bytes": int,
    "command": str, "hardware": str, "date": str,
}  # fmt: skip
COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Published:
    """A manifest entry and the manifest it was read from."""

    entry: dict[str, Any]
    manifest: Path

    @property
    def hub_id(self) -> str:
        return self.entry["hub_id"]

    @property
    def name(self) -> str:
        return f"{self.entry['model']}.{self.entry['tag']}"


def entry_architecture(entry: dict[str, Any]) -> Any:
    """The one builder of a published entry's model (no weights): its architecture, its tag's cfg and its
    ``model_args``, checked first (:func:`~resmg_zoo.core.counting.check_model_args`: a
    :class:`~resmg_zoo.core.errors.UsageError` for arguments no model takes). Needs the models registered
    (``import resmg_zoo``)."""
    import timm

    from ..core.counting import check_model_args

    check_model_args(entry["model"], entry["model_args"])
    return timm.create_model(entry["model"], pretrained_cfg=entry["tag"], **entry["model_args"])


class ManifestError(UsageError):
    """A manifest that does not follow the schema; the message names the file and the entry."""


def repo_manifest_path() -> Path:
    """The package's manifest: the one every installed copy of resmg_zoo reads."""
    return Path(__file__).resolve().with_name(MANIFEST_NAME)


def checkout_root() -> Optional[Path]:
    """The source checkout the package runs from (``pyproject.toml`` and ``hubconf.py`` beside
    ``resmg_zoo/``), or ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "hubconf.py").is_file() else None


def checkout_manifest_path() -> Optional[Path]:
    """The top-level copy of the package's manifest in a source checkout (``None`` in a wheel)."""
    root = checkout_root()
    return root / MANIFEST_NAME if root is not None else None


def manifest_text(data: dict[str, Any]) -> str:
    """A manifest as it is stored: sorted entries, two-space JSON, a final newline."""
    data = dict(data, entries=sorted(data["entries"], key=lambda e: (e["model"], e["tag"], e["hub_id"])))
    return json.dumps(data, indent=2) + "\n"


def save_manifest(path: Path, data: dict[str, Any]) -> None:
    """Write a manifest atomically. The package's manifest is written with its top-level copy, and only
    in a source checkout: an installed package's manifest is part of the release."""
    text = manifest_text(data)
    if path.resolve() == repo_manifest_path():
        copy = checkout_manifest_path()
        if copy is None:
            raise ManifestError(
                f"{path} belongs to an installed resmg_zoo package and is not written; record entries from a "
                "source checkout (pip install -e .), or write a manifest of your own (--manifest PATH)"
            )
        write_text_atomic(path, text)
        write_text_atomic(copy, text)
        return
    write_text_atomic(path, text)


@contextmanager
def manifest_lock(path: Path) -> Iterator[None]:
    """One writer of the manifest at ``path`` at a time (see :func:`exclusive_lock`)."""
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"the manifest {path}", wait=30.0):
        yield


def empty_manifest() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "entries": []}


def load_manifest(path: Path, check_params: bool = False) -> dict[str, Any]:
    """Read and validate a manifest (``check_params``: rebuild every model and compare its parameter
    count too); a missing file is an empty manifest."""
    if not path.exists() and not path.is_symlink():
        return empty_manifest()
    try:
        data = read_json(path, "weights manifest")  # a regular file, UTF-8, bounded in size and depth
    except UnreadableFileError as err:
        raise ManifestError(str(err)) from None
    entries = data.get("entries") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        for old, new in RENAMED_KEYS.items():  # an entry written before a key said what it holds
            if isinstance(entry, dict) and old in entry and new not in entry:
                entry[new] = entry.pop(old)
    problems = validate_manifest(data, check_params)
    if problems:
        raise ManifestError(f"{path} is not a valid weights manifest: " + "; ".join(problems))
    return data


def validate_entry(entry: dict[str, Any], check_params: bool = True) -> list[str]:
    """What is wrong with one entry (empty when nothing is)."""
    name = f"{entry.get('model')}.{entry.get('tag')}"
    problems = []
    for key, kind in REQUIRED_KEYS.items():
        if key not in entry:
            problems.append(f"{name}: missing key {key!r}")
        elif not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            problems.append(f"{name}: {key!r} has type {type(entry[key]).__name__}")
    for key, kind in OPTIONAL_KEYS.items():
        if key in entry and not isinstance(entry[key], kind):
            problems.append(f"{name}: {key!r} has type {type(entry[key]).__name__}")
    if problems:
        return problems
    try:
        check_hub_id(entry["hub_id"])
    except HubIdError as err:
        return [f"{name}: {err}"]
    if "swap_from" in entry and not SHA256.match(str(entry["swap_from"].get("sha256"))):
        problems.append(f"{name}: swap_from has no sha256 of 64 lowercase hex digits")
    if "int8" in entry and not _int8_pin_valid(entry["int8"]):
        problems.append(f"{name}: int8 must name {INT8_RECORD_NAME}, its sha256 (64 lowercase hex digits) and bytes")
    if not all(finite_number(entry[k]) and entry[k] >= 0 for k in ("top1", "top5", "training_seconds")):
        problems.append(f"{name}: top1, top5 and training_seconds must be finite, non-negative numbers")
    if not DATASET_NAME.fullmatch(entry["dataset"]):
        problems.append(f"{name}: dataset {entry['dataset'][:80]!r} is not a dataset's name (letters, digits, _ . -)")
    problems += _described(entry["recipe"], RECIPE_KEYS, f"{name}: recipe")
    if entry["recipe"].get("low_res") and not finite_number(entry["recipe"].get("low_res_epochs")):
        problems.append(f"{name}: recipe has low_res but no low_res_epochs")
    if "int8" in entry:
        problems += _described(entry["int8"], INT8_FIGURES, f"{name}: int8")
        versions = entry["int8"].get("versions")
        if not (isinstance(versions, dict) and all(isinstance(versions.get(k), str) for k in ("torch", "torchao"))):
            problems.append(f"{name}: int8 versions must name torch and torchao")
    if "check" in entry and not all(
        finite_number(entry["check"][k]) for k in ("full_top1", "correct", "images") if k in entry["check"]
    ):
        problems.append(f"{name}: check's full_top1, correct and images must be finite numbers")
    if "report" in entry and not _report_pin_valid(entry["report"]):
        problems.append(
            f"{name}: report must pin {REPORT_JSON} and its pictures (files: {', '.join(REPORT_FILES)} -> sha256) "
            "and give its top1, top5, ece (numbers), ece_bins, images (integers), precision, hardware, date, command"
        )
    if "revision" in entry and not COMMIT.match(entry["revision"]):
        problems.append(f"{name}: revision {entry['revision']!r} is not a 40-hex-digit commit id")
    if not SHA256.match(entry["sha256"]):
        problems.append(f"{name}: sha256 {entry['sha256']!r} is not 64 lowercase hex digits")
    if entry["tag"] not in TAGS:
        problems.append(f"{name}: unknown tag {entry['tag']!r} (known: {', '.join(TAGS)})")
    if not entry["hub_id"].endswith(f"/{entry['model']}.{entry['tag']}"):
        problems.append(f"{name}: hub_id {entry['hub_id']!r} is not <org>/{entry['model']}.{entry['tag']}")
    if check_params and not problems:
        from ..core.counting import check_model_args, param_count

        try:
            check_model_args(entry["model"], entry["model_args"])
            built = param_count(entry["model"], **entry["model_args"])
        except UsageError as err:  # arguments no model takes, or a value the model's own check refuses
            problems.append(f"{name}: cannot build the model from model_args: {err}")
        else:
            if built != entry["params"]:
                problems.append(f"{name}: params {entry['params']} but the built model has {built}")
    return problems


def _int8_pin_valid(int8: dict[str, Any]) -> bool:
    return (
        int8.get("file") == INT8_RECORD_NAME
        and isinstance(int8.get("sha256"), str)
        and bool(SHA256.match(int8["sha256"]))
        and type(int8.get("bytes")) is int
    )


def _described(record: dict[str, Any], keys: dict[str, type], where: str) -> list[str]:
    """What of ``keys`` (name → ``str``, ``bool``, ``int`` or ``float``: a finite number) ``record`` lacks or holds
    another kind of; the model card writes each of them."""
    problems = []
    for key, kind in keys.items():
        value = record.get(key)
        right = finite_number(value) if kind in (int, float) else type(value) is kind
        if not right:
            problems.append(f"{where} has no {kind.__name__} {key!r}")
    return problems


def _report_pin_valid(report: dict[str, Any]) -> bool:
    files = report.get("files")
    return (
        isinstance(files, dict)
        and REPORT_JSON in files
        and set(files) <= set(REPORT_FILES)
        and all(isinstance(d, str) and SHA256.fullmatch(d) for d in files.values())
        and all(finite_number(report.get(k)) and 0 <= report[k] <= 100 for k in ("top1", "top5"))
        and finite_number(report.get("ece"))
        and 0 <= report["ece"] <= 1
        and all(type(report.get(k)) is int and report[k] > 0 for k in ("ece_bins", "images"))
        and all(isinstance(report.get(k), str) for k in ("precision", "hardware", "date", "command"))
    )


def validate_manifest(data: Any, check_params: bool = True) -> list[str]:
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        return [f"expected an object with schema_version {SCHEMA_VERSION}"]
    if not isinstance(data.get("entries"), list):
        return ["'entries' must be a list"]
    strays = [e for e in data["entries"] if not isinstance(e, dict)]
    if strays:
        return [f"'entries' holds a {type(strays[0]).__name__}, not an entry (a JSON object)"]
    problems = [p for entry in data["entries"] for p in validate_entry(entry, check_params)]
    keys = [(e.get("model"), e.get("tag"), e.get("hub_id")) for e in data["entries"]]
    if len(keys) != len(set(keys)):
        problems.append("two entries for the same model, tag and hub id")
    return problems


def add_entry(path: Path, entry: dict[str, Any]) -> None:
    """Validate ``entry`` and put it in the manifest at ``path`` (replacing one with its hub id), under
    the manifest's lock: read, change and write are one step for every other writer."""
    problems = validate_entry(entry)
    if problems:
        raise ManifestError("; ".join(problems))
    with manifest_lock(path):
        manifest = load_manifest(path)
        manifest["entries"] = [e for e in manifest["entries"] if e["hub_id"] != entry["hub_id"]] + [entry]
        save_manifest(path, manifest)
