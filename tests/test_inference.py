"""The inference fast path (BN folded, channels_last, auto precision): the same function as the trained
model and the same answers on real images (int8: ``tests/test_int8.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import timm
import torch
from conftest import MODEL_NAMES
from realdata import shared_hub_dir
from torch import nn

from resmg_zoo.core.hardware import choose_precision
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.data.loader import EpochPlan, GlobalBatch, Materializer
from resmg_zoo.inference.fast_path import FastPath, FastPathSettings
from resmg_zoo.inference.fold import fold_for_inference
from resmg_zoo.tools.claims import stratified_subset


def _with_trained_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine terms, as a trained model has (identity BNs fold to nothing)."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
    return model.eval()


def _convs_followed_by_bn(gm: torch.fx.GraphModule) -> int:
    modules = dict(gm.named_modules())
    return sum(
        1
        for n in gm.graph.nodes
        if n.op == "call_module"
        and isinstance(modules[n.target], nn.BatchNorm2d)
        and n.args[0].op == "call_module"
        and isinstance(modules[n.args[0].target], nn.Conv2d)
    )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_folding_computes_the_same_function_with_no_bn_after_a_convolution(name: str) -> None:
    model = _with_trained_statistics(timm.create_model(name, num_classes=10, widths=(8, 16, 16, 32)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, report = fold_for_inference(model)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert _convs_followed_by_bn(folded) == 0 and report.folded_bn > 0
    bns_left = sum(type(m) is nn.BatchNorm2d for m in folded.modules())  # timm's BatchNormAct2d is traced through
    bns = sum(type(m) is nn.BatchNorm2d for m in model.modules())
    assert bns_left == bns - report.folded_bn
    # every convolution call is a module of its own: the count of call sites is the count of modules
    assert report.conv_sites == sum(type(m) is nn.Conv2d for m in folded.modules())
    after = model.state_dict()  # the trained model is not touched: same keys, same values
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_a_shared_operator_stays_one_tensor_unless_unshared() -> None:
    """Pre-act sharedA: A_ℓ is followed by the residual sum (no BN), so its sites keep the level's one
    tensor; for int8 every site gets its own copy; the stored float parameters stay the paper's count."""
    model = _with_trained_statistics(timm.create_model("preact_resnet18_sharedA", num_classes=10))
    shared, report = fold_for_inference(model)
    a_weights = {id(model.stages[i].shared_a.weight) for i in range(4)}
    site_weights = [m.weight for m in shared.modules() if type(m) is nn.Conv2d]
    assert report.shared_sites == 8 and sum(id(w) in a_weights for w in site_weights) == 8
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in model.parameters())  # BN a folded
    unshared, _ = fold_for_inference(model, unshare=True)
    assert not any(id(m.weight) in a_weights for m in unshared.modules() if type(m) is nn.Conv2d)


def test_folding_refuses_a_model_in_training_mode() -> None:
    model = timm.create_model("preact_resnet18_sharedA", num_classes=10, widths=(8, 16, 16, 32))
    with pytest.raises(ValueError, match="eval-mode"):
        fold_for_inference(model.train())


def test_the_fast_path_gives_fp32s_answers_on_real_mnist_test_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """The published MNIST weight on 500 real test images: folded fp32 predicts every image as the model
    as trained does; the default fast path (auto precision) within 0.4 points (2 images) of its top-1."""
    monkeypatch.setenv("RESMG_ZOO_HUB_DIR", str(shared_hub_dir()))
    model = timm.create_model("preact_resnet18_sharedA.mnist", pretrained=True).eval()
    dataset = load_dataset("mnist")
    split = stratified_subset(dataset.split("test"), per_class=50)
    data = Materializer(split, dataset.mean, dataset.std, channels_last=True)
    images = torch.cat([data(b)[0] for b in _batches(len(split))])
    eager = FastPath(model, FastPathSettings("fp32", fold_bn=False))(images).argmax(1)
    folded = FastPath(model, FastPathSettings("fp32"))(images).argmax(1)
    fast = FastPath(model, FastPathSettings(choose_precision("auto").precision))(images).argmax(1)
    assert torch.equal(folded, eager)
    correct_eager, correct_fast = int((eager == split.labels).sum()), int((fast == split.labels).sum())
    assert correct_eager >= 490 and abs(correct_fast - correct_eager) <= 2


def _batches(n: int, size: int = 250) -> Iterator[GlobalBatch]:
    return EpochPlan(n, size, seed=0, shuffle=False, drop_last=False).batches(0)
