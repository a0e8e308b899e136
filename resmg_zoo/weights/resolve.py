"""Published weights for ``pretrained=True``: which exist, where, and that they are the published bytes.

*Which exist*: the entries of the package's ``weights_manifest.json`` (the only ones timm lists),
then those of a mirror's own manifest ``$RESMG_ZOO_HUB_DIR/weights_manifest.json`` for weights the
package has not imported yet (``resmg-mirror import``). The package pins what it lists: where both
list a hub id, or where the package lists any id for ``model.tag``, the package's entry (its sha256)
is the one trusted, whatever the mirror's manifest says — a mirror may add ids, never change pinned
ones. ``model.tag`` means, among the entries trusted for it, the hub id that the mirror hosts, if it
hosts one, else the first listed.

*Where*: the mirror folder ``$RESMG_ZOO_HUB_DIR/<hub id>/`` (whose ``config.json`` must name that
id), then the Hugging Face Hub through ``huggingface_hub`` at the entry's pinned ``revision`` (its
cache, or ``cache_dir``; ``HF_HUB_OFFLINE`` honoured; a pinned commit loads offline from the cache).
A mirror has no commits: what it holds is trusted by its sha256 alone. The file is read once, its
sha256 checked, and the tensors parsed from those same bytes, whichever way it came (``local-dir:`` and
``hf-hub:<id>@<rev>`` included; a ``@revision`` is checked to be a commit id or a ref name first). The
verified tensors are then given to timm's own ``load_pretrained`` (see :mod:`resmg_zoo.models.builder`),
with :func:`resmg_zoo.weights.loading.fit_state_dict` as its filter so that a key that does not fit is
an error naming the model, tag and file; only safetensors are ever read.

*While a mirror folder is swapped* by a publisher, the mirror's entry names the sha256 it replaces
(``swap_from``) and either file is accepted; the manifest is read after the bytes, and a mismatch is
read once more, so a reader racing a publisher sees the old file or the new one, never a refusal of a
correct file.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..core.atomic import aside_folders
from ..core.errors import UsageError
from ..core.files import read_json_object
from ..core.hashing import read_with_sha256
from ..core.tags import TAGS, check_revision
from .hub_download import NotPublishedError, download
from .loading import WeightsIntegrityError, parse_state_dict
from .manifest import MANIFEST_NAME, WEIGHTS_NAME, Published, load_manifest, repo_manifest_path

SOURCE_ARGS = ("num_classes", "in_chans")  # what the weights were trained for, not the architecture


def hub_dir() -> Optional[Path]:
    """The mirror folder ``$RESMG_ZOO_HUB_DIR`` (``None`` when unset)."""
    value = os.environ.get("RESMG_ZOO_HUB_DIR")
    return Path(value).expanduser() if value else None


def published() -> list[Published]:
    """Every published checkpoint: the repository's entries, then the mirror's that the repository lacks."""
    paths = [repo_manifest_path()]
    mirror = hub_dir()
    if mirror is not None and (mirror / MANIFEST_NAME).is_file():
        paths.append(mirror / MANIFEST_NAME)
    found: dict[str, Published] = {}
    for path in paths:
        for entry in load_manifest(path)["entries"]:
            found.setdefault(entry["hub_id"], Published(entry, path))
    return list(found.values())


def split_revision(hub: str) -> tuple[str, Optional[str]]:
    """``"org/name@rev"`` → ``("org/name", "rev")`` (timm's ``hf-hub:<id>@<revision>``); the revision
    must be a commit id or a safe ref name (:func:`check_revision`): ``@../../x`` is refused here,
    before it can reach a URL or a cache path."""
    repo_id, at, revision = hub.partition("@")
    if at and not revision:
        raise UsageError(f"hf-hub:{hub}: an '@' must be followed by a revision (a commit id or a branch/tag)")
    if revision:
        check_revision(revision, f"the revision of hf-hub:{hub}")
    return repo_id, revision or None


def find_published(model: Optional[str], tag: Optional[str], hub: Optional[str] = None) -> Optional[Published]:
    """The published checkpoint with hub id ``hub`` (a ``@revision`` suffix ignored); without one,
    that of ``model.tag``: the package's entries for it where it has any (pinned: a mirror's manifest
    cannot replace them), else the mirror's; among those, the one the mirror hosts where
    ``$RESMG_ZOO_HUB_DIR`` holds one, else the first listed."""
    candidates = published()
    if hub is not None:
        repo_id = split_revision(hub)[0]
        return next((p for p in candidates if p.hub_id == repo_id), None)
    ours = [p for p in candidates if (p.entry["model"], p.entry["tag"]) == (model, tag)]
    pinned = [p for p in ours if p.manifest == repo_manifest_path()]
    ours = pinned or ours
    mirror = hub_dir()
    hosted = [p for p in ours if mirror is not None and (mirror / p.hub_id / WEIGHTS_NAME).is_file()]
    return (hosted or ours or [None])[0]


def accepted_sha256(entry: dict[str, Any]) -> set[str]:
    """The sha256 values that are the entry's published file: its own, and during a folder swap the one
    it replaces (``swap_from``, see :mod:`resmg_zoo.weights.publish`)."""
    return {entry["sha256"], *([entry["swap_from"]["sha256"]] if "swap_from" in entry else [])}


def reread(found: Published) -> Published:
    """``found``'s entry as its manifest says now (a publisher may have finished a swap meanwhile)."""
    entries = load_manifest(found.manifest)["entries"]
    entry = next((e for e in entries if e["hub_id"] == found.hub_id), None)
    return found if entry is None else Published(entry, found.manifest)


