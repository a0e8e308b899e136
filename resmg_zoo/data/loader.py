"""Batches from uint8 tensors in memory, with the augmentation done on tensors.

The order and the augmentation of every batch are a pure function of ``(seed, epoch, step)``: the
same global batch comes out whether one process takes it whole, a DDP rank takes its shard, or a
resumed run starts in the middle of the epoch. That is what makes ``--resume`` exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.choices import check_choice
from ..core.errors import UsageError
from .datasets import ImageSplit

AUGMENTATIONS = ("none", "crop", "crop_flip")
"""``crop``: zero-pad 4 and take a random crop of the original size; ``crop_flip``: also a random
horizontal flip (the standard CIFAR augmentation of the paper's §5.1)."""
PAD = 4


@dataclass(frozen=True)
class GlobalBatch:
    """The indices of one global batch and the augmentation drawn for each of its images."""

    indices: Tensor
    offsets: Tensor  # (B, 2) crop offsets in [0, 2·PAD]
    flips: Tensor  # (B,) bool

    def shard(self, part: int, parts: int) -> GlobalBatch:
        """The ``part``-th of ``parts`` equal contiguous slices (a DDP rank's or a micro-batch's)."""
        size = len(self.indices) // parts
        sl = slice(part * size, (part + 1) * size)
        return GlobalBatch(self.indices[sl], self.offsets[sl], self.flips[sl])


class EpochPlan:
    """Global batches of each epoch, reproducible from ``seed`` and the epoch number.

    Args:
        num_samples: images in the split.
        batch_size: the global batch (all ranks and micro-batches together).
        seed: run seed.
        shuffle: a new seeded permutation per epoch; otherwise the split's order.
        drop_last: drop the last incomplete batch (training); keep it otherwise.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        if batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {batch_size}")
        if drop_last and num_samples < batch_size:
            raise UsageError(f"batch size {batch_size} is larger than the {num_samples} training images")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[GlobalBatch]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_samples, generator=g) if self.shuffle else torch.arange(self.num_samples)
        offsets = torch.randint(0, 2 * PAD + 1, (self.num_samples, 2), generator=g)
        flips = torch.rand(self.num_samples, generator=g) < 0.5
        for step in range(start_step, len(self)):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield GlobalBatch(order[sl], offsets[sl], flips[sl])


class Materializer:
    """Turns a (shard of a) :class:`GlobalBatch` into normalised float tensors on ``device``.

    Args:
        split: the images and labels.
        mean, std: per-channel statistics (0–1 scale).
        augment: one of ``none``, ``crop``, ``crop_flip``.
        pad_to: zero-pad images up to this square size first (e.g. MNIST 28 → 32), or 0.
        channels_last: return NHWC-strided batches.
    """

    def __init__(
        self,
        split: ImageSplit,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: str = "none",
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        pad_to: int = 0,
    ) -> None:
        self.split = split
        self.augment = check_choice("augmentation", augment, AUGMENTATIONS)
        self.device = torch.device(device)
        channels = split.images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {channels}-channel images")
        self.scale = (1.0 / (255.0 * torch.tensor(std))).view(1, -1, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1).to(self.device)
        self.channels_last = channels_last
        self.pad_to = pad_to

    @property
    def side(self) -> int:
        """The side in pixels of the (square) images this returns: ``pad_to`` where set, else the stored side."""
        return self.pad_to or self.split.images.shape[-1]

    def __call__(self, batch: GlobalBatch) -> tuple[Tensor, Tensor]:
        images = self.split.images[batch.indices].to(self.device, non_blocking=True)
        labels = self.split.labels[batch.indices].to(self.device, non_blocking=True)
        if self.pad_to:
            images = _pad_to(images, self.pad_to)
        if self.augment != "none":
            images = random_crop(images, batch.offsets.to(self.device))
        if self.augment == "crop_flip":
            flips = batch.flips.to(self.device).view(-1, 1, 1, 1)
            images = torch.where(flips, images.flip(3), images)
        x = images.float().mul_(self.scale).add_(self.shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels


def _pad_to(images: Tensor, size: int) -> Tensor:
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise UsageError(f"cannot pad {h}x{w} images to {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(images, (left, size - w - left, top, size - h - top))


def random_crop(images: Tensor, offsets: Tensor) -> Tensor:
    """Zero-pad by ``PAD`` and crop each image at its own ``offsets[i] = (dy, dx)``, on tensors."""
    b, c, h, w = images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    rows = (offsets[:, 0:1] + torch.arange(h, device=images.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * PAD)
    padded = padded.gather(2, rows)
    cols = (offsets[:, 1:2] + torch.arange(w, device=images.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return padded.gather(3, cols)


def resize_batch(x: Tensor, side: int) -> Tensor:
    """A normalised batch resized to ``side``×``side`` (bilinear, antialiased when it shrinks), in the
    memory format it came in: the low-resolution epochs of progressive resizing."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = F.interpolate(x, size=(side, side), mode="bilinear", antialias=side < x.shape[-1], align_corners=False)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
