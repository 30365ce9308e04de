"""Runs a strategy over a dataset: batches across problems, records every result, summarises.

The run id is a hash of everything that decides the results, so rerunning the same command lands on
the same run and replays its generations from the store (see generation.py).

Failures. When a remote backend gives up on some requests (``GenerationFailed`` after its retries, or a
``RequestFailed`` from an HTTP scorer), the batch is rerun one problem at a time -- what was stored
replays at no cost -- and a problem that still fails gets a *failed* result: a trace with no candidates,
``correct=False`` and ``meta = {"failed": True, "error": "<one line>"}``, recorded in the store like any
other. Accuracy counts a failed problem as wrong (it is never left out, so accuracy is never inflated)
and the summary reports ``failed`` and ``failures`` (problem id -> error) beside it. A rerun retries
failed problems. Any other exception is a bug and propagates.

This module runs locally, in this process, with a policy object. ``testtime.execution`` runs the same
code on other executors (Ray actors), from a policy *spec*.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from testtime.datasets import load_dataset
from testtime.generation import CachedGenerator
from testtime.grading import grade_many
from testtime.netretry import RequestFailed
from testtime.policy.base import Policy
from testtime.policy.openai_compat import GenerationFailed
from testtime.policy.prompts import PromptConfig
from testtime.reward import CachedScorer, RewardModel, load_scorer
from testtime.search.base import SearchContext, Strategy
from testtime.search.registry import SCORED, TREE, make_strategy
from testtime.store import Store
from testtime.types import Candidate, Compute, Problem, Trace

# Errors that belong to one problem's remote calls, raised after the backend's own retries ran out:
# the problem gets a failed result and the run continues. Everything else propagates.
PROBLEM_FAILURES: tuple[type[BaseException], ...] = (GenerationFailed, RequestFailed)


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
    fewshot: int = 3
    system: str | None = None  # the policy's system turn (None: the chat template's own default)
    instruction: str | None = None  # the user turn's text before the question (None: testtime's default)
    batch_sequences: int = 64  # sequences per backend call (problems x samples)
    prm: str | None = None  # scorer spec for PRM-guided strategies (reward.load_scorer)
    aggregation: str = "last"  # how step rewards become a candidate score (the reported answer's)
    selection: str = "prm_max"  # how the answer is chosen (every pair is reported anyway)
    m: int = 4  # tree searches: beam width / DVTS subtree width
    max_depth: int = 40  # tree searches: steps per path at most
    step_max_tokens: int = 256  # tree searches: a step longer than this is truncated and dropped
    rank_by: str = "last"  # tree searches: aggregation of path rewards that ranks nodes

    def identity(self, model_id: str, scorer_name: str | None = None) -> dict[str, Any]:
        d = asdict(self)
        for k in ("out", "model", "batch_sequences"):  # where/how, not what: same results either way
            d.pop(k)
        for k in ("system", "instruction"):  # unset prompt options keep the run ids they had before they existed
            if d[k] is None:
                d.pop(k)
        d["model_id"] = model_id
        if self.strategy == "cot":
            d["n"] = 1
        if self.strategy in SCORED:
            d["prm"] = scorer_name or self.prm
        else:  # unscored strategies keep the identity (and run id) they had before PRMs existed
            for k in ("prm", "aggregation", "selection"):
                d.pop(k)
        if self.strategy not in TREE:
            for k in _TREE_OPTIONS:
                d.pop(k)
        return d

    def prompt_config(self) -> PromptConfig:
        prompt = PromptConfig(fewshot=self.fewshot, system=self.system)
        return replace(prompt, instruction=self.instruction) if self.instruction is not None else prompt

    def strategy_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.strategy in SCORED:
            opts.update(aggregation=self.aggregation, selection=self.selection)
        if self.strategy in TREE:
            opts.update(width=self.m, max_depth=self.max_depth, step_max_tokens=self.step_max_tokens,
                        rank_by=self.rank_by)
        return opts


_TREE_OPTIONS = ("m", "max_depth", "step_max_tokens", "rank_by")


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
        return bool(self.trace.meta.get("failed"))

    @property
    def error(self) -> str | None:
        return self.trace.meta.get("error") if self.failed else None


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
        scored = self.config.strategy in SCORED
        ok = [r for r in self.results if not r.failed]
        extra: dict[str, Any] = {}
        if scored and ok:
            meta = ok[0].trace.meta
            extra = {
                "prm": meta.get("scorer"),
                # an oracle looked at the reference: its accuracy is an upper bound (pass@N), not a result
                "oracle_upper_bound": bool(meta.get("oracle")),
                "selection": meta.get("selection"),
                "selections": {
                    k: sum(bool(r.trace.meta.get("selections_correct", {}).get(k)) for r in self.results) / n
                    for k in meta.get("selections_correct", {})
                },
                "prm_tokens": c.prm_tokens,
                "prm_flops": c.prm_flops,
            }
        return {
            "run_id": self.run_id,
            "dataset": self.config.dataset,
            "strategy": self.config.strategy,
            "n": 1 if self.config.strategy == "cot" else self.config.n,
            **({"m": self.config.m} if self.config.strategy in TREE else {}),
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
            "flops": c.flops,
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


def one_line(err: BaseException, limit: int = 500) -> str:
    """An exception as one line of at most `limit` characters (for failed results and summaries)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failed_trace(problem: Problem, strategy: Strategy, err: BaseException) -> Trace:
    """The result recorded for a problem whose remote calls failed: no candidates, wrong, the error."""
    return Trace(problem.id, strategy.name, strategy.budget, [], None, correct=False,
                 meta={"failed": True, "error": f"{type(err).__name__}: {one_line(err)}"})


