"""A weights mirror (the Hub's layout on a shared disk, as ``push_to_hub --mirror`` writes it): verify
its folders and take its entries into the repository's manifest, or rewrite the metadata of folders
already published.

    python -m resmg_zoo.tools.mirror import ../shared/hub --evaluate   # verify, re-evaluate, then merge its entries
    python -m resmg_zoo.tools.mirror import ../shared/hub --prune      # ... and drop entries it does not host
    python -m resmg_zoo.tools.mirror refresh MIRROR/resmg-zoo/NAME...  # new config.json + model card, weights untouched
    python -m resmg_zoo.tools.mirror refresh MIRROR/resmg-zoo/NAME --int8 exports/NAME.int8  # + its int8 record
    python -m resmg_zoo.tools.mirror refresh MIRROR/resmg-zoo/NAME --report  # + evaluation report and pictures
    python -m resmg_zoo.tools.mirror verify ../shared/hub              # every folder against its entry

Nothing changes unless every folder verifies; the message names each folder and what differs.
``--evaluate`` re-measures each new or changed entry on the full test split of ``$RESMG_ZOO_DATA``
(fp32), refuses a top-1 more than 0.05 points from the entry's, and records in the entry the exact
number of correct images on a fixed stratified subset (``check``), which the published-claims test
then re-counts in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.atomic import aside_folders, write_bytes_atomic
from ..core.cli import report_error
from ..core.errors import ResmgError, UsageError
from ..core.files import read_json_object, read_regular
from ..core.tags import check_hub_id
from ..weights.card import check_card_report, label_names_for, standard_split_sizes, write_card, write_config
from ..weights.manifest import (
    INT8_RECORD_NAME,
    MANIFEST_NAME,
    REPORT_JSON,
    SCHEMA_VERSION,
    ManifestError,
    add_entry,
    load_manifest,
    manifest_lock,
    repo_manifest_path,
    save_manifest,
    validate_manifest,
)
from ..weights.pins import MAX_PINNED_BYTES
from ..weights.publish import metrics_rows, publishing, verify_folder
from .claims import TOP1_TOLERANCE, measure_claim, measure_int8, measure_report

COMPARED_WITHOUT = ("check", "revision", "int8", "report")  # what an import or a refresh adds to a mirror's entry


def mirror_entries(mirror: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The mirror's manifest and its entries (every hub id checked before it becomes a path)."""
    source = mirror / MANIFEST_NAME
    if not source.is_file():
        raise ManifestError(f"{mirror} is not a weights mirror: no {MANIFEST_NAME} in it")
    return source, load_manifest(source)["entries"]


def verify_mirror(mirror: Path) -> list[dict[str, Any]]:
    """Every folder of ``mirror`` checked against the mirror's manifest, and no folder it does not
    list; raises :class:`ManifestError` naming each problem. Returns the entries."""
    source, entries = mirror_entries(mirror)
    problems = []
    for entry in entries:
        folder = mirror / entry["hub_id"]
        if "swap_from" in entry or aside_folders(folder):
            problems.append(interrupted(folder, entry))
            continue
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
        raise ManifestError(f"{mirror} does not verify:\n  " + "\n  ".join(problems))
    return entries


def interrupted(folder: Path, entry: dict[str, Any]) -> str:
    """What an interrupted publication of ``entry`` left, and what to do (the state still loads)."""
    aside = aside_folders(folder)
    if aside and not folder.exists():
        state = f"the folder is missing and the old one is at {aside[-1]} (readers load it from there)"
    elif aside:
        state = f"a leftover old folder {aside[-1]} is beside the folder"
    else:
        state = "the folder holds the old or the new file, and the entry accepts both (swap_from)"
    return (
        f"{folder}: a publication of {entry['hub_id']} was interrupted: {state}. Run the same "
        f"`resmg-push --run RUN --mirror {folder.parents[1]} --replace` again to finish it"
    )


def _published_part(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in COMPARED_WITHOUT}