@dataclass(frozen=True)
class ResolvedWeights:
    """The tensors of a file whose sha256 is the published one (parsed from the bytes that were
    hashed), where they came from, and what they were published with."""

    model: str
    tag: str
    path: Path
    source: str
    published: Published
    state_dict: dict[str, torch.Tensor] = field(repr=False, compare=False, default_factory=dict)
    sha256: str = ""  # of the bytes the tensors were parsed from

    @property
    def hub_id(self) -> str:
        return self.published.hub_id

    @property
    def architecture_args(self) -> dict[str, Any]:
        """The published ``model_args`` that shape the network (``widths``, ``share``, …)."""
        return {k: v for k, v in self.published.entry["model_args"].items() if k not in SOURCE_ARGS}

    def model_kwargs(self, kwargs: dict[str, Any], fetched: dict[str, Any]) -> dict[str, Any]:
        """The ``create_model`` arguments for these weights: the published architecture, under the
        caller's own ``kwargs``. A value that only a fetched ``config.json`` supplied (``fetched``, timm's
        ``pretrained_model_args``) is dropped: the manifest, not a file from the Hub, says what was published."""
        own = {k: v for k, v in kwargs.items() if not (k in fetched and fetched[k] == v)}
        return {**self.architecture_args, **own}

    def cfg_overlay(self) -> dict[str, Any]:
        """What timm's ``load_pretrained`` must know: the verified tensors themselves (so nothing reads
        the file again), and the classes and input channels they were trained for (so that it adapts
        the head and stem as for any timm model)."""
        args = self.published.entry["model_args"]
        size = TAGS[self.tag].input_size
        return dict(
            state_dict=self.state_dict,
            file=None,
            source="",
            hf_hub_id=self.hub_id,
            num_classes=args.get("num_classes", TAGS[self.tag].num_classes),
            input_size=(args.get("in_chans", size[0]), *size[1:]),
        )

    def describe(self) -> str:
        return f"{self.model}.{self.tag} ({self.hub_id}) from {self.path}"


def unpublished_message(model: str, tag: str, hub: Optional[str]) -> str:
    """Why ``model.tag`` has no weights, and which tags of ``model`` do."""
    hosted = sorted({p.entry["tag"] for p in published() if p.entry["model"] == model})
    manifests = ", ".join(str(p) for p in [repo_manifest_path(), *([hub_dir() / MANIFEST_NAME] if hub_dir() else [])])
    wanted = hub or f"{model}.{tag}"
    if hosted:
        others = (
            f"Published tags of {model}: {', '.join(hosted)} — e.g. "
            f'timm.create_model("{model}.{hosted[0]}", pretrained=True) or torch.hub.load(..., "{model}", '
            f'pretrained=True, dataset="{hosted[0]}").'
        )
    else:
        others = f"No tag of {model} is published yet; train it with `python -m resmg_zoo.train --model {model}`."
    return f"no pretrained weights are published for {wanted} (manifests read: {manifests}). {others}"


