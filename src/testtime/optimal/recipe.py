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

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from testtime.engine import MAX_SEED, RunConfig
from testtime.errors import ConfigError
from testtime.extraction import DEFAULT_EXTRACTION, check_extraction
from testtime.search.adaptive import AdaptiveOptions
from testtime.search.base import Strategy, options_from
from testtime.search.beam import RebaseOptions
from testtime.search.deepconf import DeepConfOptions
from testtime.search.registry import strategy_class


class StrategySpec(BaseModel):
    """A recipe's strategy entry: its name and the options that make its configs distinct."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    m: int = 4  # tree searches only
    rank_by: str = "last"
    beam_finish: str = "sal"  # beam only: sal | authors (search.beam)
    window: int = AdaptiveOptions.window  # adaptive_majority only
    warmup: int = DeepConfOptions.warmup  # deepconf_online only
    keep: float = DeepConfOptions.keep  # deepconf_online only
    softmax_temperature: float = RebaseOptions.softmax_temperature  # rebase / particle_filter only

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            strategy_class(v)
        except ConfigError as e:
            raise ValueError(f"{v}: {e.message}") from None
        return v

    @model_validator(mode="after")
    def _options(self) -> StrategySpec:
        try:
            options = self.options  # the strategy's own options validate themselves
        except ConfigError as e:
            raise ValueError(e.render()) from None
        for name in ("beam_finish", "window", "warmup", "keep", "softmax_temperature"):
            # an option set away from its default on a strategy without it would silently do nothing
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


class Difficulty(BaseModel):
    model_config = ConfigDict(extra="forbid")

    easy: float = Field(0.5, ge=0.0, le=1.0)  # oracle pass@1 >= easy
    hard: float = Field(0.1, ge=0.0, le=1.0)  # oracle pass@1 < hard
    quantiles: int = Field(5, ge=1)  # Snell et al. style bins, reported beside the absolute ones
    probe_n: int = Field(4, ge=1)  # samples the selector's difficulty probe draws (and scores) per problem


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    dataset: str = "arith"
    limit: int | None = Field(None, ge=0)
    levels: list[int] | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)  # picks the problems (and, for arith, generates them)
    # Extra axes: sampling seeds (cells of several seeds are averaged per problem) and datasets (problems of
    # every dataset pooled into one sweep, one table). Default: [seed] and [dataset].
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = None
    datasets: list[str] | None = None
    model: str | None = None  # GGUF path / embedded name (llamacpp), HF id or path (vllm, hf), served name (openai)
    backend: str = "llamacpp"  # policy backend: llamacpp | vllm | hf | openai (policy.load_policy)
    policy_options: dict[str, Any] = Field(default_factory=dict)  # backend kwargs, e.g. base_urls, tensor_parallel_size
    executor: str = "local"  # local | ray: where the engine runs the problems
    address: str | None = None  # ray: cluster address (None starts a local Ray)
    actors: int | None = Field(None, ge=1)  # ray: number of actors (default: one per GPU, else 2)
    prm: str | None = "arith-check"
    n_max: int = Field(16, ge=1)
    budgets: list[int] | None = None  # default: 1, 2, 4, ... n_max
    strategies: list[StrategySpec] = Field(default_factory=lambda: [StrategySpec(name="cot"),
                                                                    StrategySpec(name="best_of_n")])
    difficulty: Difficulty = Field(default_factory=Difficulty)
    holdout: float = Field(0.5, gt=0.0, lt=1.0)  # fraction of problems held out from calibration
    subsamples: int = Field(32, ge=1)  # random subsets per N for pooled curves (exact enumeration when small)
    # the ranges RunConfig checks, here too so a bad recipe is refused before any model is loaded
    max_tokens: int = Field(384, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=100.0)
    fewshot: int = Field(3, ge=0)
    system: str | None = None  # the policy's system turn (None: the chat template's default)
    instruction: str | None = None  # text before the question in the user turn (None: testtime's; "" = none)
    fewshot_file: str | None = None  # a JSONL of worked examples used instead of the built-in ones
    max_depth: int = Field(40, ge=1)
    step_max_tokens: int = Field(256, ge=1)  # tree searches: a longer step is truncated and dropped
    terminate_on: str = "answer"  # tree searches: answer | boxed (search.tree.TERMINATE_ON)
    answer_grouping: str = "math"  # vote groups: math | string (search.selection.GROUPINGS)
    extraction: str = DEFAULT_EXTRACTION  # how final answers are read: strict | fallback (extraction.EXTRACTIONS)
    out: str = "runs/sweep"

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

    @field_validator("terminate_on", "answer_grouping")
    @classmethod
    def _one_of(cls, v: str, info: ValidationInfo) -> str:
        from testtime.search.selection import GROUPINGS
        from testtime.search.tree import TERMINATE_ON

        valid = {"terminate_on": TERMINATE_ON, "answer_grouping": GROUPINGS}[info.field_name]
        if v not in valid:
            raise ValueError(f"unknown {v!r} (valid: {', '.join(valid)})")
        return v

    @field_validator("extraction")
    @classmethod
    def _extraction(cls, v: str) -> str:
        try:
            return check_extraction(v)
        except ConfigError as e:
            raise ValueError(f"{v}: {e.message}") from None

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

    def run_config(self, dataset: str, seed: int, spec: StrategySpec, n: int) -> RunConfig:
        """The engine config of one sweep run: the recipe's settings, one strategy at one budget."""
        return RunConfig(
            dataset=dataset, strategy=spec.name, n=n, limit=self.limit, levels=self.levels, seed=seed,
            model=self.model, out=self.out, max_tokens=self.max_tokens, temperature=self.temperature,
            fewshot=self.fewshot, system=self.system, instruction=self.instruction, fewshot_file=self.fewshot_file,
            prm=self.prm, m=spec.m,
            rank_by=spec.rank_by, max_depth=self.max_depth, step_max_tokens=self.step_max_tokens,
            terminate_on=self.terminate_on, beam_finish=spec.beam_finish, answer_grouping=self.answer_grouping,
            window=spec.window, warmup=spec.warmup, keep=spec.keep, softmax_temperature=spec.softmax_temperature,
            extraction=self.extraction, batch_sequences=max(64, 4 * n),
        )


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
