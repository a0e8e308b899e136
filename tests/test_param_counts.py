"""docs/contract.md §1: exact parameter counts, one tensor per shared operator, safetensors-ready state dicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from resmg_zoo.core.counting import count_parameters, param_count

# The contract's table (docs/contract.md §1): CIFAR-10 head, 3 input channels, default pool_block="conv".
CONTRACT_COUNTS = {
    "resnet18": (11_173_962, 8_040_522, 11_137_098, 8_003_658),
    "preact_resnet18": (11_172_170, 8_038_730, 11_135_306, 8_001_866),
    "resnet34": (21_282_122, 13_098_314, 16_194_890, 8_011_082),
    "preact_resnet34": (21_280_330, 13_096_522, 16_193_098, 8_009_290),
}
SUFFIXES = ("unshared", "sharedA", "sharedB", "sharedAB")


@pytest.mark.parametrize("base", CONTRACT_COUNTS)
@pytest.mark.parametrize("index", range(4), ids=SUFFIXES)
def test_exact_counts_of_the_spec(base: str, index: int) -> None:
    assert param_count(f"{base}_{SUFFIXES[index]}") == CONTRACT_COUNTS[base][index]


@pytest.mark.parametrize("name, expected", [("resnet18_sharedB", 9_588_810), ("resnet18_sharedAB", 6_455_370)])
def test_restrict_pooling_counts_of_the_spec(name: str, expected: int) -> None:
    assert param_count(name, pool_block="restrict") == expected


def test_sharing_a_saves_exactly_one_a_per_extra_block() -> None:
    # share=A keeps one 3×3 C×C conv per level: resnet18 drops one A per level, (ν_ℓ - 1)·9·C_ℓ².
    saved = param_count("resnet18_unshared") - param_count("resnet18_sharedA")
    assert saved == sum(9 * c * c for c in (64, 128, 256, 512))


def _resnet18_by_hand(classes: int = 10, in_chans: int = 3) -> int:
    """torchvision's ResNet18 with a 3×3 stride-1 stem (He et al. 2016 for CIFAR), counted by hand: the
    paper's classic model, ``resnet18_unshared``. Each conv 3×3·C_in·C_out, each BN 2·C, a 1×1 projection
    with its BN where a level starts with a stride."""
    widths, count, prev = (64, 128, 256, 512), 9 * in_chans * 64 + 2 * 64, 64
    for c in widths:
        count += 9 * prev * c + 2 * c + 9 * c * c + 2 * c  # the first block of the level
        count += (prev * c + 2 * c) if prev != c else 0  # its projection
        count += 2 * (9 * c * c + 2 * c)  # the second block
        prev = c
    return count + 512 * classes + classes


def test_the_hand_count_is_the_contracts() -> None:
    assert _resnet18_by_hand() == CONTRACT_COUNTS["resnet18"][0] == 11_173_962


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18_sharedAB", CONTRACT_COUNTS["resnet18"][3]),
        ("preact_resnet34_sharedAB", CONTRACT_COUNTS["preact_resnet34"][3]),
        ("resnet18_unshared", _resnet18_by_hand()),
    ],
)
def test_state_dict_has_no_aliases_and_round_trips_through_safetensors(
    name: str, expected: int, tmp_path: Path
) -> None:
    """The state dict holds each parameter once, no more, no fewer: its parameter entries add up to the
    contract's count (not to what the code under test counts), as do count_parameters and the file's."""
    model = timm.create_model(name)
    state = model.state_dict()
    pointers = [t.data_ptr() for t in state.values() if t.numel() > 0]
    assert len(pointers) == len(set(pointers)), "two state_dict keys share storage"
    buffers = {k for k, _ in model.named_buffers()}
    assert sum(t.numel() for k, t in state.items() if k not in buffers) == expected == count_parameters(model)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))  # raises on shared tensors
    assert sum(t.numel() for k, t in load_file(str(path)).items() if k not in buffers) == expected
    fresh = timm.create_model(name)
    fresh.load_state_dict(load_file(str(path)))
    x = torch.randn(2, 3, 32, 32)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet34_sharedAB", "preact_resnet18_sharedAB"])
def test_each_shared_operator_is_owned_once_by_its_level(name: str) -> None:
    model = timm.create_model(name)
    keys = list(model.state_dict())
    shared = [k for k in keys if ".shared_" in k]
    # one A_ℓ and one B_ℓ per level, owned by the level and by no block
    assert shared == [f"stages.{i}.shared_{op}.weight" for i in range(4) for op in "ab"]
    for level in model.stages:
        for i, block in enumerate(level.blocks):
            assert block.conv_a is None
            pooling_conv_form = i == 0 and block.pooling
            assert (block.conv_b is not None) == pooling_conv_form  # B̃_{ℓ,0} keeps its own weights


@pytest.mark.parametrize("name", ["resnet18_sharedAB", "preact_resnet18_sharedAB"])
def test_batchnorm_is_never_shared(name: str) -> None:
    model = timm.create_model(name)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len({id(m.weight) for m in norms}) == len(norms)
    blocks = [b for level in model.stages for b in level.blocks]
    assert len(norms) >= 2 * len(blocks)
