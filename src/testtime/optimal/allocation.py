"""Compute-optimal allocation over a batch: `run --strategy optimal --allocation batch`.

``run_allocated(table, budget, ...)``:

1. reads each problem's features for the table's difficulty model (``optimal.predictor``): the question's
   text and level (free), the policy's hidden state at the end of the prompt (one forward pass, charged),
   or a probe of ``probe_n`` scored samples (charged);
2. predicts each problem's success and cost curve for every menu config (CoT, majority@N, Best-of-N@N);
3. turns the average budget B into the batch's total: the FLOPs a uniform Best-of-B (the table's reference
   selection) is predicted to spend on these problems, less what the predictor itself cost;
4. allocates that total across the problems (``optimal.allocate``: the largest expected number solved);
5. runs each distinct config once over its problems (batched, through the store: Best-of-4 after a
   Best-of-8 of the same seed replays its first 4 samples) and reports, per problem, the predicted curve,
   the config given and why.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from testtime.config import RunConfig
from testtime.errors import ConfigError
from testtime.execution import as_executor
from testtime.optimal.allocate import Allocation, allocate
from testtime.optimal.calibrate import PROMPT_KEYS, Choice, Table, probe_cost
from testtime.optimal.metrics import absolute_bins
from testtime.optimal.predictor import TEXT_FEATURES, AllocationModel, Curve, ProblemFeatures, text_features
from testtime.optimal.selector import OptimalResult, checked_scorer, run_choices, total_compute
from testtime.optimal.shift import Shift, check_question_shift
from testtime.optimal.sweep import probe_features
from testtime.search import BestOfN, Majority
from testtime.types import Compute, Problem

ALLOCATIONS = ("uniform", "per-problem", "batch")


def allocation_model(table: Table) -> AllocationModel | None:
    """The table's difficulty model and curves (None: a table calibrated before allocation existed)."""
    return AllocationModel.from_dict(table.allocation) if table.allocation else None


def hidden_states(problems: list[Problem], model: str | None, out: str | Path
                  ) -> tuple[dict[str, np.ndarray], dict[str, Compute], str]:
    """The policy's final-norm hidden state at the end of each question's zero-shot prompt (llama.cpp, the
    embedded model or a GGUF), cached in the run's store; and what each forward pass cost."""
    from testtime.probe.features import CachedFeatures, extractor_for
    from testtime.reward.base import ScoreRequest
    from testtime.store import Store

    extractor = extractor_for("llamacpp", model or "", slots=2, ctx_per_slot=2048)
    store = Store(Path(out))
    cached = CachedFeatures(extractor, store)
    try:
        # a whitespace-only step reads where the context ended: the prompt's last token
        rows = cached.features([ScoreRequest(p.question, ("",)) for p in problems])
    finally:
        cached.close()
        store.close()
    states, cost = {}, {}
    for p, (arr, tokens) in zip(problems, rows, strict=True):
        states[p.id] = np.asarray(arr[0], dtype=np.float32)
        cost[p.id] = Compute(prompt_tokens=tokens, policy_flops=2.0 * extractor.n_params * tokens)
    return states, cost, extractor.name


@dataclass
class AllocatedResult(OptimalResult):
    """An optimal run whose configs came from the batch allocator: per problem its predicted curve and why."""

    predictor: str = "question"
    predictor_compute: Compute = field(default_factory=Compute)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # problem -> [{config, success, cost}]
    why: dict[str, str] = field(default_factory=dict)
    budget_flops: float = 0.0  # the batch's total: uniform Best-of-B's predicted FLOPs
    planned_flops: float = 0.0  # what the allocation was predicted to spend (configs + predictor)
    expected_solved: float = 0.0
    cutoff_rate: float | None = None

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        n = max(1, len(self.problems))
        s.update({
            "allocation": "batch", "predictor": self.predictor,
            "predictor_flops": self.predictor_compute.flops,
            "budget_flops_per_problem": self.budget_flops / n, "planned_flops_per_problem": self.planned_flops / n,
            "flops_per_problem": self.compute.flops / n, "expected_accuracy": self.expected_solved / n,
            "configs": dict(Counter(f"{c.config}@{c.budget}" for c in self.choices.values())),
            "decisions": {pid: {"config": f"{self.choices[pid].config}@{self.choices[pid].budget}",
                                "predicted_pass1": self.predicted_pass1.get(pid), "why": self.why.get(pid),
                                "curve": self.curves.get(pid)} for pid in self.choices},
        })
        return s


