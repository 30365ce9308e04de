"""Recalibrate on the user's own problems: one pool, a table for *their* domain, its held-out figures.

A table calibrated on one kind of problem can mislead on another (``optimal.shift`` says when). The fix is
cheap: a few dozen of the user's problems with answers, sampled once at N_max -- CoT plus one Best-of-N pool,
from which majority voting and every PRM selection at every N <= N_max are subsampled -- then calibrated
with the same cross-validated, shrunk choice as any sweep. ``recalibrate`` runs exactly a sweep of that
recipe over the given problems (so it resumes and replays like one) and returns the table with the held-out
evaluation of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.optimal.calibrate import ALL, Table, calibrate, evaluate
from testtime.optimal.metrics import powers_of_two
from testtime.optimal.recipe import Recipe
from testtime.optimal.sweep import SweepResult, run_sweep, sweep_path
from testtime.search import BestOfN, CoT, Majority
from testtime.types import Problem


@dataclass
class Recalibration:
    recipe: Recipe
    sweep: SweepResult
    table: Table
    table_path: Path
    sweep_path: Path
    evaluation: dict[str, Any]  # calibrate.evaluate on the held-out part

    def heldout_rows(self) -> list[dict[str, Any]]:
        """Per budget: held-out accuracy of compute-optimal (as the selector runs it) and of each reference."""
        curves = self.evaluation["curves"].get(ALL, {})
        rows = []
        for b in self.table.budgets:
            row: dict[str, Any] = {"budget": b}
            for name, pts in curves.items():
                row[name] = next((p["accuracy"] for p in pts if p["budget"] == b), None)
            rows.append(row)
        return rows


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
