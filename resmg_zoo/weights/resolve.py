"""Published weights for ``pretrained=True``: which exist, where, and that they are the published bytes.

*Which exist*: the entries of the package's ``weights_manifest.json`` (the only ones timm lists),
then those of a mirror's own manifest ``$RESMG_ZOO_HUB_DIR/weights_manifest.json`` for weights the
package has not imported yet (``resmg-mirror import``). Where both list a hub id, the package's
entry (its sha256) is the one trusted. ``model.tag`` means the hub id that the mirror hosts, if it
hosts one, else the first listed.

*Where*: the mirror folder ``$RESMG_ZOO_HUB_DIR/<hub id>/`` (whose ``config.json`` must name that
id), then the Hugging Face Hub through ``huggingface_hub`` at the entry's pinned ``revision`` (its
cache, or ``cache_dir``; ``HF_HUB_OFFLINE`` honoured; a pinned commit loads offline from the cache).
A mirror has no commits: what it holds is trusted by its sha256 alone. The entry's sha256 is checked
before anything reads the file, whichever way it came (``local-dir:`` and ``hf-hub:<id>@<rev>``
included). The verified file is then loaded by timm's own ``load_pretrained`` (see
:mod:`resmg_zoo.models.builder`), with :func:`resmg_zoo.weights.loading.fit_state_dict` as its filter
so that a key that does not fit is an error naming the model, tag and file; only safetensors are ever read.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from ..core.errors import UsageError
from ..core.hashing import file_sha256
from ..core.tags import TAGS
from .loading import WeightsIntegrityError
from .manifest import MANIFEST_NAME, WEIGHTS_NAME, load_manifest, repo_manifest_path

SOURCE_ARGS = ("num_classes", "in_chans")  # what the weights were trained for, not the architecture


class PretrainedWeightsUnavailable(UsageError, RuntimeError):
    """No published weights for the model and tag could be found; the message lists where it looked."""


def hub_dir() -> Optional[Path]:
    """The mirror folder ``$RESMG_ZOO_HUB_DIR`` (``None`` when unset)."""
    value = os.environ.get("RESMG_ZOO_HUB_DIR")
    return Path(value).expanduser() if value else None


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
    """``"org/name@rev"`` → ``("org/name", "rev")`` (timm's ``hf-hub:<id>@<revision>``)."""
    repo_id, _, revision = hub.partition("@")
    return repo_id, revision or None


def find_published(model: str, tag: str, hub: Optional[str] = None) -> Optional[Published]:
    """The published checkpoint with hub id ``hub`` (a ``@revision`` suffix ignored); without one,
    that of ``model.tag`` — the one the mirror hosts where ``$RESMG_ZOO_HUB_DIR`` holds one, else the
    first listed."""
    candidates = published()
    if hub is not None:
        repo_id = split_revision(hub)[0]
        return next((p for p in candidates if p.hub_id == repo_id), None)
    ours = [p for p in candidates if (p.entry["model"], p.entry["tag"]) == (model, tag)]
    mirror = hub_dir()
    hosted = [p for p in ours if mirror is not None and (mirror / p.hub_id / WEIGHTS_NAME).is_file()]
    return (hosted or ours or [None])[0]


@dataclass(frozen=True)
class ResolvedWeights:
    """A file whose sha256 is the published one, and what it was published with."""

    model: str
    tag: str
    path: Path
    source: str
    published: Published

    @property
    def hub_id(self) -> str:
        return self.published.hub_id

    @property
    def architecture_args(self) -> dict[str, Any]:
        """The published ``model_args`` that shape the network (``widths``, ``share``, …)."""
        return {k: v for k, v in self.published.entry["model_args"].items() if k not in SOURCE_ARGS}

    def cfg_overlay(self) -> dict[str, Any]:
        """What timm's ``load_pretrained`` must know of the file: where it is, and the classes and
        input channels it was trained for (so that it adapts the head and stem as for any timm model)."""
        args = self.published.entry["model_args"]
        size = TAGS[self.tag].input_size
        return dict(
            file=str(self.path),
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


def verify_sha256(path: Path, found: Published, looked: list[str]) -> None:
    """Raise :class:`WeightsIntegrityError` unless ``path`` is the published file, byte for byte."""
    entry = found.entry
    actual = file_sha256(path)
    if actual == entry["sha256"]:
        return
    size = path.stat().st_size
    hint = "The file is corrupt, truncated or not the published one; delete it and fetch it again."
    mirror = hub_dir()
    if mirror is not None and found.manifest == repo_manifest_path() and (mirror / MANIFEST_NAME).is_file():
        entries = load_manifest(mirror / MANIFEST_NAME)["entries"]
        theirs = next((e for e in entries if e["hub_id"] == found.hub_id), None)
        if theirs is not None and theirs["sha256"] == actual:
            hint = (
                f"The mirror's own manifest lists this file: the mirror holds newer weights than {found.manifest}; "
                f"run `resmg-mirror import {mirror} --evaluate` to take them."
            )
    raise WeightsIntegrityError(
        f"sha256 mismatch for {found.name}: {path} has sha256 {actual} ({size:,} bytes) but {found.manifest} "
        f"lists {entry['sha256']} ({entry['bytes']:,} bytes) for {found.hub_id}. {hint} Looked in: {'; '.join(looked)}"
    )


def resolve_weights(
    model: str, tag: str, hub: Optional[str] = None, cache_dir: Optional[str | Path] = None
) -> ResolvedWeights:
    """Find the published file of ``model.tag`` (or of hub id ``hub``, ``@revision`` allowed) and
    check its sha256. A revision given with ``hub`` is read from the Hub only (a mirror has no commits)."""
    found = find_published(model, tag, hub)
    if found is None:
        raise PretrainedWeightsUnavailable(unpublished_message(model, tag, hub))
    asked = split_revision(hub)[1] if hub else None
    revision = asked or found.entry.get("revision")
    looked: list[str] = []
    mirror = hub_dir()
    if mirror is not None and asked:
        looked.append(f"not the mirror {mirror}: it has no commits, and revision {asked} was asked for")
    elif mirror is not None:
        folder = mirror / found.hub_id
        looked.append(f"mirror {folder} (RESMG_ZOO_HUB_DIR)")
        if (folder / WEIGHTS_NAME).is_file():
            check_mirror_folder(folder, found)
            verify_sha256(folder / WEIGHTS_NAME, found, looked)
            return ResolvedWeights(model, tag, folder / WEIGHTS_NAME, f"mirror:{folder}", found)
    else:
        looked.append("no mirror (RESMG_ZOO_HUB_DIR unset)")
    path = _download(found, revision, cache_dir, looked)
    verify_sha256(path, found, looked)
    return ResolvedWeights(model, tag, path, f"hf-hub:{found.hub_id}@{revision or 'main'}", found)


def check_mirror_folder(folder: Path, found: Published) -> None:
    """A mirror folder must be the repo it stands for: its ``config.json`` names the entry's hub id."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        named = (config.get("pretrained_cfg") or {}).get("hf_hub_id")
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise WeightsIntegrityError(
            f"{folder / 'config.json'}: unreadable ({err}); the mirror folder is damaged"
        ) from None
    if named != found.hub_id:
        raise WeightsIntegrityError(
            f"{folder / 'config.json'} names the repo {named!r}, but the folder stands for {found.hub_id} "
            f"({found.manifest}): the mirror folder holds another repo's files; publish it again"
        )


def verify_local_folder(model: str, tag: str, folder: Path, hub: Optional[str]) -> Optional[Published]:
    """A ``local-dir:`` folder whose ``config.json`` names a published hub id: its weights must have
    that entry's sha256 (``None`` where no manifest lists the id: timm loads it unchecked)."""
    found = find_published(model, tag, hub) if hub else None
    if found is not None:
        verify_sha256(folder / WEIGHTS_NAME, found, [f"local-dir {folder}"])
    return found


def hub_unreachable(endpoint: str, timeout: float = 3.0) -> Optional[str]:
    """Why the Hub at ``endpoint`` cannot be reached (no DNS, no route, refused), found with one TCP
    connection of at most ``timeout`` s; ``None`` if it answers or a proxy is configured (then the
    client's own requests decide)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
    return None


def writable_cache(cache_dir: Optional[str | Path]) -> Path:
    """The Hugging Face cache that a download writes (``cache_dir``, else the client's own), tried for
    writing first so that one that cannot be written is named rather than failing deep in the client."""
    from huggingface_hub import constants

    folder = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PretrainedWeightsUnavailable(
            f"the Hugging Face cache {folder} cannot be written ({err.strerror or err}): pass a writable "
            "cache_dir=, set HF_HUB_CACHE to one, or set HF_HUB_OFFLINE=1 to read what it already holds"
        ) from None
    return folder


def _download(found: Published, revision: Optional[str], cache_dir: Optional[str | Path], looked: list[str]) -> Path:
    """The file from the Hub through ``huggingface_hub`` at ``revision`` (its cache first when
    offline): the client's retries only where the Hub answers; ``looked`` says which of these happened."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RevisionNotFoundError

    endpoint = constants.ENDPOINT
    unreachable = None if constants.HF_HUB_OFFLINE else hub_unreachable(endpoint)
    at = f" at revision {revision}" if revision else " at main (no revision recorded)"
    if constants.HF_HUB_OFFLINE:
        looked.append("the local Hugging Face cache (HF_HUB_OFFLINE is set: the Hub was not contacted)")
    elif unreachable:
        looked.append(f"the local Hugging Face cache (the Hub at {endpoint} cannot be reached: {unreachable})")
    else:
        looked.append(f"the Hugging Face Hub repo {found.hub_id}{at} at {endpoint}, through the local cache")
    local_only = constants.HF_HUB_OFFLINE or unreachable is not None
    if not local_only:
        writable_cache(cache_dir)
    try:
        return Path(
            hf_hub_download(
                repo_id=found.hub_id,
                filename=WEIGHTS_NAME,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_only,
            )
        )
    except RevisionNotFoundError:
        raise PretrainedWeightsUnavailable(
            f"the Hub repo {found.hub_id} has no revision {revision!r} ({found.name}). Looked in: {'; '.join(looked)}"
        ) from None
    except LocalEntryNotFoundError:
        raise PretrainedWeightsUnavailable(
            f"the weights of {found.name} are not in the local Hugging Face cache and the Hub was not reached. "
            f"Looked in: {'; '.join(looked)}. To get them: go online once (they are cached), or point "
            f"RESMG_ZOO_HUB_DIR at a mirror holding the folder {found.hub_id}/."
        ) from None
    except (HfHubHTTPError, OSError) as err:
        raise PretrainedWeightsUnavailable(
            f"could not download {found.name} from the Hub repo {found.hub_id}: {err}. Looked in: {'; '.join(looked)}"
        ) from None