def grade_trace(problem: Problem, trace: Trace) -> ProblemResult:
    """Grade the candidates, the chosen answer and every alternative selection in one batch."""
    if trace.meta.get("failed"):
        trace.correct = False
        return ProblemResult(problem, trace, [])
    picks: dict[str, str | None] = trace.meta.get("selections", {})
    answers = [c.answer for c in trace.candidates] + [trace.answer] + list(picks.values())
    graded = grade_many([(a, problem.answer) for a in answers], kind=problem.kind)
    k = len(trace.candidates)
    verdicts, trace.correct = graded[:k], graded[k]
    if picks:
        trace.meta["selections_correct"] = dict(zip(picks, graded[k + 1 :], strict=True))
    for cand, ok in zip(trace.candidates, verdicts, strict=True):
        cand.correct = ok
    return ProblemResult(problem, trace, verdicts)


class _Ledger:
    """The store as the generator sees it, remembering which generations this batch wrote: when a failed
    batch is rerun one problem at a time, its samples replay from the store but were generated in this
    run, so they are counted as new (once), not as replayed."""

    def __init__(self, store: Any):
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

    def __getattr__(self, name: str) -> Any:  # rewards and the rest: the store's own
        if name == "store":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)


def _traces(strategy: Strategy, ctx: SearchContext, batch: list[Problem]) -> list[Trace]:
    ledger = ctx.generator.store if isinstance(ctx.generator.store, _Ledger) else None
    if ledger is not None:
        ledger.written.clear()
    try:
        return strategy.run(batch, ctx)
    except PROBLEM_FAILURES as err:
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


def make_strategy_for(config: RunConfig) -> tuple[Strategy, int]:
    """The configured strategy and how many problems go in one backend call (``batch_sequences``)."""
    strategy = make_strategy(config.strategy, config.n, **config.strategy_options())
    return strategy, max(1, config.batch_sequences // max(1, strategy.budget))


def make_context(config: RunConfig, policy: Policy, store: Any, scorer: RewardModel | None) -> SearchContext:
    """What a strategy needs, with generations and scores going through `store` (a Store, or anything with
    its get/put_generations and get/put_rewards methods)."""
    return SearchContext(
        generator=CachedGenerator(policy, _Ledger(store) if store is not None else None),
        prompt=config.prompt_config(),
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        seed=config.seed,
        scorer=CachedScorer(scorer, store) if scorer is not None else None,
    )


def record(store: Store, run_id: str, results: list[ProblemResult]) -> None:
    for r in results:
        store.put_result(run_id, r.trace)


def finish(store: Store, run_id: str, config: RunConfig, results: list[ProblemResult], wall_s: float) -> RunResult:
    """The run's result (results in the given order) and its summary, saved with the run."""
    total = Compute()
    for r in results:
        total.add(r.trace.compute)
    result = RunResult(run_id, config, results, wall_s, total, str(store.path))
    store.finish_run(run_id, result.summary())
    return result


def trace_from_record(record: dict[str, Any], tree: list[dict[str, Any]] | None = None) -> Trace:
    """A trace as ``Store.get_results`` returns it, back into objects (its tree from ``Store.get_tree``).

    Its compute counts every generation as replayed from the store, as a rerun of it would."""
    d = dict(record)
    d["candidates"] = [Candidate(**c) for c in d["candidates"]]
    compute = Compute(**{k: v for k, v in d["compute"].items() if k != "flops"})
    compute.cached_generations += compute.new_generations
    compute.new_generations = 0
    d["compute"] = compute
    d["meta"] = dict(d.get("meta") or {})
    if tree:
        d["meta"]["tree"] = [{("id" if k == "node_id" else k): v for k, v in n.items()} for n in tree]
    return Trace(**d)


def run(
    config: RunConfig,
    policy: Policy,
    problems: list[Problem] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    scorer: RewardModel | None = None,
) -> RunResult:
    """Run `config.strategy` over the dataset; `on_progress(done, total)` after each batch.

    PRM-guided strategies score with `scorer`, or with the one `config.prm` names; scores go through
    the store like generations. Problems whose remote calls fail are recorded as failed (module docstring).
    """
    t0 = time.perf_counter()
    if problems is None:
        problems = load_dataset(config.dataset, limit=config.limit, seed=config.seed, levels=config.levels)
    strategy, per_call = make_strategy_for(config)
    own_scorer = False
    if config.strategy in SCORED and scorer is None:
        if not config.prm:
            raise ValueError(f"--strategy {config.strategy} needs --prm (e.g. --prm arith-check)")
        scorer = load_scorer(config.prm, policy)
        own_scorer = True
    identity = config.identity(policy.model_id, scorer.name if scorer is not None else None)
    rid = run_id_for(identity)
    store = Store(Path(config.out))
    try:
        store.start_run(rid, identity, problems)
        ctx = make_context(config, policy, store, scorer)
        results: list[ProblemResult] = []
        if on_progress:
            on_progress(0, len(problems))
        for start in range(0, len(problems), per_call):
            batch_results = solve(strategy, ctx, problems[start : start + per_call])
            record(store, rid, batch_results)
            results.extend(batch_results)
            if on_progress:
                on_progress(len(results), len(problems))
        return finish(store, rid, config, results, time.perf_counter() - t0)
    finally:
        store.close()
        if own_scorer and scorer is not None:
            close = getattr(scorer, "close", None)
            if close is not None:
                close()
