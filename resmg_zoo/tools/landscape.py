"""The loss surface of a trained checkpoint around its weights (the paper's Fig. 3/4).

    python scripts/loss_landscape.py --run runs/mnist-full-short --images 1000 --grid 21 \\
        --out runs/landscape/preact_resnet18_sharedA

Li et al. (2018), "Visualizing the Loss Landscape of Neural Nets": two random Gaussian directions
d₁, d₂ in weight space, each *filter-normalised* (every output filter of a convolution or linear
layer rescaled to the norm of the same filter of the weights; biases and BatchNorm parameters get
no direction), and the loss L(θ + α d₁ + β d₂) on a fixed data subset over an α, β grid. BatchNorm
uses its running statistics (eval mode). A shared operator is one tensor, so it moves as one.
Writes ``<out>.json`` (grid, losses, settings), ``<out>-contour.png`` and ``<out>-surface.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.cli import report_error
from ..core.errors import ResmgError
from ..data.loader import EpochPlan, Materializer
from ..train.run import Run


def filter_normalised_direction(model: nn.Module, generator: torch.Generator) -> dict[str, Tensor]:
    """A random direction with each filter's norm equal to that filter's norm in the weights."""
    direction = {}
    for name, param in model.named_parameters():
        if param.dim() <= 1:
            direction[name] = torch.zeros_like(param)  # biases and BN: no direction (Li et al. §4)
            continue
        d = torch.randn(param.shape, generator=generator, dtype=param.dtype)
        dims = tuple(range(1, param.dim()))
        d *= torch.linalg.vector_norm(param.detach(), dim=dims, keepdim=True) / torch.linalg.vector_norm(
            d, dim=dims, keepdim=True
        )
        direction[name] = d
    return direction


@torch.no_grad()
def surface(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    directions: tuple[dict[str, Tensor], dict[str, Tensor]],
    coords: Tensor,
    batch_size: int = 500,
    progress: bool = True,
) -> Tensor:
    """Mean cross-entropy at θ + α d₁ + β d₂ for every (α, β) in ``coords × coords``."""
    from tqdm import tqdm

    model.eval()
    params = dict(model.named_parameters())
    origin = {n: p.detach().clone() for n, p in params.items()}
    losses = torch.empty(len(coords), len(coords))
    bar = tqdm(total=len(coords) ** 2, desc="loss surface", disable=not progress)
    try:
        for i, alpha in enumerate(coords.tolist()):
            for j, beta in enumerate(coords.tolist()):
                for name, param in params.items():
                    param.copy_(origin[name] + alpha * directions[0][name] + beta * directions[1][name])
                total = 0.0
                for start in range(0, len(labels), batch_size):
                    logits = model(images[start : start + batch_size])
                    total += F.cross_entropy(logits, labels[start : start + batch_size], reduction="sum").item()
                losses[i, j] = total / len(labels)
                bar.update(1)
    finally:
        bar.close()
        for name, param in params.items():
            param.copy_(origin[name])
    return losses


def mean_within(coords: Tensor, losses: Tensor, radius: float) -> float:
    """Mean loss over the grid points with α² + β² ≤ radius²: one number for how flat the basin is."""
    a, b = torch.meshgrid(coords, coords, indexing="ij")
    return losses[a**2 + b**2 <= radius**2 + 1e-12].mean().item()


def plot(coords: Tensor, losses: Tensor, title: str, out: Path) -> list[Path]:
    """The contour plot and the 3-D surface, as PNGs beside ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = torch.meshgrid(coords, coords, indexing="ij")
    paths = [out.with_name(out.name + "-contour.png"), out.with_name(out.name + "-surface.png")]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    contour = ax.contour(b.numpy(), a.numpy(), losses.numpy(), levels=30)
    ax.clabel(contour, inline=True, fontsize=7)
    ax.set(xlabel="β (direction 2)", ylabel="α (direction 1)", title=title)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig = plt.figure(figsize=(6, 5))
    ax3 = fig.add_subplot(projection="3d")
    ax3.plot_surface(b.numpy(), a.numpy(), losses.numpy(), cmap="viridis", linewidth=0)
    ax3.set(xlabel="β", ylabel="α", zlabel="loss", title=title)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/loss_landscape.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a training run folder")
    parser.add_argument("--data", default=None, help="folder with <dataset>.zip (default $RESMG_ZOO_DATA)")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="the images the loss is taken on")
    parser.add_argument("--images", type=int, default=1000, help="size of the fixed (seeded) data subset")
    parser.add_argument("--grid", type=int, default=21, help="points per axis")
    parser.add_argument("--span", type=float, default=1.0, help="α and β run over [-span, span]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the directions and the subset")
    parser.add_argument("--out", required=True, help="prefix of the files written")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.grid < 2 or args.images < 1 or args.span <= 0:
        parser.error("--grid must be at least 2, --images at least 1 and --span positive")
    try:
        run = Run.open(args.run)
        model, dataset, config = run.load_model(), run.dataset(args.data), run.config
    except ResmgError as err:
        return report_error(err)
    split = dataset.split(args.split)
    order = EpochPlan(len(split), min(args.images, len(split)), args.seed)
    batch = next(iter(order.batches(0, 0)))
    images, labels = Materializer(split, dataset.mean, dataset.std, pad_to=config.get("pad_to", 0))(batch)
    generator = torch.Generator().manual_seed(args.seed)
    directions = (filter_normalised_direction(model, generator), filter_normalised_direction(model, generator))
    coords = torch.linspace(-args.span, args.span, args.grid)
    losses = surface(model, images, labels, directions, coords, progress=not args.quiet)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{config['model']} on {dataset.name} ({config.get('recipe', '?')}, {len(labels)} {args.split} images)"
    record = dict(
        run=str(args.run),
        model=config["model"],
        split=args.split,
        images=len(labels),
        seed=args.seed,
        coords=coords.tolist(),
        losses=losses.tolist(),
        loss_at_weights=losses[args.grid // 2, args.grid // 2].item() if args.grid % 2 else None,
        mean_loss_within_half_span=mean_within(coords, losses, args.span / 2),
    )
    out.with_name(out.name + ".json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    paths = plot(coords, losses, title, out)
    print(
        json.dumps(
            dict(
                json=str(out.with_name(out.name + ".json")),
                pngs=[str(p) for p in paths],
                min_loss=losses.min().item(),
                max_loss=losses.max().item(),
                mean_loss_within_half_span=record["mean_loss_within_half_span"],
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
