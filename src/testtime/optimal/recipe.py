"""Sweep recipes: one YAML file (policy, PRM, dataset, strategies, budgets), overridable with --set key=value.

Example (``recipes/arith-smollm2.yaml``)::

    dataset: arith
    limit: 60
    prm: arith-check
    n_max: 16
    strategies: [cot, majority, best_of_n, {name: beam, m: 4}, {name: dvts, m: 4}]

Pool strategies (majority, best_of_n) are run once at ``n_max``; their curves for every N <= n_max are
subsampled from that pool. Tree strategies run once per budget in ``budgets`` that is a multiple of M.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from testtime import settings as S
from testtime.config import OPTIONS, RunConfig
from testtime.errors import ConfigError
from testtime.search.base import Strategy, options_from
from testtime.search.registry import strategy_class

log = logging.getLogger(__name__)

# The run settings a recipe sets once for all its runs: RunConfig's fields of the same names, declared in
# testtime.settings (names, defaults, ranges, choices and help come from there), with a sweep's own default
# where it wants another. Every other strategy option is set per strategy entry (StrategySpec): those are
# the configs a recipe compares.
RECIPE_SETTINGS = ("dataset", "limit", "levels", "seed", "model", "prm", "max_tokens", "temperature", "top_p",
                   "fewshot", "system", "instruction", "fewshot_file", "max_depth", "step_max_tokens",
                   "terminate_on", "answer_grouping", "extraction", "out")
SWEEP_DEFAULTS: dict[str, Any] = {"prm": "arith-check", "out": "runs/sweep"}
SPEC_OPTIONS = tuple(name for name in OPTIONS if name not in RECIPE_SETTINGS)


def _declared_fields(names: tuple[str, ...], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """pydantic fields for RunConfig's settings ``names``, with RunConfig's types (``list[int] | None``)."""
    declared, hints = RunConfig.settings(), get_type_hints(RunConfig)
    return {name: declared[name].model_field(hints[name], (defaults or {}).get(name, dataclasses.MISSING))
            for name in names}


class _Spec(BaseModel):
    """A recipe's strategy entry: its name and the options that make its configs distinct (every strategy
    option a strategy's Options declares, except the recipe-wide ones in RECIPE_SETTINGS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            strategy_class(v)
        except ConfigError as e:
            raise ValueError(f"{v}: {e.message}") from None
        return v

    @model_validator(mode="after")
    def _options(self) -> _Spec:
        try:
            options = self.options  # the strategy's own options validate themselves
        except ConfigError as e:
            raise ValueError(e.render()) from None
        for name in SPEC_OPTIONS:
            # an option set on a strategy without it would silently do nothing
            if name in self.model_fields_set and not hasattr(options, name):
                raise ValueError(f"{name} is not an option of {self.name}")
        return self

    @property
    def cls(self) -> type[Strategy]:
        return strategy_class(self.name)

    @property
    def options(self) -> Any:
        return options_from(self.cls.Options, self)

    @property
    def label(self) -> str:
        return self.cls.label(self.options)


StrategySpec = create_model("StrategySpec", __base__=_Spec, __module__=__name__, __doc__=_Spec.__doc__,
                            **_declared_fields(SPEC_OPTIONS))


class Difficulty(BaseModel):
    model_config = ConfigDict(extra="forbid")

    easy: float = Field(0.5, ge=0.0, le=1.0)  # oracle pass@1 >= easy
    hard: float = Field(0.1, ge=0.0, le=1.0)  # oracle pass@1 < hard
    probe_n: int = Field(4, ge=1)  # samples the selector's difficulty probe draws (and scores) per problem

    @model_validator(mode="before")
    @classmethod
    def _dropped(cls, data: Any) -> Any:
        # quantiles (Snell et al.'s bins) was never read; recipes and sweep files that set it still load
        if isinstance(data, dict) and "quantiles" in data:
            data = {k: v for k, v in data.items() if k != "quantiles"}
            _warn_once("difficulty.quantiles is ignored (no quantile bins are made); remove it from the recipe")
        return data


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


_RunSettings = create_model("_RunSettings", __config__=ConfigDict(extra="forbid"), __module__=__name__,
                            **_declared_fields(RECIPE_SETTINGS, SWEEP_DEFAULTS))


