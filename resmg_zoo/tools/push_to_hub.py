"""Publish a finished training run as a Hugging Face Hub model folder and a manifest entry (SPEC §3).

    python scripts/push_to_hub.py --run runs/mnist-quick --mirror ~/resmg_hub        # local mirror
    python scripts/push_to_hub.py --run runs/mnist-quick --repo-id org/name.tag       # the Hub (needs a token)
    python scripts/push_to_hub.py --run runs/mnist-quick --dry-run                   # list what would be sent

The folder's layout and the entry are :mod:`resmg_zoo.weights.publish`'s; this command reads the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.cli import EXIT_USAGE
from ..core.tags import DEFAULT_HUB_ORG, TAGS
from ..train.checkpoint import CheckpointError
from ..train.run import Run, RunError
from ..weights.loading import WeightsIntegrityError
from ..weights.manifest import MANIFEST_NAME, repo_manifest_path
from ..weights.publish import PublishError, TrainedWeights, staged_files, to_mirror, upload


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


def publish(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run the command line; returns the manifest entry."""
    args = build_parser().parse_args(argv)
    run = Run.open(args.run)
    run.require_finished()
    source = TrainedWeights(run.config, run.metrics(), run.weights_path())
    tag = source.tag(args.tag)
    if args.mirror:
        entry, target = to_mirror(source, Path(args.mirror), tag, args.org, record=args.record)
        print(f"published {entry['hub_id']} to {target} and {Path(args.mirror) / MANIFEST_NAME}")
        if args.record:
            print(f"recorded its entry in {repo_manifest_path()}")
        return entry
    if args.repo_id:
        entry = upload(source, args.repo_id, tag, args.org)
        print(f"uploaded {args.repo_id}; added its entry to {repo_manifest_path()}")
        return entry
    entry, files = staged_files(source, tag, args.org)
    print(f"dry run: would upload to {entry['hub_id']}:")
    for name, size in files:
        print(f"  {name}  {size:,} bytes")
    print(json.dumps(entry, indent=2))
    return entry


def main(argv: Optional[list[str]] = None) -> int:
    try:
        publish(argv)
    except (PublishError, RunError, CheckpointError, WeightsIntegrityError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
