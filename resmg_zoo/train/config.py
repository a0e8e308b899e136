"""A run's settings: from the command line and the defaults, or — on ``--resume`` — from its ``config.json``."""

from __future__ import annotations

import argparse
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch

from ..core.choices import check_choice
from ..core.cli import parse_model_kwargs
from ..core.errors import UsageError
from ..core.files import read_json_object, require_keys
from ..core.hardware import PrecisionChoice, choose_precision
from ..core.tags import DEFAULT_TAG, dataset_identity
from ..models.variants import VARIANTS
from .checkpoint import POINTER, CheckpointError
from .distributed import DistEnv, broadcast_flag
from .recipes import RECIPES, Recipe, check_recipe, resolve_recipe
from .run import CONFIG_NAME, RunError, check_architecture_args, check_run_config

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
    precision="auto",
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


@dataclass(frozen=True)
class TrainConfig:
    """The complete, typed settings of a run — what ``config.json`` records — built once: from the
    command line and the defaults, or on ``--resume`` from the run's ``config.json`` (see
    :func:`resolve_config`). Frozen: what set-up learns later (the architecture inherited from
    initial weights, where those came from) makes a new one with :func:`dataclasses.replace`.

    ``recipe_name`` is the recipe asked for (``config.json``'s ``recipe``), ``recipe`` the complete
    resolved settings (its ``recipe_settings``); ``record`` holds what the file says beyond the
    settings (the data's sha256, the hardware, versions, the resumes, the initial weights, ...)."""

    model: str
    dataset: str
    recipe_name: str
    model_kwargs: dict[str, Any]
    precision: str
    channels_last: bool
    compile: bool
    seed: int
    accum_steps: int
    pad_to: int
    image_size: Optional[int]
    channels: Optional[int]
    pretrained: bool
    init_tag: str
    init_from: Optional[str]
    head: str
    freeze: Optional[str]
    head_lr_mult: float
    recipe: Recipe
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any], recipe: Recipe) -> TrainConfig:
        """From ``config.json``'s keys (a setting an older run did not record takes its default)."""
        settings = {k: data.get(k, DEFAULTS[k]) for k in RUN_SETTINGS}
        settings["model_kwargs"] = dict(settings["model_kwargs"])
        record = {k: v for k, v in data.items() if k not in RUN_SETTINGS and k != "recipe_settings"}
        return cls(**{SETTING_FIELDS.get(k, k): v for k, v in settings.items()}, recipe=recipe, record=record)

    def to_json(self) -> dict[str, Any]:
        """``config.json``'s keys: every setting, the record, then ``recipe_settings``."""
        settings = {k: getattr(self, SETTING_FIELDS.get(k, k)) for k in RUN_SETTINGS}
        return {**settings, **self.record, "recipe_settings": asdict(self.recipe)}


SETTING_FIELDS = {"recipe": "recipe_name"}  # config.json's key → TrainConfig's field, where they differ


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the run — not part of its settings, never in ``config.json``."""

    run_dir: Path
    resume: bool = False
    data: Optional[str] = None
    download: bool = False
    checkpoint_every: int = 0
    quiet: bool = False
    log_every: float = 120.0
    eval_every: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options of the command line, checked against the run folder before anything is read."""
        if args.checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every {args.checkpoint_every}: expected 0 (per epoch) or a number of steps")
        if args.eval_every < 1:
            raise UsageError(f"--eval-every {args.eval_every}: expected a number of epochs, at least 1")
        run_dir = Path(args.out) if args.out else default_out(args)
        if args.resume and not (run_dir / CONFIG_NAME).exists():
            raise RunError(f"--resume: no run to continue in {run_dir} (no config.json)")
        if not args.resume and (run_dir / POINTER).exists():
            raise RunError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        if args.resume and not (run_dir / POINTER).exists():
            raise CheckpointError(
                f"--resume: the run in {run_dir} stopped before its first checkpoint, so there is nothing to "
                "resume; run the same command without --resume to start it again"
            )
        return cls(
            run_dir,
            args.resume,
            args.data,
            args.download,
            args.checkpoint_every,
            args.quiet,
            args.log_every,
            args.eval_every,
        )


