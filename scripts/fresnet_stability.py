"""Why F-ResNet normalises its transfers: SGD steps at the paper's lr with and without the BN after Π and R.

    python scripts/fresnet_stability.py --steps 30 --widths 16,32,64,128

Trains ``fresnet18`` (default forms) from the same seed on a seeded 6,400-image subset of the real
CIFAR-10 (``$RESMG_ZOO_DATA``) with SGD lr 0.1, momentum 0.9 (Nesterov), weight decay 1e-4,
batch 128 and no warmup, once per ``transfer_norm``, and prints the loss and the mean |u_J| every
5 steps: the measurement behind the README's choice of ``transfer_norm="bn"``.
"""

from __future__ import annotations

import argparse
import math

import timm
import torch
import torch.nn.functional as F

import resmg_zoo  # noqa: F401  (registers the models)
from resmg_zoo.data.datasets import load_dataset
from resmg_zoo.data.loader import EpochPlan, Materializer
from resmg_zoo.models.fresnet import TRANSFER_NORM_CHOICES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--widths", default="16,32,64,128")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_dataset("cifar10")
    split = dataset.split("train")
    batches = list(EpochPlan(len(split), 128, args.seed).batches(0, 0))[: args.steps]
    data = Materializer(split, dataset.mean, dataset.std)
    for transfer_norm in TRANSFER_NORM_CHOICES:
        torch.manual_seed(args.seed)
        model = timm.create_model("fresnet18", widths=args.widths, transfer_norm=transfer_norm).train()
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
        trace = []
        for step, batch in enumerate(batches):
            x, y = data(batch)
            u = model.forward_features(x)
            loss = F.cross_entropy(model.forward_head(u), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 5 == 0 or not math.isfinite(loss.item()):
                trace.append(f"step {step}: loss {loss.item():.3g}, |u_J| {u.abs().mean().item():.3g}")
            if not math.isfinite(loss.item()):
                break
        print(f"transfer_norm={transfer_norm!r}: " + "; ".join(trace))


if __name__ == "__main__":
    main()
