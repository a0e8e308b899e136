"""The learning-rate schedule of the recipes: a warmup that never overshoots, the paper's steps, cosine."""

from __future__ import annotations

from dataclasses import replace

import pytest

from resmg_zoo.train.recipes import RECIPES, lr_factor, resolve_recipe


@pytest.mark.parametrize("schedule", ["cosine", "step"])
@pytest.mark.parametrize("warmup_epochs", [0.05, 0.1, 0.3, 0.5, 1.0, 1.7, 2.0])
def test_the_warmup_never_exceeds_the_recipes_lr(schedule: str, warmup_epochs: float) -> None:
    """For every epoch length from 1 to 60 steps: the factor stays in (0, 1], rises through the warmup
    and reaches exactly 1 at its end (with few steps per epoch a fractional warmup used to overshoot)."""
    for steps_per_epoch in range(1, 61):
        recipe = replace(RECIPES["short"], epochs=3, schedule=schedule, warmup_epochs=warmup_epochs)
        factors = [lr_factor(recipe, step, steps_per_epoch) for step in range(3 * steps_per_epoch)]
        assert all(0 < f <= 1.0 for f in factors), (steps_per_epoch, max(factors))
        warmup = [f for step, f in enumerate(factors) if step < warmup_epochs * steps_per_epoch]
        assert warmup == sorted(warmup) and warmup[-1] == pytest.approx(1.0, abs=0.5)
        assert max(factors) == 1.0  # the recipe's lr is reached, once the warmup is over


def test_the_fine_tuning_example_starts_at_the_recipes_lr() -> None:
    """The case that was reported: 250 images, 50 held out, batch 128 → 1 full batch per epoch; the
    quick recipe's 0.1-epoch warmup made its one step run at 10× the recipe's lr (logged as lr 1.0)."""
    recipe = resolve_recipe("quick", "custom", "preact_resnet18_sharedA", {"val_size": 50})
    assert lr_factor(recipe, 0, steps_per_epoch=200 // 128) == 1.0


def test_the_papers_step_schedule_and_the_cosine_end() -> None:
    paper = resolve_recipe("paper", "cifar10", "resnet18_sharedA", {})
    assert [lr_factor(paper, e * 10, 10) for e in (0, 29, 30, 119)] == [
        1.0,
        1.0,
        pytest.approx(0.1),
        pytest.approx(0.1),
    ]
    short = resolve_recipe("short", "cifar10", "resnet18_sharedA", {})
    assert lr_factor(short, 15 * 100 - 1, 100) < 1e-3  # cosine down to (almost) 0 at the last step
