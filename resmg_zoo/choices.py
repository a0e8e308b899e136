"""Validation of string options: an unknown value names every valid choice (SPEC §6)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Union

SHARE_CHOICES: tuple[str, ...] = ("none", "A", "B", "AB")
"""Operator sharing of §3.2/§5.3: none, the data-feature map A_ℓ, the smoother B_ℓ, or both."""

FORM_CHOICES: tuple[str, ...] = ("linear", "pre", "post", "both")
"""Forms of A_ℓ and B_{ℓ,i} in F-ResNet (§4.2, Table 1): K∗, K∗σ, σ∘K∗, σ∘K∗σ."""

TRANSFER_NORM_CHOICES: tuple[str, ...] = ("bn", "bn_act", "none")
"""What follows F-ResNet's Π and R: a BN (default), MgNet's BN-ReLU, or nothing (Algorithm 2 literally)."""

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


def parse_ints(name: str, value: Union[str, Sequence[int]]) -> tuple[int, ...]:
    """Accept ``(64, 128)`` or the command-line spelling ``"64,128"``."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        parsed = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}") from None
    if not parsed or any(v < 1 for v in parsed):
        raise ValueError(f"{name} must be a sequence of positive integers, got {value!r}")
    return parsed
