"""One declaration per user-facing setting: its name, type, default, valid range or choices, help text, and
whether (and how) it enters a run's identity. Every front end is generated from these declarations:

* the library config (``config.RunConfig``: its fields' defaults and its ``__post_init__`` checks, errors
  a ``ConfigError`` naming the field, as vLLM's ``SamplingParams`` does),
* the recipe model (``optimal.recipe``: ``Recipe`` / ``StrategySpec`` fields and ``Recipe.run_config``),
* the CLI options (``Setting.option``: a Typer option with the type and help, the range in the help text;
  ``cli.options``),
* the server's request schema and defaults (``serve.schemas`` / ``serve.settings``),
* the probe's ``SamplingSetup``, the strategies' ``SearchContext`` and the policy's ``SamplingParams``.

A strategy's own options are declared on its ``Options`` dataclass (``option(...)`` fields, read back by
``declared(OptionsClass)``): adding an option there reaches recipes, the CLI and the server without more
code. Only a front end spells a setting its own way (``--max-tokens``, ``max_tokens:``, ``tts.budget``).

This module imports nothing heavy (the CLI builds its options from it at start-up); choices defined where
their values live (``extraction.EXTRACTIONS``) are looked up when first used.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from testtime.errors import ConfigError

# How a setting enters the run identity (``RunConfig.identity``; the run id is its hash):
IN = "in"  # always
UNLESS_DEFAULT = "unless_default"  # left out at its default: runs made before it was settable keep their ids
OUT = "out"  # where / how, not what (the results are the same either way)
IDENTITY_RULES = (IN, UNLESS_DEFAULT, OUT)

SETTING = "setting"  # the dataclass field metadata key that holds a field's Setting
MAX_SEED = 2**31 - 1  # sample i is drawn with seed + i: it stays a valid 32-bit sampler seed


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Setting:
    """One setting. ``choices``: a tuple, or ``"module:NAME"`` naming the tuple where the values are defined
    (looked up on first use). ``nullable``: None is a value (unset: something else decides)."""

    name: str
    type: type
    default: Any
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | str | None = None
    nullable: bool = False
    identity: str = IN

    def __post_init__(self) -> None:
        if self.identity not in IDENTITY_RULES:
            raise ValueError(f"setting {self.name}: identity {self.identity!r} is not one of {IDENTITY_RULES}")

    def valid_choices(self) -> tuple[str, ...] | None:
        if isinstance(self.choices, str):
            module, _, attr = self.choices.partition(":")
            return tuple(getattr(importlib.import_module(module), attr))
        return self.choices

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.ge, self.gt, self.le, self.lt))

    def range_text(self) -> str:
        """The valid range as errors and help say it: ``>= 1``, ``in [0, 2]``, ``in (0, 1]``."""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            return (f"in {'[' if self.ge is not None else '('}{_num(low)}, {_num(high)}"
                    f"{']' if self.le is not None else ')'}")
        if low is not None:
            return f"{'>=' if self.ge is not None else '>'} {_num(low)}"
        if high is not None:
            return f"{'<=' if self.le is not None else '<'} {_num(high)}"
        return ""

    def in_range(self, value: Any) -> bool:
        try:
            if isinstance(value, float) and math.isnan(value):
                return False
            return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                    and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        except TypeError:
            return False

    def check(self, value: Any, field: str | None = None) -> Any:
        """``value`` if valid; else a ``ConfigError`` naming the field (``field``: another spelling of it)."""
        name = field or self.name
        if value is None:
            if self.nullable:
                return value
            raise ConfigError(name, value, "must be set")
        choices = self.valid_choices()
        if choices is not None and value not in choices:
            raise ConfigError(name, value, f"unknown (valid: {', '.join(choices)})")
        if self.bounded and not self.in_range(value):
            raise ConfigError(name, value, f"must be {self.range_text()}")
        return value

    def with_name(self, name: str) -> Setting:
        return dataclasses.replace(self, name=name)

    def field(self) -> Any:
        """A dataclass field declared by this setting (its default; the setting in its metadata)."""
        return dataclasses.field(default=self.default, metadata={SETTING: self})

    # --- front ends ---------------------------------------------------------------------------------

    def annotation(self, optional: bool = False) -> Any:
        """A pydantic field type: the range as ``Field`` bounds (they show in the JSON schema), the choices
        as a ``Literal`` (the OpenAPI schema lists them); ``optional``: None also accepted (a request that
        leaves the setting to the server)."""
        from typing import Literal

        from pydantic import Field

        choices = self.valid_choices()
        base: Any = Literal[choices] if choices is not None else self.type  # type: ignore[valid-type]
        if self.nullable or optional:
            base = base | None
        return Annotated[base, Field(ge=self.ge, gt=self.gt, le=self.le, lt=self.lt, description=self.help)]

    def model_field(self, type: Any = None, default: Any = dataclasses.MISSING) -> tuple[Any, Any]:
        """``(annotation, default)`` for ``pydantic.create_model``, refusing what the library refuses: the range
        as ``Field`` bounds, the choices by a validator with the library's message (``'x': unknown (valid:
        ...)``; the model's error names the field). ``type``: the field's full type (``list[int] | None``;
        default the setting's own); ``default``: a front end's own (a sweep's ``out``)."""
        from pydantic import AfterValidator, Field

        base: Any = type if type is not None else (self.type | None if self.nullable else self.type)
        meta: list[Any] = [Field(ge=self.ge, gt=self.gt, le=self.le, lt=self.lt, description=self.help)]
        if self.choices is not None:
            meta.append(AfterValidator(self._choice))
        return Annotated[(base, *meta)], self.default if default is dataclasses.MISSING else default

    def _choice(self, value: Any) -> Any:
        try:
            return self.check(value)
        except ConfigError as e:
            raise ValueError(f"{value!r}: {e.message}") from None

    def option(self, *decls: str, help: str | None = None, default_shown: Any = dataclasses.MISSING) -> Any:
        """A Typer option (``Annotated[type, typer.Option(...)]``) with this setting's type and help, the range
        or choices in the help text. No click min / max: the library's check refuses a value out of range and
        the CLI spells its field as the flag (``--temperature -1.0: must be in [0, 2]``), open bounds included;
        ``decls``: the front end's own spelling (default ``--max-tokens``)."""
        import typer

        choices = self.valid_choices()
        text = help or self.help
        if choices is not None:
            text = f"{text} ({' | '.join(choices)})"
        elif self.bounded:
            text = f"{text} ({self.range_text()})"
        if default_shown is not dataclasses.MISSING:
            text = f"{text} [default: {default_shown}]"
        base: Any = self.type | None if self.nullable or default_shown is not dataclasses.MISSING else self.type
        return Annotated[base, typer.Option(*decls, help=text, show_default=default_shown is dataclasses.MISSING)]


def option(default: Any, help: str, *, type: type | None = None, **kw: Any) -> Any:
    """A strategy ``Options`` dataclass field declared as a setting (its name is the field's own)."""
    kind = type or (str if default is None else default.__class__)
    return dataclasses.field(default=default, metadata={SETTING: Setting("", kind, default, help, **kw)})


def declared(cls: Any) -> dict[str, Setting]:
    """The settings a dataclass declares through its fields (``option`` / ``Setting.field``), by name."""
    return {f.name: f.metadata[SETTING].with_name(f.name) for f in dataclasses.fields(cls) if SETTING in f.metadata}


def check_declared(obj: Any, skip: Iterable[str] = ()) -> None:
    """Check every declared field of a dataclass instance against its setting (``ConfigError``)."""
    skipped = set(skip)
    for name, s in declared(type(obj)).items():
        if name not in skipped:
            s.check(getattr(obj, name))


def options_settings(option_types: Iterable[type]) -> dict[str, Setting]:
    """Every option the given Options dataclasses declare, once per name (a name shared by several strategies,
    like ``m``, is one setting: the same declaration, inherited)."""
    out: dict[str, Setting] = {}
    for cls in option_types:
        for name, s in declared(cls).items():
            if name in out and out[name] != s:
                raise ValueError(f"option {name} is declared twice, differently ({cls.__name__})")
            out[name] = s
    return out


# --- the run's own settings (the strategies' options are on their Options) -----------------------------

DATASET = Setting("dataset", str, "arith", "arith, arith:N, math500, aime24, amc23, gsm8k, or a .jsonl")
STRATEGY = Setting("strategy", str, "majority", "the search strategy (search.registry)")
N = Setting("n", int, 8, "budget: samples per problem", ge=1)
LIMIT = Setting("limit", int, None, "first K problems", ge=0, nullable=True)
LEVELS = Setting("levels", list, None, "keep only these difficulty levels", nullable=True)
SEED = Setting("seed", int, 0, "problem selection (arith) and sampling seed", ge=0, le=MAX_SEED)
MODEL = Setting("model", str, None,
                "GGUF path or embedded model name (llamacpp), HF id or path (vllm, hf), served name (openai)",
                nullable=True, identity=OUT)
OUT_DIR = Setting("out", str, "runs", "output folder (holds the SQLite store)", identity=OUT)
MAX_TOKENS = Setting("max_tokens", int, 384, "max generated tokens per solution", ge=1)
# One range for every front end: [0, 2], the OpenAI API's (the server speaks it). No shipped recipe, table or
# test samples above 2 (it was [0, 100] in runs and recipes, [0, inf) in policies); beyond 2 a small model's
# sampling is noise.
TEMPERATURE = Setting("temperature", float, 0.7, "sampling temperature (cot is greedy)", ge=0.0, le=2.0)
TOP_P = Setting("top_p", float, 1.0, "nucleus sampling: the top-p share of probability mass (1: off)",
                gt=0.0, le=1.0, identity=UNLESS_DEFAULT)
FEWSHOT = Setting("fewshot", int, 3, "worked examples in the prompt", ge=0)
SYSTEM = Setting("system", str, None, "the policy's system turn (default: its chat template's)", nullable=True,
                 identity=UNLESS_DEFAULT)
INSTRUCTION = Setting("instruction", str, None,
                      "text before the question in the user turn (default: testtime's step-by-step instruction)",
                      nullable=True, identity=UNLESS_DEFAULT)
# by its examples' content, not its path (RunConfig.identity adds their digest)
FEWSHOT_FILE = Setting("fewshot_file", str, None,
                       'JSONL of worked examples {"question", "solution", "level" (optional)} used instead of the '
                       "built-in ones; fewshot says how many", nullable=True, identity=OUT)
BATCH_SEQUENCES = Setting("batch_sequences", int, 64, "sequences per backend call (problems x samples)", ge=1,
                          identity=OUT)
PRM = Setting("prm", str, None,
              "step scorer for PRM-guided strategies: arith-check, judge[:MODEL], oracle, hf:PATH, vllm:PATH, http:URL",
              nullable=True)
ANSWER_GROUPING = Setting("answer_grouping", str, "math",
                          "vote groups: math = equivalent answers, no answer never wins; string = normalized answer "
                          "strings, no answer is a group of its own (the paper's)",
                          choices="testtime.search.selection:GROUPINGS", identity=UNLESS_DEFAULT)
# how a final answer is read from an output: it changes grading and voting, not the generations, so runs
# differing only here replay the same samples from the store
EXTRACTION = Setting("extraction", str, "fallback",
                     "how final answers are read (strict: answer markers only; fallback: math-verify's extraction "
                     "when an output marks no answer)", choices="testtime.extraction:EXTRACTIONS")

RUN_SETTINGS: dict[str, Setting] = {s.name: s for s in (
    DATASET, STRATEGY, N, LIMIT, LEVELS, SEED, MODEL, OUT_DIR, MAX_TOKENS, TEMPERATURE, TOP_P, FEWSHOT, SYSTEM,
    INSTRUCTION, FEWSHOT_FILE, BATCH_SEQUENCES, PRM, ANSWER_GROUPING, EXTRACTION)}
# what decides a sample besides the prompt: the probe, the server and SearchContext share these
SAMPLING: tuple[Setting, ...] = (MAX_TOKENS, TEMPERATURE, TOP_P)
# what every confidence interval printed is drawn at (run, report, ...): one declaration, one option
CI = Setting("ci", float, 0.95, "confidence level of the accuracy intervals", gt=0.0, lt=1.0)


def strategy_option_settings() -> dict[str, Setting]:
    """Every strategy option, from the registered strategies' Options (imports the strategies)."""
    from testtime.search.registry import STRATEGIES

    return options_settings(cls.Options for cls in STRATEGIES.values())


def identity_of(values: dict[str, Any], settings: dict[str, Setting]) -> dict[str, Any]:
    """``values`` less what their declarations leave out of an identity (``OUT``; ``UNLESS_DEFAULT`` at its
    default); values without a declaration stay."""
    return {name: v for name, v in values.items() if name not in settings
            or not (settings[name].identity == OUT or (settings[name].identity == UNLESS_DEFAULT
                                                        and v == settings[name].default))}


__all__ = ["CI", "IDENTITY_RULES", "IN", "MAX_SEED", "MAX_TOKENS", "OUT", "RUN_SETTINGS", "SAMPLING", "SETTING",
           "TEMPERATURE", "TOP_P", "UNLESS_DEFAULT", "Setting", "check_declared", "declared", "identity_of", "option",
           "options_settings", "strategy_option_settings"]

