"""The one run lifecycle: start -> batches -> record -> finish, whatever executes the batches.

``execute(executor, config, problems)`` resolves the strategy and its scorer, derives the run id from
everything that decides the results (so rerunning the same command lands on the same run), skips the
problems the store already holds a finished result for, asks the executor to solve the rest
(``testtime.execution``: this process, or Ray actors), records every batch as it arrives, and saves the
summary. ``solve_batches`` is what every executor does with the problems it is given.

This module imports neither ``testtime.engine`` nor ``testtime.execution``: the executors import it (their
``run`` is ``execute``), and the engine's ``run(config, policy)`` wraps a policy in a local executor. An
executor is anything with ``model_id``, ``scorer_info`` and ``solve`` (``Solver``).

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
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testtime.config import RunConfig, run_id_for
from testtime.datasets import load_dataset
from testtime.errors import ProblemFailure, one_line
from testtime.grading import grade_many
from testtime.policy.base import Policy
from testtime.replay import CachedGenerator, CachedScorer
from testtime.reward.base import RewardModel
from testtime.search.base import SearchContext, Strategy
from testtime.store import Store, StoreLike
from testtime.types import Compute, Problem, Trace

ProgressFn = Callable[[int, int], None]


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


class Solver(Protocol):
    """What ``execute`` needs of an executor (``execution.Executor`` is one)."""

    model_id: str

    def scorer_info(self, prm: str | None) -> Any:
        """The scorer a ``prm`` spec names (name and declarations: an ``execution.ScorerInfo``)."""

    def solve(self, config: RunConfig, problems: list[Problem], store: StoreLike) -> Iterator[list[ProblemResult]]:
        """Graded results batch by batch, generations and scores written to ``store`` first."""


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


def execute(executor: Solver, config: RunConfig, problems: list[Problem] | None = None,
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
