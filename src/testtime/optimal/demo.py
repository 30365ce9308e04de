"""The demo: the main job of testtime on a laptop -- where compute pays, shown on fresh problems.

It uses the table and difficulty model shipped for the embedded default (SmolLM2-135M + the ``arith-check``
step verifier, ``optimal/shipped/``): no calibration happens here, and the problems come from a seed the
table never saw. On them it measures (``optimal.study``): greedy CoT, majority@N, uniform Best-of-N with
arith-check, and compute-optimal allocation at the same *average* budget N (easy-looking problems get CoT,
hopeless-looking ones the minimum, the rest what is left), all from ONE pool of N samples per problem, with
paired intervals, the FLOPs allocation needs to match uniform Best-of-N, the efficiency gain over majority,
and an HTML report with a plot of where the budget went per difficulty level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.config import RunConfig
from testtime.errors import ConfigError
from testtime.extraction import DEFAULT_EXTRACTION
from testtime.optimal.calibrate import Table
from testtime.optimal.metrics import powers_of_two
from testtime.optimal.report import ReportFiles
from testtime.optimal.study import Study, allocation_study
from testtime.search import BestOfN
from testtime.types import Problem

PRM = "arith-check"  # the CPU step scorer: checks each step's arithmetic
# problems of a seed no shipped table was calibrated on (the table's sweeps use seeds 0 and 1)
DEMO_SEED = 7


@dataclass
class DemoResult:
    dataset: str
    n: int  # the pool per problem: the largest average budget
    table: Path
    study: Study
    summary: dict[str, Any]
    files: ReportFiles

    def json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "n": self.n, "table": str(self.table), **self.summary,
                "report": str(self.files.html), "plots": [str(p) for p in self.files.pngs]}


def demo_config(dataset: str = "arith", n: int = 8, limit: int = 100, seed: int = DEMO_SEED,
                model: str | None = None, out: str | Path = "runs/demo", fewshot_file: str | None = None,
                extraction: str = DEFAULT_EXTRACTION) -> RunConfig:
    """The settings every run of the demo shares, validated (``ConfigError`` names the field)."""
    if limit < 1:
        raise ConfigError("limit", limit, "the demo needs at least 1 problem")
    if n < 2:
        raise ConfigError("n", n, "the demo compares budgets 1 .. n: n must be >= 2")
    RunConfig(dataset=dataset, strategy=BestOfN.name, n=n, limit=limit, seed=seed, model=model, out=str(out),
              fewshot_file=fewshot_file, prm=PRM, extraction=extraction)
    return RunConfig(dataset=dataset, strategy="majority", n=1, limit=limit, seed=seed, model=model, out=str(out),
                     fewshot_file=fewshot_file, extraction=extraction)


def run_demo(executor: Any, table: Table, table_path: Path, problems: list[Problem], base: RunConfig, n: int = 8,
             on_step: Callable[[str], None] | None = None, min_gain: float | None = None,
             confidence: float = 0.95) -> DemoResult:
    """The study at average budgets 1, 2, 4 ... n on `executor` (left open; it builds arith-check), and the
    HTML report in ``OUT/report``."""
    from testtime.optimal.study_report import write_study_report

    study = allocation_study(table, executor, problems, base, PRM, budgets=powers_of_two(n), headline=n,
                             on_step=on_step, min_gain=min_gain)
    summary = study.summary(confidence)
    files = write_study_report(study, summary, Path(base.out) / "report",
                               f"Where compute pays: {len(problems)} {base.dataset} problems (seed {base.seed}), "
                               f"SmolLM2 + {PRM}")
    return DemoResult(base.dataset, n, table_path, study, summary, files)
