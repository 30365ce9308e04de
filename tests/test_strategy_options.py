"""The newer strategies' options (window, warmup, keep, softmax_temperature) reach them from every front end:
RunConfig, a recipe's strategy entry, `testtime run`; and they name distinct configs and runs."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from testtime.cli import app
from testtime.config import RunConfig
from testtime.errors import ConfigError
from testtime.optimal.recipe import StrategySpec, load_recipe
from testtime.search.adaptive import AdaptiveOptions
from testtime.search.beam import RebaseOptions
from testtime.search.deepconf import DeepConfOptions

NEW_OPTIONS = {"window": AdaptiveOptions.window, "warmup": DeepConfOptions.warmup, "keep": DeepConfOptions.keep,
               "softmax_temperature": RebaseOptions.softmax_temperature}


@pytest.mark.parametrize(("strategy", "field", "value"), [
    ("adaptive_majority", "window", 8), ("deepconf_online", "warmup", 8), ("deepconf_online", "keep", 0.5),
    ("particle_filter", "softmax_temperature", 0.5), ("rebase", "softmax_temperature", 0.5),
])
def test_run_config_carries_each_option_to_its_strategy_and_identity(strategy, field, value):
    prm = "arith-check"
    base = RunConfig(strategy=strategy, n=8, prm=prm)
    changed = RunConfig(strategy=strategy, n=8, prm=prm, **{field: value})
    assert getattr(changed.make_strategy().options, field) == value
    assert field not in base.identity("p")  # at its default: the run id it had before the option was settable
    assert changed.identity("p")[field] == value and changed.identity("p") != base.identity("p")
    # a strategy without the option keeps its identity whatever the option says
    assert RunConfig(strategy="majority", n=8, **{field: value}).identity("p") == RunConfig(
        strategy="majority", n=8).identity("p")


@pytest.mark.parametrize(("field", "value"), [("window", 0), ("warmup", 0), ("keep", 0.0), ("keep", 1.5),
                                              ("softmax_temperature", 0.0)])
def test_run_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError) as e:
        RunConfig(strategy="majority", n=4, **{field: value})  # checked even where the strategy ignores it
    assert e.value.field == field


def test_labels_show_non_default_options_only():
    assert StrategySpec(name="deepconf_online").label == "deepconf_online"
    assert StrategySpec(name="deepconf_online", warmup=8, keep=0.5).label == "deepconf_online(warmup=8,keep=0.5)"
    assert StrategySpec(name="adaptive_majority", window=2).label == "adaptive_majority(window=2)"
    assert StrategySpec(name="particle_filter").label == "particle_filter"
    particle = StrategySpec(name="particle_filter", softmax_temperature=1.0)
    assert particle.label == "particle_filter(softmax_temperature=1.0)"
    assert StrategySpec(name="rebase", m=2).label == "rebase(m=2)"
    assert StrategySpec(name="rebase", m=2, softmax_temperature=0.5).label == "rebase(m=2,softmax_temperature=0.5)"


def test_recipe_entries_set_the_options_and_refuse_them_elsewhere(tmp_path):
    recipe = load_recipe(None, ["strategies=[cot, {name: deepconf_online, warmup: 2, keep: 0.5}, "
                                "{name: particle_filter, softmax_temperature: 0.3}]", "prm=arith-check"])
    deep, particle = recipe.strategies[1], recipe.strategies[2]
    made = recipe.run_config("arith", 0, deep, 8).make_strategy().options
    assert (made.warmup, made.keep) == (2, 0.5)
    assert recipe.run_config("arith", 0, particle, 8).make_strategy().options.softmax_temperature == 0.3
    for entry, field in (("{name: majority, warmup: 2}", "warmup"), ("{name: beam, window: 2}", "window"),
                         ("{name: dvts, beam_finish: authors}", "beam_finish")):
        with pytest.raises(ValueError, match=f"{field} is not an option of"):
            load_recipe(None, [f"strategies=[{entry}]", "prm=arith-check"])


def test_cli_run_flags_reach_the_config_and_their_help_states_the_true_defaults():
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--strategy", "deepconf_online", "--warmup", "0", "--limit", "1"])
    assert res.exit_code != 0 and "warmup" in res.output
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    helps = {p.name: p.help or "" for p in run.params}
    for field, default in NEW_OPTIONS.items():
        # the CLI does not import the strategies (fast start), so its help repeats their defaults: keep them true
        shown = re.search(r"\[default: ([0-9.]+)\]", helps[field])
        assert shown and float(shown.group(1)) == default, field
