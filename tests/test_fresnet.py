"""F-ResNet (Algorithm 2, §4): the 16 forms, Theorem 1 inside the real modules, MgNet as a setting."""

from __future__ import annotations

import itertools

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resmg_zoo.core.counting import param_count
from resmg_zoo.models.fresnet import FeatureSmoother, FormOperator, FResNet, FResNetLevel
from resmg_zoo.models.resnet import ResMgLevel

FORMS = ("linear", "pre", "post", "both")
ALL_FORMS = list(itertools.product(FORMS, FORMS))
FORM_IDS = [f"A={a}-B={b}" for a, b in ALL_FORMS]
SIGMAS = {"linear": 0, "pre": 1, "post": 1, "both": 2}  # σ's of a form, each with its BN (2 params per channel)


def expected_params(
    a_form: str,
    b_form: str,
    widths=(64, 128, 256, 512),
    layers=(2, 2, 2, 2),
    in_chans=3,
    classes=10,
    share_b=False,
    transfer_norm="bn",
) -> int:
    """Parameters of Algorithm 2 counted by hand from its definition (one A_ℓ per level)."""
    k = 9  # 3×3 kernels
    total = in_chans * widths[0] * k + 2 * widths[0]  # fin: θ0 and its BN
    for level, (c, nu) in enumerate(zip(widths, layers)):
        first, last = level == 0, level == len(widths) - 1
        total += c * c * k  # A_ℓ, one per level
        total += (1 if share_b else nu) * c * c * k  # B_{ℓ,i} per step (or B_ℓ)
        # A_ℓ in every step (not in the first from u_{1,0} = 0), in A_ℓ(u_{ℓ,0}) and in f_ℓ − A_ℓ(u_{ℓ,ν})
        a_uses = nu - (1 if first else 0) + (0 if first else 1) + (0 if last else 1)
        total += a_uses * SIGMAS[a_form] * 2 * c + nu * SIGMAS[b_form] * 2 * c
        if not first:
            total += 2 * widths[level - 1] * c * k  # Π and R
            total += 2 * 2 * c if transfer_norm != "none" else 0  # the BN after Π and after R
    return total + widths[-1] * classes + classes


@pytest.mark.parametrize("a_form, b_form", ALL_FORMS, ids=FORM_IDS)
def test_parameter_count_of_every_form(a_form: str, b_form: str) -> None:
    assert param_count("fresnet18", a_form=a_form, b_form=b_form) == expected_params(a_form, b_form)


def test_mgnet_is_the_reported_size() -> None:
    count = param_count("mgnet")
    assert count == expected_params("linear", "both", widths=(256,) * 4, share_b=True, transfer_norm="bn_act")
    assert round(count / 1e6, 1) == 8.3  # XuTeam/MgNet_Code: MgNet[2,2,2,2]-256 has 8.3M parameters


@pytest.mark.parametrize("a_form, b_form", ALL_FORMS, ids=FORM_IDS)
def test_every_form_trains_a_step_and_every_parameter_learns(a_form: str, b_form: str) -> None:
    model = timm.create_model("fresnet18", a_form=a_form, b_form=b_form, widths=(8, 16, 16, 32)).train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"parameters without gradient: {silent}"
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert torch.isfinite(F.cross_entropy(model(x), y))


@pytest.mark.parametrize("option", ["a_form", "b_form"])
@pytest.mark.parametrize("value", ["nonlinear", "Linear", "sigma", ""])
def test_unknown_form_lists_the_four(option: str, value: str) -> None:
    with pytest.raises(ValueError) as err:
        timm.create_model("fresnet18", **{option: value})
    message = str(err.value)
    assert option in message and repr(value) in message
    assert all(repr(form) in message for form in FORMS)


def test_each_level_owns_one_a_kernel_used_by_every_application() -> None:
    model = timm.create_model("fresnet18", a_form="pre")
    keys = list(model.state_dict())
    assert [k for k in keys if k.endswith("conv_a.weight")] == [f"stages.{i}.conv_a.weight" for i in range(4)]
    assert not [k for k in keys if ".a.conv." in k or "a_in.conv" in k or "a_out.conv" in k]
    assert len([k for k in keys if k.endswith("b.conv.weight")]) == 8  # one B_{ℓ,i} per step
    mgnet = timm.create_model("mgnet").state_dict()
    assert [k for k in mgnet if "conv_b" in k] == [f"stages.{i}.conv_b.weight" for i in range(4)]
    assert not [k for k in mgnet if "b.conv." in k]


