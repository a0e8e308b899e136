"""Validation of string options: an unknown value names every valid choice (SPEC §6)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

SHARE_CHOICES: tuple[str, ...] = ("none", "A", "B", "AB")
"""Operator sharing of §3.2/§5.3: none, the data-feature map A_ℓ, the smoother B_ℓ, or both."""

POOL_BLOCK_CHOICES: tuple[str, ...] = ("conv", "restrict")
"""Pooling-block forms of §3.3: eq. (3.14) with a strided B̃ (``conv``) or the restriction
R∗2 followed by the level's own block, r_{ℓ+1,1} of eq. (3.17) (``restrict``)."""


def check_choice(option: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise ``ValueError`` listing them all.

    The message also names the closest valid spellings, so ``share='a'`` suggests ``'A'``.
    """
    choices = tuple(choices)
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.5)
    close += [c for c in choices if c.lower() == str(value).lower() and c not in close]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown {option} {value!r}; valid choices are {', '.join(repr(c) for c in choices)}.{hint}")
