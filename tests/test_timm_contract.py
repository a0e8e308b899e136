"""What the zoo adds to timm's generic model tests (those are ported in ``test_timm_models.py``):
per-tag metadata, feature classes that agree with each other and with ``forward_intermediates``,
pruning, in_chans, channels_last, parameter groups, one explicit function per name."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import timm
import torch
from conftest import MODEL_NAMES

from resmg_zoo.core.tags import TAGS
from resmg_zoo.models.variants import DEPTHS, VARIANTS, FResNetVariant, ResNetVariant
from resmg_zoo.weights.manifest import load_manifest, repo_manifest_path

REPO_ENTRIES = load_manifest(repo_manifest_path())["entries"]

pytestmark = pytest.mark.parametrize("name", MODEL_NAMES)


def _input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def test_default_cfgs(name: str) -> None:
    assert timm.get_pretrained_cfg(name).tag == "cifar10"  # the default tag
    for tag, info in TAGS.items():
        with torch.device("meta"):  # metadata only: timm's test_model_default_cfgs runs them
            model = timm.create_model(f"{name}.{tag}")
        cfg = model.pretrained_cfg
        assert cfg["input_size"] == info.input_size and cfg["num_classes"] == info.num_classes
        assert len(cfg["mean"]) == len(cfg["std"]) == info.in_chans
        published = [e["hub_id"] for e in REPO_ENTRIES if (e["model"], e["tag"]) == (name, tag)]
        assert cfg.get("hf_hub_id") == (published[0] if published else None)  # a hub id only where weights exist
        assert cfg["license"] and cfg["paper_ids"] == "arXiv:1911.10428"
        assert model.num_classes == info.num_classes and model.conv1.in_channels == info.in_chans


SMALL = dict(widths=(8, 16, 16, 32))  # the feature machinery does not depend on the widths


def _feature_classes(name: str) -> list[str]:
    # timm's list/dict classes call the children in turn: F-ResNet's levels pass (u, f) pairs
    return ["getter", "hook", "fx"] + ([] if isinstance(VARIANTS[name], FResNetVariant) else ["list", "dict"])


def test_every_feature_class_returns_forward_intermediates(name: str) -> None:
    """getter, hook, fx (and list, dict for the ResNets) give the tensors of ``forward_intermediates``,
    for all features and for a subset, and ``feature_info`` says their channels and reductions."""
    torch.manual_seed(0)
    model = timm.create_model(name, **SMALL).eval()
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    for out_indices in [(0, 1, 2, 3, 4), (1, 3)]:
        expected = model.forward_intermediates(x, indices=list(out_indices), intermediates_only=True)
        for feature_cls in _feature_classes(name):
            torch.manual_seed(0)  # the same initial weights as ``model``
            features = timm.create_model(
                name, features_only=True, out_indices=out_indices, feature_cls=feature_cls, **SMALL
            )
            outs = features.eval()(x)
            outs = list(outs.values()) if isinstance(outs, dict) else outs
            assert len(outs) == len(expected), feature_cls
            for got, want in zip(outs, expected):
                torch.testing.assert_close(got, want, msg=f"{feature_cls} {out_indices}")
            info = features.feature_info
            assert info.channels() == [o.shape[1] for o in outs]
            assert info.reduction() == [x.shape[-1] // o.shape[-1] for o in outs]
            assert info.channels() == [model.feature_info[i]["num_chs"] for i in out_indices]


def test_forward_intermediates_options(name: str) -> None:
    """timm's semantics: indices (all, last n, chosen, negative), stop_early, intermediates_only, norm."""
    model = timm.create_model(name, **SMALL).eval()
    x = torch.randn(1, *model.pretrained_cfg["input_size"])
    final, every = model.forward_intermediates(x)
    assert len(every) == len(model.feature_info) == len(model.stages) + 1
    torch.testing.assert_close(final, model.forward_features(x))
    last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    chosen = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    for got, want in zip(last_two + chosen, [*every[-2:], every[0], every[-1]]):
        torch.testing.assert_close(got, want)
    early, (second,) = model.forward_intermediates(x, indices=[2], stop_early=True)
    torch.testing.assert_close(second, every[2])
    assert early.shape == every[2].shape  # nothing after level 2 ran
    normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]
    preact = getattr(model, "preact", False)
    if preact:  # the level-J feature is the raw iterate; norm=True applies the final BN-ReLU
        assert not torch.equal(normed, every[-1])
        torch.testing.assert_close(normed, model.norm(every[-1]))
    else:
        torch.testing.assert_close(normed, every[-1])
    with pytest.raises(ValueError, match="NCHW only"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_prune_intermediate_layers(name: str) -> None:
    model = timm.create_model(name, **SMALL).eval()
    x = torch.randn(1, *model.pretrained_cfg["input_size"])
    every = model.forward_intermediates(x, intermediates_only=True)
    assert model.prune_intermediate_layers([1, 2]) == [1, 2]
    assert len(model.stages) == 2 and model.num_classes == 0
    assert model.num_features == model.feature_info[2]["num_chs"]
    kept = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    for got, want in zip(kept, every[1:3]):
        torch.testing.assert_close(got, want)
    assert model(x).shape == (1, model.num_features, *every[2].shape[-2:])  # no pool, no head left


def test_a_callers_feature_cfg_is_merged(name: str) -> None:
    cfg = dict(feature_cls="fx")
    features = timm.create_model(name, features_only=True, feature_cfg=cfg, out_indices=(2,), **SMALL)
    assert type(features).__name__ == "FeatureGraphNet" and features.feature_info.channels() == [16]


def test_in_chans(name: str) -> None:
    for in_chans in (1, 3):
        model = timm.create_model(name, in_chans=in_chans).eval()
        assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 10)