def saved_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json`` for ``--resume``: a JSON object with a registered ``model``, architecture
    ``model_kwargs`` (:func:`~resmg_zoo.train.run.check_run_config`) and complete ``recipe_settings``;
    a :class:`UsageError` naming the file if it is not one."""
    hint = (
        "it is damaged or not a run's config.json. Restore it (it is written once, when the run starts), "
        "or start a new run in another --out"
    )
    try:
        saved = read_json_object(path, "--resume: the run's settings")
        require_keys(saved, {"recipe_settings": dict}, f"--resume: {path}")
        check_run_config(saved, f"--resume: {path}")
    except UsageError as err:
        raise UsageError(f"{err}; {hint}") from None
    recipe = saved["recipe_settings"]
    names = {f.name for f in fields(Recipe)}
    required = {f.name for f in fields(Recipe) if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(recipe) - names), sorted(required - set(recipe))
    if unknown or missing or not isinstance(recipe.get("milestones", []), list):
        raise UsageError(
            f"--resume: {path}: recipe_settings are not a recipe's (unknown {unknown}, missing {missing}, "
            f"milestones {recipe.get('milestones')!r}); {hint}"
        )
    return saved


def resolve_config(args: argparse.Namespace, run_dir: Path, device: torch.device, env: DistEnv) -> TrainConfig:
    """The run's :class:`TrainConfig`: from the command line and the defaults, or — with ``--resume`` —
    from the run folder's ``config.json`` (only the resumable recipe settings may change).

    ``--precision auto`` (the default) becomes ``fp32`` or ``bf16`` here, for a new run as
    :func:`~resmg_zoo.core.hardware.choose_precision` measures on ``device`` (rank 0 measures, every
    rank takes its choice), recorded with its reason as ``precision_choice``; a resumed run keeps the
    precision its ``config.json`` records."""
    given = {k: getattr(args, k) for k in RUN_SETTINGS if k != "model_kwargs" and getattr(args, k) is not None}
    if args.resume and given.get("precision") == "auto":
        del given["precision"]  # auto on a resume: the precision the run was started with
    if args.model_kwargs is not None:
        given["model_kwargs"] = parse_model_kwargs(args.model_kwargs)
        check_architecture_args(given["model_kwargs"], "--model-kwargs")  # before anything is read or written
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
        milestones = tuple(saved_recipe.get("milestones", Recipe.milestones))
        recipe = check_recipe(Recipe(**{**saved_recipe, "milestones": milestones, **changed}))
        resumes = [*saved.get("resumes", []), dict(at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), changed=changed)]
        return TrainConfig.from_json({**saved, "resumes": resumes}, recipe)
    settings = {**DEFAULTS, **given}
    if settings["accum_steps"] < 1:
        accum = settings["accum_steps"]
        raise UsageError(f"--accum-steps {accum}: expected at least 1; nothing was trained or written")
    check_choice("recipe", settings["recipe"], RECIPES)
    check_choice("model", settings["model"], VARIANTS)  # before any data is read
    dataset_key = dataset_identity(settings["dataset"]).name
    recipe = resolve_recipe(settings["recipe"], dataset_key, settings["model"], overrides)
    choice = agreed_precision(settings["precision"], device, env)
    settings["precision_choice"] = dict(asked=settings["precision"], reason=choice.reason)
    if choice.peaks is not None:  # what auto measured, so that the choice can be checked against it
        settings["precision_choice"]["peaks"] = asdict(choice.peaks)
    settings["precision"] = choice.precision
    return TrainConfig.from_json(settings, recipe)


def agreed_precision(asked: str, device: torch.device, env: DistEnv) -> PrecisionChoice:
    """:func:`choose_precision` of ``asked``, the same on every rank: for ``auto`` rank 0 measures and
    the others take its choice (each timing its own matmuls could disagree)."""
    if asked != "auto" or not env.enabled:
        return choose_precision(asked, device)
    choice = choose_precision(asked, device) if env.is_main else None
    bf16 = broadcast_flag(choice is not None and choice.precision == "bf16", env)
    return choice or PrecisionChoice("bf16" if bf16 else "fp32", "auto: rank 0's measured choice")


def default_out(args: argparse.Namespace) -> Path:
    parts = [args.model or DEFAULTS["model"], Path(args.dataset or DEFAULTS["dataset"]).name, args.recipe or "paper"]
    return Path("runs") / "-".join(parts)
