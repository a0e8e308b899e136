"""Training recipes: the paper's (§5.2) and named shorter ones for CPU budgets.

A recipe fills every training setting a command line does not set; ``resolve_recipe`` returns the
complete settings that a run writes to its ``config.json``.

:func:`setting` makes a dataclass field a command-line setting (its default, help and flag in one
place): the fields of :class:`Recipe` a flag overrides here, and those of
:class:`~resmg_zoo.train.config.TrainConfig` and :class:`~resmg_zoo.train.config.RunOptions`, from
which :func:`resmg_zoo.train.cli.build_parser` derives the command line.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, Optional

from ..core.choices import check_choice
from ..core.errors import UsageError
from ..core.tags import TAGS
from ..data.loader import AUGMENTATIONS

SETTING = "resmg_zoo.setting"  # the dataclasses metadata key of a field that is a command-line setting


@dataclass(frozen=True)
class Setting:
    """What makes a dataclass field a command-line setting (see :func:`setting`)."""

    help: str
    key: Optional[str] = None  # config.json's key and the flag's dest, where not the field's name
    shown: Optional[str] = None  # how the default reads in the help, where its value alone would not say it
    group: Optional[str] = None  # the help's group title (None: the main list)
    argparse: dict[str, Any] = field(default_factory=dict)  # type, choices, metavar, action, nargs


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Any = MISSING,
    key: Optional[str] = None,
    shown: Optional[str] = None,
    group: Optional[str] = None,
    **argparse: Any,
) -> Any:
    """A dataclass field that is also a command-line setting — adding a setting is this one line.

    ``default`` (``factory`` for a mutable one) is the setting's default; the flag is ``--KEY``
    (``key``, else the field's name, with ``_`` as ``-``), its ``dest`` ``KEY`` and its argparse
    default ``None``, so that a given value can be told from the default; ``help`` gets
    ``(default: …)`` appended (``shown``, else the default's value); ``argparse`` holds the flag's
    other keywords (``type``, ``choices``, ``metavar``, ``action``, ``nargs``)."""
    meta = Setting(help, key, shown, group, argparse)
    return field(default=default, default_factory=factory, metadata={SETTING: meta})


def setting_fields(cls: type) -> list[Field[Any]]:
    """The fields of dataclass ``cls`` that are command-line settings, in their order."""
    return [f for f in fields(cls) if SETTING in f.metadata]


def setting_of(f: Field[Any]) -> Setting:
    """The :class:`Setting` of a field made by :func:`setting`."""
    return f.metadata[SETTING]


def setting_key(f: Field[Any]) -> str:
    """A setting's name outside its dataclass: its ``config.json`` key and its flag's ``dest``."""
    return setting_of(f).key or f.name


def field_default(f: Field[Any]) -> Any:
    """A field's default value (a fresh one where it has a factory)."""
    return f.default_factory() if f.default_factory is not MISSING else f.default


SCHEDULES = ("step", "cosine", "onecycle")


@dataclass(frozen=True)
class Recipe:
    """Every setting of a training run that is not the model or the data.

    ``schedule``: ``step`` (lr ÷ ``lr_decay`` at each of ``milestones`` epochs), ``cosine`` (per step,
    after ``warmup_epochs`` of linear warmup, down to 0 at the end) or ``onecycle`` (Smith's one-cycle
    policy, triangular: linear up over ``warmup_epochs``, then linear down to 0 at the end).
    ``ema_decay > 0`` keeps an exponential moving average of the weights and buffers (timm's
    ``ModelEmaV3`` with its decay warmup, the decay rising towards ``ema_decay``); every split is
    evaluated for it too (``ema_*`` metrics). ``low_res > 0`` trains the first ``low_res_epochs`` at
    ``low_res``×``low_res`` (the augmented batch downsampled, antialiased) — progressive resizing.
    ``weight_decay=None`` means the paper's depth rule: 1e-4 for depth 18, 1e-3 for depth 34.
    ``epochs=None`` means the paper's dataset rule: 60 for MNIST, 120 for CIFAR.
    ``augment=None`` means the dataset's standard augmentation (CIFAR crop_flip, MNIST none).

    A field made by :func:`setting` is overridden by its flag (``--lr``); the help states each
    recipe's value (``shown`` is how ``None`` reads)."""

    name: str
    epochs: Optional[float] = setting(
        help="how many epochs (a fraction trains part of one)", type=float, shown="the dataset's rule"
    )
    batch_size: int = setting(128, "global batch size (all ranks together)", type=int)
    lr: float = setting(0.1, "peak learning rate", type=float)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: Optional[float] = setting(
        None, "SGD weight decay", type=float, shown="the depth rule (1e-4 for depth 18, 1e-3 for 34)"
    )
    schedule: str = setting("step", "the lr schedule", choices=SCHEDULES)
    milestones: tuple[int, ...] = (30,)
    lr_decay: float = 0.1
    warmup_epochs: float = setting(0.0, "linear warmup (onecycle: the rise)", type=float)
    label_smoothing: float = setting(0.0, "label smoothing of the loss", type=float)
    augment: Optional[str] = setting(
        None,
        "the training augmentation",
        choices=AUGMENTATIONS,
        shown="the dataset's standard (CIFAR crop_flip, MNIST none)",
    )
    val_size: int = setting(0, "train images held out for validation (0: none)", type=int)
    ema_decay: float = setting(
        0.0, "keep an EMA of the weights with this decay (0: none); its accuracy is logged as ema_*", type=float
    )
    low_res: int = setting(0, "train early epochs at this side (0: off)", type=int, metavar="PIXELS")
    low_res_epochs: float = setting(0.0, "how many epochs --low-res lasts", type=float)
    description: str = ""


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "paper",
            epochs=None,
            description="§5.2 exactly: SGD m=0.9, wd 1e-4 (18) / 1e-3 (34), batch 128, lr 0.1 ÷10 at epoch 30, "
            "60 epochs MNIST / 120 CIFAR, standard augmentation, all of train (no validation split).",
        ),
        Recipe(
            "short",
            epochs=None,
            schedule="cosine",
            nesterov=True,
            warmup_epochs=0.3,
            val_size=5000,
            description="CPU budget: the paper's optimiser with Nesterov, a short linear warmup and a per-step "
            "cosine decay; 3 epochs MNIST / 15 CIFAR unless --epochs says otherwise; 5,000 train images held out.",
        ),
        Recipe(
            "sprint",
            epochs=None,
            schedule="cosine",
            nesterov=True,
            warmup_epochs=0.3,
            weight_decay=5e-4,
            label_smoothing=0.1,
            val_size=0,
            description="Time to accuracy on CPU (docs/time-to-accuracy.md): the `short` optimiser and per-step "
            "cosine on all of train, 16 epochs CIFAR / 3 MNIST, weight decay 5e-4 and label smoothing 0.1.",
        ),
        Recipe(
            "quick",
            epochs=1,
            schedule="cosine",
            nesterov=True,
            warmup_epochs=0.1,
            val_size=5000,
            description="Smoke budget: one epoch of the short recipe (for tests and the README's first command).",
        ),
    )
}
DEFAULT_EPOCHS = {"paper": 120, "short": 15, "sprint": 16}  # a dataset of one's own: CIFAR's rules


