"""``RunConfig``: one run's settings, validated once, and its identity (the run id is its hash).

Every field is declared in ``testtime.settings`` (the run's own settings) or on a strategy's ``Options``
dataclass (the strategies' options): type, default, range or choices, help, and how it enters the identity
come from there, so the library, recipes, the CLI and the server agree. Neither the lifecycle
(``testtime.lifecycle``) nor the executors (``testtime.execution``) are imported here: both import this.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

from testtime import settings as S
from testtime.datasets import DatasetError, FewshotSet, load_fewshot_file
from testtime.errors import ConfigError
from testtime.policy.prompts import PromptConfig
from testtime.search.base import Strategy
from testtime.search.registry import OPTION_FIELDS, make_strategy, strategy_class
from testtime.search.selection import follow_scorer, scorer_aggregations, selection_of
from testtime.settings import MAX_SEED

# the run's warnings keep the logger name they had when RunConfig lived in the engine (users filter on it)
log = logging.getLogger("testtime.engine")

OPTIONS = S.strategy_option_settings()  # every strategy option, declared on its Options dataclass


def _option(name: str) -> Any:
    """A RunConfig field for a strategy option, as its Options dataclass declares it."""
    return OPTIONS[name].field()


@dataclass
class RunConfig:
    """A run's settings; see ``testtime.settings`` for each one's meaning, default and range. A test
    (tests/test_settings.py) holds that every declared setting and strategy option has its field here."""

    dataset: str = S.DATASET.field()
    strategy: str = S.STRATEGY.field()
    n: int = S.N.field()
    limit: int | None = S.LIMIT.field()
    levels: list[int] | None = S.LEVELS.field()
    seed: int = S.SEED.field()
    model: str | None = S.MODEL.field()
    out: str = S.OUT_DIR.field()
    max_tokens: int = S.MAX_TOKENS.field()
    temperature: float = S.TEMPERATURE.field()
    top_p: float = S.TOP_P.field()
    fewshot: int = S.FEWSHOT.field()
    system: str | None = S.SYSTEM.field()
    instruction: str | None = S.INSTRUCTION.field()
    fewshot_file: str | None = S.FEWSHOT_FILE.field()
    batch_sequences: int = S.BATCH_SEQUENCES.field()
    prm: str | None = S.PRM.field()
    # None follows the scorer (its default_selection, e.g. prm_mean_max for arith-check), resolved by
    # for_scorer when the run is built with its scorer; a value given is never overridden
    aggregation: str | None = _option("aggregation")
    selection: str | None = _option("selection")
    m: int = _option("m")
    max_depth: int = _option("max_depth")
    step_max_tokens: int = _option("step_max_tokens")
    rank_by: str = _option("rank_by")
    terminate_on: str = _option("terminate_on")
    beam_finish: str = _option("beam_finish")
    answer_grouping: str = S.ANSWER_GROUPING.field()
    window: int = _option("window")
    warmup: int = _option("warmup")
    keep: float = _option("keep")
    softmax_temperature: float = _option("softmax_temperature")
    extraction: str = S.EXTRACTION.field()

    def __post_init__(self) -> None:
        strategy_class(self.strategy)  # an unknown strategy first: it names the field strategy
        # every field by its declaration, the options of strategies other than this one's too: a template config
        # (the selector's) may hold them unused, and a bad value is refused wherever it is given
        S.check_declared(self)
        self._fewshot_set: FewshotSet | None = None  # read once here; travels with the config (Ray actors)
        if self.fewshot_file is not None:
            try:
                self._fewshot_set = load_fewshot_file(self.fewshot_file)
            except DatasetError as e:  # already names the file, the line and the field
                raise ConfigError("fewshot_file", message=str(e)) from None
        self.make_strategy()  # the strategy's options validate themselves, and N against them
        if not self.strategy_class.needs_scorer:
            self.prm = None  # a scorer spec means nothing to an unscored strategy

    @classmethod
    def settings(cls) -> dict[str, S.Setting]:
        """The declaration of each field."""
        return S.declared(cls)

    @property
    def strategy_class(self) -> type[Strategy]:
        return strategy_class(self.strategy)

    def make_strategy(self) -> Strategy:
        return make_strategy(self.strategy, self.n, self)

    @property
    def problems_per_call(self) -> int:
        """How many problems one backend call carries: ``batch_sequences`` over the strategy's budget."""
        return max(1, self.batch_sequences // max(1, self.strategy_class.effective_n(self.n)))

    def for_scorer(self, scorer: Any) -> RunConfig:
        """This config with the aggregation / selection it leaves unset taken from the scorer's declaration
        (``scorer``: a RewardModel or an ``execution.ScorerInfo``); one line of warning for an aggregation given
        that the scorer says its rewards do not support (it is measured anyway). Unscored strategies: as is."""
        if not self.strategy_class.needs_scorer:
            return self
        aggregation, selection = follow_scorer(self.aggregation, self.selection, scorer)
        supported = scorer_aggregations(scorer)
        if self.aggregation is not None and self.aggregation not in supported and selection_of(
                aggregation, selection).uses_scores:
            log.warning("aggregation %s: scorer %s declares no signal in it (supported: %s); reporting it anyway",
                        self.aggregation, getattr(scorer, "name", "?"), ", ".join(supported))
        if (aggregation, selection) == (self.aggregation, self.selection):
            return self
        return replace(self, aggregation=aggregation, selection=selection)

    def with_strategy(self, strategy: str, n: int, **changes: Any) -> RunConfig:
        """This config for another strategy and budget (a sweep's or the selector's run), validated."""
        return replace(self, strategy=strategy, n=n, **changes)

    def identity(self, model_id: str, scorer_name: str | None = None) -> dict[str, Any]:
        """What decides the results: the run id is its hash. Each setting enters as its declaration says
        (``settings.IN`` / ``UNLESS_DEFAULT`` / ``OUT``); only the strategy's own options are in it, so
        strategies keep the identity (and run id) they had before other strategies' options existed.

        The run's identity is that of ``for_scorer(its scorer)`` (``execute`` resolves it first); an
        aggregation / selection still unset here is taken as a scorer that declares nothing would give it
        (``prm_last_max``: the identity such runs had before scorers declared defaults)."""
        cls = self.strategy_class
        d = asdict(self)
        if cls.needs_scorer:
            d["aggregation"], d["selection"] = follow_scorer(self.aggregation, self.selection)
        d = S.identity_of(d, self.settings())
        # the few-shot file by its examples' content, not its path (an edit is a new run, a move is not);
        # unset, or unused with fewshot=0, it keeps the run ids from before the option existed
        if self._fewshot_set is not None and self.fewshot > 0:
            d["fewshot_examples"] = self._fewshot_set.digest
        d["model_id"] = model_id
        d["n"] = cls.effective_n(self.n)
        if cls.version > 1:  # version 1 is left out so unchanged strategies keep their run ids
            d["strategy_version"] = cls.version
        own = {f.name for f in dataclasses.fields(cls.Options)}
        for k in OPTION_FIELDS - own:
            d.pop(k, None)
        if cls.needs_scorer:
            d["prm"] = scorer_name or self.prm
        else:
            d.pop("prm")
        return d

    def prompt_config(self) -> PromptConfig:
        prompt = PromptConfig(fewshot=self.fewshot, system=self.system, examples=self._fewshot_set)
        return replace(prompt, instruction=self.instruction) if self.instruction is not None else prompt


def run_id_for(identity: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"{identity['dataset'].replace('/', '_')}-{identity['strategy']}-n{identity['n']}-{digest}"


__all__ = ["MAX_SEED", "OPTIONS", "RunConfig", "run_id_for"]
