"""The one run lifecycle: start -> batches -> record -> finish, whatever executes the batches.

``execute(executor, config, problems)`` resolves the strategy and its scorer, derives the run id from
everything that decides the results (so rerunning the same command lands on the same run), skips the
problems the store already holds a finished result for, asks the executor to solve the rest
(``testtime.execution``: this process, or Ray actors), records every batch as it arrives, and saves the
summary. ``run(config, policy)`` is the same for code that holds a policy.

Failures. When a remote backend gives up on some requests (a ``ProblemFailure``: ``GenerationFailed``
after its retries, or a ``RequestFailed`` from an HTTP scorer), the batch is rerun one problem at a time
-- what was stored replays at no cost -- and a problem that still fails gets a *failed* result: a trace
with no candidates, ``correct=False`` and ``error`` set, recorded in the store like any other. Accuracy
counts a failed problem as wrong (it is never left out, so accuracy is never inflated) and the summary
reports ``failed`` and ``failures`` (problem id -> error) beside it. A rerun retries failed problems. Any
other exception is a bug and propagates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testtime.datasets import DatasetError, FewshotSet, load_dataset, load_fewshot_file
from testtime.errors import ConfigError, ProblemFailure, one_line
from testtime.extraction import DEFAULT_EXTRACTION, check_extraction
from testtime.grading import grade_many
from testtime.policy.base import Policy
from testtime.policy.prompts import PromptConfig
from testtime.replay import CachedGenerator, CachedScorer
from testtime.reward.base import RewardModel
from testtime.search.adaptive import AdaptiveOptions
from testtime.search.base import SearchContext, Strategy
from testtime.search.beam import BEAM_FINISH, RebaseOptions
from testtime.search.deepconf import DeepConfOptions
from testtime.search.registry import OPTION_FIELDS, make_strategy, strategy_class
from testtime.search.selection import GROUPINGS, follow_scorer, scorer_aggregations, selection_of
from testtime.search.tree import TERMINATE_ON
from testtime.store import Store, StoreLike
from testtime.types import Compute, Problem, Trace

if TYPE_CHECKING:
    from testtime.execution import Executor

ProgressFn = Callable[[int, int], None]
log = logging.getLogger(__name__)

MAX_SEED = 2**31 - 1  # sample i is drawn with seed + i: it stays a valid 32-bit sampler seed


@dataclass
class RunConfig:
    dataset: str = "arith"
    strategy: str = "majority"
    n: int = 8
    limit: int | None = None
    levels: list[int] | None = None
    seed: int = 0
    model: str | None = None  # GGUF path or embedded model name
    out: str = "runs"
    max_tokens: int = 384
    temperature: float = 0.7
    top_p: float = 1.0  # nucleus sampling (1.0: off)
    fewshot: int = 3
    system: str | None = None  # the policy's system turn (None: the chat template's own default)
    instruction: str | None = None  # the user turn's text before the question (None: testtime's default)
    fewshot_file: str | None = None  # a JSONL of worked examples used instead of the built-in ones
    batch_sequences: int = 64  # sequences per backend call (problems x samples)
    prm: str | None = None  # scorer spec for PRM-guided strategies (reward.load_scorer)
    # how step rewards become a candidate score, and how the answer is chosen (every pair is reported anyway);
    # None follows the scorer (its default_selection, e.g. prm_mean_max for arith-check), resolved by
    # for_scorer when the run is built with its scorer; a value given is never overridden
    aggregation: str | None = None
    selection: str | None = None
    m: int = 4  # tree searches: beam width / DVTS subtree width
    max_depth: int = 40  # tree searches: steps per path at most
    step_max_tokens: int = 256  # tree searches: a step longer than this is truncated and dropped
    rank_by: str = "last"  # tree searches: aggregation of path rewards that ranks nodes
    terminate_on: str = "answer"  # tree searches: a path also ends at a stated answer | only at a \boxed step
    beam_finish: str = "sal"  # beam: which finished paths count (sal | authors: search.beam)
    answer_grouping: str = "math"  # how answers form vote groups: math | string (search.selection.GROUPINGS)
    # the newer strategies' own options (defaults: their Options'); each is checked by its strategy's Options
    window: int = AdaptiveOptions.window  # adaptive_majority: samples per round
    warmup: int = DeepConfOptions.warmup  # deepconf_online: full samples that set the stopping threshold
    keep: float = DeepConfOptions.keep  # deepconf_online: share of the warm-up above the threshold
    softmax_temperature: float = RebaseOptions.softmax_temperature  # rebase / particle_filter: over rewards
    # how a final answer is read from an output (extraction.EXTRACTIONS): it changes grading and voting,
    # not the generations, so runs differing only here replay the same samples from the store
    extraction: str = DEFAULT_EXTRACTION

    def __post_init__(self) -> None:
        cls = strategy_class(self.strategy)
        if self.n < 1:
            raise ConfigError("n", self.n, "must be >= 1")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("limit", self.limit, "must be >= 0")
        if self.max_tokens < 1:
            raise ConfigError("max_tokens", self.max_tokens, "must be >= 1")
        if not 0.0 <= self.temperature <= 100.0:
            raise ConfigError("temperature", self.temperature, "must be in [0, 100]")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("top_p", self.top_p, "must be in (0, 1]")
        if self.fewshot < 0:
            raise ConfigError("fewshot", self.fewshot, "must be >= 0")
        if self.batch_sequences < 1:
            raise ConfigError("batch_sequences", self.batch_sequences, "must be >= 1")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError("seed", self.seed, f"must be in [0, {MAX_SEED}]")
        for name in ("m", "max_depth", "step_max_tokens"):  # checked even where this strategy ignores them
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")
        if self.answer_grouping not in GROUPINGS:
            raise ConfigError("answer_grouping", self.answer_grouping, f"unknown (valid: {', '.join(GROUPINGS)})")
        # checked here too, not only by the tree options: a template config (the selector's) may hold them unused
        for name, valid in (("terminate_on", TERMINATE_ON), ("beam_finish", BEAM_FINISH)):
            if getattr(self, name) not in valid:
                raise ConfigError(name, getattr(self, name), f"unknown (valid: {', '.join(valid)})")
        check_extraction(self.extraction)
        # the newer strategies' options, by their own Options (whose errors name the field), whatever the strategy
        AdaptiveOptions(window=self.window)
        DeepConfOptions(warmup=self.warmup, keep=self.keep)
        RebaseOptions(softmax_temperature=self.softmax_temperature)
        self._fewshot_set: FewshotSet | None = None  # read once here; travels with the config (Ray actors)
        if self.fewshot_file is not None:
            try:
                self._fewshot_set = load_fewshot_file(self.fewshot_file)
            except DatasetError as e:  # already names the file, the line and the field
                raise ConfigError("fewshot_file", message=str(e)) from None
        self.make_strategy()  # the strategy's options validate themselves, and N against them
        if not cls.needs_scorer:
            self.prm = None  # a scorer spec means nothing to an unscored strategy

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
        """What decides the results: the run id is its hash. Only the strategy's own options are in it, so
        strategies keep the identity (and run id) they had before other strategies' options existed.

        The run's identity is that of ``for_scorer(its scorer)`` (``execute`` resolves it first); an
        aggregation / selection still unset here is taken as a scorer that declares nothing would give it
        (``prm_last_max``: the identity such runs had before scorers declared defaults)."""
        cls = self.strategy_class
        d = asdict(self)
        if cls.needs_scorer:
            d["aggregation"], d["selection"] = follow_scorer(self.aggregation, self.selection)
        for k in ("out", "model", "batch_sequences"):  # where/how, not what: same results either way
            d.pop(k)
        for k in ("system", "instruction"):  # unset prompt options keep the run ids they had before they existed
            if d[k] is None:
                d.pop(k)
        for k, default in (("terminate_on", "answer"), ("beam_finish", "sal"), ("answer_grouping", "math"),
                           ("window", AdaptiveOptions.window), ("warmup", DeepConfOptions.warmup),
                           ("keep", DeepConfOptions.keep),
                           ("softmax_temperature", RebaseOptions.softmax_temperature)):
            # likewise, at their defaults (runs made before an option was settable keep their run ids)
            if d[k] == default:
                d.pop(k)
        if d["top_p"] == 1.0:  # likewise the default top_p
            d.pop("top_p")
        # the few-shot file by its examples' content, not its path (an edit is a new run, a move is not);
        # unset, or unused with fewshot=0, it keeps the run ids from before the option existed
        d.pop("fewshot_file")
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


@dataclass
class ProblemResult:
    problem: Problem
    trace: Trace
    sample_correct: list[bool]  # each candidate graded against the reference

    @property
    def pass1(self) -> float:
        return sum(self.sample_correct) / len(self.sample_correct) if self.sample_correct else 0.0

    @property
    def failed(self) -> bool:
        return self.trace.failed

    @property
    def error(self) -> str | None:
        return self.trace.error


@dataclass
class RunResult:
    run_id: str
    config: RunConfig
    results: list[ProblemResult]
    wall_s: float
    compute: Compute = field(default_factory=Compute)
    store_path: str = ""

    def summary(self) -> dict[str, Any]:
        n = len(self.results)
        # a failed problem counts as wrong: accuracy is over every problem, `failed` says how many
        acc = sum(bool(r.trace.correct) for r in self.results) / n if n else 0.0
        c = self.compute
        cls = self.config.strategy_class
        ok = [r for r in self.results if not r.failed]
        extra: dict[str, Any] = {}
        # every selection some problem reported (PRM-scored pools; confidence votes over sampled pools)
        names = list(dict.fromkeys(k for r in ok for k in r.trace.selections_correct))
        if names:
            extra["selections"] = {k: sum(bool(r.trace.selections_correct.get(k)) for r in self.results) / n
                                   for k in names}
        scoring = ok[0].trace.scoring if ok else None
        if scoring is not None:
            extra.update({
                "prm": scoring.scorer,
                # an oracle looked at the reference: its accuracy is an upper bound (pass@N), not a result
                "oracle_upper_bound": scoring.oracle,
                "selection": scoring.selection,
                "prm_tokens": c.prm_tokens,
                "prm_flops": c.prm_flops,
            })
        used = [r.trace.meta["samples_used"] for r in ok if "samples_used" in r.trace.meta]
        if used:  # strategies that stop early (adaptive_majority): the samples actually drawn, of N per problem
            extra["samples_used"] = sum(used)
            extra["mean_samples_used"] = sum(used) / len(used)
        return {
            "run_id": self.run_id,
            "dataset": self.config.dataset,
            "strategy": self.config.strategy,
            "n": cls.effective_n(self.config.n),
            **({"m": self.config.m} if cls.is_tree else {}),
            "n_problems": n,
            "accuracy": acc,
            "failed": n - len(ok),
            "failures": {r.problem.id: r.error for r in self.results if r.failed},
            "pass@1": sum(r.pass1 for r in self.results) / n if n else 0.0,
            "pass@n": sum(any(r.sample_correct) for r in self.results) / n if n else 0.0,
            "generated_tokens": c.generated_tokens,
            "prompt_tokens": c.prompt_tokens,
            "cached_prompt_tokens": c.cached_prompt_tokens,
            # the same split under the names the search issue reports: evaluated by the backend vs
            # served from its prefix / KV cache
            "prompt_tokens_evaluated": c.prompt_tokens - c.cached_prompt_tokens,
            "prompt_tokens_cached": c.cached_prompt_tokens,
            "mean_generated_tokens": c.generated_tokens / n if n else 0.0,
            "flops": c.flops,  # what the run did: prompt tokens served from the prefix cache cost nothing
            "flops_uncached": c.flops_uncached,  # as papers count: every sample pays its whole prompt
            "wall_s": self.wall_s,
            "new_generations": c.new_generations,
            "cached_generations": c.cached_generations,
            "store": self.store_path,
            **extra,
        }

    def by_level(self) -> dict[Any, dict[str, float]]:
        groups: dict[Any, list[ProblemResult]] = defaultdict(list)
        for r in self.results:
            groups[r.problem.level].append(r)
        out = {}
        for level in sorted(groups, key=_level_order):
            rs = groups[level]
            out[level] = {
                "n_problems": len(rs),
                "accuracy": sum(bool(r.trace.correct) for r in rs) / len(rs),
                "pass@1": sum(r.pass1 for r in rs) / len(rs),
                "mean_generated_tokens": sum(r.trace.compute.generated_tokens for r in rs) / len(rs),
                "flops": sum(r.trace.compute.flops for r in rs),
            }
        return out


def _level_order(level: Any) -> tuple:
    """Numeric levels in numeric order (2 before 10), then strings, then None."""
    if isinstance(level, (int, float)):
        return (0, level, "")
    return (1 if level is not None else 2, 0, str(level))


def failed_trace(problem: Problem, strategy: Strategy, err: BaseException) -> Trace:
    """The result recorded for a problem whose remote calls failed: no candidates, wrong, the error."""
    return Trace(problem.id, strategy.name, strategy.budget, [], None, correct=False,
                 error=f"{type(err).__name__}: {one_line(err)}")


def grade_trace(problem: Problem, trace: Trace) -> ProblemResult:
    """Grade the candidates, the chosen answer and every alternative selection in one batch."""
    if trace.failed:
        trace.correct = False
        return ProblemResult(problem, trace, [])
    picks = trace.selections
    answers = [c.answer for c in trace.candidates] + [trace.answer] + list(picks.values())
    graded = grade_many([(a, problem.answer) for a in answers], kind=problem.kind)
    k = len(trace.candidates)
    verdicts, trace.correct = graded[:k], graded[k]
    trace.selections_correct = dict(zip(picks, graded[k + 1 :], strict=True))
    for cand, ok in zip(trace.candidates, verdicts, strict=True):
        cand.correct = ok
    return ProblemResult(problem, trace, verdicts)


class _Ledger:
    """The store as the generator sees it, remembering which generations this batch wrote: when a failed
    batch is rerun one problem at a time, its samples replay from the store but were generated in this
    run, so they are counted as new (once), not as replayed."""

    def __init__(self, store: StoreLike):
        self.store = store
        self.written: list[str] = []
        self.as_new: set[str] = set()

    def get_generations(self, keys: Any) -> dict[str, Any]:
        found = self.store.get_generations(keys)
        for k in self.as_new.intersection(found):
            found[k] = dataclasses.replace(found[k], from_store=False)
            self.as_new.discard(k)
        return found

    def put_generations(self, rows: list[tuple]) -> None:
        self.store.put_generations(rows)
        self.written.extend(row[0] for row in rows)

    def get_rewards(self, keys: Any) -> dict[str, tuple[list[float], int]]:
        return self.store.get_rewards(keys)

    def put_rewards(self, rows: list[tuple]) -> None:
        self.store.put_rewards(rows)


def _traces(strategy: Strategy, ctx: SearchContext, batch: list[Problem]) -> list[Trace]:
    ledger = ctx.generator.store if isinstance(ctx.generator.store, _Ledger) else None
    if ledger is not None:
        ledger.written.clear()
    try:
        return strategy.run(batch, ctx)
    except ProblemFailure as err:
        if len(batch) == 1:
            return [failed_trace(batch[0], strategy, err)]
    # Which problem failed? One at a time: whatever the batch stored replays from the store for free.
    if ledger is not None:
        ledger.as_new = set(ledger.written)
    try:
        return [t for p in batch for t in _traces(strategy, ctx, [p])]
    finally:
        if ledger is not None:
            ledger.as_new = set()


def solve(strategy: Strategy, ctx: SearchContext, batch: list[Problem]) -> list[ProblemResult]:
    """One batch of problems through the strategy, graded; a problem whose remote calls fail after the
    backend's retries gets a failed result instead of aborting the batch (see the module docstring)."""
    return [grade_trace(p, t) for p, t in zip(batch, _traces(strategy, ctx, batch), strict=True)]


