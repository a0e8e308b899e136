"""The paper's mathematics, checked numerically."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from resmg_zoo.models.resnet import ResMgLevel

C, H = 3, 6  # small enough to write A as a dense 108×108 matrix


def conv(w: Tensor, x: Tensor) -> Tensor:
    return F.conv2d(x, w, padding=1)


def invertible_conv_weight(generator: torch.Generator) -> Tensor:
    """A 3×3 multichannel conv whose dense operator is invertible (identity + small perturbation)."""
    w = 0.05 * torch.randn(C, C, 3, 3, generator=generator, dtype=torch.float64)
    w[:, :, 1, 1] += torch.eye(C, dtype=torch.float64)
    return w


def dense(w: Tensor) -> Tensor:
    """The matrix of ``u ↦ w ∗ u`` on C×H×H tensors."""
    basis = torch.eye(C * H * H, dtype=torch.float64).reshape(-1, C, H, H)
    return conv(w, basis).reshape(C * H * H, -1).T


def feature_iteration(f: Tensor, u: Tensor, a: Tensor, bs: list[Tensor]) -> list[Tensor]:
    """Eq. (3.9): u_i = u_{i-1} + σ(B_i ∗ σ(f − A ∗ u_{i-1}))."""
    us = [u]
    for b in bs:
        u = u + F.relu(conv(b, F.relu(f - conv(a, u))))
        us.append(u)
    return us


@pytest.fixture
def problem() -> dict[str, object]:
    g = torch.Generator().manual_seed(1)
    a = invertible_conv_weight(g)
    assert torch.linalg.cond(dense(a)) < 10, "the test's A must be well-conditioned"
    return dict(
        a=a,
        bs=[0.3 * torch.randn(C, C, 3, 3, generator=g, dtype=torch.float64) for _ in range(5)],
        f=torch.randn(1, C, H, H, generator=g, dtype=torch.float64),
        u0=F.relu(torch.randn(1, C, H, H, generator=g, dtype=torch.float64)),
        g=g,
    )


def _identity_batchnorms(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)  # BN(x) = x exactly
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _preact_level(share: str, a_per_block: list[Tensor], bs: list[Tensor]) -> ResMgLevel:
    """The package's pre-act level with the given operators and identity BNs (σ = ReLU exactly)."""
    level = ResMgLevel(C, C, depth=len(bs), stride=1, preact=True, share=share).double()
    _identity_batchnorms(level)
    with torch.no_grad():
        if level.shared_a is not None:
            level.shared_a.weight.copy_(-a_per_block[0])  # the paper's sign change, §3.2
        for block, a, b in zip(level.blocks, a_per_block, bs):
            block.conv_b.weight.copy_(b)
            if block.conv_a is not None:
                block.conv_a.weight.copy_(-a)
    return level


def test_theorem1_inside_a_shared_a_preact_level(problem: dict) -> None:
    """Theorem 1 in the package's own level: every iterate of the shared-A pre-act level,
    r_i = r_{i-1} + (−A) ∗ σ(B_i ∗ σ(r_{i-1})) (eq. (3.11)), is the residual f − A ∗ u_i of the
    feature iteration (3.9), and — A invertible — determines u_i."""
    a, bs, f, u0 = problem["a"], problem["bs"], problem["f"], problem["u0"]
    level = _preact_level("A", [a] * len(bs), bs)
    us = feature_iteration(f, u0, a, bs)
    a_inv = torch.linalg.inv(dense(a))
    r = f - conv(a, u0)
    with torch.no_grad():
        for block, u in zip(level.blocks, us[1:]):
            r = block(r, level.shared_a.weight)  # the level's own block with its one A_ℓ
            torch.testing.assert_close(r, f - conv(a, u), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close((a_inv @ (f - r).reshape(-1)).reshape(u.shape), u, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(level(f - conv(a, u0)), r, rtol=1e-12, atol=1e-12)  # the whole level
    assert (us[-1] - us[0]).abs().max() > 1e-2, "the iteration must actually move"


def test_theorem1_fails_in_an_unshared_level(problem: dict) -> None:
    """The same comparison with the package's unshared level (an A_i per block, the classic ResNet):
    after the first block the iterates are no longer residuals of one feature iteration."""
    a, bs, f, u0, g = problem["a"], problem["bs"], problem["f"], problem["u0"], problem["g"]
    a_per_block = [a] + [invertible_conv_weight(g) for _ in bs[1:]]
    level = _preact_level("none", a_per_block, bs)
    us = feature_iteration(f, u0, a, bs)
    r, gaps = f - conv(a, u0), []
    with torch.no_grad():
        for block, u in zip(level.blocks, us[1:]):
            r = block(r)
            gaps.append((r - (f - conv(a, u))).abs().max().item())
    assert gaps[0] < 1e-10  # the first block has the same A
    assert min(gaps[1:]) > 1e-3, f"A_i ≠ A should break the equivalence, gaps {gaps}"


@pytest.mark.parametrize("name", ["resnet18_sharedA", "preact_resnet18_sharedAB", "resnet34_sharedA"])
def test_shared_a_is_one_tensor_used_by_every_block_of_its_level(name: str) -> None:
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    outputs: dict[str, Tensor] = {}
    hooks = [
        block.register_forward_hook(lambda _m, _i, out, key=f"{li}.{bi}": outputs.__setitem__(key, out.clone()))
        for li, level in enumerate(model.stages)
        for bi, block in enumerate(level.blocks)
    ]
    with torch.no_grad():
        model(x)
        before = dict(outputs)
        level_index = 2
        model.stages[level_index].shared_a.weight.add_(0.1)  # perturb A_ℓ once
        model(x)
    for h in hooks:
        h.remove()
    for key in before:
        li = int(key.split(".")[0])
        moved = not torch.equal(before[key], outputs[key])
        assert moved == (li >= level_index), f"block {key}: moved={moved}"


def test_resnet18_unshared_equals_torchvision_resnet18_with_cifar_stem() -> None:
    ours = timm.create_model("resnet18_unshared")
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    tv.maxpool = nn.Identity()
    renames = {
        "conv1.": "conv_b.",
        "bn1.": "bn_b.",
        "conv2.": "conv_a.",
        "bn2.": "bn_a.",
        "downsample.": "restrict.",
    }

    def our_name(tv_name: str) -> str:
        if not tv_name.startswith("layer"):
            return tv_name
        layer, block, rest = tv_name.split(".", 2)
        for old, new in renames.items():
            if rest.startswith(old):
                rest = new + rest[len(old) :]
        return f"stages.{int(layer[5:]) - 1}.blocks.{block}.{rest}"

    tv_state = tv.state_dict()
    mapped = {our_name(k): v for k, v in tv_state.items()}
    assert set(mapped) == set(ours.state_dict()), "same tensors up to names"
    ours.load_state_dict(mapped)
    x = torch.randn(4, 3, 32, 32)
    for mode in ("eval", "train"):
        getattr(ours, mode)(), getattr(tv, mode)()
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-5, atol=1e-5)