def recipe_default_text(f: Field[Any]) -> str:
    """How the default of a recipe's flag reads in the help: the value every recipe has, or each recipe's
    (``the recipe's: paper 0.0; short/sprint 0.3; quick 0.1``)."""
    by_value: dict[str, list[str]] = {}
    for recipe in RECIPES.values():
        value = getattr(recipe, f.name)
        text = setting_of(f).shown if value is None and setting_of(f).shown else str(value)
        by_value.setdefault(text, []).append(recipe.name)
    if len(by_value) == 1:
        return next(iter(by_value))
    return "the recipe's: " + "; ".join(f"{'/'.join(names)} {text}" for text, names in by_value.items())


def model_depth(model_name: str) -> int:
    """The depth in a model name (``preact_resnet34_sharedA`` → 34); 18 when it names none."""
    match = re.search(r"resnet(\d+)", model_name)
    return int(match.group(1)) if match else 18


def resolve_recipe(name: str, dataset: str, model_name: str, overrides: dict[str, Any]) -> Recipe:
    """The recipe ``name`` with the paper's dataset/depth rules applied and ``overrides`` on top."""
    recipe = RECIPES[check_choice("recipe", name, RECIPES)]
    known = {f.name for f in fields(Recipe)}
    unknown = set(overrides) - known
    if unknown:
        raise UsageError(f"unknown recipe settings {sorted(unknown)}; valid: {sorted(known)}")
    known_dataset = TAGS.get(dataset)  # the registry's entry; None for a dataset of one's own
    if recipe.epochs is None:
        epochs = known_dataset.epochs if known_dataset is not None else DEFAULT_EPOCHS
        recipe = replace(recipe, epochs=epochs[name])
    if recipe.weight_decay is None:
        recipe = replace(recipe, weight_decay=1e-3 if model_depth(model_name) == 34 else 1e-4)
    if recipe.augment is None:
        recipe = replace(recipe, augment=known_dataset.augment if known_dataset is not None else "none")
    recipe = replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    check_choice("schedule", recipe.schedule, SCHEDULES)
    return check_recipe(recipe)


