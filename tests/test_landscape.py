"""scripts/loss_landscape.py: filter-normalised directions and the loss surface of a real checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import MODEL, WIDTHS

from resmg_zoo.tools.landscape import filter_normalised_direction, main, mean_within
from resmg_zoo.train.checkpoint import checkpoint_weights_path


def test_directions_are_filter_normalised_and_skip_biases_and_norms() -> None:
    import timm

    model = timm.create_model(MODEL, widths=WIDTHS)
    d = filter_normalised_direction(model, torch.Generator().manual_seed(0))
    for name, param in model.named_parameters():
        if param.dim() <= 1:
            assert not d[name].any(), name
        else:
            dims = tuple(range(1, param.dim()))
            norm = torch.linalg.vector_norm
            torch.testing.assert_close(norm(d[name], dim=dims), norm(param.detach(), dim=dims), rtol=1e-4, atol=1e-6)
    assert len(d) == len(list(model.parameters()))  # a shared A_ℓ is one tensor: one direction


def test_surface_of_a_real_checkpoint(run: Path, digits: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    before = checkpoint_weights_path(run).read_bytes()
    args = ["--run", str(run), "--data", str(digits.parent), "--images", "64", "--grid", "3", "--span", "0.5"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    record = json.loads((tmp_path / "tiny.json").read_text())
    losses = torch.tensor(record["losses"])
    assert losses.shape == (3, 3) and torch.isfinite(losses).all()
    # the centre is the checkpoint itself: moving away in weight space costs loss
    assert record["loss_at_weights"] == losses[1, 1].item() < losses.max().item()
    assert record["mean_loss_within_half_span"] == record["loss_at_weights"]  # radius 0.25: the centre only
    assert (tmp_path / "tiny-contour.png").stat().st_size > 1000 and (tmp_path / "tiny-surface.png").exists()
    assert checkpoint_weights_path(run).read_bytes() == before  # the run's weights are untouched
    # the same seed gives the same surface
    assert main([*args, "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["losses"] == record["losses"]


def test_mean_within_takes_the_disc() -> None:
    coords = torch.linspace(-1, 1, 5)  # -1, -0.5, 0, 0.5, 1
    losses = torch.arange(25, dtype=torch.float32).reshape(5, 5)
    # radius 0.5: the centre (12) and its 4 neighbours (7, 11, 13, 17); the diagonals lie at 0.71
    assert mean_within(coords, losses, 0.5) == (12 + 7 + 11 + 13 + 17) / 5


def test_not_a_run_folder(tmp_path: Path, capsys) -> None:
    assert main(["--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no config.json" in capsys.readouterr().err