class Recipe(_RunSettings):  # type: ignore[misc,valid-type]
    """A sweep: the run settings it shares with RunConfig (``_RunSettings``, from the declarations) and its own."""

    name: str = "sweep"
    # a named prompt form (policy.prompts.PROMPT_MODES): "chat" asks as ``testtime serve`` does (zero-shot,
    # the answer instruction as the system turn); it sets fewshot, system and instruction, which it must not
    # contradict. None: the settings as given (3 worked examples by default).
    prompt: str | None = None
    # Extra axes: sampling seeds (cells of several seeds are averaged per problem) and datasets (problems of
    # every dataset pooled into one sweep, one table). Default: [seed] and [dataset].
    seeds: list[S.SEED.model_field()[0]] | None = None  # type: ignore[valid-type]
    datasets: list[str] | None = None
    backend: str = "llamacpp"  # policy backend: llamacpp | vllm | hf | openai (policy.load_policy)
    policy_options: dict[str, Any] = Field(default_factory=dict)  # backend kwargs, e.g. base_urls, tensor_parallel_size
    executor: str = "local"  # local | ray: where the engine runs the problems
    address: str | None = None  # ray: cluster address (None starts a local Ray)
    actors: int | None = Field(None, ge=1)  # ray: number of actors (default: one per GPU, else 2)
    n_max: int = Field(16, ge=1)
    budgets: list[int] | None = None  # default: 1, 2, 4, ... n_max
    strategies: list[StrategySpec] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [StrategySpec(name="cot"), StrategySpec(name="best_of_n")])
    difficulty: Difficulty = Field(default_factory=Difficulty)
    holdout: float = Field(0.5, gt=0.0, lt=1.0)  # fraction of problems held out from calibration
    subsamples: int = Field(32, ge=1)  # random subsets per N for pooled curves (exact enumeration when small)

    @field_validator("strategies", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, list):
            return v  # not a list: pydantic's own error names the field
        return [{"name": s} if isinstance(s, str) else s for s in (v or [])]

    @field_validator("fewshot_file")
    @classmethod
    def _fewshot_file(cls, v: str | None) -> str | None:
        from testtime.datasets import load_fewshot_file

        if v is not None:
            load_fewshot_file(v)  # a DatasetError (a ValueError) names the file, the line and the field
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from testtime.policy import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown policy backend {v!r} (available: {', '.join(BACKENDS)})")
        return v

    @field_validator("executor")
    @classmethod
    def _executor(cls, v: str) -> str:
        if v not in ("local", "ray"):
            raise ValueError(f"unknown executor {v!r} (available: local, ray)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _prompt_mode(cls, data: Any) -> Any:
        from testtime.policy.prompts import PROMPT_MODES

        if not isinstance(data, dict) or data.get("prompt") is None:
            return data
        mode = PROMPT_MODES.get(data["prompt"])
        if mode is None:
            raise ValueError(f"prompt: unknown prompt form {data['prompt']!r} (available: {', '.join(PROMPT_MODES)})")
        for key, value in mode.items():
            if key in data and data[key] != value:
                raise ValueError(f"{key}: {data[key]!r} contradicts prompt: {data['prompt']} (which sets {value!r})")
        return {**data, **mode}

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.budgets is None:
            self.budgets = [2**i for i in range(self.n_max.bit_length()) if 2**i <= self.n_max]
        if any(b < 1 or b > self.n_max for b in self.budgets):
            raise ValueError(f"budgets must lie in [1, n_max={self.n_max}]")
        self.seeds = self.seeds or [self.seed]
        self.datasets = self.datasets or [self.dataset]
        scored = [s.name for s in self.strategies if s.cls.needs_scorer]
        if scored and not self.prm:
            raise ValueError(f"strategies {', '.join(scored)} need prm (a step scorer, e.g. arith-check)")
        return self

    def run_config(self, dataset: str, seed: int, spec: StrategySpec, n: int) -> RunConfig:  # type: ignore[valid-type]
        """The engine config of one sweep run: the recipe's settings, one strategy (its options) at one budget."""
        shared = {name: getattr(self, name) for name in RECIPE_SETTINGS}
        options = {name: getattr(spec, name) for name in SPEC_OPTIONS}
        return RunConfig(**{**shared, **options, "dataset": dataset, "seed": seed}, strategy=spec.name, n=n,
                         batch_sequences=max(64, 4 * n))


def _coerce(text: str) -> Any:
    """--set values are YAML scalars or flow collections: 16, 0.4, true, null, [1, 2], {name: beam}."""
    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a recipe dict (creating nested dicts as needed)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item}: expected key=value")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item}: {p} is not a mapping")
        node[parts[-1]] = _coerce(value)
    return data


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file (or the defaults when None), apply overrides, validate.

    Errors are one line naming the file and the field.
    """
    data: dict[str, Any] = {}
    where = str(path) if path else "recipe"
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no such recipe file") from None
        except UnicodeError as e:
            raise ValueError(f"{path}: not valid UTF-8 text ({e.reason} at byte {e.start})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            why = " ".join(str(getattr(e, "problem", None) or e).split())  # one line, whatever PyYAML said
            raise ValueError(f"{path}{line}: not valid YAML ({why})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a recipe is a mapping of settings")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "recipe"
        raise ValueError(f"{where}: field {field}: {err['msg']}") from None
