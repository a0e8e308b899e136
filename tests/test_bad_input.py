"""docs/contract.md §6: bad input raises a clear error naming what was expected."""

from __future__ import annotations

import pytest
import timm
import torch

import resmg_zoo
from resmg_zoo import NotPublishedError


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return timm.create_model("preact_resnet18_sharedA").eval()


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 3, 32, 32), (32, 32)])
def test_wrong_rank(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"expected a 4-D input \(batch, channels, height, width\)"):
        model(torch.zeros(shape))


def test_wrong_channel_count(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.zeros(2, 1, 32, 32))


def test_too_small_an_image(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"at least 8x8 pixels.*got 4x16"):
        model(torch.zeros(2, 3, 4, 16))
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 10)  # the smallest accepted size works


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_images_are_refused_with_the_conversion(model: torch.nn.Module, dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=f"expected a floating-point image batch, got dtype {dtype}: scale it to"):
        model(torch.zeros(2, 3, 32, 32, dtype=dtype))


def test_bad_input_is_caught_in_torchscript_too(model: torch.nn.Module) -> None:
    scripted = torch.jit.script(model)
    with pytest.raises(Exception, match="expected 3 input channels"):
        scripted(torch.zeros(2, 1, 32, 32))
    with pytest.raises(Exception, match="expected a floating-point image batch, got an integer or bool dtype"):
        scripted(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize(
    "option, value, listed", [("share", "C", "'none', 'A', 'B', 'AB'"), ("pool_block", "avg", "'conv', 'restrict'")]
)
def test_unknown_option_lists_valid_choices(option: str, value: str, listed: str) -> None:
    with pytest.raises(ValueError, match=f"unknown {option} '{value}'; valid choices are {listed}"):
        timm.create_model("resnet18_unshared", **{option: value})


def test_share_suggests_the_right_case() -> None:
    with pytest.raises(ValueError, match="Did you mean 'AB'"):
        timm.create_model("resnet18_unshared", share="ab")


def test_unknown_model_name_lists_close_names() -> None:
    with pytest.raises(ValueError, match="Did you mean 'resnet18_sharedA'"):
        resmg_zoo.create_model("resnet18_shareA")


def test_unknown_tag_lists_the_tags() -> None:
    with pytest.raises(ValueError, match="unknown pretrained tag 'imagenet'; valid choices are 'cifar10'"):
        timm.create_model("resnet18_sharedA.imagenet")


def test_pretrained_without_published_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESMG_ZOO_HUB_DIR", raising=False)
    with pytest.raises(NotPublishedError, match=r"resnet34_sharedB\.cifar100"):
        timm.create_model("resnet34_sharedB.cifar100", pretrained=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(widths="64,x"), "widths must be a sequence of positive integers"),
        (dict(widths=(64, 128)), "must name the same number of levels"),
        (dict(in_chans=0), "in_chans must be at least 1"),
    ],
)
def test_bad_architecture_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        timm.create_model("resnet18_unshared", **kwargs)