PRM_FREE_SHIFT = "prm-free: question shift"


def question_shift(model: AllocationModel, table: Table, problems: list[Problem], base: RunConfig) -> Shift | None:
    """Do these questions look like the calibration ones? (``shift.check_question_shift``; None: the model
    keeps no question profile.)"""
    if not model.text_profile or not problems:
        return None
    return check_question_shift(model.text_profile, [text_features(p.question) for p in problems], TEXT_FEATURES,
                                table.profile, [p.kind for p in problems], {k: getattr(base, k) for k in PROMPT_KEYS})


def _choice_of(curve: Curve, success: float) -> Choice:
    return Choice(curve.config, curve.strategy, curve.budget, None, curve.selection, success, 0)


def plan_batch(model: AllocationModel, kind: str, feats: list[ProblemFeatures], budget: float,
               predictor_flops: dict[str, float], max_n: int | None = None, min_gain: float = 0.0
               ) -> tuple[Allocation, list[Curve], list[list[Any]], np.ndarray, float]:
    """The allocation for these problems at average budget `budget` (samples of the reference config), the
    predictor's own FLOPs charged first; configs of more than `max_n` samples are left out of the menu; a
    step must buy at least `min_gain` points of accuracy per reference sample it costs.
    Returns (allocation, the menu's curves, options per problem, z, the batch's total)."""
    z = model.models[kind].score(feats)
    keep = [j for j, c in enumerate(model.curves[kind]) if max_n is None or c.budget <= max_n]
    curves = [model.curves[kind][j] for j in keep]
    options = [[row[j] for j in keep] for row in model.options(kind, z)]
    total = float(model.reference_cost(kind, z, budget).sum())
    spent_on_prediction = sum(predictor_flops.get(f.id, 0.0) for f in feats)
    per_sample = model.reference_cost(kind, z, 1.0, floor=False)
    rates = (min_gain / 100.0) / np.maximum(per_sample, 1.0)
    return allocate(options, max(0.0, total - spent_on_prediction), rates.tolist()), curves, options, z, total


def run_allocated(table: Table, budget: int, policy: Any, scorer: Any, problems: list[Problem], base: RunConfig,
                  *, predictor: str | None = None, force: bool = False, prm: str | None = None,
                  max_n: int | None = None, fallbacks: bool = True, min_gain: float | None = None) -> AllocatedResult:
    """Allocate the batch's budget (average `budget` samples per problem) across `problems` and run it.
    `policy`/`scorer`/`prm` as in ``selector.run_optimal``; `max_n`: no config of more samples (None: the
    table's whole menu); `fallbacks` False: allocate even when the problems look unlike the calibration ones
    (to measure what the fallback buys; the shift is still reported); `min_gain`: the least a step must buy,
    in points of accuracy per reference sample it costs (0: spend while any gain is predicted; None: the
    table's, chosen on its held-out problems)."""
    if min_gain is not None and not min_gain >= 0:
        raise ConfigError("min_gain", min_gain, "must be >= 0")
    executor = as_executor(policy, scorer)
    try:
        return _run_allocated(table, budget, executor, scorer, problems, base, predictor, force, prm, max_n,
                              fallbacks, min_gain)
    finally:
        if executor is not policy:
            executor.close()


