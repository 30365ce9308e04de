"""The compute-optimal selector: probe each problem, predict its difficulty bin, run that bin's best config.

``run_optimal(table, budget, ...)``:

1. refuses a table calibrated for another policy or PRM (the paper's point: the optimal strategy
   depends on the PRM) unless ``force``;
2. probes every problem with ``probe_n`` samples scored by the PRM, exactly as the sweep's difficulty
   features were computed (same seeds, so a probe after a sweep in the same store costs nothing new);
3. predicts pass@1 with the table's predictor and bins it with the table's thresholds;
4. checks, from the same probe, whether the problems look like the calibration problems
   (``optimal.shift``) and decides each problem's config (``decide``): the predicted bin's calibrated
   choice, unless a safe fallback applies -- the PRM-free choice (CoT / majority) when the PRM's agreement
   with majority voting moved, the robust choice (best mean over bins) when the problems shifted, when the
   predicted bin was calibrated on fewer than 10 problems (unreliable), or when a problem's predicted
   pass@1 lies within ``margin`` of a bin threshold;
5. runs each config within ``budget`` on its problems (one engine run per distinct config, all its
   problems batched together);
6. reports accuracy per predicted bin, the shift check and which rule decided how many problems, with the
   probe's compute added to every problem's total.

A problem whose remote calls failed (in the probe or in its config's run; see ``engine``) counts as
wrong and is listed in ``failed``; a problem whose probe failed gets no bin and no config.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from testtime.config import RunConfig
from testtime.errors import ConfigError
from testtime.execution import ScorerInfo, as_executor
from testtime.optimal.calibrate import PROMPT_KEYS, Choice, Table, decide
from testtime.optimal.metrics import absolute_bins, bin_order
from testtime.optimal.shift import Shift, check_shift
from testtime.optimal.sweep import probe_features
from testtime.search import BestOfN, Majority
from testtime.search.selection import SELECTIONS
from testtime.types import Compute, Problem


@dataclass
class OptimalResult:
    budget: int
    table_prm: str | None
    problems: list[Problem]
    predicted_pass1: dict[str, float]
    bins: dict[str, str]
    choices: dict[str, Choice]
    correct: dict[str, bool]
    compute: Compute
    probe_compute: Compute
    run_ids: list[str]
    wall_s: float
    per_problem_compute: dict[str, Compute] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # problem -> error (counted as wrong)
    rules: dict[str, str] = field(default_factory=dict)  # problem -> the rule that chose its config
    shift: Shift | None = None  # None: the table carries no calibration profile

    def summary(self) -> dict[str, Any]:
        n = len(self.problems)
        by_bin = {label: self._group([p.id for p in self.problems if self.bins.get(p.id) == label])
                  for label in bin_order(set(self.bins.values()))}
        c = self.compute
        return {
            "strategy": "optimal", "budget": self.budget, "prm": self.table_prm, "n_problems": n,
            "accuracy": sum(self.correct.values()) / n if n else 0.0, "by_bin": by_bin,
            "failed": len(self.failed), "failures": dict(self.failed),
            "generated_tokens": c.generated_tokens, "prompt_tokens_evaluated": c.prompt_tokens - c.cached_prompt_tokens,
            "prompt_tokens_cached": c.cached_prompt_tokens, "flops": c.flops,
            # the keys every run's summary has (engine.RunResult.summary), so scripts read both alike
            "prompt_tokens": c.prompt_tokens, "cached_prompt_tokens": c.cached_prompt_tokens,
            "new_generations": c.new_generations, "cached_generations": c.cached_generations,
            "by_level": self.by_level(),
            "probe_generated_tokens": self.probe_compute.generated_tokens, "probe_flops": self.probe_compute.flops,
            "wall_s": self.wall_s, "run_ids": self.run_ids,
            "decided_by": dict(Counter(self.rules.values())),
            "shift": self.shift.to_dict() if self.shift is not None else None,
        }

    def by_level(self) -> dict[str, dict[str, Any]]:
        """Per dataset level: problems, accuracy, mean FLOPs per problem, and the configs given."""
        return {level: self._group([p.id for p in self.problems if str(p.level) == level])
                for level in dict.fromkeys(str(p.level) for p in self.problems)}

    def _group(self, ids: list[str]) -> dict[str, Any]:
        """Problems, accuracy, the configs given and where the budget went (mean FLOPs per problem)."""
        configs = Counter(f"{self.choices[i].config}@{self.choices[i].budget}" for i in ids if i in self.choices)
        return {"n_problems": len(ids), "accuracy": sum(self.correct.get(i, False) for i in ids) / len(ids),
                "configs": dict(configs),
                "flops_per_problem": sum(self.per_problem_compute[i].flops for i in ids
                                         if i in self.per_problem_compute) / len(ids)}


def total_compute(per_problem: dict[str, Compute]) -> Compute:
    """The batch's compute: every problem's summed."""
    total = Compute()
    for c in per_problem.values():
        total.add(c)
    return total


def run_choices(executor: Any, base: RunConfig, prm: str | None, problems: list[Problem],
                choices: dict[str, Choice], compute: dict[str, Compute], failed: dict[str, str],
                correct: dict[str, bool]) -> list[str]:
    """Run each distinct config once over the problems given it (one batched engine run each); fill in
    `correct` (the config's calibrated selection's verdict), add to `compute`, record `failed`. Returns the
    run ids."""
    groups: dict[tuple, list[Problem]] = defaultdict(list)
    for p in problems:
        ch = choices[p.id]
        groups[(ch.strategy, ch.budget, ch.m, ch.selection)].append(p)
    run_ids = []
    for (strategy, n, m, _sel), members in groups.items():
        ch = choices[members[0].id]
        kw: dict[str, Any] = {"prm": prm}
        sel = SELECTIONS.get(ch.selection or "")
        if sel is not None:  # the calibrated selection gives the answer (majority ignores the aggregation)
            kw.update(aggregation=sel.aggregation or "last", selection=sel.rule)
        if m:
            kw["m"] = m
        res = executor.run(base.with_strategy(strategy, n, **kw), members)
        run_ids.append(res.run_id)
        for r in res.results:
            # the calibrated selection's answer (a confidence vote over a majority pool is one of its selections)
            correct[r.problem.id] = bool(r.trace.selections_correct.get(ch.selection or "", r.trace.correct))
            compute[r.problem.id].add(r.trace.compute)
            if r.failed:
                failed[r.problem.id] = f"{ch.config}@{n}: {r.error}"
    return run_ids


def checked_scorer(table: Table, executor: Any, scorer: Any, prm: str | None, force: bool
                   ) -> tuple[str | None, ScorerInfo | None]:
    """The run's scorer spec and what it is (from the scorer object, else the executor builds `prm`), after
    checking that the table was calibrated for it and for the executor's policy."""
    info: ScorerInfo | None = None
    if scorer is not None:
        prm = scorer.name
        info = ScorerInfo(scorer.name, bool(getattr(scorer, "outcome_only", False)))
    elif prm:
        info = executor.scorer_info(prm)
    check_table(table, executor.model_id, info.name if info else None, force)
    return prm, info