def solve_batches(config: RunConfig, policy: Policy, scorer: RewardModel | None, store: StoreLike | None,
                  problems: list[Problem]) -> Iterator[list[ProblemResult]]:
    """What every executor does with the problems it is given: the strategy over them in batches of
    ``batch_sequences`` sequences, generations and scores through ``store``; yields each graded batch."""
    strategy = config.make_strategy()
    per_call = config.problems_per_call
    ctx = SearchContext(
        generator=CachedGenerator(policy, _Ledger(store) if store is not None else None),
        prompt=config.prompt_config(),
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        scorer=CachedScorer(scorer, store) if scorer is not None else None,
        answer_grouping=config.answer_grouping,
        extraction=config.extraction,
    )
    for start in range(0, len(problems), per_call):
        yield solve(strategy, ctx, problems[start : start + per_call])


def _finished(store: Store, run_id: str, problems: list[Problem]) -> dict[str, ProblemResult]:
    """Problems of this run with a stored result that did not fail: not run again."""
    by_id = {p.id: p for p in problems}
    out: dict[str, ProblemResult] = {}
    for rec in store.get_results(run_id, by_id):
        pid = rec.get("problem_id")
        if pid not in by_id:
            continue
        try:
            trace = Trace.from_record(rec, store.get_tree(run_id, pid))
        except (TypeError, KeyError):  # written by another version of testtime: run it again
            continue
        if trace.failed:
            continue
        out[pid] = ProblemResult(by_id[pid], trace, [bool(c.correct) for c in trace.candidates])
    return out


