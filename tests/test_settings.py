"""One declaration per setting (testtime.settings, the strategies' Options): every front end -- RunConfig,
the recipe model, the CLI's Typer options and the server's schema -- takes its names, defaults and ranges from
it; and the layers import downward only (no engine <-> execution cycle)."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest

from testtime import settings as S
from testtime.config import RunConfig
from testtime.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "testtime"


# --- the import graph -----------------------------------------------------------------------------------


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the testtime modules it imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    modules = {_module_of(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names)  # `from testtime import engine`
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def group(module: str) -> str:
    """A module's node in the layer graph: a package's modules are the package."""
    for pkg in ("testtime.execution",):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return module


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A path of imports from `start` to `goal` over the grouped graph, or None."""
    grouped: dict[str, set[str]] = {}
    for m, ts in graph.items():
        grouped.setdefault(group(m), set()).update(group(t) for t in ts if group(t) != group(m))
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for nxt in sorted(grouped.get(path[-1], ())):
            if nxt == goal:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*path, nxt])
    return None


def test_the_graph_sees_imports_in_functions_and_type_checking_blocks():
    graph = import_graph()
    assert "testtime.execution" in graph["testtime.engine"]  # run() wraps a policy in LocalExecutor
    assert "testtime.lifecycle" in graph["testtime.execution"]  # Executor.run is lifecycle.execute
    assert "testtime.reward" in graph["testtime.execution"]  # a function-level import (scorer_for)
    assert reaches(graph, "testtime.engine", "testtime.config") == ["testtime.engine", "testtime.config"]


def test_execution_never_reaches_engine_and_lifecycle_never_reaches_either():
    graph = import_graph()
    assert reaches(graph, "testtime.execution", "testtime.engine") is None
    for upper in ("testtime.engine", "testtime.execution"):
        assert reaches(graph, "testtime.lifecycle", upper) is None
        assert reaches(graph, "testtime.config", upper) is None


def test_a_cycle_coming_back_is_caught(tmp_path, monkeypatch):
    """The check above on a graph with the old edge back in: execution importing the engine."""
    graph = import_graph()
    graph["testtime.execution.ray"] = {*graph["testtime.execution.ray"], "testtime.engine"}
    assert reaches(graph, "testtime.execution", "testtime.engine") == ["testtime.execution", "testtime.engine"]


# --- RunConfig is the declarations ----------------------------------------------------------------------


def test_every_runconfig_field_is_declared_and_every_declaration_has_its_field():
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    declared = RunConfig.settings()
    assert set(fields) == set(declared)
    assert set(S.RUN_SETTINGS) | set(S.strategy_option_settings()) == set(declared)
    for name, f in fields.items():
        assert f.default == declared[name].default, name


def test_strategy_options_are_the_options_dataclasses_declarations():
    from testtime.search.registry import STRATEGIES

    for cls in STRATEGIES.values():
        for f in dataclasses.fields(cls.Options):
            assert RunConfig.settings()[f.name] == S.declared(cls.Options)[f.name]
            assert getattr(RunConfig(), f.name) == f.default


def outside(s: S.Setting) -> list[object]:
    """Values just outside the setting's range or choices."""
    out: list[object] = []
    step = 1 if s.type is int else 1e-9
    if s.ge is not None:
        out.append(s.type(s.ge - step))
    if s.gt is not None:
        out.append(s.type(s.gt))
    if s.le is not None:
        out.append(s.type(s.le + step) if s.type is int else s.le * (1 + 1e-9) + 1e-9)
    if s.lt is not None:
        out.append(s.type(s.lt))
    if s.valid_choices() is not None:
        out.append("no-such-choice")
    return out


def constrained() -> list[S.Setting]:
    return [s for s in RunConfig.settings().values() if s.bounded or s.valid_choices() is not None]


@pytest.mark.parametrize("setting", constrained(), ids=lambda s: s.name)
def test_runconfig_refuses_a_value_just_outside_naming_the_field(setting):
    for value in outside(setting):
        with pytest.raises(ConfigError) as e:
            RunConfig(**{setting.name: value})
        assert e.value.field == setting.name, (setting.name, value, str(e.value))


