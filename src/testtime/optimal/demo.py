"""The demo: CoT against majority voting at every N <= N_max, per difficulty level, with a plot.

It lives in ``testtime.optimal`` because it is the smallest instance of that package's study, not a
workflow of its own: its scaling curves are subsampled from one pool of N_max samples per problem with
the sweeps' own ``optimal.metrics.subsample_curves`` and ``selection_subset_scores`` (majority selection
only), and its figure is drawn by ``optimal.report``, next to the report's plots. A top-level module
would be a second home for scaling curves and plots.

``run_demo(executor, ...)`` runs CoT (N=1) and majority (N=N_max) over the problems and returns a
``DemoResult``: both runs, majority@k per level for k = 1, 2, 4, ... N_max, CoT and pass@N_max per level,
and the plot's path. A problem whose remote calls failed (see ``engine``) counts as wrong everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.engine import RunConfig, RunResult
from testtime.extraction import DEFAULT_EXTRACTION
from testtime.optimal.metrics import powers_of_two, selection_subset_scores, subsample_curves
from testtime.search import CoT, Majority
from testtime.search.selection import MAJORITY, Pool
from testtime.types import Problem

PLOT_NAME = "accuracy_vs_n.png"


@dataclass
class DemoResult:
    dataset: str
    n: int  # N_max: the majority pool per problem
    cot: RunResult
    majority: RunResult
    curves: dict[str, dict[int, float]]  # level label ("level 3", or "all") -> {k: majority@k accuracy}
    cot_by_level: dict[str, float]  # level label -> CoT accuracy
    pass_at_n: dict[str, float]  # level label -> share of problems with a right answer among the N samples
    plot: Path | None = None

    @property
    def budgets(self) -> list[int]:
        return powers_of_two(self.n)

    @property
    def n_problems(self) -> int:
        return len(self.majority.results)

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        return {"plot": str(self.plot), "cot": self.cot.summary(), "majority": self.majority.summary(),
                "curves": self.curves, "cot_by_level": self.cot_by_level}


def demo_configs(dataset: str = "arith", n: int = 8, limit: int | None = 30, seed: int = 0,
                 model: str | None = None, out: str | Path = "runs/demo",
                 fewshot_file: str | None = None, extraction: str = DEFAULT_EXTRACTION) -> tuple[RunConfig, RunConfig]:
    """The two runs (CoT at N=1, majority at N=n), validated (``ConfigError`` names the field)."""
    cot = RunConfig(dataset=dataset, strategy=CoT.name, n=1, limit=limit, seed=seed, model=model, out=str(out),
                    fewshot_file=fewshot_file, extraction=extraction)
    return cot, cot.with_strategy(Majority.name, n)


def level_label(problem: Problem) -> str:
    return f"level {problem.level}" if problem.level is not None else "all"


def majority_curves(cot: RunResult, majority: RunResult, n: int, seed: int = 0
                    ) -> tuple[dict[str, dict[int, float]], dict[str, float], dict[str, float]]:
    """(majority@k per level, CoT per level, pass@n per level), levels in the order problems came.

    Each problem's curve is subsampled from its own pool of n majority samples (its ``answer_groups``,
    graded); a level's curve is the mean over its problems. A failed problem has no samples and counts
    as wrong at every k, in CoT and in pass@n."""
    ks = powers_of_two(n)
    per_problem: dict[str, list[dict[int, float]]] = {}
    cot_ok: dict[str, list[bool]] = {}
    any_ok: dict[str, list[bool]] = {}
    for r_cot, r_maj in zip(cot.results, majority.results, strict=True):
        label = level_label(r_maj.problem)
        groups = r_maj.trace.answer_groups
        if r_maj.failed or not groups:
            groups, correct = [None] * n, [False] * n
        else:
            correct = list(r_maj.sample_correct)
        pool = Pool.of(groups)
        curves = subsample_curves(len(pool), ks, selection_subset_scores(pool, correct, [MAJORITY]), seed=seed)
        per_problem.setdefault(label, []).append(curves.get(MAJORITY.name, {}))
        cot_ok.setdefault(label, []).append(bool(r_cot.trace.correct))
        any_ok.setdefault(label, []).append(any(correct))
    curves_by_level = {label: {k: sum(c.get(k, 0.0) for c in cs) / len(cs) for k in ks}
                       for label, cs in per_problem.items()}
    cot_by_level = {label: sum(v) / len(v) for label, v in cot_ok.items()}
    pass_at_n = {label: sum(v) / len(v) for label, v in any_ok.items()}
    return curves_by_level, cot_by_level, pass_at_n


def run_demo(
    executor: Any,
    dataset: str = "arith",
    *,
    n: int = 8,
    limit: int | None = 30,
    seed: int = 0,
    model: str | None = None,
    out: str | Path = "runs/demo",
    problems: list[Problem] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    plot: bool = True,
    fewshot_file: str | None = None,
    extraction: str = DEFAULT_EXTRACTION,
) -> DemoResult:
    """CoT and majority@n on `executor` (``testtime.execution``; left open), the curves, and the plot
    (``OUT/accuracy_vs_n.png``). ``on_progress(run label, done, total)`` after each recorded batch."""
    from testtime.optimal.report import plot_budget_curves

    runs: list[RunResult] = []
    for config in demo_configs(dataset, n, limit, seed, model, out, fewshot_file, extraction):
        label = f"{config.strategy}@{config.n}"
        report = (lambda done, total, label=label: on_progress(label, done, total)) if on_progress else None
        runs.append(executor.run(config, problems, on_progress=report))
    cot, majority = runs
    curves, cot_by_level, pass_at_n = majority_curves(cot, majority, n, seed)
    path = None
    if plot:
        path = plot_budget_curves(curves, cot_by_level, Path(out) / PLOT_NAME,
                                  f"SmolLM2 on {dataset}: majority voting vs CoT")
    return DemoResult(dataset, n, cot, majority, curves, cot_by_level, pass_at_n, path)
