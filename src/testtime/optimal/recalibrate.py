"""Recalibrate on the user's own problems: one pool, a table for *their* domain, its held-out figures.

A table calibrated on one kind of problem can mislead on another (``optimal.shift`` says when). The fix is
cheap: a few dozen of the user's problems with answers, sampled once at N_max -- CoT plus one Best-of-N pool,
from which majority voting and every PRM selection at every N <= N_max are subsampled -- then calibrated
with the same cross-validated, shrunk choice as any sweep. ``recalibrate`` runs exactly a sweep of that
recipe over the given problems (so it resumes and replays like one) and returns the table with the held-out
evaluation of it.

Without answers, ``refit_label_free`` keeps a table's choices and refits only its difficulty predictor on the
user's unlabelled problems: the target is each problem's self-consistency (the share of an N-sample pool that
states the pool's majority answer), the inputs the same probe features, so the predictor maps this domain's
probe onto how settled its answers are. Self-consistency overstates pass@1 where the policy is consistently
wrong, so such a table bins by "how settled", not by accuracy; with answers, ``recalibrate`` is the real fix.
The refit table's profile is the user's problems, so its shift check then compares against them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from testtime.config import RunConfig
from testtime.errors import ConfigError
from testtime.optimal.calibrate import (
    ALL,
    PROMPT_KEYS,
    Evaluation,
    Table,
    calibrate,
    evaluate,
    fit_predictor,
    profile_of,
)
from testtime.optimal.metrics import absolute_bins, powers_of_two
from testtime.optimal.recipe import Recipe
from testtime.optimal.sweep import ProblemInfo, SweepResult, probe_features, run_sweep, sweep_path
from testtime.search import BestOfN, CoT, Majority
from testtime.types import Problem


@dataclass
class Recalibration:
    recipe: Recipe
    sweep: SweepResult
    table: Table
    table_path: Path
    sweep_path: Path
    evaluation: Evaluation  # calibrate.evaluate on the held-out part

    def heldout_rows(self) -> list[dict[str, Any]]:
        """Per budget: held-out accuracy of compute-optimal (as the selector runs it) and of each reference."""
        curves = self.evaluation.curves.get(ALL, {})
        rows = []
        for b in self.table.budgets:
            row: dict[str, Any] = {"budget": b}
            for name, pts in curves.items():
                row[name] = next((p.accuracy for p in pts if p.budget == b), None)
            rows.append(row)
        return rows

    def heldout_intervals(self) -> dict[int, dict[str, list[float]]]:
        """Per budget and series: the 95% bootstrap interval of the held-out accuracy (stratified by oracle
        bin), and the warnings the sample size calls for (``testtime.stats``)."""
        from testtime import stats

        bins = self.evaluation.oracle_bins
        out: dict[int, dict[str, list[float]]] = {}
        for name, pts in self.evaluation.curves.get(ALL, {}).items():
            for p in pts:
                if p.per_problem:
                    iv = stats.mean_ci(list(p.per_problem.values()), [bins.get(i, "?") for i in p.per_problem])
                    out.setdefault(p.budget, {})[name] = iv.as_list()
        return out

    def warnings(self) -> list[str]:
        from testtime import stats

        return stats.small_sample_warnings(len(self.table.holdout_ids), self.table.bin_support())


def recalibration_recipe(dataset: str, *, prm: str | None, n_max: int = 8, holdout: float = 0.3,
                         out: str = "runs/recalibrate", name: str | None = None, **fields: Any) -> Recipe:
    """The sweep recipe of a recalibration: CoT and one pool (Best-of-N with a PRM, else majority)."""
    pool = BestOfN.name if prm else Majority.name
    return Recipe.model_validate({
        "name": name or f"recalibrate-{Path(dataset).stem}", "dataset": dataset, "prm": prm, "n_max": n_max,
        "budgets": powers_of_two(n_max) if n_max >= 1 else None, "strategies": [CoT.name, pool],
        "holdout": holdout, "out": out,
        **fields,
    })


def recalibrate(recipe: Recipe, executor: Any, problems: list[Problem],
                on_progress: Callable[[int, int, str], None] | None = None) -> Recalibration:
    """Run the recipe's sweep over `problems` (the user's, answers included), calibrate, evaluate held-out."""
    sweep = run_sweep(recipe, executor, None, problems, on_progress)
    table = calibrate(sweep)
    path = sweep_path(recipe)
    table_path = table.save(path.with_name(path.stem.replace("sweep-", "table-") + ".json"))
    return Recalibration(recipe, sweep, table, table_path, path, evaluate(sweep, table))


def refit_label_free(table: Table, executor: Any, problems: list[Problem], base: RunConfig, n: int = 8,
                     prm: str | None = None) -> Table:
    """The table with its difficulty predictor refit on unlabelled problems (see the module docstring).

    One pool of `n` samples per problem (Best-of-N scored by `prm` when the predictor uses step rewards,
    else majority voting; the probe's samples are its first ``probe_n``, as in sweeps)."""
    probe_n = table.predictor.probe_n
    if n <= probe_n:
        raise ConfigError("n", n, f"must exceed the probe's {probe_n} samples (the target needs a larger pool)")
    scored = table.predictor.uses_score and prm is not None
    result = executor.run(base.with_strategy(BestOfN.name if scored else Majority.name, n,
                                             prm=prm if scored else None), problems)
    infos = []
    for r in result.results:
        if r.failed:
            continue
        groups = r.trace.answer_groups or []
        rewards = r.trace.scoring.rewards if r.trace.scoring is not None else None
        consistency = probe_features(groups, None).agreement  # over the whole pool, not the probe's part
        f = probe_features(groups[:probe_n], rewards[:probe_n] if rewards is not None else None)
        infos.append(ProblemInfo(r.problem.id, r.problem.level, consistency, f.agreement, f.score, f.prm_agrees,
                                 r.problem.kind))
    if not infos:
        raise ConfigError("dataset", base.dataset, "no problem could be probed: nothing to refit on")
    predictor = fit_predictor(infos, probe_n)
    predicted = {p.id: predictor.predict(p.agreement, p.probe_score) for p in infos}
    bins = absolute_bins(predicted, easy=table.easy, hard=table.hard)
    profile = profile_of(infos, bins, {k: getattr(base, k) for k in PROMPT_KEYS})
    return replace(table, predictor=predictor, profile=profile,
                   predictor_source=f"label-free: self-consistency of {n} samples on {len(infos)} problems")