def verified_state(path: Path, found: Published, looked: list[str]) -> tuple[dict[str, torch.Tensor], Published, str]:
    """The tensors of ``path`` if its bytes are the published file of ``found`` (its sha256, or during a
    swap the one it replaces), parsed from the bytes that were hashed; else :class:`WeightsIntegrityError`.
    The manifest is read after the bytes and a mismatch is tried once more (a publisher may be
    between its steps). Returns the tensors, the entry they matched and their sha256."""
    for attempt in range(2):
        try:
            data, actual = read_with_sha256(path)
        except OSError as err:  # no file where the folder or cache should hold one: nothing to verify
            raise UsageError(
                f"the weights of {found.name} ({found.hub_id}): {path} cannot be read ({err.strerror or err}). "
                f"Looked in: {'; '.join(looked)}"
            ) from None
        found = reread(found)
        if actual in accepted_sha256(found.entry):
            return parse_state_dict(data, f"{found.name}: {path}"), found, actual
        if attempt == 0:
            time.sleep(0.2)
    entry = found.entry
    hint = "The file is corrupt, truncated or not the published one; delete it and fetch it again."
    mirror = hub_dir()
    if mirror is not None and found.manifest == repo_manifest_path() and (mirror / MANIFEST_NAME).is_file():
        entries = load_manifest(mirror / MANIFEST_NAME)["entries"]
        theirs = next((e for e in entries if e["hub_id"] == found.hub_id), None)
        if theirs is not None and actual in accepted_sha256(theirs):
            hint = (
                f"The mirror's own manifest lists this file, but this package pins {found.hub_id} to the sha256 "
                f"above: a mirror cannot replace a pinned weight. To take the mirror's, run "
                f"`resmg-mirror import {mirror} --evaluate` in a source checkout."
            )
    raise WeightsIntegrityError(
        f"sha256 mismatch for {found.name}: {path} has sha256 {actual} ({len(data):,} bytes) but {found.manifest} "
        f"lists {entry['sha256']} ({entry['bytes']:,} bytes) for {found.hub_id}. {hint} Looked in: {'; '.join(looked)}"
    )


def warn_unchecked(name: str, stacklevel: int = 3) -> None:
    """The one warning for weights no manifest lists: timm loads them, and nothing checks their bytes."""
    warnings.warn(
        f"{name} is not in any resmg_zoo weights manifest: loading it as timm does, with no sha256 check",
        stacklevel=stacklevel + 1,
    )


def check_architecture(found: Published, model: str, named_by: str) -> None:
    """A listed hub id is loaded only into the architecture its manifest entry names."""
    if found.entry["model"] != model:
        raise WeightsIntegrityError(
            f"{named_by} names the architecture {model!r} for {found.hub_id}, but {found.manifest} lists "
            f"{found.entry['model']!r} for it: refusing to load its weights into another architecture "
            f"(create {found.entry['model']}.{found.entry['tag']} instead)"
        )


def interrupted_swap_folder(folder: Path) -> Optional[Path]:
    """The old folder that a publisher without ``renameat2`` moved aside (``.<name>.old-<pid>``) and did
    not get to replace, where ``folder`` itself is missing."""
    aside = [] if folder.exists() else aside_folders(folder)
    return aside[-1] if aside else None


