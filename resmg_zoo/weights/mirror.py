"""A weights mirror (the Hub's layout on a shared disk, as ``push_to_hub.py --mirror`` writes it):
verify its folders and take its entries into the repository's ``weights_manifest.json``.

    python -m resmg_zoo.weights.mirror import ../shared/hub            # verify, then merge its entries
    python -m resmg_zoo.weights.mirror import ../shared/hub --prune    # ... and drop entries it does not host

Nothing changes unless every folder verifies; the message names each folder and what differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.atomic import write_text_atomic
from ..core.hashing import file_sha256
from .manifest import (
    MANIFEST_NAME,
    PUBLISHED_FILES,
    SCHEMA_VERSION,
    WEIGHTS_NAME,
    ManifestError,
    load_manifest,
    repo_manifest_path,
    validate_entry,
    validate_manifest,
)


def verify_folder(folder: Path, entry: dict[str, Any]) -> list[str]:
    """What differs between a published folder and its manifest entry (empty when nothing does).

    Checked: the five files are there; ``model.safetensors`` has the entry's bytes and sha256;
    ``config.json`` names the entry's architecture, tag and hub id and its ``model_args`` agree with
    the entry's; the model rebuilt from the entry's ``model_args`` has the entry's parameter count
    and takes every tensor of the file, shape for shape; ``metrics.json``'s last test top-1 is the entry's.
    """
    import timm
    from safetensors.torch import load_file

    from ..core.counting import count_parameters
    from .loading import WeightsIntegrityError, fit_state_dict

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
    last_top1 = rows[-1].get("test_top1") if isinstance(rows, list) and rows else None
    if last_top1 is None or round(last_top1, 4) != entry["top1"]:
        problems.append(f"metrics.json: last test_top1 is {last_top1}, the entry says {entry['top1']}")
    if problems:
        return problems
    try:
        model = timm.create_model(entry["model"], pretrained_cfg=entry["tag"], **entry["model_args"])
    except Exception as err:  # an unknown model or model_args that do not build
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
    except Exception as err:  # a file safetensors cannot read
        problems.append(f"model.safetensors is not a readable safetensors file: {err}")
    return problems


def _same(value: Any) -> Any:
    """``"8,16"``, ``[8, 16]`` and ``(8, 16)`` are one value of ``model_args``."""
    if isinstance(value, str) and re.fullmatch(r"\d+(,\d+)+", value.replace(" ", "")):
        return [int(v) for v in value.replace(" ", "").split(",")]
    return list(value) if isinstance(value, (list, tuple)) else value


def import_mirror(mirror: Path, target: Path, prune: bool = False) -> dict[str, list[str]]:
    """Verify every folder of ``mirror`` against the mirror's manifest, then merge its entries into
    the manifest at ``target`` (same hub id: replaced). ``prune`` drops the entries of ``target``
    that the mirror does not host. Raises :class:`ManifestError` naming every folder that differs,
    and then changes nothing. Returns the hub ids ``added``, ``updated``, ``unchanged`` and ``pruned``."""
    source = mirror / MANIFEST_NAME
    if not source.is_file():
        raise ManifestError(f"{mirror} is not a weights mirror: no {MANIFEST_NAME} in it")
    entries = load_manifest(source)["entries"]
    problems = []
    for entry in entries:
        folder = mirror / entry["hub_id"]
        problems += (
            [f"{folder}: {p}" for p in verify_folder(folder, entry)]
            if folder.is_dir()
            else [f"{folder}: no such folder, but {source} lists {entry['hub_id']}"]
        )
    listed = {e["hub_id"] for e in entries}
    for folder in sorted(p for p in mirror.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
        if folder.relative_to(mirror).as_posix() not in listed:
            problems.append(f"{folder}: a published folder that {source} does not list")
    if problems:
        raise ManifestError(f"{mirror} does not verify; {target} is unchanged:\n  " + "\n  ".join(problems))
    current = load_manifest(target)
    before = {e["hub_id"]: e for e in current["entries"]}
    report: dict[str, list[str]] = {"added": [], "updated": [], "unchanged": [], "pruned": []}
    for entry in entries:
        key = (
            "added" if entry["hub_id"] not in before else "unchanged" if before[entry["hub_id"]] == entry else "updated"
        )
        report[key].append(entry["hub_id"])
    kept = [e for e in current["entries"] if e["hub_id"] not in listed]
    if prune:
        report["pruned"] = [e["hub_id"] for e in kept]
        kept = []
    merged = sorted([*kept, *entries], key=lambda e: (e["model"], e["tag"], e["hub_id"]))
    problems = validate_manifest({"schema_version": SCHEMA_VERSION, "entries": merged})
    if problems:
        raise ManifestError(f"the merged manifest would not be valid; {target} is unchanged: " + "; ".join(problems))
    if merged != current["entries"]:
        write_text_atomic(target, json.dumps({"schema_version": SCHEMA_VERSION, "entries": merged}, indent=2) + "\n")
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resmg_zoo.weights.mirror", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("import", help="verify a mirror and merge its entries into the manifest")
    take.add_argument("mirror", help="a folder written by push_to_hub.py --mirror (e.g. ../shared/hub)")
    take.add_argument("--manifest", default=str(repo_manifest_path()), help="the manifest to update")
    take.add_argument("--prune", action="store_true", help="drop the manifest's entries that the mirror does not host")
    args = parser.parse_args(argv)
    try:
        report = import_mirror(Path(args.mirror), Path(args.manifest), prune=args.prune)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, ids in report.items():
        print(f"{key}: {', '.join(ids) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