def check_table(table: Table, policy_id: str, scorer_name: str | None, force: bool) -> None:
    if force:
        return
    if table.prm != scorer_name:
        raise ConfigError("table", message=(
            f"calibrated with PRM {table.prm!r} but this run scores with {scorer_name!r}; the best strategy "
            "depends on the PRM (recalibrate, or set force to apply it anyway)"))
    if table.policy != policy_id:
        raise ConfigError("table", message=(
            f"calibrated for policy {table.policy!r}, not {policy_id!r} (recalibrate, or set force)"))


def run_optimal(
    table: Table,
    budget: int,
    policy: Any,
    scorer: Any,
    problems: list[Problem],
    base: RunConfig,
    *,
    force: bool = False,
    prm: str | None = None,
    margin: float = 0.05,
    fallbacks: bool = True,
) -> OptimalResult:
    """`base`: the settings shared by every run (dataset, seed, out, max_tokens, fewshot, ...); each run is
    ``base.with_strategy(...)``.

    `policy` is a policy (run here, scoring with `scorer`) or an executor (``testtime.execution``); with
    no `scorer` object, `prm` is the scorer spec the executor builds (None: no PRM). ``margin``: how close
    to a bin threshold a predicted pass@1 is uncertain; ``fallbacks`` False: the predicted bins alone."""
    executor = as_executor(policy, scorer)
    try:
        return _run_optimal(table, budget, executor, scorer, problems, base, force, prm, margin, fallbacks)
    finally:
        if executor is not policy:
            executor.close()


def _run_optimal(table: Table, budget: int, executor: Any, scorer: Any, problems: list[Problem],
                 base: RunConfig, force: bool, prm: str | None, margin: float, fallbacks: bool) -> OptimalResult:
    t0 = time.perf_counter()
    prm, info = checked_scorer(table, executor, scorer, prm, force)
    probe_n = table.predictor.probe_n
    # the sweep's pool, in small: scored by the PRM when there is one, as the predictor was fitted
    probe_strategy = BestOfN.name if info is not None else Majority.name
    probe = executor.run(base.with_strategy(probe_strategy, probe_n, prm=prm if info else None), problems)
    pass1: dict[str, float] = {}
    compute: dict[str, Compute] = {}
    failed: dict[str, str] = {}
    probe_total = Compute()
    features = []
    for r in probe.results:
        compute[r.problem.id] = Compute().add(r.trace.compute)
        probe_total.add(r.trace.compute)
        if r.failed:
            failed[r.problem.id] = f"probe: {r.error}"
            continue
        scoring = r.trace.scoring
        f = probe_features(r.trace.answer_groups or [], scoring.rewards if scoring else None)
        features.append(f)
        pass1[r.problem.id] = table.predictor.predict(f.agreement, f.score)
    bins = absolute_bins(pass1, easy=table.easy, hard=table.hard)
    live = [p for p in problems if p.id not in failed]
    shift = None
    if table.profile is not None and features:
        shift = check_shift(
            table.profile, [f.agreement for f in features], [f.score for f in features if f.score is not None],
            [f.prm_agrees for f in features if f.prm_agrees is not None], [p.kind for p in live],
            {k: getattr(base, k) for k in PROMPT_KEYS})
    # without fallbacks (to measure what they buy): the bins alone, the shift still reported
    decided = (decide(table, budget, pass1, shift, margin) if fallbacks
               else decide(table, budget, pass1, None, 0.0, reliability=False))
    choices = {pid: ch for pid, (ch, _rule) in decided.items()}
    rules = {pid: rule for pid, (_ch, rule) in decided.items()}
    correct: dict[str, bool] = {p.id: False for p in problems if p.id in failed}
    run_ids = [probe.run_id, *run_choices(executor, base, prm if info else None, live, choices, compute, failed,
                                          correct)]
    total = total_compute(compute)
    return OptimalResult(budget, table.prm, problems, pass1, bins, choices, correct, total, probe_total, run_ids,
                         time.perf_counter() - t0, compute, failed, rules, shift)
