"""Published weights from the Hugging Face Hub through ``huggingface_hub``: at the entry's pinned revision,
its cache first when offline, and an error that says where it looked (see :mod:`.resolve`)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from ..core.errors import UnavailableError, UsageError
from .manifest import WEIGHTS_NAME, Published


class PretrainedWeightsUnavailable(UnavailableError):
    """Published weights that cannot be had now (the Hub unreachable, not in an offline cache, a cache
    that cannot be written); an ``OSError``, so ``except OSError`` catches "offline". The message lists
    where it looked."""


class NotPublishedError(UsageError):
    """No manifest lists weights for the model and tag (or hub id) asked for, or the Hub repo has no such
    revision; the message says which are."""


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


def download(
    found: Published,
    revision: Optional[str],
    cache_dir: Optional[str | Path],
    looked: list[str],
    filename: str = WEIGHTS_NAME,
) -> Path:
    """The entry's ``filename`` (its weights, or its int8 record) from the Hub through ``huggingface_hub``
    at ``revision`` (its cache first when offline): the client's retries only where the Hub answers;
    ``looked`` says which of these happened."""
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
                filename=filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_only,
            )
        )
    except RevisionNotFoundError:
        raise NotPublishedError(
            f"the Hub repo {found.hub_id} has no revision {revision!r} ({found.name}). Looked in: {'; '.join(looked)}"
        ) from None
    except LocalEntryNotFoundError:
        raise PretrainedWeightsUnavailable(
            f"{filename} of {found.name} is not in the local Hugging Face cache and the Hub was not reached. "
            f"Looked in: {'; '.join(looked)}. To get them: go online once (they are cached), or point "
            f"RESMG_ZOO_HUB_DIR at a mirror holding the folder {found.hub_id}/."
        ) from None
    except (HfHubHTTPError, OSError) as err:
        raise PretrainedWeightsUnavailable(
            f"could not download {found.name} from the Hub repo {found.hub_id}: {err}. Looked in: {'; '.join(looked)}"
        ) from None


@contextmanager
def hub_errors(name: str) -> Iterator[None]:
    """Turn what ``huggingface_hub`` raises for ``name`` while timm fetches an unlisted repo's files into
    the package's kinds: not in the cache while offline or unreachable → :class:`PretrainedWeightsUnavailable`
    (exit 5); no such repo, revision or file → :class:`NotPublishedError` (exit 2); any other refusal of
    the Hub → :class:`PretrainedWeightsUnavailable`. Nothing else is caught."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except LocalEntryNotFoundError:  # (an EntryNotFoundError too: caught first)
        raise PretrainedWeightsUnavailable(
            f"{name}: its files are not in the local Hugging Face cache and the Hub was not reached "
            "(offline, HF_HUB_OFFLINE set, or no route to it); go online once, or pass a cache_dir that holds them"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:
        raise NotPublishedError(f"{name}: the Hub has no such repo, revision or file ({type(err).__name__})") from None
    except (HfHubHTTPError, OfflineModeIsEnabled) as err:
        raise PretrainedWeightsUnavailable(f"{name}: the Hub could not be read: {' '.join(str(err).split())}") from None