def check_recipe(recipe: Recipe) -> Recipe:
    """``recipe``, or a ``ValueError`` naming the flag whose value cannot train (before anything is written)."""
    rules = (
        ("epochs", recipe.epochs > 0, "a positive number of epochs (a fraction trains part of one)"),
        ("batch-size", recipe.batch_size >= 1, "at least 1"),
        ("lr", recipe.lr > 0, "a positive learning rate"),
        ("weight-decay", recipe.weight_decay >= 0, "0 or more"),
        ("label-smoothing", 0 <= recipe.label_smoothing < 1, "in [0, 1)"),
        ("warmup-epochs", recipe.warmup_epochs >= 0, "0 or more"),
        ("val-size", recipe.val_size >= 0, "0 or more images"),
        ("ema-decay", 0 <= recipe.ema_decay < 1, "in [0, 1) (0: no EMA)"),
        ("low-res", recipe.low_res == 0 or recipe.low_res >= 8, "0 (off) or a side of at least 8 pixels"),
        ("low-res-epochs", recipe.low_res_epochs >= 0, "0 or more"),
    )
    for flag, ok, expected in rules:
        if not ok:
            value = getattr(recipe, flag.replace("-", "_"))
            raise UsageError(f"--{flag} {value}: expected {expected}; nothing was trained or written")
    return recipe


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``recipe.lr`` at optimiser step ``step`` (0-based), never above 1.

    The linear warmup reaches 1 at the end of ``warmup_epochs`` (a fractional number of steps ends
    on a step at 1, not beyond it: the cap matters where an epoch has few steps)."""
    epoch = step / steps_per_epoch
    warmup_steps = recipe.warmup_epochs * steps_per_epoch
    if warmup_steps > 0 and step < warmup_steps:
        return min(1.0, (step + 1) / warmup_steps)
    if recipe.schedule == "step":
        return recipe.lr_decay ** sum(epoch >= m for m in recipe.milestones)
    total = max(1.0, float(recipe.epochs) * steps_per_epoch - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / total)
    if recipe.schedule == "onecycle":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def low_res_at(recipe: Recipe, step: int, steps_per_epoch: int) -> int:
    """The side the batch of optimiser step ``step`` is trained at: ``recipe.low_res`` during the first
    ``low_res_epochs``, else 0 (the images' own size)."""
    if recipe.low_res and step < recipe.low_res_epochs * steps_per_epoch:
        return recipe.low_res
    return 0
