"""timm's model contract (the checks of timm's ``tests/test_models.py``) for every registered model."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import timm
import torch
from conftest import MODEL_NAMES

from resmg_zoo.core.tags import TAGS
from resmg_zoo.models.variants import DEPTHS, VARIANTS, ResNetVariant
from resmg_zoo.weights.manifest import load_manifest, repo_manifest_path

REPO_ENTRIES = load_manifest(repo_manifest_path())["entries"]

pytestmark = pytest.mark.parametrize("name", MODEL_NAMES)


def _input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def test_default_cfgs(name: str) -> None:
    assert timm.get_pretrained_cfg(name).tag == "cifar10"  # the default tag
    for tag, info in TAGS.items():
        model = timm.create_model(f"{name}.{tag}")
        cfg = model.pretrained_cfg
        assert cfg["input_size"] == info.input_size and cfg["num_classes"] == info.num_classes
        assert len(cfg["mean"]) == len(cfg["std"]) == info.in_chans
        published = [e["hub_id"] for e in REPO_ENTRIES if (e["model"], e["tag"]) == (name, tag)]
        assert cfg.get("hf_hub_id") == (published[0] if published else None)  # a hub id only where weights exist
        assert cfg["license"] and cfg["paper_ids"] == "arXiv:1911.10428"
        assert model.num_classes == info.num_classes and model.conv1.in_channels == info.in_chans
        state = model.state_dict()
        assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state
        features = model.forward_features(_input(model))
        assert tuple(features.shape[-2:]) == tuple(cfg["pool_size"])
        assert features.shape[1] == model.num_features


def test_forward_and_grad_checkpointing(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _input(model)
    out = model(x)
    assert out.shape == (2, 10) and not torch.isnan(out).any()
    model.set_grad_checkpointing()
    torch.testing.assert_close(model(x), out)


def test_backward_reaches_every_parameter(name: str) -> None:
    model = timm.create_model(name, num_classes=42).train()
    out = model(_input(model))
    assert out.shape == (2, 42)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_heads_and_pooling(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _input(model)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.fc
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).dim() == 4
    model.reset_classifier(7, "avg")
    assert model(x).shape == (2, 7)
    bare = timm.create_model(name, num_classes=0, global_pool="").eval()
    assert bare(x).dim() == 4 and bare(x).shape[1] == bare.num_features


def test_torchscript(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _input(model)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


def test_features_only(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _input(model, batch=1)
    for out_indices in [(0, 1, 2, 3, 4), (1, 3)]:
        features = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
        info = features.feature_info
        assert len(info.channels()) == len(outs := features(x)) == len(out_indices)
        assert [o.shape[1] for o in outs] == info.channels()
        assert [x.shape[-1] // o.shape[-1] for o in outs] == info.reduction()
        expected = [model.feature_info[i] for i in out_indices]
        assert info.channels() == [e["num_chs"] for e in expected]
        assert info.reduction() == [e["reduction"] for e in expected]


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
    catalogue entry's, and whose model_args build the architecture the catalogue describes."""
    fn = timm.models.model_entrypoint(name)
    source = Path(inspect.getsourcefile(fn)).read_text(encoding="utf-8")
    assert f"@register_model\n@documented\ndef {name}(" in source
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
