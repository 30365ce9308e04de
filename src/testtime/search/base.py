"""What a strategy is (its traits and options) and what every strategy gets: the batched generator,
prompts, sampling settings and seeds; the helpers every strategy ends with."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from testtime.datasets import fewshot_for
from testtime.errors import ConfigError
from testtime.extraction import extract_answers
from testtime.policy.base import SamplingParams
from testtime.policy.prompts import PromptConfig, build_messages
from testtime.replay import CachedGenerator
from testtime.reward.base import RewardModel
from testtime.search.selection import (
    AGGREGATIONS,
    CONFIDENCE_RULES,
    RULES,
    Pool,
    Selection,
    all_selections,
    answer_groups,
    follow_scorer,
    group_index,
    selection_of,
)
from testtime.settings import (
    ANSWER_GROUPING,
    EXTRACTION,
    MAX_TOKENS,
    SEED,
    TEMPERATURE,
    TOP_P,
    check_declared,
    option,
)
from testtime.types import Candidate, Completion, Compute, Problem, Scoring, Trace


@dataclass
class SearchContext:
    generator: CachedGenerator
    prompt: PromptConfig = field(default_factory=PromptConfig)
    # the run's sampling settings (defaults and ranges: testtime.settings; CoT is greedy regardless)
    max_tokens: int = MAX_TOKENS.default  # per full solution
    temperature: float = TEMPERATURE.default
    top_p: float = TOP_P.default
    seed: int = SEED.default
    # The step scorer for PRM-guided strategies (a CachedScorer in runs); None for CoT / majority.
    scorer: RewardModel | None = None
    answer_grouping: str = ANSWER_GROUPING.default  # how answers form vote groups (selection.GROUPINGS)
    extraction: str = EXTRACTION.default  # how candidates' final answers are read (extraction.EXTRACTIONS)

    def answers(self, texts: Sequence[str]) -> list[str | None]:
        """The final answers of whole outputs under the run's extraction policy, in one batch; the
        grader grades exactly these, and voting groups them."""
        return extract_answers(texts, self.extraction)

    def require_scorer(self, strategy: str) -> RewardModel:
        if self.scorer is None:
            raise ConfigError("prm", message=f"strategy {strategy} needs a step scorer (e.g. arith-check)")
        return self.scorer

    def prompt_for(self, problem: Problem) -> str:
        # a served request brings its own prompt: raw text (completions) or a conversation (chat), which is
        # rendered with the policy's chat template as it is, never flattened and without the few-shot turns
        if "request_prompt" in problem.meta:
            return str(problem.meta["request_prompt"])
        if "request_messages" in problem.meta:
            return self.generator.policy.render_chat(list(problem.meta["request_messages"]))
        k = self.prompt.fewshot
        examples = fewshot_for(problem, k=k, examples=self.prompt.examples) if k else []
        messages = build_messages(problem, examples, self.prompt)
        return self.generator.policy.render_chat(messages)

    def problem_seed(self, problem: Problem) -> int:
        """Stable per (run seed, problem): a problem's samples do not depend on batch composition."""
        h = hashlib.sha256(f"{self.seed}:{problem.id}".encode()).digest()
        return int.from_bytes(h[:4], "little") & 0x3FFFFFFF

    def sampling(self, temperature: float | None = None, stop: tuple[str, ...] = ()) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            stop=stop,
        )

    @property
    def n_params(self) -> int:
        return self.generator.policy.n_params


# --- what a strategy is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NoOptions:
    """Options of a strategy that takes none."""


@dataclass(frozen=True)
class ScoredOptions:
    """Options of every PRM-scored strategy: which aggregation x selection gives the reported answer
    (every pair is reported anyway, in ``Trace.selections``). None follows the scorer: its declared
    ``default_selection`` (``selection.follow_scorer``); a value given is never overridden."""

    aggregation: str | None = option(
        None, "step rewards -> a candidate's score [default: the scorer's (arith-check: mean)]",
        choices=AGGREGATIONS, nullable=True)
    selection: str | None = option(
        None, "answer choice [default: the scorer's (prm_max)]", choices=RULES, nullable=True)

    def __post_init__(self) -> None:
        check_declared(self)  # every option of this class and its subclasses, by its declaration
        if self.selection in CONFIDENCE_RULES:  # step-level candidates carry no per-sample confidence
            raise ConfigError("selection", self.selection, "a PRM-scored strategy reports majority or a prm_* rule "
                              "(confidence selections are majority voting's)")

    def for_scorer(self, scorer: Any) -> ScoredOptions:
        """These options with what was left unset taken from the scorer's declaration."""
        aggregation, selection = follow_scorer(self.aggregation, self.selection, scorer)
        return replace(self, aggregation=aggregation, selection=selection)

    def choice_for(self, scorer: Any) -> Selection:
        """The selection that gives the reported answer with this scorer."""
        return selection_of(*follow_scorer(self.aggregation, self.selection, scorer))

    @property
    def choice(self) -> Selection:
        """The selection given (both options set; with either unset, ``choice_for(scorer)`` says)."""
        if self.aggregation is None or self.selection is None:
            raise ValueError("aggregation / selection follow the scorer: ask choice_for(scorer)")
        return selection_of(self.aggregation, self.selection)


def changed_options(options: Any, names: Sequence[str]) -> list[str]:
    """``["k=v", ...]`` for those of `names` whose value differs from its default: a label shows them, so two
    variants of a strategy are two configs, and at the defaults a label stays what it always was."""
    defaults = {f.name: f.default for f in fields(options)}
    return [f"{k}={getattr(options, k)}" for k in names if getattr(options, k) != defaults[k]]


