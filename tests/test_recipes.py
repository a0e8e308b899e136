"""The learning-rate schedule of the recipes: a warmup that never overshoots, the paper's steps, cosine."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import pytest

from resmg_zoo.train.recipes import RECIPES, lr_factor, resolve_recipe


@pytest.mark.parametrize("schedule", ["cosine", "step"])
@pytest.mark.parametrize("warmup_epochs", ["0.05", "0.1", "0.3", "0.5", "1.0", "1.7", "2.0"])
def test_the_warmup_never_exceeds_the_recipes_lr(schedule: str, warmup_epochs: str) -> None:
    """For every epoch length from 1 to 60 steps: the factor stays in (0, 1], follows the linear warmup
    step by step and is exactly 1 at its end (with few steps per epoch a fractional warmup used to overshoot).

    The ramp, computed here in exact fractions from the rule (recipes.py's docstring): the warmup lasts
    W = warmup_epochs × steps_per_epoch steps, possibly a fractional number; step s (0-based) of it, for
    s < W, trains at (s + 1) / W of the lr, capped at 1. So the last warmup step, ⌈W⌉ − 1, is at exactly 1."""
    for steps_per_epoch in range(1, 61):
        recipe = replace(RECIPES["short"], epochs=3, schedule=schedule, warmup_epochs=float(warmup_epochs))
        factors = [lr_factor(recipe, step, steps_per_epoch) for step in range(3 * steps_per_epoch)]
        assert all(0 < f <= 1.0 for f in factors), (steps_per_epoch, max(factors))
        steps = Fraction(warmup_epochs) * steps_per_epoch
        ramp = [min(Fraction(1), (s + 1) / steps) for s in range(math.ceil(steps))]
        assert ramp[-1] == 1 and all(r < 1 for r in ramp[:-1])
        assert factors[: len(ramp)] == [pytest.approx(float(r), rel=1e-12, abs=0) for r in ramp], steps_per_epoch
        assert factors[len(ramp) - 1] == 1.0  # exactly the recipe's lr at the warmup's last step, not 1 - ε
        # then the schedule proper, from the warmup's end W: the paper's steps (none before epoch 30) ...
        after = 1.0
        if schedule == "cosine":  # ... or the cosine from 1 at W to 0 at the end; its first step ⌈W⌉ is ⌈W⌉ − W in
            after = (1 + math.cos(math.pi * (len(ramp) - steps) / (3 * steps_per_epoch - steps))) / 2
        assert factors[len(ramp)] == pytest.approx(after, rel=1e-12), steps_per_epoch


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
