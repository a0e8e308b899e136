"""A run's settings: from the command line and the defaults, or — on ``--resume`` — from its ``config.json``."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.choices import check_choice
from ..core.cli import parse_model_kwargs
from ..core.errors import UsageError
from ..core.tags import DEFAULT_TAG
from ..models.variants import VARIANTS
from .recipes import RECIPES, Recipe, check_recipe, resolve_recipe

# Settings of a run that --resume takes from config.json; given again, they must agree.
RUN_SETTINGS = (
    "model",
    "dataset",
    "recipe",
    "model_kwargs",
    "precision",
    "channels_last",
    "compile",
    "seed",
    "accum_steps",
    "pad_to",
    "image_size",
    "channels",
    "pretrained",
    "init_tag",
    "init_from",
    "head",
    "freeze",
    "head_lr_mult",
)
# Recipe settings a resumed run may change (e.g. train longer, or lower the lr after a NaN).
RESUMABLE_OVERRIDES = ("epochs", "lr", "weight_decay", "label_smoothing")
RECIPE_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "augment",
    "val_size",
    "label_smoothing",
    "warmup_epochs",
    "schedule",
    "ema_decay",
    "low_res",
    "low_res_epochs",
)


DEFAULTS: dict[str, Any] = dict(
    model="preact_resnet18_sharedA",
    dataset="mnist",
    recipe="paper",
    model_kwargs={},
    precision="fp32",
    channels_last=False,
    compile=False,
    seed=0,
    accum_steps=1,
    pad_to=0,
    image_size=None,
    channels=None,
    pretrained=False,
    init_tag=DEFAULT_TAG,
    init_from=None,
    head="auto",
    freeze=None,
    head_lr_mult=1.0,
)


@dataclass
class RunConfig:
    """The complete settings of a run, as written to ``config.json``."""

    settings: dict[str, Any]
    recipe: Recipe

    def to_json(self) -> dict[str, Any]:
        return {**self.settings, "recipe_settings": asdict(self.recipe)}


def saved_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json`` for ``--resume``; a :class:`UsageError` naming the file if it is not one."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(
            f"--resume: {path} cannot be read as a run's settings ({err}); it is damaged or not a run's "
            "config.json. Restore it (it is written once, when the run starts), or start a new run in another --out"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("recipe_settings"), dict):
        raise UsageError(f"--resume: {path} is not a run's config.json (no recipe_settings)")
    return saved


def resolve_config(args: argparse.Namespace, run_dir: Path) -> RunConfig:
    """Settings from the command line and defaults, or — with ``--resume`` — from the run folder."""
    given = {k: getattr(args, k) for k in RUN_SETTINGS if k != "model_kwargs" and getattr(args, k) is not None}
    if args.model_kwargs is not None:
        given["model_kwargs"] = parse_model_kwargs(args.model_kwargs)
    overrides = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k) is not None}
    if args.resume:
        saved = saved_config(run_dir / "config.json")
        saved_recipe = saved["recipe_settings"]
        conflicts = {k: (v, saved.get(k)) for k, v in given.items() if saved.get(k) != v}
        conflicts |= {
            k: (v, saved_recipe.get(k))
            for k, v in overrides.items()
            if k not in RESUMABLE_OVERRIDES and saved_recipe.get(k) != v
        }
        if conflicts:
            raise UsageError(
                "--resume continues the run as configured in "
                f"{run_dir / 'config.json'}; these arguments differ from it (given, saved): {conflicts}. "
                f"Only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OVERRIDES)} may change on resume."
            )
        changed = {k: v for k, v in overrides.items() if saved_recipe.get(k) != v}
        recipe = check_recipe(Recipe(**{**saved_recipe, "milestones": tuple(saved_recipe["milestones"]), **changed}))
        resumes = [*saved.get("resumes", []), dict(at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), changed=changed)]
        settings = {**saved, "resumes": resumes}
        settings.pop("recipe_settings")
        return RunConfig(settings, recipe)
    settings = {**DEFAULTS, **given}
    if settings["accum_steps"] < 1:
        accum = settings["accum_steps"]
        raise UsageError(f"--accum-steps {accum}: expected at least 1; nothing was trained or written")
    check_choice("recipe", settings["recipe"], RECIPES)
    check_choice("model", settings["model"], VARIANTS)  # before any data is read
    dataset_key = Path(settings["dataset"]).name.removesuffix(".zip")
    recipe = resolve_recipe(settings["recipe"], dataset_key, settings["model"], overrides)
    return RunConfig(settings, recipe)


def default_out(args: argparse.Namespace) -> Path:
    parts = [args.model or DEFAULTS["model"], Path(args.dataset or DEFAULTS["dataset"]).name, args.recipe or "paper"]
    return Path("runs") / "-".join(parts)