def test_one_temperature_range_everywhere():
    from testtime.policy.base import SamplingParams

    assert (S.TEMPERATURE.ge, S.TEMPERATURE.le) == (0.0, 2.0)
    RunConfig(temperature=2.0)
    SamplingParams(temperature=2.0)
    for make in (lambda t: RunConfig(temperature=t), lambda t: SamplingParams(temperature=t)):
        for bad in (2.01, -0.01, math.nan):
            with pytest.raises(ConfigError, match=r"temperature .*: must be in \[0, 2\]"):
                make(bad)


def test_identity_rules_are_data():
    """A setting dropped from the identity at its default keeps old run ids; a non-default enters it."""
    base = RunConfig(strategy="beam", n=8, prm="arith-check")
    ident = base.identity("m")
    own = {f.name for f in dataclasses.fields(base.strategy_class.Options)} | set(S.RUN_SETTINGS)
    dropped = {name for name, s in RunConfig.settings().items()
               if s.identity == S.OUT or (s.identity == S.UNLESS_DEFAULT and name in own)}
    assert dropped >= {"out", "model", "batch_sequences", "top_p", "beam_finish", "terminate_on", "system"}
    assert not dropped & set(ident)
    assert {"max_tokens", "temperature", "m", "rank_by", "seed"} <= set(ident)
    assert RunConfig(strategy="beam", n=8, prm="arith-check", top_p=0.9).identity("m")["top_p"] == 0.9


# --- the recipe model is the declarations (optimal.recipe) ------------------------------------------------


def _recipe_cases() -> list[tuple[str, str | None]]:
    """(setting, None) for a recipe-wide setting; (option, a strategy that has it) for a strategy entry's."""
    from testtime.optimal.recipe import RECIPE_SETTINGS, SPEC_OPTIONS
    from testtime.search.registry import STRATEGIES

    owner = {name: s for s, cls in STRATEGIES.items() for name in S.declared(cls.Options)}
    return [(name, None) for name in RECIPE_SETTINGS] + [(name, owner[name]) for name in SPEC_OPTIONS]


def _recipe_data(name: str, strategy: str | None, value: object) -> dict:
    return {name: value} if strategy is None else {"strategies": [{"name": strategy, name: value}]}


def test_recipe_and_strategy_entries_cover_every_setting_a_sweep_run_takes():
    from testtime.optimal.recipe import RECIPE_SETTINGS, SPEC_OPTIONS

    run_only = {"strategy", "n", "batch_sequences"}  # a sweep sets these per run
    assert set(RECIPE_SETTINGS) | set(SPEC_OPTIONS) == set(RunConfig.settings()) - run_only
    assert not set(RECIPE_SETTINGS) & set(SPEC_OPTIONS)


@pytest.mark.parametrize(("name", "strategy"), _recipe_cases(), ids=lambda v: v or "recipe")
def test_recipe_and_runconfig_share_names_defaults_and_ranges(name, strategy, tmp_path):
    import yaml

    from testtime.optimal.recipe import SWEEP_DEFAULTS, Recipe, StrategySpec, load_recipe

    setting = RunConfig.settings()[name]
    model = Recipe if strategy is None else StrategySpec
    field = model.model_fields[name]
    assert field.default == SWEEP_DEFAULTS.get(name, setting.default), name
    assert field.description == setting.help
    if name not in SWEEP_DEFAULTS:
        assert getattr(RunConfig(), name) == field.default
    for value in outside(setting):
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(_recipe_data(name, strategy, value)))
        where = name if strategy is None else f"strategies.0.{name}"
        with pytest.raises(ValueError, match=rf"^{path}: field {where}: ") as e:
            load_recipe(path)
        assert "\n" not in str(e.value)
        with pytest.raises(ConfigError) as ce:
            RunConfig(**({"strategy": strategy} if strategy else {}), **{name: value})
        assert ce.value.field == name, (name, value, str(ce.value))


# --- the CLI's options are the declarations (cli/options.py); the server's schema agrees ------------------

# the shared run settings each command takes, by its click command path
_CLI_SETTINGS = {("run",): (S.MAX_TOKENS, S.TEMPERATURE, S.TOP_P, S.FEWSHOT, S.SEED, S.CI),
                 ("report",): (S.CI,), ("demo",): (S.CI,), ("recalibrate",): (S.MAX_TOKENS, S.FEWSHOT),
                 ("prm", "label"): (S.MAX_TOKENS, S.TEMPERATURE, S.FEWSHOT), ("serve",): (S.MAX_TOKENS,)}