def _run_allocated(table: Table, budget: int, executor: Any, scorer: Any, problems: list[Problem],
                   base: RunConfig, predictor: str | None, force: bool, prm: str | None,
                   max_n: int | None, fallbacks: bool, min_gain: float | None) -> AllocatedResult:
    t0 = time.perf_counter()
    model = allocation_model(table)
    if model is None:
        raise ConfigError("allocation", "batch", "this table has no difficulty model (recalibrate it with "
                                                 "this version of testtime)")
    kind = model.kind(predictor)
    min_gain = model.min_gain if min_gain is None else min_gain
    if budget < 1:
        raise ConfigError("budget", budget, "must be >= 1")
    prm, info = checked_scorer(table, executor, scorer, prm, force)
    needs = model.models[kind].needs
    compute: dict[str, Compute] = {p.id: Compute() for p in problems}
    failed: dict[str, str] = {}
    hidden: dict[str, np.ndarray] = {}
    probe: dict[str, tuple[float, float | None]] = {}
    predictor_total = Compute()
    run_ids: list[str] = []
    if "hidden" in needs:
        hidden, cost, name = hidden_states(problems, base.model, base.out)
        if model.hidden_extractor and name != model.hidden_extractor and not force:
            raise ConfigError("predictor", kind, f"trained on the hidden states of {model.hidden_extractor!r}, "
                                                 f"not {name!r} (recalibrate, or set force)")
        for pid, c in cost.items():
            compute[pid].add(c)
            predictor_total.add(c)
    if "probe" in needs:
        strategy = BestOfN.name if info is not None else Majority.name
        res = executor.run(base.with_strategy(strategy, model.probe_n, prm=prm if info else None), problems)
        run_ids.append(res.run_id)
        for r in res.results:
            compute[r.problem.id].add(r.trace.compute)
            predictor_total.add(r.trace.compute)
            if r.failed:
                failed[r.problem.id] = f"probe: {r.error}"
                continue
            f = probe_features(r.trace.answer_groups or [], r.trace.scoring.rewards if r.trace.scoring else None)
            probe[r.problem.id] = (f.agreement, f.score)
    live = [p for p in problems if p.id not in failed]
    feats = [ProblemFeatures.of(p, hidden.get(p.id), *probe.get(p.id, (None, None))) for p in live]
    plan, curves, options, z, total = plan_batch(model, kind, feats, budget,
                                                 {pid: c.flops for pid, c in compute.items()}, max_n, min_gain)
    pass1 = dict(zip([p.id for p in live], model.models[kind].predict(feats).tolist(), strict=True))
    choices = {p.id: _choice_of(curves[d.pick], options[i][d.pick].success)
               for i, (p, d) in enumerate(zip(live, plan.decisions, strict=True))}
    why = {p.id: d.why(plan.cutoff_rate) for p, d in zip(live, plan.decisions, strict=True)}
    rules = {p.id: ("allocation: cheapest" if d.steps == 0 else "allocation: raised")
             for p, d in zip(live, plan.decisions, strict=True)}
    shift = question_shift(model, table, live, base)
    free = table.fallback("prm_free", budget)
    if fallbacks and shift is not None and shift.shifted and free is not None:
        # the curves were fitted on other problems: spend nothing the PRM may not turn into accuracy here
        for p in live:
            choices[p.id], rules[p.id] = free, PRM_FREE_SHIFT
            why[p.id] = (f"these problems do not look like the calibration problems (shift score "
                         f"{shift.score:.2f}{'; ' + '; '.join(shift.notes) if shift.notes else ''}): the table's "
                         f"PRM-free choice {free.config}@{free.budget}")
    per_curve = {p.id: [{"config": o.key, "success": o.success, "flops": o.cost} for o in options[i]]
                 for i, p in enumerate(live)}
    correct: dict[str, bool] = {p.id: False for p in problems if p.id in failed}
    run_ids += run_choices(executor, base, prm if info else None, live, choices, compute, failed, correct)
    grand = total_compute(compute)
    bins = absolute_bins(pass1, easy=table.easy, hard=table.hard)
    return AllocatedResult(
        budget, table.prm, problems, pass1, bins, choices, correct, grand, predictor_total, run_ids,
        time.perf_counter() - t0, compute, failed, rules, shift,
        predictor=kind, predictor_compute=predictor_total, curves=per_curve, why=why, budget_flops=total,
        planned_flops=plan.total_cost + predictor_total.flops, expected_solved=plan.expected_solved,
        cutoff_rate=plan.cutoff_rate)


