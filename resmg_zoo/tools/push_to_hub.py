"""Publish a finished training run as a Hugging Face Hub model folder and a manifest entry.

    resmg-push --run runs/mnist-quick --mirror ~/resmg_hub                  # a local mirror
    resmg-push --run runs/mnist-quick --repo-id alice/preact_resnet18_sharedA.mnist   # the Hub (needs a token)
    resmg-push --run runs/mnist-quick --dry-run                             # list what would be sent

The folder's layout and the entry are :mod:`resmg_zoo.weights.publish`'s; this command reads the run.
The repo id is ``<org>/<model>.<tag>`` (``--org`` sets the org, ``--repo-id`` the whole id); the
folder, its ``config.json``, its card and the manifest entry all name it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.cli import report_error
from ..core.errors import ResmgError
from ..core.files import require_keys
from ..core.tags import DEFAULT_HUB_ORG, TAGS, check_hub_id, hub_id
from ..train.log import METRICS_JSONL
from ..train.run import CONFIG_NAME, Run
from ..weights.manifest import MANIFEST_NAME, ManifestError, checkout_root, repo_manifest_path
from ..weights.publish import TrainedWeights, staged_files, to_mirror, upload

# What a publication takes from the run's config.json (the entry, the folder's config and card).
PUBLISHED_SETTINGS: dict[str, type | tuple[type, ...]] = {
    "model_kwargs": dict,
    "num_classes": int,
    "input_size": list,
    "dataset": str,
    "recipe_settings": dict,
    "precision": str,
    "seed": int,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resmg-push", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished training run folder")
    p.add_argument("--tag", default=None, help=f"pretrained tag (default: the run's dataset); one of {', '.join(TAGS)}")
    p.add_argument("--org", default=DEFAULT_HUB_ORG, help="Hub organisation of the id <org>/<model>.<tag>")
    p.add_argument(
        "--record", action="store_true", help="with --mirror: also add the entry to the repository's manifest"
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="publish over an id that is already published (the entry records what it replaced)",
    )
    p.add_argument(
        "--manifest",
        default=None,
        help="the manifest that --record and --repo-id write (default: the package's, in a source checkout)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mirror", help="write <mirror>/<hub id>/ and <mirror>/weights_manifest.json")
    where.add_argument("--repo-id", help="upload to this Hub repo with huggingface_hub (token from the usual places)")
    where.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    return p


def record_manifest(path: Optional[str]) -> Path:
    """The manifest an upload or ``--record`` writes: ``--manifest``, else the package's in a source
    checkout. Checked before anything is written or sent."""
    if path is not None:
        return Path(path)
    if checkout_root() is None:
        raise ManifestError(
            f"this resmg_zoo is an installed package: its manifest ({repo_manifest_path()}) is not written. "
            "Pass --manifest PATH for the entry, or publish from a source checkout (pip install -e .)"
        )
    return repo_manifest_path()


def publish(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run the command line; returns the manifest entry."""
    args = build_parser().parse_args(argv)
    if args.repo_id is not None:
        check_hub_id(args.repo_id, "--repo-id")
    record = record_manifest(args.manifest) if args.repo_id or args.record else None
    run = Run.open(args.run)
    last = run.require_finished()
    require_keys(run.config, PUBLISHED_SETTINGS, f"the run's settings {run.path / CONFIG_NAME}")
    number = (int, float)
    finals = {"test_top1": number, "test_top5": number, "train_seconds_total": number}
    require_keys(last, finals, f"log {run.path / METRICS_JSONL}, last row")
    weights, data, sha256 = run.verified_weights()  # read once: these bytes are parsed, hashed and published
    source = TrainedWeights(run.config, run.metrics(), weights, data, sha256)
    tag = source.pretrained_tag(args.tag)
    repo_id = args.repo_id or hub_id(run.config["model"], tag, args.org)
    if args.mirror:
        entry, target = to_mirror(source, Path(args.mirror), tag, repo_id, record=record, replace=args.replace)
        print(f"published {entry['hub_id']} to {target} and {Path(args.mirror) / MANIFEST_NAME}")
        if record is not None:
            print(f"recorded its entry in {record}")
        return entry
    if args.repo_id:
        assert record is not None
        entry = upload(source, repo_id, tag, record, replace=args.replace)
        print(f"uploaded {repo_id} at revision {entry['revision']}; added its entry to {record}")
        return entry
    entry, files = staged_files(source, tag, repo_id)
    print(f"dry run: would upload to {entry['hub_id']}:")
    for name, size in files:
        print(f"  {name}  {size:,} bytes")
    print(json.dumps(entry, indent=2))
    return entry


def main(argv: Optional[list[str]] = None) -> int:
    try:
        publish(argv)
    except ResmgError as err:
        return report_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
