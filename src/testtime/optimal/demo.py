"""The demo: the main job of testtime, small enough for a laptop -- sweep, calibrate on half the problems,
choose compute-optimally on the other half, report.

It lives in ``testtime.optimal`` because it is the smallest instance of that package's study, not a
workflow of its own: it is a sweep (``optimal.sweep``) whose pool is Best-of-N with the ``arith-check``
step scorer, so ONE pool of N_max samples per problem serves majority voting, Best-of-N (every
aggregation x selection), confidence-weighted voting (the policy's own log-probabilities) and adaptive
self-consistency (replayed from the same samples, charged the samples it drew); plus greedy CoT. Then:

* ``calibrate``: the best config per difficulty bin and budget, chosen on the calibration half;
* ``build_report``: held-out curves per strategy family, the compute-optimal curve as the selector runs
  it (bins predicted by a probe, its cost included), the paper's metrics (performance gain over CoT,
  efficiency gain over majority voting), and the HTML report with its plots;
* ``run_optimal``: the selector itself on the held-out half at N_max, every generation replayed from the
  store (so the table's compute-optimal figure is the one a ``run --strategy optimal`` gets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.engine import RunConfig
from testtime.errors import ConfigError
from testtime.extraction import DEFAULT_EXTRACTION
from testtime.optimal.calibrate import ALL, FIXED, HINDSIGHT, OPT_ORACLE, OPT_PRED, Table, calibrate
from testtime.optimal.metrics import powers_of_two
from testtime.optimal.recipe import Recipe, StrategySpec
from testtime.optimal.report import ReportFiles
from testtime.optimal.selector import OptimalResult
from testtime.optimal.sweep import SweepResult
from testtime.search import BestOfN, CoT
from testtime.search.adaptive import AdaptiveMajority
from testtime.types import Problem

PRM = "arith-check"  # the CPU step scorer: checks each step's arithmetic
OPTIMAL_ROW = "compute-optimal"


@dataclass
class DemoResult:
    dataset: str
    n: int  # N_max: the pool per problem
    sweep: SweepResult
    table: Table
    report: dict[str, Any]  # analysis.build_report's data (held-out curves, metrics, tables)
    files: ReportFiles
    optimal: OptimalResult  # the selector run on the held-out half at N_max

    @property
    def budgets(self) -> list[int]:
        return powers_of_two(self.n)

    def rows(self) -> dict[str, dict[int, float]]:
        """Held-out accuracy per budget: CoT, majority, every strategy family, then the compute-optimal
        selector (predicted bins). CoT has budget 1 only."""
        ref = self.report["reference"].get(ALL, {})
        curves = self.report["curves"].get(ALL, {})
        out: dict[str, dict[int, float]] = {}
        if ref.get("cot") is not None:
            out["cot"] = {1: ref["cot"]}
        out["majority"] = {p["budget"]: p["accuracy"] for p in ref.get("majority", [])}
        for name, pts in curves.items():
            if name not in (OPT_ORACLE, OPT_PRED, FIXED, HINDSIGHT):
                out[name] = {p["budget"]: p["accuracy"] for p in pts}
        out[OPTIMAL_ROW] = {p["budget"]: p["accuracy"] for p in curves.get(OPT_PRED, [])}
        return out

    def samples_used(self) -> dict[int, float]:
        """Adaptive self-consistency's mean samples drawn per held-out problem at each budget N."""
        held = set(self.table.holdout_ids)
        per_sample: dict[str, float] = {}
        for c in self.sweep.cells:  # a majority cell at N costs N samples' tokens: the tokens of one sample
            if c.config == "majority" and c.problem_id in held:
                per_sample[c.problem_id] = c.tokens / c.budget
        out: dict[int, list[float]] = {}
        for c in self.sweep.cells:
            if c.config == AdaptiveMajority.name and per_sample.get(c.problem_id):
                out.setdefault(c.budget, []).append(c.tokens / per_sample[c.problem_id])
        return {b: sum(v) / len(v) for b, v in sorted(out.items())}

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        return {
            "dataset": self.dataset, "n": self.n, "n_problems": len(self.sweep.problems),
            "calibration_problems": len(self.table.calibration_ids), "held_out_problems": len(self.table.holdout_ids),
            "held_out_accuracy": {k: {str(b): a for b, a in v.items()} for k, v in self.rows().items()},
            "metrics": self.report["metrics"],
            "adaptive_samples_used": {str(b): v for b, v in self.samples_used().items()},
            "selector": self.optimal.summary(),
            "report": str(self.files.html), "plots": [str(p) for p in self.files.pngs],
            "sweep_wall_s": self.sweep.wall_s,
        }


def demo_recipe(dataset: str = "arith", n: int = 8, limit: int = 30, seed: int = 0, model: str | None = None,
                out: str | Path = "runs/demo", fewshot_file: str | None = None,
                extraction: str = DEFAULT_EXTRACTION) -> Recipe:
    """The demo's sweep, validated (``ConfigError`` names the field): the Best-of-N pool at N_max = n (its
    samples serve every voting and selection config), CoT, and adaptive self-consistency at 1, 2, 4 ... n."""
    if limit < 4:
        raise ConfigError("limit", limit, "the demo needs at least 4 problems (half calibrate, half are held out)")
    # the engine's own checks (N, the few-shot file, ...) on the pool's run
    RunConfig(dataset=dataset, strategy=BestOfN.name, n=n, limit=limit, seed=seed, model=model, out=str(out),
              fewshot_file=fewshot_file, prm=PRM, extraction=extraction)
    return Recipe(name="demo", dataset=dataset, limit=limit, seed=seed, model=model, prm=PRM, n_max=n,
                  budgets=powers_of_two(n), out=str(out), fewshot_file=fewshot_file, extraction=extraction,
                  strategies=[StrategySpec(name=CoT.name), StrategySpec(name=BestOfN.name),
                              StrategySpec(name=AdaptiveMajority.name)])


def run_demo(
    executor: Any,
    dataset: str = "arith",
    *,
    n: int = 8,
    limit: int = 30,
    seed: int = 0,
    model: str | None = None,
    out: str | Path = "runs/demo",
    problems: list[Problem] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    fewshot_file: str | None = None,
    extraction: str = DEFAULT_EXTRACTION,
) -> DemoResult:
    """The sweep on `executor` (``testtime.execution``; left open; it builds the arith-check scorer),
    calibration, the held-out report (``OUT/report/report.html``) and the selector on the held-out half.
    ``on_progress(step label, done, total)`` after each recorded batch of each run."""
    from testtime.optimal.analysis import build_report
    from testtime.optimal.report import write_report
    from testtime.optimal.selector import run_optimal
    from testtime.optimal.sweep import run_sweep

    recipe = demo_recipe(dataset, n, limit, seed, model, out, fewshot_file, extraction)
    sweep = run_sweep(recipe, executor, None, problems, on_batch=on_progress)
    table = calibrate(sweep)
    report = build_report(sweep, table, out)
    files = write_report(report, Path(out) / "report")
    held = set(table.holdout_ids)
    pool = problems if problems is not None else []
    if problems is None:
        from testtime.datasets import load_dataset

        pool = load_dataset(dataset, limit=limit, seed=seed)
    base = recipe.run_config(dataset, seed, recipe.strategies[0], 1)
    optimal = run_optimal(table, n, executor, None, [p for p in pool if p.id in held], base, prm=PRM)
    return DemoResult(dataset, n, sweep, table, report, files, optimal)