def sweep_problems(sweep: Any) -> list[Problem]:
    """The problems a sweep ran, reloaded from its recipe (a sweep file keeps ids and difficulty, not text)."""
    from testtime.datasets import DatasetError, load_dataset

    r = sweep.recipe
    out: list[Problem] = []
    for name in r.get("datasets") or [r["dataset"]]:
        try:
            out.extend(load_dataset(name, limit=r.get("limit"), seed=r.get("seed", 0), levels=r.get("levels")))
        except (DatasetError, OSError) as e:
            raise ConfigError("sweep", r.get("name"), f"cannot reload its problems: {e}") from None
    wanted = {p.id for p in sweep.problems}
    got = [p for p in out if p.id in wanted]
    if len(got) != len(wanted):
        raise ConfigError("sweep", r.get("name"), f"its recipe reloads {len(got)} of its {len(wanted)} problems")
    return got


def fit_allocation(table: Table, sweeps: list[Any], hidden: bool = True, level: bool = True) -> Table:
    """Train the table's difficulty models and menu curves on its calibration problems (``sweeps``: the sweep
    files the table was calibrated from, for their problems' text), report each model's calibration on the
    held-out problems, and store it all in ``table.allocation``. ``hidden``: also offer the policy's hidden
    state (one llama.cpp forward pass per problem; needs a GGUF policy); ``level`` False: not the dataset's
    level either (a served chat question has none, so a model that read it would mistake every request for
    the unlevelled dataset of its calibration, e.g. GSM8K)."""
    from testtime.optimal.predictor import evaluate_difficulty, train_allocation

    problems = [p for sw in sweeps for p in sweep_problems(sw)]
    infos = {p.id: p for sw in sweeps for p in sw.problems}
    cells = [c for sw in sweeps for c in sw.cells]
    states: dict[str, np.ndarray] = {}
    hidden_cost: dict[str, Compute] = {}
    extractor = None
    r = sweeps[0].recipe
    if hidden and r.get("backend", "llamacpp") == "llamacpp":  # hidden states come from a GGUF via llama.cpp
        states, hidden_cost, extractor = hidden_states(problems, r.get("model"), r.get("out", "runs"))
    feats = {p.id: ProblemFeatures(p.id, p.question, p.level if level else None, states.get(p.id),
                                   infos[p.id].agreement, infos[p.id].probe_score) for p in problems}
    model = train_allocation(cells, {i: p.pass1 for i, p in infos.items()}, feats, table.calibration_ids,
                             table.predictor.probe_n, hidden_extractor=extractor)
    held = [i for i in table.holdout_ids if i in feats]
    model.report = {kind: evaluate_difficulty(m, [feats[i] for i in held], [infos[i].pass1 for i in held],
                                              table.easy, table.hard) for kind, m in model.models.items()}
    # the default predictor: the one whose allocations do best on the held-out problems, its own cost paid
    probe_flops = {i: flops for i, (_tokens, flops) in probe_cost(cells, table.predictor.probe_n, set(held)).items()}
    costs = {kind: {i: (hidden_cost[i].flops if i in hidden_cost and "hidden" in m.needs else 0.0)
                    + (probe_flops.get(i, 0.0) if "probe" in m.needs else 0.0) for i in held}
             for kind, m in model.models.items()}
    for kind in model.models:
        model.report[kind]["heldout_allocation"] = heldout_allocation(model, kind, [feats[i] for i in held], cells,
                                                                      table.budgets, costs[kind])
    scored = {k: np.mean([p["accuracy"] for p in model.report[k]["heldout_allocation"]]) for k in model.models}
    if scored:  # ties: the cheaper kind (question-only first)
        model.default = max(model.models, key=lambda k: (round(float(scored[k]), 9), -list(model.models).index(k)))
        model.min_gain, model.min_gain_report = choose_min_gain(
            model, model.default, [feats[i] for i in held], cells, table.budgets, costs[model.default])
    table.allocation = model.to_dict()
    return table