def test_perturbing_one_a_moves_only_its_level_and_later() -> None:
    model = timm.create_model("fresnet18", widths=(8, 8, 16, 16)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.forward_intermediates(x, intermediates_only=True)
        model.stages[2].conv_a.weight.add_(0.1)
        after = model.forward_intermediates(x, intermediates_only=True)
    moved = [not torch.equal(b, a) for b, a in zip(before, after)]
    assert moved == [False, False, False, True, True]  # f_1, u_1, u_2 unchanged; u_3, u_4 moved


# --- Algorithm 2, written out with plain functions --------------------------------------------------


def _identity_batchnorms(module: nn.Module, generator: torch.Generator) -> None:
    """Every BN becomes a fixed per-channel affine map (eval mode), random but known."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.running_mean.zero_()
            m.running_var.fill_(1.0 - m.eps)
            m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=generator, dtype=m.weight.dtype))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator, dtype=m.bias.dtype))


def _affine(bn: nn.Module, x: Tensor) -> Tensor:
    """A BN made affine by ``_identity_batchnorms``: γ x + β."""
    return x * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


def _sigma(bn: nn.Module, x: Tensor) -> Tensor:
    return F.relu(_affine(bn, x))


def _form(op: nn.Module, kernel: Tensor, x: Tensor) -> Tensor:
    """The forms of §4.2: K∗x, K∗σ(x), σ(K∗x) or σ(K∗σ(x)), σ with its (here affine) BN."""
    if op.form in ("pre", "both"):
        x = _sigma(op.pre_act, x)
    x = F.conv2d(x, kernel, padding=1)
    return _sigma(op.post_act, x) if op.form in ("post", "both") else x


def algorithm2(model: FResNet, image: Tensor) -> Tensor:
    """Algorithm 2 of the paper line by line, reading the weights of ``model``."""
    f = _sigma(model.bn1, F.conv2d(image, model.conv1.weight, padding=1))  # f_1 = fin(f)
    u = torch.zeros_like(f)  # u_{1,0} = 0
    residual = f
    for level_index, level in enumerate(model.stages):
        a = level.conv_a.weight
        if level_index > 0:
            u = _affine(level.interp_norm, F.conv2d(u, level.interp.weight, stride=2, padding=1))  # Π ∗2 u, line 6
            restricted = _affine(level.restrict_norm, F.conv2d(residual, level.restrict.weight, stride=2, padding=1))
            f = restricted + _form(level.a_in, a, u)  # line 6
        for step in level.smoothers:
            b = step.b.conv.weight
            a_of_u = torch.zeros_like(u) if step.a is None else _form(step.a, a, u)  # A_1(u_{1,0}) = A_1(0) = 0
            u = u + _form(step.b, b, f - a_of_u)  # line 4
        if level.a_out is not None:
            residual = f - _form(level.a_out, a, u)
    return u


@pytest.mark.parametrize("a_form, b_form", ALL_FORMS, ids=FORM_IDS)
def test_the_network_computes_algorithm_2(a_form: str, b_form: str) -> None:
    g = torch.Generator().manual_seed(3)
    model = FResNet(widths=(4, 6, 6, 8), a_form=a_form, b_form=b_form).double()
    with torch.no_grad():
        _identity_batchnorms(model, g)
        image = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
        torch.testing.assert_close(model.forward_features(image), algorithm2(model, image), rtol=1e-12, atol=1e-12)


# --- Theorem 1 inside the real modules ---------------------------------------------------------------


def _invertible_kernel(c: int, generator: torch.Generator) -> Tensor:
    w = 0.05 * torch.randn(c, c, 3, 3, generator=generator, dtype=torch.float64)
    w[:, :, 1, 1] += torch.eye(c, dtype=torch.float64)
    return w


def _dense(w: Tensor, c: int, h: int) -> Tensor:
    """The matrix of ``u ↦ w ∗ u`` on c×h×h tensors."""
    basis = torch.eye(c * h * h, dtype=torch.float64).reshape(-1, c, h, h)
    return F.conv2d(basis, w, padding=1).reshape(c * h * h, -1).T


@pytest.mark.parametrize("train_mode", [True, False], ids=["batch-statistics", "running-statistics"])
def test_theorem1_feature_iteration_of_fresnet_equals_the_modified_preact_level(train_mode: bool) -> None:
    """a_form='linear', invertible A_ℓ: the F-ResNet level's features u_i and the shared-A pre-act
    level's residuals r_i = f − A_ℓ ∗ u_i are the same iteration (Theorem 1), BN included."""
    c, h, nu = 3, 6, 4
    g = torch.Generator().manual_seed(7)
    fres = FResNetLevel(c, c, nu, a_form="linear", b_form="both", first=True, last=False).double()
    preact = ResMgLevel(c, c, depth=nu, stride=1, preact=True, share="A").double()
    a = _invertible_kernel(c, g)
    with torch.no_grad():
        fres.conv_a.weight.copy_(a)
        preact.shared_a.weight.copy_(-a)  # r ← r + (−A) ∗ σ(B ∗ σ(r)): the paper's sign, §3.2
        for step, block in zip(fres.smoothers, preact.blocks):
            step.b.conv.weight.copy_(0.3 * torch.randn(c, c, 3, 3, generator=g, dtype=torch.float64))
            block.conv_b.weight.copy_(step.b.conv.weight)
            for bn in (step.b.pre_act, step.b.post_act):
                bn.weight.copy_(1 + 0.2 * torch.randn(c, generator=g, dtype=torch.float64))
                bn.bias.copy_(0.2 * torch.randn(c, generator=g, dtype=torch.float64))
                bn.running_mean.copy_(0.1 * torch.randn(c, generator=g, dtype=torch.float64))
            block.bn_b.load_state_dict(step.b.pre_act.state_dict())  # the σ before B
            block.bn_a.load_state_dict(step.b.post_act.state_dict())  # the σ after B
    fres.train(train_mode), preact.train(train_mode)

    f = torch.randn(4, c, h, h, generator=g, dtype=torch.float64)
    u = torch.zeros_like(f)
    r = f - F.conv2d(u, a, padding=1)
    a_inv = torch.linalg.inv(_dense(a, c, h))
    with torch.no_grad():
        for step, block in zip(fres.smoothers, preact.blocks):
            u = step(u, f, fres.conv_a.weight)  # the network's own feature step, Algorithm 2 line 4
            r = block(r, preact.shared_a.weight)  # the modified pre-act block, eq. (3.11)
            torch.testing.assert_close(r, f - F.conv2d(u, a, padding=1), rtol=1e-10, atol=1e-10)
            recovered = (a_inv @ (f - r).reshape(len(f), -1).T).T.reshape(u.shape)  # A invertible: r determines u
            torch.testing.assert_close(recovered, u, rtol=1e-9, atol=1e-9)
        # the whole level: its residual output is what the pre-act level computes from r_0 = f
        u_level, residual = fres(torch.zeros_like(f), f)
        torch.testing.assert_close(residual, preact(f), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(u_level, u, rtol=1e-12, atol=1e-12)
    assert u.abs().max() > 0.1, "the iteration must actually move"


def test_theorem1_needs_a_linear_a() -> None:
    """With a_form='pre' the same comparison fails: the equivalence is a property of linear A."""
    c, h = 3, 6
    g = torch.Generator().manual_seed(7)
    steps = [FeatureSmoother(c, "pre", "both", own_b=True).double().eval() for _ in range(2)]
    preact = ResMgLevel(c, c, depth=2, stride=1, preact=True, share="A").double().eval()
    a = _invertible_kernel(c, g)
    f = torch.randn(2, c, h, h, generator=g, dtype=torch.float64)
    u = torch.randn(2, c, h, h, generator=g, dtype=torch.float64)  # signed: σ inside A_ℓ bites (u ≥ 0 it would not)
    with torch.no_grad():
        preact.shared_a.weight.copy_(-a)
        for step, block in zip(steps, preact.blocks):
            block.conv_b.weight.copy_(step.b.conv.weight)
        r = f - steps[0].a(u, a)
        for step in steps:
            u = step(u, f, a)
        assert (preact(r) - (f - steps[-1].a(u, a))).abs().max() > 1e-3


@pytest.mark.parametrize("form", ["pre", "post", "both"])
def test_a_of_zero_is_zero_and_cannot_learn(form: str) -> None:
    """Why the first step from u_{1,0} = 0 owns no A application: with the standard init it would
    return exactly 0 and none of its parameters would ever get a gradient."""
    op = FormOperator(form, 4, own_kernel=True).train()
    out = op(torch.zeros(8, 4, 6, 6))
    assert torch.equal(out, torch.zeros_like(out))
    (out.sum() + (out * torch.randn_like(out)).sum()).backward()
    assert all(p.grad is None or not p.grad.any() for p in op.parameters())


# --- MgNet is a setting of F-ResNet ------------------------------------------------------------------


class ReferenceMgNet(nn.Module):
    """MgNet as XuTeam/MgNet_Code builds it (num_ite [2,2,2,2], u and f channels equal, one B per
    level), written independently of resmg_zoo: smoothing u ← u + σ(BN(B ∗ σ(BN(f − A ∗ u)))),
    restriction u ← σ(BN(Π ∗2 u)), f ← σ(BN(R ∗2 (f − A_old ∗ u_old))) + A ∗ u."""

    def __init__(self, c: int, levels: int = 4, nu: int = 2, in_chans: int = 3, classes: int = 10) -> None:
        super().__init__()

        def conv(stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(c, c, 3, stride, 1, bias=False)

        self.stem, self.stem_bn = nn.Conv2d(in_chans, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.a = nn.ModuleList(conv() for _ in range(levels))
        self.b = nn.ModuleList(conv() for _ in range(levels))
        self.pi = nn.ModuleList(conv(2) for _ in range(levels - 1))
        self.r = nn.ModuleList(conv(2) for _ in range(levels - 1))
        self.bn_pi = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(levels - 1))
        self.bn_r = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(levels - 1))
        self.bn_res = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(levels * nu))
        self.bn_b = nn.ModuleList(nn.BatchNorm2d(c) for _ in range(levels * nu))
        self.fc = nn.Linear(c, classes)
        self.levels, self.nu = levels, nu

    def forward(self, x: Tensor) -> Tensor:
        f = F.relu(self.stem_bn(self.stem(x)))
        u = torch.zeros_like(f)
        for ell in range(self.levels):
            if ell:
                u_old, f_old = u, f
                u = F.relu(self.bn_pi[ell - 1](self.pi[ell - 1](u_old)))
                f = F.relu(self.bn_r[ell - 1](self.r[ell - 1](f_old - self.a[ell - 1](u_old)))) + self.a[ell](u)
            for i in range(self.nu):
                k = ell * self.nu + i
                u = u + F.relu(self.bn_b[k](self.b[ell](F.relu(self.bn_res[k](f - self.a[ell](u))))))
        return self.fc(u.mean((2, 3)))


def _copy_into(model: nn.Module, reference: ReferenceMgNet) -> None:
    state = {
        "conv1.weight": reference.stem.weight,
        **{f"bn1.{k}": v for k, v in reference.stem_bn.state_dict().items()},
        "fc.weight": reference.fc.weight,
        "fc.bias": reference.fc.bias,
    }
    for ell in range(reference.levels):
        state[f"stages.{ell}.conv_a.weight"] = reference.a[ell].weight
        state[f"stages.{ell}.conv_b.weight"] = reference.b[ell].weight
        if ell:
            state[f"stages.{ell}.interp.weight"] = reference.pi[ell - 1].weight
            state[f"stages.{ell}.restrict.weight"] = reference.r[ell - 1].weight
            for k, v in reference.bn_pi[ell - 1].state_dict().items():
                state[f"stages.{ell}.interp_norm.{k}"] = v
            for k, v in reference.bn_r[ell - 1].state_dict().items():
                state[f"stages.{ell}.restrict_norm.{k}"] = v
        for i in range(reference.nu):
            for k, v in reference.bn_res[ell * reference.nu + i].state_dict().items():
                state[f"stages.{ell}.smoothers.{i}.b.pre_act.{k}"] = v
            for k, v in reference.bn_b[ell * reference.nu + i].state_dict().items():
                state[f"stages.{ell}.smoothers.{i}.b.post_act.{k}"] = v
    model.load_state_dict(state)  # strict: every key of the model is set, nothing extra


def test_mgnet_equals_an_independent_mgnet_in_training_and_eval() -> None:
    reference = ReferenceMgNet(16)
    model = timm.create_model("mgnet", widths=(16,) * 4)
    with torch.no_grad():
        for bn in (m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    _copy_into(model, reference)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model.train()(x), reference.train()(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


def test_fresnet18_is_algorithm_2_not_mgnet() -> None:
    """The registered defaults: a B_{ℓ,i} per step and plain Π, R (Algorithm 2); MgNet differs in both."""
    fres = timm.create_model("fresnet18")
    assert (fres.share_b, fres.transfer_norm, fres.a_form, fres.b_form) == (False, "bn", "linear", "both")
    mgnet = timm.create_model("mgnet")
    assert (mgnet.share_b, mgnet.transfer_norm) == (True, "bn_act")


def test_features_only_returns_the_stem_and_every_level_feature() -> None:
    model = timm.create_model("fresnet18", widths=(8, 16, 16, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
    assert [t.shape[1:] for t in intermediates] == [(8, 32, 32), (8, 32, 32), (16, 16, 16), (16, 8, 8), (32, 4, 4)]
    torch.testing.assert_close(intermediates[-1], final)
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_fresnet_refuses_the_sequential_feature_classes() -> None:
    for feature_cls in ("list", "dict"):
        with pytest.raises(ValueError, match="levels pass \\(u, f\\) pairs; use 'getter'"):
            timm.create_model("fresnet18", features_only=True, feature_cls=feature_cls)