def test_channels_last(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _input(model)
    out = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), out, rtol=1e-4, atol=1e-4)


def test_group_matcher_covers_every_parameter(name: str) -> None:
    from timm.models import group_parameters

    model = timm.create_model(name)
    groups = group_parameters(model, model.group_matcher())
    grouped = [n for g in groups.values() for n in g]
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())
    assert groups[0] == [n for n, _ in model.named_parameters() if n.startswith(("conv1", "bn1"))]
    assert groups[max(groups)] == ["fc.weight", "fc.bias"]


def test_the_registered_function_builds_what_the_catalogue_says(name: str) -> None:
    """Each name is one explicit ``@register_model`` function (timm's style) whose docstring is its
    catalogue entry's, and which builds the architecture the catalogue describes — with the catalogue's
    arguments, written there once (the function itself names none)."""
    fn = timm.models.model_entrypoint(name)
    source = Path(inspect.getsourcefile(fn)).read_text(encoding="utf-8")
    assert f"@register_model\n@documented\ndef {name}(" in source
    body = inspect.getsource(fn).split(":\n", 1)[1]
    assert "model_args" not in body and "layers=" not in body and "share=" not in body, body
    assert fn.__doc__ == VARIANTS[name].docstring()
    with torch.device("meta"):
        model = timm.create_model(name)
    variant = VARIANTS[name]
    if isinstance(variant, ResNetVariant):
        assert (model.preact, model.share) == (variant.preact, variant.share)
        assert tuple(len(level.blocks) for level in model.stages) == DEPTHS[variant.depth]
    else:
        args = variant.model_args()
        assert tuple(len(level.smoothers) for level in model.stages) == args["layers"]
        assert tuple(level.conv_a.out_channels for level in model.stages) == args["widths"]
        for key in ("a_form", "b_form", "share_b", "transfer_norm"):
            assert getattr(model, key) == args.get(key, inspect.signature(type(model)).parameters[key].default)
    # ... and the catalogue itself says what the name and the paper say (written out below, not read from it)
    doc, widths = fn.__doc__, tuple(_out_channels(level) for level in model.stages)
    resnet = re.fullmatch(r"(preact_)?resnet(18|34)_(unshared|sharedA|sharedB|sharedAB)", name)
    if resnet:
        preact, depth, (share, paper_name) = bool(resnet[1]), int(resnet[2]), PAPER_SHARING[resnet[3]]
        assert doc.startswith(f"{'pre-act ' if preact else ''}ResNet{depth}-{paper_name}: "), doc
        assert f"Block {PAPER_BLOCKS[preact]}; blocks per level {PAPER_DEPTHS[depth]}, widths 64-128-256-512" in doc
        assert (model.preact, model.share) == (preact, share)
        assert tuple(len(level.blocks) for level in model.stages) == PAPER_DEPTHS[depth]
        assert widths == (64, 128, 256, 512)
    else:
        spec = FRESNETS[name]
        assert f"A_ℓ = K∗ (a_form='{spec['a_form']}') and B_{{ℓ,i}} = σ∘K∗σ (b_form='{spec['b_form']}')" in doc
        assert f"transfer_norm='{spec['transfer_norm']}'; ν = {spec['layers']}, widths {spec['widths']}." in doc
        assert tuple(len(level.smoothers) for level in model.stages) == spec["layers"] and widths == spec["widths"]
        assert {key: getattr(model, key) for key in ("a_form", "b_form", "share_b", "transfer_norm")} == {
            key: spec[key] for key in ("a_form", "b_form", "share_b", "transfer_norm")
        }
    assert doc.endswith("Paper: He, Chen, Zhang, Xu, arXiv:1911.10428. Tags: cifar10, cifar100, mnist.")


# What each name means, written out from the paper (He, Chen, Zhang, Xu, arXiv:1911.10428; ResNet18/34 of
# He et al. 2016) for test_the_registered_function_builds_what_the_catalogue_says, not read from the catalogue:
PAPER_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # blocks per level
PAPER_SHARING = {  # the suffix → the share argument and the paper's name of the sharing (§3.2, §5.3)
    "unshared": ("none", "A_{ℓ,i}-B_{ℓ,i}"),
    "sharedA": ("A", "A_ℓ-B_{ℓ,i}"),
    "sharedB": ("B", "A_{ℓ,i}-B_ℓ"),
    "sharedAB": ("AB", "A_ℓ-B_ℓ"),
}
PAPER_BLOCKS = {False: "r ← σ(r + BN(A ∗ σ(BN(B ∗ r))))", True: "r ← r + A ∗ σ(BN(B ∗ σ(BN(r))))"}  # eq. (2.3), (2.1)
FRESNETS = {  # F-ResNet (Algorithm 2) at Table 1's best forms, and MgNet as in XuTeam/MgNet_Code
    "fresnet18": dict(
        layers=(2, 2, 2, 2),
        widths=(64, 128, 256, 512),
        a_form="linear",
        b_form="both",
        share_b=False,
        transfer_norm="bn",
    ),
    "mgnet": dict(
        layers=(2, 2, 2, 2), widths=(256,) * 4, a_form="linear", b_form="both", share_b=True, transfer_norm="bn_act"
    ),
}


def _out_channels(level: torch.nn.Module) -> int:
    """The one number of channels every convolution of a level computes."""
    (channels,) = {m.out_channels for m in level.modules() if isinstance(m, torch.nn.Conv2d)}
    return channels
