"""A run's settings: from the command line and the defaults, or — on ``--resume`` — from its ``config.json``."""

from __future__ import annotations

import argparse
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch

from ..core.choices import check_choice
from ..core.cli import PRECISION_HELP, parse_model_kwargs
from ..core.errors import UsageError
from ..core.files import read_json_object, require_keys
from ..core.hardware import PRECISIONS, PrecisionChoice, choose_precision
from ..core.tags import DEFAULT_TAG, TAGS, dataset_identity
from ..models.variants import VARIANTS
from .checkpoint import POINTER, CheckpointError
from .distributed import DistEnv, broadcast_flag
from .finetune import FREEZE_HELP, HEAD_CHOICES
from .recipes import (
    RECIPES,
    Recipe,
    check_recipe,
    field_default,
    resolve_recipe,
    setting,
    setting_fields,
    setting_key,
)
from .run import CONFIG_NAME, RunError, check_architecture_args, check_run_config

FINE_TUNING = "fine-tuning and your own data"  # the help's group of those settings


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The complete, typed settings of a run — what ``config.json`` records — built once: from the
    command line and the defaults, or on ``--resume`` from the run's ``config.json`` (see
    :func:`resolve_config`). Frozen: what set-up learns later (the architecture inherited from
    initial weights, where those came from) makes a new one with :func:`dataclasses.replace`.

    Each setting is one :func:`~.recipes.setting` field — its default, its help and its flag, from
    which the command line (:func:`~resmg_zoo.train.cli.build_parser`), :data:`RUN_SETTINGS`,
    :data:`DEFAULTS` and :data:`SETTING_FIELDS` are derived: adding a setting is adding its field.
    ``recipe_name`` is the recipe asked for (``config.json``'s ``recipe``), ``recipe`` the complete
    resolved settings (its ``recipe_settings``); ``record`` holds what the file says beyond the
    settings (the data's sha256, the hardware, versions, the resumes, the initial weights, ...)."""

    model: str = setting("preact_resnet18_sharedA", "registered model name")
    dataset: str = setting("mnist", "mnist, cifar10, cifar100, or an ImageFolder dir/zip")
    recipe_name: str = setting("paper", f"one of {', '.join(RECIPES)}", key="recipe")
    # setting() returns a dataclasses.field (RUF009); the flag's KEY=VALUE words are parsed by resolve_config
    model_kwargs: dict[str, Any] = setting(  # noqa: RUF009
        help="passed to create_model, e.g. widths=16,32,64,128 share=A pool_block=restrict",
        factory=dict,
        shown="none: the model's own",
        nargs="*",
        metavar="KEY=VALUE",
    )
    precision: str = setting("auto", PRECISION_HELP + ". A --resume keeps the run's precision", choices=PRECISIONS)
    channels_last: bool = setting(False, "train in the channels-last memory format", action="store_true")
    compile: bool = setting(False, "torch.compile the model", action="store_true")
    seed: int = setting(0, "seeds the initial weights, the validation split and the batch order", type=int)
    accum_steps: int = setting(1, "split each global batch into this many micro-batches", type=int)
    pad_to: int = setting(0, "zero-pad images to this square size (e.g. 32 for MNIST; 0: none)", type=int)
    image_size: Optional[int] = setting(
        None,
        "resize every image to N×N (bilinear) when loading the dataset",
        shown="the dataset's own",
        group=FINE_TUNING,
        type=int,
    )
    channels: Optional[int] = setting(
        None,
        "convert every image to 1 (grayscale) or 3 (RGB)",
        shown="the dataset's own",
        group=FINE_TUNING,
        type=int,
        choices=(1, 3),
    )
    pretrained: bool = setting(
        False,
        "start from the model's published weights for --init-tag (resolved like pretrained=True)",
        group=FINE_TUNING,
        action="store_true",
    )
    init_tag: str = setting(DEFAULT_TAG, f"tag of --pretrained: {', '.join(TAGS)}", group=FINE_TUNING)
    init_from: Optional[str] = setting(
        None, "start from a run folder, a published folder or a .safetensors", shown="none", group=FINE_TUNING
    )
    head: str = setting(
        "auto",
        "auto: a new head only if the class count differs; new: always; keep: never (must fit)",
        group=FINE_TUNING,
        choices=HEAD_CHOICES,
    )
    freeze: Optional[str] = setting(
        None, f"parameters that do not train: {FREEZE_HELP}", shown="none", group=FINE_TUNING
    )
    head_lr_mult: float = setting(1.0, "the head's lr = lr × this", group=FINE_TUNING, type=float)
    recipe: Recipe
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any], recipe: Recipe) -> TrainConfig:
        """From ``config.json``'s keys (a setting an older run did not record takes its default)."""
        settings = {k: data.get(k, DEFAULTS[k]) for k in RUN_SETTINGS}
        settings["model_kwargs"] = dict(settings["model_kwargs"])
        record = {k: v for k, v in data.items() if k not in RUN_SETTINGS and k != "recipe_settings"}
        return cls(**{SETTING_FIELDS[k]: v for k, v in settings.items()}, recipe=recipe, record=record)

    def to_json(self) -> dict[str, Any]:
        """``config.json``'s keys: every setting, the record, then ``recipe_settings``."""
        settings = {k: getattr(self, SETTING_FIELDS[k]) for k in RUN_SETTINGS}
        return {**settings, **self.record, "recipe_settings": asdict(self.recipe)}


