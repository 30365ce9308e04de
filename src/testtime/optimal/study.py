"""Does allocation pay? Compute-optimal allocation against the uniform baselines on the same problems.

``allocation_study`` runs, on one set of problems and through one store (so every sample is drawn once):
greedy CoT; one Best-of-N pool of ``max(budgets)`` samples scored by the PRM; then, replayed from that
pool, uniform Best-of-B (the table's reference selection, and the best selection in hindsight: an upper
bound for any fixed selection), majority@B, and the batch allocator at average budget B (its predictor's
cost included). Every series keeps each problem's verdict and FLOPs, so the comparisons are paired:

* accuracy with a bootstrap interval stratified by level;
* allocation minus each baseline, paired (stratified bootstrap and McNemar's exact test);
* the FLOPs the allocation curve needs to match uniform Best-of-B's accuracy, as a share of Best-of-B's,
  and the efficiency gain over majority voting (the FLOPs majority needs for its best accuracy over those
  the allocation curve needs for it), both with intervals from a bootstrap over problems.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from testtime.config import RunConfig
from testtime.optimal.allocation import allocation_model, run_allocated
from testtime.optimal.calibrate import Table
from testtime.search import BestOfN, CoT, Majority
from testtime.search.selection import SELECTIONS
from testtime.stats import compare_paired, mean_ci
from testtime.types import Problem

ALLOCATED = "compute-optimal (allocated)"
UNIFORM = "uniform Best-of-N"
HINDSIGHT = "uniform Best-of-N, best selection in hindsight"
MAJORITY = "majority@N"
COT = "cot"


@dataclass
class Point:
    """One series at one budget: each problem's verdict (1/0) and FLOPs, and which config(s) gave them."""

    series: str
    budget: int
    correct: dict[str, float]
    flops: dict[str, float]
    label: str = ""  # e.g. the selection a uniform row used
    configs: dict[str, str] = field(default_factory=dict)  # problem -> config given (allocation)

    def accuracy(self, ids: Sequence[str]) -> float:
        return float(np.mean([self.correct[i] for i in ids])) if ids else 0.0

    def mean_flops(self, ids: Sequence[str]) -> float:
        return float(np.mean([self.flops[i] for i in ids])) if ids else 0.0