def _cli_params(*path: str) -> dict[str, object]:
    import typer

    from testtime.cli import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}


@pytest.mark.parametrize("path", list(_CLI_SETTINGS), ids=" ".join)
def test_cli_options_have_the_declared_names_defaults_and_ranges(path):
    params = _cli_params(*path)
    for s in _CLI_SETTINGS[path]:
        p = params[s.name]
        assert p.opts == ["--" + s.name.replace("_", "-")], (path, s.name, p.opts)
        assert p.default == s.default, (path, s.name, p.default)
        if s.name in RunConfig.settings():
            assert p.default == getattr(RunConfig(), s.name)
        assert s.range_text() in p.help, (path, s.name, p.help)  # the range shows; the library refuses


def test_server_defaults_and_request_schema_are_the_declarations():
    from testtime.serve.schemas import CompletionRequest
    from testtime.serve.settings import ServeConfig

    fields = CompletionRequest.model_fields
    for s in S.SAMPLING:
        assert getattr(ServeConfig, s.name) == s.default == _cli_params("run")[s.name].default
        meta = {k: getattr(m, k) for m in fields[s.name].metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
        assert meta == {k: v for k, v in (("ge", s.ge), ("gt", s.gt), ("le", s.le), ("lt", s.lt)) if v is not None}
    assert _cli_params("serve")["max_tokens"].default == ServeConfig.max_tokens


@pytest.mark.parametrize("setting", [S.MAX_TOKENS, S.TEMPERATURE, S.TOP_P, S.FEWSHOT, S.SEED, S.CI],
                         ids=lambda s: s.name)
def test_run_and_the_server_refuse_a_value_just_outside_naming_the_option(setting):
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from testtime.cli import app
    from testtime.serve.schemas import CompletionRequest

    flag = "--" + setting.name.replace("_", "-")
    for value in outside(setting):
        # refused before any model loads: the library's check, spelled as the flag, on one line
        result = CliRunner().invoke(app, ["run", flag, str(value), "--limit", "1"])
        assert result.exit_code == 2, (flag, value, result.output)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {flag} "), (flag, value, result.output)
        if setting in S.SAMPLING:
            with pytest.raises(ValidationError) as e:
                CompletionRequest(model="m", prompt="p", **{setting.name: value})
            assert [err["loc"][0] for err in e.value.errors()] == [setting.name]


def test_every_declared_strategy_option_is_a_run_flag_with_its_default():
    params = _cli_params("run")
    for name, s in S.strategy_option_settings().items():
        p = params[name]
        assert p.opts == ["--" + name.replace("_", "-")], (name, p.opts)
        # older options carry their default; newer ones are None = "the strategy's Options default", shown in help
        assert p.default == s.default or (p.default is None and f"[default: {s.default}]" in p.help), (name, p.default)


@pytest.mark.parametrize("command", ["report", "demo"])
def test_every_command_printing_intervals_takes_runs_ci(command):
    run_ci, ci = _cli_params("run")["ci"], _cli_params(command)["ci"]
    assert (run_ci.opts, run_ci.default, run_ci.help) == (ci.opts, ci.default, ci.help)


def test_an_option_declared_on_a_strategy_becomes_a_cli_flag_without_a_cli_edit(monkeypatch):
    import typer
    from typer.testing import CliRunner

    from testtime.cli.run import with_strategy_options

    declared = dict(S.strategy_option_settings())
    declared["lookahead"] = S.Setting("lookahead", int, 2, "beam: steps rolled out before ranking", ge=0)
    monkeypatch.setattr(S, "strategy_option_settings", lambda: declared)
    seen: dict[str, object] = {}

    @with_strategy_options
    def command(m: int = 4, **strategy_options: object) -> None:
        seen.update(strategy_options)

    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)  # a group: the command is named
    assert CliRunner().invoke(app, ["command", "--lookahead", "3", "--keep", "0.5"]).exit_code == 0
    assert seen["lookahead"] == 3 and seen["keep"] == 0.5 and seen["window"] is None  # unset: the strategy's
    assert "m" not in seen  # spelled by the command itself
    params = {p.name: p for p in typer.main.get_command(app).commands["command"].params}
    assert "(>= 0)" in params["lookahead"].help and "[default: 2]" in params["lookahead"].help