def labelled(name: str, parts: Sequence[str]) -> str:
    return f"{name}({','.join(parts)})" if parts else name


def options_from(options_type: type, source: Any, **overrides: Any) -> Any:
    """An options object from any object carrying fields of the same names (a RunConfig, a recipe's
    strategy entry; None: none) and `overrides`; fields neither gives keep their defaults."""
    values = {f.name: getattr(source, f.name) for f in fields(options_type) if hasattr(source, f.name)}
    return options_type(**{**values, **overrides})


@dataclass
class Strategy(ABC):
    """A search strategy: advances all given problems together and returns one Trace per problem.

    Its traits live on the class, so the rest of testtime asks the class, never the name:

    * ``needs_scorer``: takes a step scorer (``prm``); ``is_tree``: searches over steps;
    * ``pooled``: its curve for every N <= N_max is subsampled from one N_max pool (sweeps run it once);
    * ``from_paper``: one of Liu et al. 2025's strategies (the paper's config space); every concrete
      strategy declares it on its own class;
    * ``Options``: its options dataclass (fields named as ``RunConfig``'s), validated in ``__post_init__``;
    * ``effective_n`` / ``check_budget`` / ``sweep_budgets``: what its budget N means and allows.
    """

    budget: int = 1
    options: Any = None  # an instance of the class's Options (None: its defaults)

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    needs_scorer: ClassVar[bool] = False
    is_tree: ClassVar[bool] = False
    pooled: ClassVar[bool] = False
    from_paper: ClassVar[bool]  # no default: each strategy says
    # Bumped when a strategy's procedure changes what it returns: results stored under the old
    # procedure must not replay as the new one's (the run identity carries it from 2 on).
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, not {type(self.options).__name__}")
        self.budget = self.effective_n(self.budget)
        self.check_budget(self.budget, self.options)

    @classmethod
    def effective_n(cls, n: int) -> int:
        """The budget a requested N becomes (CoT: always 1)."""
        return n

    @classmethod
    def check_budget(cls, n: int, options: Any) -> None:
        if n < 1:
            raise ConfigError("n", n, "must be >= 1")

    @classmethod
    def sweep_budgets(cls, budgets: Sequence[int], options: Any) -> list[int]:
        """The budgets of a sweep this strategy is run at (pooled ones: subsampled from the N_max pool)."""
        return sorted({cls.effective_n(b) for b in budgets})

    @classmethod
    def label(cls, options: Any) -> str:
        """Its name in sweep configs and reports, with the hyperparameters that make it distinct."""
        return cls.name

    @abstractmethod
    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        """One Trace per problem, in order; every problem advanced in the same batched calls."""


def split_steps(text: str) -> list[str]:
    """A solution's steps: each ends at a blank line, kept so that "".join(steps) == text.

    Whitespace-only pieces (extra blank lines) stay attached to a neighbouring step instead of
    being dropped, so a stored candidate is exactly what was generated.
    """
    parts = text.split("\n\n")
    pieces = [p + "\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    steps: list[str] = []
    lead = ""
    for piece in pieces:
        if not piece.strip():
            if steps:
                steps[-1] += piece
            else:
                lead += piece
            continue
        steps.append(lead + piece)
        lead = ""
    return steps or ([text] if text else [])


def compute_of(completions: list[Completion], n_params: int) -> Compute:
    """Token and FLOP accounting for one problem's completions (FLOPs = 2 x params x tokens)."""
    c = Compute()
    for x in completions:
        c.prompt_tokens += x.prompt_tokens
        c.cached_prompt_tokens += x.cached_prompt_tokens
        c.generated_tokens += x.generated_tokens
        c.new_generations += 0 if x.from_store else 1
        c.cached_generations += 1 if x.from_store else 0
    evaluated = c.prompt_tokens - c.cached_prompt_tokens + c.generated_tokens
    c.policy_flops = 2.0 * n_params * evaluated
    return c


def candidate_of(completion: Completion, answer: str | None) -> Candidate:
    return Candidate(
        steps=split_steps(completion.text),
        answer=answer,
        finish_reason=completion.finish_reason,
        generated_tokens=completion.generated_tokens,
        confidence=completion.confidence,
    )


def confidences_of(candidates: Sequence[Candidate]) -> list[float | None]:
    """Each candidate's confidence as selections use it: its sample's lowest-group confidence."""
    return [None if c.confidence is None else c.confidence.lowest_group for c in candidates]


def scored_trace(
    problem: Problem,
    strategy: Strategy,
    candidates: list[Candidate],
    rewards: list[list[float]],
    scorer: RewardModel,
    compute: Compute,
    rewards_from_store: int = 0,
    grouping: str = "math",
    **extra: Any,
) -> Trace:
    """The end of every PRM-guided strategy: answers grouped once (math equivalence), every selection
    chosen from the same pool, the trace's answer the one its options ask for."""
    answers = [c.answer for c in candidates]
    pool = Pool.of(group_index(answer_groups(answers, problem.kind, grouping), len(answers)), rewards,
                   confidences_of(candidates))
    picks = all_selections(answers, rewards, pool=pool)
    choice: Selection = strategy.options.choice_for(scorer)  # options left unset follow the scorer
    return Trace(
        problem.id, strategy.name, strategy.budget, candidates, picks[choice.name], compute=compute,
        answer_groups=list(pool.group_of), selections=picks,
        scoring=Scoring(scorer.name, bool(scorer.outcome_only), rewards, choice.name, rewards_from_store),
        **extra,
    )