def resolve_weights(
    model: str, tag: str, hub: Optional[str] = None, cache_dir: Optional[str | Path] = None
) -> ResolvedWeights:
    """Find the published file of ``model.tag`` (or of hub id ``hub``, ``@revision`` allowed) and
    check its sha256. A revision given with ``hub`` is read from the Hub only (a mirror has no commits)."""
    asked = split_revision(hub)[1] if hub else None
    found = find_published(model, tag, hub)
    if found is None:
        raise NotPublishedError(unpublished_message(model, tag, hub))
    if hub is not None:
        check_architecture(found, model, f"hf-hub:{hub}")
    tag = found.entry["tag"]
    revision = asked or found.entry.get("revision")
    looked: list[str] = []
    mirror = hub_dir()
    if mirror is not None and asked:
        looked.append(f"not the mirror {mirror}: it has no commits, and revision {asked} was asked for")
    elif mirror is not None:
        folder = mirror / found.hub_id
        folder = interrupted_swap_folder(folder) or folder
        looked.append(f"mirror {folder} (RESMG_ZOO_HUB_DIR)")
        if (folder / WEIGHTS_NAME).is_file():
            check_mirror_folder(folder, found)
            state, found, sha256 = verified_state(folder / WEIGHTS_NAME, found, looked)
            return ResolvedWeights(model, tag, folder / WEIGHTS_NAME, f"mirror:{folder}", found, state, sha256)
    else:
        looked.append("no mirror (RESMG_ZOO_HUB_DIR unset)")
    path = download(found, revision, cache_dir, looked)
    state, found, sha256 = verified_state(path, found, looked)
    return ResolvedWeights(model, tag, path, f"hf-hub:{found.hub_id}@{revision or 'main'}", found, state, sha256)


def check_mirror_folder(folder: Path, found: Published) -> None:
    """A mirror folder must be the repo it stands for: its ``config.json`` names the entry's hub id
    (a ``config.json`` that is not a JSON object is a :class:`~resmg_zoo.core.files.UnreadableFileError`)."""
    named = configured_hub_id(read_json_object(folder / "config.json", "the mirror folder's config"))
    if named != found.hub_id:
        raise WeightsIntegrityError(
            f"{folder / 'config.json'} names the repo {named!r}, but the folder stands for {found.hub_id} "
            f"({found.manifest}): the mirror folder holds another repo's files; publish it again"
        )


def configured_hub_id(config: dict[str, Any]) -> Optional[str]:
    """The hub id a published folder's ``config.json`` names (``pretrained_cfg.hf_hub_id``), if it names one."""
    cfg = config.get("pretrained_cfg")
    hub = cfg.get("hf_hub_id") if isinstance(cfg, dict) else None
    return hub if isinstance(hub, str) else None


def listed_hub_id(folder: Path) -> Optional[str]:
    """The hub id a published folder's ``config.json`` names, where a manifest lists it (else ``None``,
    also for a folder without ``config.json``); a ``config.json`` that is not a JSON object is an
    :class:`~resmg_zoo.core.files.UnreadableFileError`, never taken for an unlisted id."""
    config_file = folder / "config.json"
    if not config_file.exists() and not config_file.is_symlink():
        return None
    hub = configured_hub_id(read_json_object(config_file, "the published folder's config"))
    return hub if hub is not None and find_published(None, None, hub.partition("@")[0]) else None


def verify_local_file(model: str, path: Path, hub: str, named_by: str) -> ResolvedWeights:
    """A local copy (``local-dir:`` folder, published folder, a file) of the listed hub id ``hub``: loaded
    only into the entry's architecture, and only where its bytes have the entry's sha256."""
    found = find_published(model, None, hub)
    if found is None:
        raise NotPublishedError(unpublished_message(model, "", hub))
    check_architecture(found, model, named_by)
    state, found, sha256 = verified_state(path, found, [f"{named_by} ({path})"])
    return ResolvedWeights(model, found.entry["tag"], path, f"local:{path}", found, state, sha256)


def verify_local_folder(model: str, folder: Path, hub: Optional[str]) -> Optional[ResolvedWeights]:
    """A ``local-dir:`` folder whose ``config.json`` names a published hub id: its weights verified
    as :func:`verify_local_file` does (``None`` where no manifest lists the id: timm loads it unchecked)."""
    if not hub or find_published(model, None, split_revision(hub)[0]) is None:
        return None
    return verify_local_file(model, folder / WEIGHTS_NAME, split_revision(hub)[0], f"local-dir:{folder}")
