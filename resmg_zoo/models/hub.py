"""The torch.hub entry points that ``hubconf.py`` exposes: ``name(pretrained=False, dataset="cifar10", **kwargs)``
for every registered model, with a docstring that gives its parameters and measured accuracy."""

from __future__ import annotations

from functools import cache
from typing import Any, Optional

import timm
from torch import nn

from ..core.counting import param_count
from ..core.tags import TAGS, get_tag
from ..weights.manifest import load_manifest, repo_manifest_path
from .variants import VARIANTS, FResNetVariant


@cache
def published_entries() -> tuple[dict[str, Any], ...]:
    """The package manifest's entries, read once per process."""
    return tuple(load_manifest(repo_manifest_path())["entries"])


def _measured_lines(name: str) -> list[str]:
    entries = [e for e in published_entries() if e["model"] == name]
    if not entries:
        return ["Accuracy: no checkpoint of this model is published yet (weights_manifest.json), so none is measured."]
    return ["Measured accuracy of the published checkpoints (weights_manifest.json):"] + [
        f"    {e['tag']}: {e['top1']:.2f} % top-1 ({e['hub_id']}, {e['model_args']}, recipe {e['recipe']['name']}, "
        f"{e['recipe']['epochs']:g} epochs)"
        for e in entries
    ]


def variant_kwargs(variant: object) -> str:
    """The architecture keywords a family takes beyond timm's usual ones."""
    return (
        "a_form, b_form, share_b, transfer_norm, layers, widths"
        if isinstance(variant, FResNetVariant)
        else "share, pool_block"
    )


def entrypoint_doc(name: str) -> str:
    """The docstring of a hub entry point: variant, equation, exact parameters, accuracies."""
    variant = VARIANTS[name]
    counts = ", ".join(f"{tag} head: {param_count(name, pretrained_cfg=tag):,}" for tag in TAGS)
    return "\n".join(
        [
            variant.docstring(),
            "",
            f"Parameters (exact, counted from the built model): {counts}.",
            *_measured_lines(name),
            "The paper's figures, for reference:",
            *(f"    {line}" for line in variant.paper_accuracies() or ["(not in the paper's tables)"]),
            "",
            "Args:",
            "    pretrained: load the published weights of the `dataset` tag (RESMG_ZOO_HUB_DIR mirror, then the Hub).",
            f"    dataset: pretrained tag, one of {', '.join(TAGS)}; sets num_classes and in_chans.",
            "    **kwargs: passed to timm.create_model (num_classes, in_chans, drop_rate, "
            + variant_kwargs(variant)
            + ", ...).",
        ]
    )


class HubEntrypoint:
    """The torch.hub entry point of one model: ``name(pretrained=False, dataset="cifar10", **kwargs)``.

    Its docstring (parameters counted from built models, the manifest's accuracies) is made when
    ``torch.hub.help`` or ``help()`` first asks for it, not when ``hubconf`` is imported: importing
    hubconf costs what importing resmg_zoo does, not 54 model builds."""

    def __init__(self, name: str) -> None:
        self.__name__ = self.__qualname__ = name
        self._doc: Optional[str] = None

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        if self._doc is None:
            self._doc = entrypoint_doc(self.__name__)
        return self._doc

    def __call__(self, pretrained: bool = False, dataset: str = "cifar10", **kwargs: Any) -> nn.Module:
        tag = get_tag(dataset).name
        return timm.create_model(f"{self.__name__}.{tag}", pretrained=pretrained, **kwargs)

    def __repr__(self) -> str:
        return f"<torch.hub entry point {self.__name__}>"


def make_entrypoint(name: str) -> HubEntrypoint:
    """The torch.hub entry point that builds ``name`` (see :class:`HubEntrypoint`)."""
    return HubEntrypoint(name)