def heldout_allocation(model: AllocationModel, kind: str, feats: list[ProblemFeatures], cells: list[Any],
                       budgets: list[int], predictor_flops: dict[str, float], min_gain: float = 0.0,
                       per_problem: dict[str, list[float]] | None = None) -> list[dict[str, float]]:
    """Per average budget: the allocation planned for these problems, scored with their sweep cells (the
    expected accuracy of each config given, its measured FLOPs, plus the predictor's): what this predictor
    buys out of sample. `per_problem`, when given, collects each problem's accuracy at every budget."""
    by_key = {(c.problem_id, c.config, c.budget): c for c in cells}
    out = []
    for b in budgets:
        plan, curves, _opts, _z, total = plan_batch(model, kind, feats, b, predictor_flops, min_gain=min_gain)
        acc, flops = [], []
        for f, d in zip(feats, plan.decisions, strict=True):
            c = by_key.get((f.id, curves[d.pick].config, curves[d.pick].budget))
            if c is None:
                continue
            acc.append(c.accuracy)
            flops.append(c.flops + predictor_flops.get(f.id, 0.0))
            if per_problem is not None:
                per_problem.setdefault(f.id, []).append(c.accuracy)
        if acc:
            out.append({"budget": b, "accuracy": float(np.mean(acc)), "flops": float(np.mean(flops)),
                        "budget_flops": total / max(1, len(feats)), "n": len(acc)})
    return out


MIN_GAIN_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


def choose_min_gain(model: AllocationModel, kind: str, feats: list[ProblemFeatures], cells: list[Any],
                    budgets: list[int], predictor_flops: dict[str, float]) -> tuple[float, dict[str, Any]]:
    """The largest minimum gain whose held-out allocations lose nothing beyond noise against spending while
    any gain is predicted: per problem, its accuracy averaged over the budgets minus that at 0, and G is
    kept while the mean difference is >= minus its standard error (a paired one-SE rule toward spending
    less). Returns (G, per G: mean accuracy and FLOPs over the budgets)."""
    base: dict[str, list[float]] = {}
    rows = {0.0: heldout_allocation(model, kind, feats, cells, budgets, predictor_flops, 0.0, base)}
    chosen = 0.0
    for g in MIN_GAIN_GRID[1:]:
        got: dict[str, list[float]] = {}
        rows[g] = heldout_allocation(model, kind, feats, cells, budgets, predictor_flops, g, got)
        diff = np.asarray([np.mean(got[i]) - np.mean(base[i]) for i in base if i in got])
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        if len(diff) and diff.mean() >= -se - 1e-12:
            chosen = g
        else:
            break  # a larger G refuses even more steps
    summary = {str(g): {"accuracy": float(np.mean([p["accuracy"] for p in r])) if r else None,
                        "flops": float(np.mean([p["flops"] for p in r])) if r else None} for g, r in rows.items()}
    return chosen, summary


def run_uniform(table: Table, budget: int, policy: Any, scorer: Any, problems: list[Problem], base: RunConfig,
                *, force: bool = False, prm: str | None = None) -> OptimalResult:
    """`--allocation uniform`: the table's best fixed config within `budget` for every problem (no probe, no
    prediction): the baseline the other two modes must beat."""
    executor = as_executor(policy, scorer)
    try:
        t0 = time.perf_counter()
        prm, info = checked_scorer(table, executor, scorer, prm, force)
        usable = [b for b in table.fixed if b <= budget]
        if not usable:
            raise ConfigError("budget", budget, f"below the smallest calibrated budget {min(table.budgets)}")
        choice = table.fixed[max(usable)]
        choices = {p.id: choice for p in problems}
        compute = {p.id: Compute() for p in problems}
        failed: dict[str, str] = {}
        correct: dict[str, bool] = {}
        run_ids = run_choices(executor, base, prm if info else None, problems, choices, compute, failed, correct)
        grand = total_compute(compute)
        return OptimalResult(budget, table.prm, problems, {}, {p.id: "all" for p in problems}, choices, correct,
                             grand, Compute(), run_ids, time.perf_counter() - t0, compute, failed,
                             {p.id: "uniform" for p in problems}, None)
    finally:
        if executor is not policy:
            executor.close()
