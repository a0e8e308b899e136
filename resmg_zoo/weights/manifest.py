"""``weights_manifest.json``: every published checkpoint, with the run behind it (SPEC §3).

Schema (version 1)::

    {"schema_version": 1,
     "entries": [{"model", "tag", "hub_id", "file", "sha256", "bytes", "params", "dataset", "top1", "top5",
                  "model_args", "dtype", "recipe", "hardware", "wall_seconds", "date", "command"}, ...]}

An entry is written only by ``scripts/push_to_hub.py`` from a real training run, or imported from a
mirror that it wrote (:mod:`resmg_zoo.weights.mirror`, which verifies every folder first).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from ..core.atomic import write_text_atomic
from ..core.tags import TAGS

MANIFEST_NAME = "weights_manifest.json"
WEIGHTS_NAME = "model.safetensors"
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
    "wall_seconds": (int, float),
    "date": str,
    "command": str,
}
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that does not follow the schema; the message names the file and the entry."""


def repo_manifest_path() -> Path:
    """The manifest at the repository root (beside ``hubconf.py``)."""
    return Path(__file__).resolve().parents[2] / MANIFEST_NAME


def empty_manifest() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "entries": []}


def load_manifest(path: Path, check_params: bool = False) -> dict[str, Any]:
    """Read and validate a manifest (``check_params``: rebuild every model and compare its parameter
    count too); a missing file is an empty manifest."""
    if not path.exists():
        return empty_manifest()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON: {err}") from None
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
    if problems:
        return problems
    if not SHA256.match(entry["sha256"]):
        problems.append(f"{name}: sha256 {entry['sha256']!r} is not 64 lowercase hex digits")
    if entry["tag"] not in TAGS:
        problems.append(f"{name}: unknown tag {entry['tag']!r} (known: {', '.join(TAGS)})")
    if not entry["hub_id"].endswith(f"/{entry['model']}.{entry['tag']}"):
        problems.append(f"{name}: hub_id {entry['hub_id']!r} is not <org>/{entry['model']}.{entry['tag']}")
    if check_params and not problems:
        from ..core.counting import param_count

        try:
            built = param_count(entry["model"], **entry["model_args"])
        except Exception as err:  # an unknown model or bad model_args
            problems.append(f"{name}: cannot build the model from model_args: {err}")
        else:
            if built != entry["params"]:
                problems.append(f"{name}: params {entry['params']} but the built model has {built}")
    return problems


def validate_manifest(data: Any, check_params: bool = True) -> list[str]:
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        return [f"expected an object with schema_version {SCHEMA_VERSION}"]
    if not isinstance(data.get("entries"), list):
        return ["'entries' must be a list"]
    problems = [p for entry in data["entries"] for p in validate_entry(entry, check_params)]
    keys = [(e.get("model"), e.get("tag"), e.get("hub_id")) for e in data["entries"]]
    if len(keys) != len(set(keys)):
        problems.append("two entries for the same model, tag and hub id")
    return problems


def find_entry(manifest: dict[str, Any], hub_id: str) -> Optional[dict[str, Any]]:
    return next((e for e in manifest["entries"] if e["hub_id"] == hub_id), None)


def add_entry(path: Path, entry: dict[str, Any]) -> None:
    """Validate ``entry`` and put it in the manifest at ``path`` (replacing one with its hub id)."""
    problems = validate_entry(entry)
    if problems:
        raise ManifestError("; ".join(problems))
    manifest = load_manifest(path)
    manifest["entries"] = [e for e in manifest["entries"] if e["hub_id"] != entry["hub_id"]] + [entry]
    manifest["entries"].sort(key=lambda e: (e["model"], e["tag"], e["hub_id"]))
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