def import_mirror(
    mirror: Path, target: Path, prune: bool = False, evaluate: bool = False, data_dir: Optional[str] = None
) -> dict[str, list[str]]:
    """Verify ``mirror``, then merge its entries into the manifest at ``target`` (same hub id: replaced;
    an entry that did not change keeps its recorded ``check``). ``prune`` drops the entries of
    ``target`` that the mirror does not host; ``evaluate`` re-measures every new or changed entry
    (see the module docstring). On any problem raises :class:`ManifestError` and changes nothing.
    Returns the hub ids ``added``, ``updated``, ``unchanged`` and ``pruned``."""
    try:
        entries = verify_mirror(mirror)
    except ManifestError as err:
        raise ManifestError(f"{err}\n{target} is unchanged") from None
    with manifest_lock(target):
        current = load_manifest(target)
        before = {e["hub_id"]: e for e in current["entries"]}
        report: dict[str, list[str]] = {"added": [], "updated": [], "unchanged": [], "pruned": []}
        merged_entries = []
        for entry in entries:
            old = before.get(entry["hub_id"])
            if old is not None and _published_part(old) == _published_part(entry):
                report["unchanged"].append(entry["hub_id"])
                # a refresh's newer figures: int8 where the mirror has one (else the package's own, shipped with it),
                # the report exactly as the mirror hosts it (no pin of files the mirror does not have)
                kept = {k: v for k, v in old.items() if k != "report"}
                entry = kept | {k: entry[k] for k in ("int8", "report") if k in entry}
            else:
                report["added" if old is None else "updated"].append(entry["hub_id"])
            if evaluate and "check" not in entry:
                entry = dict(entry, check=_checked(mirror, entry, target, data_dir))
            merged_entries.append(entry)
        listed = {e["hub_id"] for e in entries}
        kept = [e for e in current["entries"] if e["hub_id"] not in listed]
        if prune:
            report["pruned"] = [e["hub_id"] for e in kept]
            kept = []
        merged = {"schema_version": SCHEMA_VERSION, "entries": [*kept, *merged_entries]}
        problems = validate_manifest(merged)
        if problems:
            raise ManifestError(
                f"the merged manifest would not be valid; {target} is unchanged: " + "; ".join(problems)
            )
        if sorted(map(json.dumps, merged["entries"])) != sorted(map(json.dumps, current["entries"])):
            save_manifest(target, merged)
    return report


def _checked(mirror: Path, entry: dict[str, Any], target: Path, data_dir: Optional[str]) -> dict[str, Any]:
    """The entry's ``check`` record, or :class:`ManifestError` where the full test split disagrees."""
    check = measure_claim(entry, mirror / entry["hub_id"], data_dir)
    if abs(check["full_top1"] - entry["top1"]) > TOP1_TOLERANCE:
        raise ManifestError(
            f"{entry['hub_id']}: top-1 on the full test split is {check['full_top1']:.2f}, the entry says "
            f"{entry['top1']:.2f} (more than {TOP1_TOLERANCE} points apart); {target} is unchanged"
        )
    print(
        f"{entry['hub_id']}: full test top-1 {check['full_top1']:.2f} (entry {entry['top1']:.2f}); "
        f"{check['correct']}/{check['images']} on the stratified subset",
        file=sys.stderr,
    )
    return check


def refresh_folder(
    folder: Path, int8: Optional[Path] = None, data_dir: Optional[str] = None, report: bool = False
) -> dict[str, Any]:
    """Rewrite ``config.json`` and ``README.md`` of a published mirror folder from its own files and
    its entry in the mirror's manifest (the folder is ``<mirror>/<org>/<name>``). The weights are
    untouched, and the folder must verify before and after. ``int8``: an int8 folder of these weights
    (``resmg-export --format int8``), rebuilt and measured on the full test split first
    (:func:`.claims.measure_int8`); its record is then published beside the weights as ``int8.json`` and
    pinned in the entry with its figures, so the card shows them and ``--int8`` loads it. ``report``: the
    weights evaluated on the full test split (:func:`.claims.measure_report`), ``report.json``, its pictures
    and the training curve published beside them and pinned, so the card embeds them.

    Everything is written under the folder's publishing lock, and only if the entry still lists the
    weights that were measured (a ``--replace`` that finished during the measurement is not undone)."""
    folder = folder.resolve()
    if len(folder.parents) < 2 or not folder.is_dir():
        raise ManifestError(f"{folder} is not a published folder <mirror>/<org>/<model>.<tag>")
    mirror = folder.parents[1]
    repo_id = check_hub_id(folder.relative_to(mirror).as_posix(), "the folder's hub id")
    source, entry = _mirror_entry(mirror, folder, repo_id)
    problems = verify_folder(folder, entry) if int8 is not None or report else []  # before measuring from its files
    if problems:
        raise ManifestError(f"{folder} does not verify, so it is not refreshed: " + "; ".join(problems))
    measured_int8 = measure_int8(entry, int8, data_dir) if int8 is not None else None
    measured_report = measure_report(entry, folder, metrics_rows(folder), data_dir) if report else None
    with publishing(repo_id, folder.parent):
        _, current = _mirror_entry(mirror, folder, repo_id)
        if current["sha256"] != entry["sha256"] or "swap_from" in current:
            raise ManifestError(
                f"{folder}: the entry changed while it was measured (sha256 {entry['sha256']} -> {current['sha256']}"
                f"{', a swap in progress' if 'swap_from' in current else ''}); nothing was written, run it again"
            )
        entry = current
        problems = verify_folder(folder, entry)
        if problems:
            raise ManifestError(f"{folder} does not verify, so it is not refreshed: " + "; ".join(problems))
        if measured_int8 is not None:
            figures, record = measured_int8
            entry = _publish_pinned(folder, source, dict(entry, int8=figures), {INT8_RECORD_NAME: record})
        if measured_report is not None:
            figures, files = measured_report
            entry = _publish_pinned(folder, source, dict(entry, report=figures), files)
        rows = metrics_rows(folder)
        old = read_json_object(folder / "config.json", "the published config")
        pinned = folder / REPORT_JSON
        shown = check_card_report(read_json_object(pinned, "the report"), str(pinned)) if "report" in entry else None
        write_config(folder, entry, old.get("label_names") or label_names_for(entry, None))
        write_card(folder, entry, rows, standard_split_sizes(entry), shown)
        problems = verify_folder(folder, entry)
    if problems:
        raise ManifestError(f"{folder} no longer verifies after the refresh: " + "; ".join(problems))
    return entry


