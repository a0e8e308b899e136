"""Training's command line and its settings are one table: each field of ``TrainConfig``, of ``Recipe``
(the overridable ones) and of ``RunOptions`` is one flag, and nothing else is — these tests fail where a
flag and a field disagree (a field without a flag, a flag without a field, a default stated twice)."""

from __future__ import annotations

import argparse
import json
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import pytest
import torch

from resmg_zoo.core.errors import EXIT_NONFINITE, NonFiniteLoss, ResmgError, UsageError
from resmg_zoo.core.tags import DEFAULT_TAG, dataset_identity
from resmg_zoo.data.datasets import _name_of
from resmg_zoo.train import progress
from resmg_zoo.train.checkpoint import rng_state, set_rng_state
from resmg_zoo.train.cli import OTHER_FLAGS, build_parser
from resmg_zoo.train.config import (
    DEFAULTS,
    RECIPE_FLAGS,
    RESUMABLE_OVERRIDES,
    RUN_SETTINGS,
    SETTING_FIELDS,
    RunOptions,
    TrainConfig,
    default_out,
    resolve_config,
)
from resmg_zoo.train.distributed import DistEnv
from resmg_zoo.train.recipes import RECIPES, Recipe, field_default, resolve_recipe, setting_fields, setting_of

CPU = torch.device("cpu")
NOT_SETTINGS = {"recipe", "record"}  # TrainConfig's fields that are no setting: the resolved recipe, the record
NOT_OVERRIDDEN = {"name", "momentum", "nesterov", "milestones", "lr_decay", "description"}  # Recipe's, no flag
# Given values the generic ones below would not do: a registered model, a recipe, KEY=VALUE words.
GIVEN = {
    "model": (["resnet18_sharedB"], "resnet18_sharedB"),
    "recipe": (["quick"], "quick"),
    "model_kwargs": (["widths=8,16,16,32"], {"widths": "8,16,16,32"}),
}


def _key(f: Field[Any]) -> str:
    return setting_of(f).key or f.name


def _settings() -> list[tuple[type, Field[Any]]]:
    return [(cls, f) for cls in (TrainConfig, Recipe, RunOptions) for f in fields(cls) if f in setting_fields(cls)]


def _actions() -> list[argparse.Action]:
    return [a for a in build_parser()._actions if a.dest != "help"]


def _given(action: argparse.Action, default: Any) -> tuple[list[str], Any]:
    """Words that give ``action`` a value other than ``default``, and the value they give."""
    flag = action.option_strings[0]
    if action.dest in GIVEN:
        words, value = GIVEN[action.dest]
        return [flag, *words], value
    if action.nargs == 0:
        return [flag], True
    if action.choices:
        value = next(c for c in action.choices if c != default)
        return [flag, str(value)], value
    if action.type in (int, float):
        return [flag, "8" if action.type is int else "0.25"], action.type("8" if action.type is int else "0.25")
    return [flag, f"given-{action.dest}"], f"given-{action.dest}"


def test_every_field_is_a_setting_or_known_not_to_be() -> None:
    """A field added without :func:`setting` has no flag: it must be one of the known exceptions."""
    assert {f.name for f in fields(TrainConfig) if f not in setting_fields(TrainConfig)} == NOT_SETTINGS
    assert {f.name for f in fields(Recipe) if f not in setting_fields(Recipe)} == NOT_OVERRIDDEN
    assert setting_fields(RunOptions) == list(fields(RunOptions))


def test_each_setting_has_exactly_one_flag_whose_dest_is_its_key_and_default_none() -> None:
    actions = _actions()
    for cls, f in _settings():
        key = _key(f)
        mine = [a for a in actions if a.dest == key]
        assert len(mine) == 1, (cls.__name__, f.name, [a.option_strings for a in mine])
        assert mine[0].option_strings == ["--" + key.replace("_", "-")], (f.name, mine[0].option_strings)
        assert mine[0].default is None, (f.name, mine[0].default)  # "not given", told from the default
        assert mine[0].required is False


def test_every_flag_is_a_setting_or_a_known_hand_written_one() -> None:
    keys = {_key(f) for _, f in _settings()}
    dests = [a.dest for a in _actions()]
    assert len(dests) == len(set(dests)), sorted(d for d in dests if dests.count(d) > 1)
    assert set(dests) - keys == set(OTHER_FLAGS)
    assert set(dests) == keys | set(OTHER_FLAGS)


def test_the_tables_are_the_fields() -> None:
    """``DEFAULTS``, ``RUN_SETTINGS``, the key ↔ field names and ``RECIPE_FLAGS`` are those of the fields,
    and ``config.json``'s keys are the settings' keys (``recipe``, not ``recipe_name``)."""
    train_fields = setting_fields(TrainConfig)
    assert {_key(f): field_default(f) for f in train_fields} == DEFAULTS
    assert RUN_SETTINGS == tuple(_key(f) for f in train_fields)
    assert SETTING_FIELDS == {_key(f): f.name for f in train_fields}
    assert SETTING_FIELDS["recipe"] == "recipe_name"
    assert RECIPE_FLAGS == tuple(f.name for f in setting_fields(Recipe))
    assert set(RESUMABLE_OVERRIDES) <= set(RECIPE_FLAGS)
    # what users rely on, pinned
    assert DEFAULTS["model"] == "preact_resnet18_sharedA" and DEFAULTS["dataset"] == "mnist"
    assert (DEFAULTS["recipe"], DEFAULTS["precision"], DEFAULTS["seed"], DEFAULTS["init_tag"]) == (
        "paper",
        "auto",
        0,
        DEFAULT_TAG,
    )
    recipe = RECIPES["paper"]
    saved = TrainConfig(recipe=recipe).to_json()
    assert list(saved)[: len(RUN_SETTINGS)] == list(RUN_SETTINGS) and "recipe_name" not in saved
    assert TrainConfig.from_json({}, recipe) == TrainConfig(recipe=recipe)  # an older run: the defaults


