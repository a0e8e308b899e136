"""The torch.hub entry points that ``hubconf.py`` exposes: ``name(pretrained=False, dataset="cifar10", **kwargs)``
for every registered model, with a docstring that gives its parameters and measured accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
from torch import nn

from ..core.counting import param_count
from ..core.tags import TAGS, get_tag
from ..weights.manifest import load_manifest, repo_manifest_path
from .variants import VARIANTS, FResNetVariant


def _measured_lines(name: str) -> list[str]:
    entries = [e for e in load_manifest(repo_manifest_path())["entries"] if e["model"] == name]
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


def make_entrypoint(name: str) -> Callable[..., nn.Module]:
    """A function ``name(pretrained=False, dataset="cifar10", **kwargs)`` that builds the model."""

    def entrypoint(pretrained: bool = False, dataset: str = "cifar10", **kwargs: Any) -> nn.Module:
        tag = get_tag(dataset).name
        return timm.create_model(f"{name}.{tag}", pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = entrypoint_doc(name)
    return entrypoint