def _publish_pinned(folder: Path, source: Path, pinned: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """Put ``files`` (name → bytes) into ``folder`` and the entry ``pinned`` (which pins them) into the manifest
    ``source``; the files the folder held before are put back if anything fails before the entry is saved (the
    folder would not verify, a write or the manifest's lock fails, an interrupt)."""
    before: dict[str, Optional[bytes]] = {}
    for name in files:  # what is there is ours to put back: a regular file of bounded size, or nothing
        path = folder / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ManifestError(f"{path} is a link or not a regular file: nothing was written")
        before[name] = read_regular(path, MAX_PINNED_BYTES, "a published file") if path.exists() else None
    try:
        for name, data in files.items():
            write_bytes_atomic(folder / name, data)
        problems = verify_folder(folder, pinned)
        if problems:
            raise ManifestError(
                f"{folder} would not verify with {', '.join(files)}; nothing changed: " + "; ".join(problems)
            )
        add_entry(source, pinned)
    except BaseException as err:  # a refusal, a full disk, the manifest's lock, an interrupt: the folder as it was
        stuck = []
        for name, data in before.items():
            try:
                if data is not None:
                    write_bytes_atomic(folder / name, data)
                elif (folder / name).exists():
                    (folder / name).unlink()
            except OSError:
                stuck.append(name)
        if isinstance(err, OSError) and not isinstance(err, ResmgError):
            left = f"; could not put back {', '.join(stuck)}" if stuck else "; nothing changed"
            raise ManifestError(f"{folder} cannot be written ({err.strerror or err}){left}") from None
        raise
    return pinned


def _mirror_entry(mirror: Path, folder: Path, repo_id: str) -> tuple[Path, dict[str, Any]]:
    """The mirror's manifest and its entry for ``repo_id``."""
    source, entries = mirror_entries(mirror)
    entry = next((e for e in entries if e["hub_id"] == repo_id), None)
    if entry is None:
        raise ManifestError(f"{folder}: {source} lists no entry for {repo_id}")
    return source, entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resmg-mirror", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("import", help="verify a mirror and merge its entries into the manifest")
    take.add_argument("mirror", help="a folder written by push_to_hub --mirror (e.g. ../shared/hub)")
    take.add_argument("--manifest", default=str(repo_manifest_path()), help="the manifest to update")
    take.add_argument("--prune", action="store_true", help="drop the manifest's entries that the mirror does not host")
    take.add_argument(
        "--evaluate", action="store_true", help="re-measure new entries on the real test split and record a check"
    )
    take.add_argument("--data", default=None, help="folder with <dataset>.zip (default $RESMG_ZOO_DATA)")
    check = commands.add_parser("verify", help="check every folder of a mirror against its manifest")
    check.add_argument("mirror", help="a folder written by push_to_hub --mirror")
    refresh = commands.add_parser("refresh", help="rewrite config.json and README.md of published folders")
    refresh.add_argument("folders", nargs="+", help="<mirror>/<org>/<model>.<tag> folders")
    refresh.add_argument(
        "--int8", default=None, help="an int8 folder of the (one) folder's weights: measured, published as int8.json"
    )
    refresh.add_argument(
        "--report",
        action="store_true",
        help="evaluate the weights on the full test split (fp32) and publish report.json, its pictures and the "
        "training curve beside them; the card embeds them",
    )
    refresh.add_argument("--data", default=None, help="folder with <dataset>.zip (default $RESMG_ZOO_DATA)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "verify":
            entries = verify_mirror(Path(args.mirror))
            print(f"{args.mirror}: {len(entries)} published folder(s), each the bytes its entry lists")
        elif args.command == "import":
            report = import_mirror(Path(args.mirror), Path(args.manifest), args.prune, args.evaluate, args.data)
            for key, ids in report.items():
                print(f"{key}: {', '.join(ids) or '-'}")
        else:
            if args.int8 and len(args.folders) != 1:
                raise UsageError("--int8 measures one export folder: give one published folder with it")
            for folder in args.folders:
                entry = refresh_folder(Path(folder), Path(args.int8) if args.int8 else None, args.data, args.report)
                written = ["config.json", "README.md", *([INT8_RECORD_NAME] if args.int8 else [])]
                written += list(entry["report"]["files"]) if args.report else []
                print(f"refreshed {folder} ({entry['hub_id']}): {', '.join(written)}; sha256 {entry['sha256']}")
    except ResmgError as err:
        return report_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