def test_the_help_of_each_flag_states_its_default() -> None:
    helps = {a.dest: a.help for a in _actions()}
    for cls, f in _settings():
        text = helps[_key(f)]
        if cls is Recipe:  # each recipe's value ("shown" where it is None: a rule)
            for recipe in RECIPES.values():
                value = getattr(recipe, f.name)
                assert (setting_of(f).shown if value is None else str(value)) in text, (f.name, recipe.name, text)
        else:
            assert text.endswith(f"(default: {setting_of(f).shown or field_default(f)})"), (f.name, text)
    assert helps["device"].endswith("(default: auto)")


def test_a_config_from_a_command_line_has_each_given_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting given a value other than its default: the TrainConfig, its recipe and the RunOptions
    built from the command line hold each one (``--resume`` is the next test's)."""
    monkeypatch.chdir(tmp_path)
    actions = {a.dest: a for a in _actions()}
    words: list[str] = []
    expected: list[tuple[type, Field[Any], Any]] = []
    for cls, f in _settings():
        if f.name == "resume":
            continue
        default = getattr(RECIPES["paper"], f.name) if cls is Recipe else field_default(f)
        given, value = _given(actions[_key(f)], default)
        if f.name == "run_dir":
            given, value = ["--out", "given-out"], Path("given-out")
        assert value != default, f.name
        words += given
        expected.append((cls, f, value))
    args = build_parser().parse_args(words)
    options = RunOptions.from_args(args)
    config = resolve_config(args, options.run_dir, CPU, DistEnv())
    held = {TrainConfig: config, Recipe: config.recipe, RunOptions: options}
    for cls, f, value in expected:
        assert getattr(held[cls], f.name) == value, (cls.__name__, f.name, getattr(held[cls], f.name), value)


def test_an_empty_command_line_is_the_defaults_and_a_resume_keeps_them(tmp_path: Path) -> None:
    """No flag: every field's default (precision ``auto`` resolved here). ``--resume`` takes the settings
    from ``config.json``: a setting given again must agree, a resumable recipe setting may change."""
    run_dir = tmp_path / "run"
    args = build_parser().parse_args(["--out", str(run_dir)])
    options = RunOptions.from_args(args)
    assert options == RunOptions(run_dir)
    config = resolve_config(args, run_dir, CPU, DistEnv())
    settings = {k: v for k, v in config.to_json().items() if k in RUN_SETTINGS}
    assert settings == {**DEFAULTS, "precision": config.precision} and config.precision in ("fp32", "bf16")
    assert config.recipe == resolve_recipe("paper", "mnist", DEFAULTS["model"], {})
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config.to_json()))

    def resumed(*words: str) -> TrainConfig:
        return resolve_config(build_parser().parse_args(["--resume", *words]), run_dir, CPU, DistEnv())

    assert resumed("--seed", "0", "--precision", "auto").to_json().items() >= settings.items()
    assert resumed("--lr", "0.05").recipe.lr == 0.05
    with pytest.raises(UsageError, match="seed"):
        resumed("--seed", "3")
    with pytest.raises(UsageError, match="batch_size"):
        resumed("--batch-size", "64")


def test_default_out_names_the_dataset_not_its_file() -> None:
    """A run on ``../shared/data/mnist.zip`` is named for mnist, as the dataset's name everywhere."""
    parse = build_parser().parse_args
    assert default_out(parse(["--dataset", "../shared/data/mnist.zip"])) == Path(
        "runs/preact_resnet18_sharedA-mnist-paper"
    )
    assert default_out(parse(["--dataset", "data/flowers/", "--model", "resnet18_sharedB", "--recipe", "quick"])) == (
        Path("runs/resnet18_sharedB-flowers-quick")
    )
    assert default_out(parse([])) == Path("runs/preact_resnet18_sharedA-mnist-paper")
    for path in ("../shared/data/mnist.zip", "data/flowers", "a/b.zip"):
        assert _name_of(Path(path)) == dataset_identity(path).name


def test_the_moved_pieces() -> None:
    """The non-finite-loss error is with the errors (exit 3), the RNG state with the checkpoint; the
    progress module shows progress only."""
    err = NonFiniteLoss(0, 4, Path("runs/x"))
    assert isinstance(err, ResmgError) and isinstance(err, RuntimeError) and err.exit_code == EXIT_NONFINITE == 3
    assert "epoch 1, step 5" in str(err) and "runs/x" in str(err)
    state = rng_state(CPU)
    first = torch.rand(4)
    set_rng_state(state, CPU)
    assert torch.equal(torch.rand(4), first)
    assert not {"NonFiniteLoss", "rng_state", "set_rng_state", "StopSignal"} & set(vars(progress))