@dataclass
class Study:
    problems: list[Problem]
    points: list[Point]
    headline: int  # the budget the paired comparisons are made at
    reference: str  # the uniform Best-of-N selection (the table's reference)
    predictor: str
    wall_s: float
    seconds: dict[str, float] = field(default_factory=dict)  # per step of the study

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.problems]

    @property
    def strata(self) -> list[str]:
        return [str(p.level) for p in self.problems]

    def get(self, series: str, budget: int) -> Point | None:
        return next((p for p in self.points if p.series == series and p.budget == budget), None)

    def curve(self, series: str) -> list[Point]:
        return sorted((p for p in self.points if p.series == series), key=lambda p: p.budget)

    def rows(self, confidence: float = 0.95) -> list[dict[str, Any]]:
        """Per series and budget: accuracy, its interval, mean FLOPs per problem."""
        out = []
        for p in self.points:
            ci = mean_ci([p.correct[i] for i in self.ids], self.strata, confidence=confidence)
            out.append({"series": p.series, "budget": p.budget, "label": p.label, "accuracy": ci.estimate,
                        "accuracy_ci": [ci.low, ci.high], "flops": p.mean_flops(self.ids)})
        return out

    def paired(self, budget: int | None = None, confidence: float = 0.95) -> dict[str, Any]:
        """The allocation at `budget` (default: the headline) minus every baseline, on the same problems."""
        b = budget or self.headline
        alloc = self.get(ALLOCATED, b)
        out: dict[str, Any] = {}
        if alloc is None:
            return out
        a = [alloc.correct[i] for i in self.ids]
        for name, bb in ((UNIFORM, b), (HINDSIGHT, b), (MAJORITY, b), (COT, 1)):
            other = self.get(name, bb)
            if other is not None:
                cmp = compare_paired(a, [other.correct[i] for i in self.ids], self.strata, confidence=confidence)
                out[f"{name}@{bb}" if name != COT else COT] = {
                    "difference": cmp.difference.estimate, "ci": [cmp.difference.low, cmp.difference.high],
                    "mcnemar_p": cmp.test.p_value, "better": cmp.test.better, "worse": cmp.test.worse,
                    "significant": cmp.significant, "text": cmp.describe(),
                    "flops_ratio": alloc.mean_flops(self.ids) / max(other.mean_flops(self.ids), 1.0)}
        return out

    def flops_to_match(self, ids: Sequence[str] | None = None, budget: int | None = None) -> float | None:
        """The mean FLOPs per problem at which the allocation curve (accuracy vs FLOPs, linear between its
        budgets) first reaches uniform Best-of-`budget`'s accuracy, over Best-of-`budget`'s FLOPs (None: the
        curve never reaches it)."""
        ids = self.ids if ids is None else ids
        ref = self.get(UNIFORM, budget or self.headline)
        if ref is None:
            return None
        x = first_reaching(self.curve(ALLOCATED), ids, ref.accuracy(ids))
        return None if x is None else x / max(ref.mean_flops(ids), 1.0)

    def efficiency_gain(self, ids: Sequence[str] | None = None) -> float | None:
        """FLOPs majority voting needs for its best accuracy / FLOPs the allocation curve needs for it."""
        ids = self.ids if ids is None else ids
        maj = self.curve(MAJORITY)
        if not maj:
            return None
        best = max(maj, key=lambda p: (p.accuracy(ids), -p.budget))
        x = first_reaching(self.curve(ALLOCATED), ids, best.accuracy(ids))
        return None if x is None or x <= 0 else best.mean_flops(ids) / x

    def bootstrap(self, statistic: Callable[[Sequence[str]], float | None], confidence: float = 0.95,
                  rounds: int = 1000, seed: int = 0) -> dict[str, Any]:
        """A statistic of the problems with a percentile interval from resampling problems within levels;
        resamples where it is undefined (None) are counted, and the interval is None when more than
        (1 - confidence) / 2 of them are."""
        rng = np.random.default_rng(seed)
        by_level: dict[str, list[str]] = {}
        for pid, s in zip(self.ids, self.strata, strict=True):
            by_level.setdefault(s, []).append(pid)
        values, undefined = [], 0
        for _ in range(rounds):
            sample = [pid for members in by_level.values() for pid in rng.choice(members, len(members))]
            v = statistic(sample)
            if v is None:
                undefined += 1
            else:
                values.append(v)
        est = statistic(self.ids)
        tail = (1 - confidence) / 2
        ci = None
        if values and undefined <= tail * rounds:
            ci = [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))]
        return {"estimate": est, "ci": ci, "undefined": undefined, "rounds": rounds}

    def budget_by_level(self, budget: int | None = None) -> dict[str, dict[str, float]]:
        """Where the budget went: mean FLOPs per problem of each level, allocation vs uniform Best-of-N."""
        b = budget or self.headline
        out: dict[str, dict[str, float]] = {}
        for name in (UNIFORM, ALLOCATED):
            pt = self.get(name, b)
            if pt is None:
                continue
            for level in sorted(set(self.strata), key=_level_order):
                ids = [i for i, s in zip(self.ids, self.strata, strict=True) if s == level]
                out.setdefault(level, {})[name] = pt.mean_flops(ids)
        return out

    def summary(self, confidence: float = 0.95) -> dict[str, Any]:
        return {
            "n_problems": len(self.problems), "headline_budget": self.headline, "reference": self.reference,
            "confidence": confidence,  # of every interval below (the tables and plots say it)
            "predictor": self.predictor, "rows": self.rows(confidence), "paired": self.paired(confidence=confidence),
            "flops_to_match_uniform": self.bootstrap(self.flops_to_match, confidence),
            "efficiency_gain_over_majority": self.bootstrap(self.efficiency_gain, confidence),
            "budget_by_level": self.budget_by_level(),
            "budget_by_level_per_budget": {str(p.budget): self.budget_by_level(p.budget)
                                           for p in self.curve(ALLOCATED)},
            "wall_s": self.wall_s, "seconds": self.seconds,
            "configs": {str(p.budget): _count(p.configs) for p in self.curve(ALLOCATED)},
            "given": {str(p.budget): p.configs for p in self.curve(ALLOCATED)},  # per problem
        }


SERIES = (COT, MAJORITY, UNIFORM, HINDSIGHT, ALLOCATED)  # the order every table shows them in