# config.json's key → TrainConfig's field, of every setting (they differ for recipe → recipe_name).
SETTING_FIELDS: dict[str, str] = {setting_key(f): f.name for f in setting_fields(TrainConfig)}
# Settings of a run that --resume takes from config.json; given again, they must agree.
RUN_SETTINGS = tuple(SETTING_FIELDS)
DEFAULTS: dict[str, Any] = {setting_key(f): field_default(f) for f in setting_fields(TrainConfig)}
# The recipe's settings a flag overrides, and those of them a resumed run may change (e.g. train
# longer, or lower the lr after a NaN).
RECIPE_FLAGS = tuple(f.name for f in setting_fields(Recipe))
RESUMABLE_OVERRIDES = ("epochs", "lr", "weight_decay", "label_smoothing")


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the run — not part of its settings, never in ``config.json``. Each
    field is a :func:`~.recipes.setting` (its flag derived from it, as :class:`TrainConfig`'s)."""

    run_dir: Path = setting(  # noqa: RUF009 (setting() returns a dataclasses.field)
        help="run folder", key="out", shown="runs/<model>-<dataset>-<recipe>"
    )
    resume: bool = setting(False, "continue the run in --out from its last checkpoint", action="store_true")
    data: Optional[str] = setting(None, "folder holding <dataset>.zip", shown="$RESMG_ZOO_DATA, else ../shared/data")
    download: bool = setting(False, "let torchvision download the dataset if not found", action="store_true")
    checkpoint_every: int = setting(
        0,
        "also checkpoint every STEPS optimiser steps within an epoch, so that a kill loses at most that many "
        "(0: at the end of each epoch only)",
        type=int,
        metavar="STEPS",
    )
    quiet: bool = setting(False, "no progress bar and no progress lines within an epoch", action="store_true")
    log_every: float = setting(
        120.0,
        "without a terminal: a progress line (loss, images/s, ETA) this often within an epoch",
        type=float,
        metavar="SECONDS",
    )
    no_report: bool = setting(
        False,
        "skip the evaluation report (report/: per-class accuracy, confusion matrix, calibration, mistakes) that "
        "the last epoch writes for the test split",
        action="store_true",
    )
    eval_every: int = setting(
        1,
        "evaluate every EPOCHS epochs (and always after the last); the rows between hold training figures only",
        type=int,
        metavar="EPOCHS",
    )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options of the command line (a flag not given: its field's default), checked against the
        run folder before anything is read."""
        given = {f.name: getattr(args, setting_key(f)) for f in setting_fields(cls) if f.name != "run_dir"}
        run_dir = Path(args.out) if args.out else default_out(args)
        options = cls(run_dir, **{k: v for k, v in given.items() if v is not None})
        if options.checkpoint_every < 0:
            every = options.checkpoint_every
            raise UsageError(f"--checkpoint-every {every}: expected 0 (per epoch) or a number of steps")
        if options.eval_every < 1:
            raise UsageError(f"--eval-every {options.eval_every}: expected a number of epochs, at least 1")
        if options.resume and not (run_dir / CONFIG_NAME).exists():
            raise RunError(f"--resume: no run to continue in {run_dir} (no config.json)")
        if not options.resume and (run_dir / POINTER).exists():
            raise RunError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        if options.resume and not (run_dir / POINTER).exists():
            raise CheckpointError(
                f"--resume: the run in {run_dir} stopped before its first checkpoint, so there is nothing to "
                "resume; run the same command without --resume to start it again"
            )
        return options


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
    # --model-kwargs is the one setting whose flag's words are parsed into its value
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
    """``runs/<model>-<dataset>-<recipe>`` of the command line (the defaults where not given), the
    dataset by its name (:func:`~resmg_zoo.core.tags.dataset_identity`: ``data/mnist.zip`` is ``mnist``)."""
    dataset = dataset_identity(args.dataset or DEFAULTS["dataset"]).name
    return Path("runs") / "-".join([args.model or DEFAULTS["model"], dataset, args.recipe or DEFAULTS["recipe"]])