def execute(executor: Executor, config: RunConfig, problems: list[Problem] | None = None,
            on_progress: ProgressFn | None = None) -> RunResult:
    """Run ``config`` over the problems (default: its dataset) on ``executor``; see the module docstring.

    PRM-guided strategies score with the scorer the executor builds for ``config.prm`` (or was given);
    ``on_progress(done, total)`` after each recorded batch.
    """
    t0 = time.perf_counter()
    if problems is None:
        problems = load_dataset(config.dataset, limit=config.limit, seed=config.seed, levels=config.levels)
    scorer_name = None
    if config.strategy_class.needs_scorer:
        info = executor.scorer_info(config.prm)
        scorer_name = info.name
        config = config.for_scorer(info)  # what it left unset follows the scorer: in the identity and the run
    identity = config.identity(executor.model_id, scorer_name)
    rid = run_id_for(identity)
    store = Store(Path(config.out))
    try:
        store.start_run(rid, identity, problems)
        results = _finished(store, rid, problems)
        todo = [p for p in problems if p.id not in results]
        if on_progress:
            on_progress(len(results), len(problems))
        if todo:
            for batch in executor.solve(config, todo, store):
                for r in batch:
                    store.put_result(rid, r.trace)
                    results[r.problem.id] = r
                if on_progress:
                    on_progress(len(results), len(problems))
        return finish(store, rid, config, [results[p.id] for p in problems], time.perf_counter() - t0)
    finally:
        store.close()


def finish(store: Store, run_id: str, config: RunConfig, results: list[ProblemResult], wall_s: float) -> RunResult:
    """The run's result (results in the given order) and its summary, saved with the run."""
    total = Compute()
    for r in results:
        total.add(r.trace.compute)
    result = RunResult(run_id, config, results, wall_s, total, str(store.path))
    store.finish_run(run_id, result.summary())
    return result


def run(
    config: RunConfig,
    policy: Policy,
    problems: list[Problem] | None = None,
    on_progress: ProgressFn | None = None,
    scorer: RewardModel | None = None,
) -> RunResult:
    """``execute`` in this process with a policy you hold (left open); PRM-guided strategies score with
    `scorer`, or with the one ``config.prm`` names (built over the policy, closed at the end)."""
    from testtime.execution import LocalExecutor

    with LocalExecutor(policy, scorer) as executor:
        return execute(executor, config, problems, on_progress)