def rows_by_series(rows: Sequence[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """A summary's ``rows`` as series -> budget -> row, in ``SERIES`` order (series without rows left out)."""
    out = {s: {r["budget"]: r for r in rows if r["series"] == s} for s in SERIES}
    return {s: by_b for s, by_b in out.items() if by_b}


def _level_order(s: str) -> tuple[int, Any]:
    try:
        return (0, float(s))
    except ValueError:
        return (1, s)


def _count(configs: dict[str, str]) -> dict[str, int]:
    return dict(Counter(configs.values()).most_common())


def first_reaching(curve: Sequence[Point], ids: Sequence[str], target: float) -> float | None:
    """The mean FLOPs where the curve's accuracy first reaches `target`, linear between its points (by
    increasing FLOPs); None when it never does."""
    pts = sorted(((p.mean_flops(ids), p.accuracy(ids)) for p in curve), key=lambda t: t[0])
    prev: tuple[float, float] | None = None  # the most accurate point so far (all below target)
    for x, a in pts:
        if a >= target - 1e-12:
            if prev is None:
                return x
            x0, a0 = prev  # a0 < target <= a: interpolate between them
            return x0 + (target - a0) / (a - a0) * (x - x0)
        prev = (x, a) if prev is None or a > prev[1] else prev
    return None


def _verdicts(res: Any, selection: str | None) -> tuple[dict[str, float], dict[str, float]]:
    correct, flops = {}, {}
    for r in res.results:
        ok = r.trace.selections_correct.get(selection, r.trace.correct) if selection else r.trace.correct
        correct[r.problem.id] = float(bool(ok))
        flops[r.problem.id] = r.trace.compute.flops
    return correct, flops


def allocation_study(table: Table, executor: Any, problems: list[Problem], base: RunConfig, prm: str,
                     budgets: Sequence[int] = (1, 2, 4, 8, 16), headline: int = 8, predictor: str | None = None,
                     on_step: Callable[[str], None] | None = None, min_gain: float | None = None) -> Study:
    """The study on `executor` (``testtime.execution``; left open). `base` carries the dataset, seed, store
    and sampling settings every run shares."""
    t0 = time.perf_counter()
    model = allocation_model(table)
    if model is None:
        from testtime.errors import ConfigError

        raise ConfigError("table", message="it has no difficulty model: recalibrate it with this testtime")
    reference = SELECTIONS[model.reference.split("/", 1)[1]] if "/" in model.reference else None
    kind = model.kind(predictor)
    points: list[Point] = []
    seconds: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if on_step:
            on_step(name)
        s = time.perf_counter()
        out = fn()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - s
        return out

    cot = step("cot", lambda: executor.run(base.with_strategy(CoT.name, 1), problems))
    points.append(Point(COT, 1, *_verdicts(cot, None)))
    top = max(budgets)
    kw = {"prm": prm}
    if reference is not None:
        kw.update(aggregation=reference.aggregation or "last", selection=reference.rule)
    step(f"pool: Best-of-{top}", lambda: executor.run(base.with_strategy(BestOfN.name, top, **kw), problems))
    for b in budgets:  # replayed from the pool: the first b samples of each problem, their scores too
        res = step("replays", lambda b=b: executor.run(base.with_strategy(BestOfN.name, b, **kw), problems))
        ref_name = reference.name if reference else "majority"
        points.append(Point(UNIFORM, b, *_verdicts(res, ref_name), label=ref_name))
        names = sorted({k for r in res.results for k in r.trace.selections_correct if SELECTIONS[k].uses_scores})
        if names:
            best = max(names, key=lambda k: (sum(bool(r.trace.selections_correct.get(k)) for r in res.results), k))
            points.append(Point(HINDSIGHT, b, *_verdicts(res, best), label=best))
        maj = step("replays", lambda b=b: executor.run(base.with_strategy(Majority.name, b), problems))
        points.append(Point(MAJORITY, b, *_verdicts(maj, None)))
        alloc = step("allocation", lambda b=b: run_allocated(table, b, executor, None, problems, base,
                                                              predictor=kind, prm=prm, max_n=top,
                                                              min_gain=min_gain))
        points.append(Point(ALLOCATED, b, {k: float(v) for k, v in alloc.correct.items()},
                            {k: c.flops for k, c in alloc.per_problem_compute.items()}, label=kind,
                            configs={k: f"{c.config}@{c.budget}" for k, c in alloc.choices.items()}))
    return Study(problems, points, headline, model.reference, kind, time.perf_counter() - t0, seconds)
