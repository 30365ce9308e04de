"""Runs a strategy over a dataset: batches across problems, records every result, summarises.

The run id is a hash of everything that decides the results, so rerunning the same command lands on
the same run and replays its generations from the store (see generation.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testtime.datasets import load_dataset
from testtime.generation import CachedGenerator
from testtime.grading import grade_many
from testtime.policy.base import Policy
from testtime.policy.prompts import PromptConfig
from testtime.reward import CachedScorer, RewardModel, load_scorer
from testtime.search.base import SearchContext
from testtime.search.registry import SCORED, TREE, make_strategy
from testtime.store import Store
from testtime.types import Compute, Problem, Trace


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
        acc = sum(bool(r.trace.correct) for r in self.results) / n if n else 0.0
        c = self.compute
        scored = self.config.strategy in SCORED
        extra: dict[str, Any] = {}
        if scored and self.results:
            meta = self.results[0].trace.meta
            extra = {
                "prm": meta.get("scorer"),
                # an oracle looked at the reference: its accuracy is an upper bound (pass@N), not a result
                "oracle_upper_bound": bool(meta.get("oracle")),
                "selection": meta.get("selection"),
                "selections": {
                    k: sum(bool(r.trace.meta["selections_correct"][k]) for r in self.results) / n
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


def run(
    config: RunConfig,
    policy: Policy,
    problems: list[Problem] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    scorer: RewardModel | None = None,
) -> RunResult:
    """Run `config.strategy` over the dataset; `on_progress(done, total)` after each batch.

    PRM-guided strategies score with `scorer`, or with the one `config.prm` names; scores go through
    the store like generations.
    """
    t0 = time.perf_counter()
    if problems is None:
        problems = load_dataset(config.dataset, limit=config.limit, seed=config.seed, levels=config.levels)
    strategy = make_strategy(config.strategy, config.n, **config.strategy_options())
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
        ctx = SearchContext(
            generator=CachedGenerator(policy, store),
            prompt=PromptConfig(fewshot=config.fewshot),
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            seed=config.seed,
            scorer=CachedScorer(scorer, store) if scorer is not None else None,
        )
        per_call = max(1, config.batch_sequences // max(1, strategy.budget))
        results: list[ProblemResult] = []
        total = Compute()
        if on_progress:
            on_progress(0, len(problems))
        for start in range(0, len(problems), per_call):
            batch = problems[start : start + per_call]
            for problem, trace in zip(batch, strategy.run(batch, ctx), strict=True):
                # the candidates, the chosen answer and every alternative selection, graded in one batch
                picks: dict[str, str | None] = trace.meta.get("selections", {})
                answers = [c.answer for c in trace.candidates] + [trace.answer] + list(picks.values())
                graded = grade_many([(a, problem.answer) for a in answers], kind=problem.kind)
                k = len(trace.candidates)
                verdicts, trace.correct = graded[:k], graded[k]
                if picks:
                    trace.meta["selections_correct"] = dict(zip(picks, graded[k + 1 :], strict=True))
                for cand, ok in zip(trace.candidates, verdicts, strict=True):
                    cand.correct = ok
                store.put_result(rid, trace)
                total.add(trace.compute)
                results.append(ProblemResult(problem, trace, verdicts))
            if on_progress:
                on_progress(len(results), len(problems))
        result = RunResult(rid, config, results, time.perf_counter() - t0, total, str(store.path))
        store.finish_run(rid, result.summary())
        return result
    finally:
        store.close()
        if own_scorer and scorer is not None:
            close = getattr(scorer, "close", None)
            if close is not None:
                close()
