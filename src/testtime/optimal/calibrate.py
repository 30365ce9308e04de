"""Calibration: a sweep -> the best config per (difficulty bin, budget), a versioned artifact.

Problems are split (deterministically, by a hash of their id) into a calibration part and a held-out
part. On the calibration part, for every bin and budget B the best config is the one with the highest
mean accuracy among configs measured at a budget <= B (spending less is allowed; ties go to the
smaller budget, then the config name). The best *fixed* config per budget (no bins) is chosen the same
way, so the held-out comparison is fair: both were picked on the same problems.

The selector cannot see oracle bins, so the artifact also carries a difficulty predictor: a least-squares
line from the probe's features (answer agreement among probe_n samples, their mean min step reward) to
pass@1, fitted on the calibration part; its bins are compared with the oracle's on the held-out part.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from testtime.errors import ConfigError
from testtime.optimal.artifact import read_artifact
from testtime.optimal.metrics import absolute_bins, bin_order, confusion_matrix
from testtime.optimal.sweep import Cell, ProblemInfo, SweepResult
from testtime.search import CoT, Majority, strategy_class

TABLE_KIND = "testtime-calibration"
TABLE_VERSION = 1
ALL = "all"


@dataclass
class Choice:
    config: str
    strategy: str
    budget: int
    m: int | None
    selection: str | None
    accuracy: float  # mean on the calibration problems it was chosen on
    n_problems: int


@dataclass
class Predictor:
    """pass@1 ~ intercept + w_agree * agreement + w_score * probe_score (clipped to [0, 1])."""

    probe_n: int
    coef: list[float]  # [intercept, agreement, probe_score]
    uses_score: bool

    def predict(self, agreement: float, probe_score: float | None) -> float:
        x = [1.0, agreement, (probe_score or 0.0) if self.uses_score else 0.0]
        return float(min(1.0, max(0.0, sum(a * b for a, b in zip(self.coef, x, strict=True)))))


@dataclass
class Table:
    policy: str
    prm: str | None
    oracle_prm: bool
    dataset: str
    recipe: str
    easy: float
    hard: float
    budgets: list[int]
    table: dict[str, dict[int, Choice]]  # bin -> budget -> choice (bin "all": no difficulty)
    fixed: dict[int, Choice]
    predictor: Predictor
    calibration_ids: list[str]
    holdout_ids: list[str]
    created: float = field(default_factory=time.time)
    kind: str = TABLE_KIND
    version: int = TABLE_VERSION

    def choice(self, bin_label: str, budget: int) -> Choice:
        """The best config for a bin within `budget` (the largest calibrated budget <= budget)."""
        usable = [b for b in self.budgets if b <= budget]
        if not usable:
            raise ConfigError("budget", budget, f"below the smallest calibrated budget {min(self.budgets)}")
        row = self.table.get(bin_label) or self.table[ALL]
        b = max(x for x in usable if x in row) if any(x in row for x in usable) else None
        if b is None:
            return self.table[ALL][max(usable)]
        return row[b]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = asdict(self)
        d["table"] = {k: {str(b): c for b, c in v.items()} for k, v in d["table"].items()}
        d["fixed"] = {str(b): c for b, c in d["fixed"].items()}
        path.write_text(json.dumps(d, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Table:
        d = read_artifact(path, f"table {path}", TABLE_VERSION, "run `testtime calibrate` first", TABLE_KIND)
        d["table"] = {k: {int(b): Choice(**c) for b, c in v.items()} for k, v in d["table"].items()}
        d["fixed"] = {int(b): Choice(**c) for b, c in d["fixed"].items()}
        d["predictor"] = Predictor(**d["predictor"])
        return cls(**d)


def split_problems(ids: Iterable[str], holdout: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(calibration, held-out) by a hash of (seed, id): stable whatever the order or subset of problems."""
    calib, held = [], []
    for pid in ids:
        h = int.from_bytes(hashlib.sha256(f"{seed}\x00{pid}".encode()).digest()[:8], "little") / 2**64
        (held if h < holdout else calib).append(pid)
    return calib, held


def mean_accuracy(cells: Iterable[Cell], ids: set[str]) -> dict[tuple[str, int], tuple[float, int, Cell]]:
    """(config, budget) -> (mean accuracy over `ids`, problems counted, an example cell)."""
    acc: dict[tuple[str, int], list[float]] = defaultdict(list)
    example: dict[tuple[str, int], Cell] = {}
    for c in cells:
        if c.problem_id in ids:
            acc[(c.config, c.budget)].append(c.accuracy)
            example.setdefault((c.config, c.budget), c)
    return {k: (sum(v) / len(v), len(v), example[k]) for k, v in acc.items()}


def best_within(acc: Mapping[tuple[str, int], tuple[float, int, Cell]], budget: int) -> Choice | None:
    """The best config measured at a budget <= `budget` (ties: smaller budget, then config name)."""
    options = [(k, v) for k, v in acc.items() if k[1] <= budget]
    if not options:
        return None
    (config, b), (a, n, cell) = min(options, key=lambda kv: (-kv[1][0], kv[0][1], kv[0][0]))
    return Choice(config, cell.strategy, b, cell.m, cell.selection, a, n)


def fit_predictor(infos: Iterable[ProblemInfo], probe_n: int) -> Predictor:
    infos = list(infos)
    uses_score = any(p.probe_score is not None for p in infos)
    if not infos:
        return Predictor(probe_n, [0.5, 0.0, 0.0], uses_score)
    x = np.array([[1.0, p.agreement, (p.probe_score or 0.0) if uses_score else 0.0] for p in infos])
    y = np.array([p.pass1 for p in infos])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return Predictor(probe_n, [float(c) for c in coef], uses_score)


def calibrate(sweep: SweepResult, easy: float | None = None, hard: float | None = None) -> Table:
    recipe = sweep.recipe
    diff = recipe.get("difficulty", {})
    easy = diff.get("easy", 0.5) if easy is None else easy
    hard = diff.get("hard", 0.1) if hard is None else hard
    ids = [p.id for p in sweep.problems]
    calib, held = split_problems(ids, recipe.get("holdout", 0.5), recipe.get("seed", 0))
    bins = absolute_bins({p.id: p.pass1 for p in sweep.problems}, easy=easy, hard=hard)
    budgets = sorted({c.budget for c in sweep.cells})
    table: dict[str, dict[int, Choice]] = {}
    for label in [*bin_order(set(bins.values())), ALL]:
        members = {pid for pid in calib if label == ALL or bins[pid] == label}
        if not members:
            continue
        acc = mean_accuracy(sweep.cells, members)
        row = {b: ch for b in budgets if (ch := best_within(acc, b)) is not None}
        if row:
            table[label] = row
    fixed = table.get(ALL, {})
    info = {p.id: p for p in sweep.problems}
    return Table(
        policy=sweep.policy, prm=sweep.prm, oracle_prm=sweep.oracle_prm, dataset=recipe.get("dataset", "?"),
        recipe=recipe.get("name", "?"), easy=easy, hard=hard, budgets=budgets, table=table, fixed=fixed,
        predictor=fit_predictor([info[i] for i in calib], diff.get("probe_n", 4)),
        calibration_ids=calib, holdout_ids=held,
    )


def predicted_bins(table: Table, infos: Iterable[ProblemInfo]) -> dict[str, str]:
    pred = {p.id: table.predictor.predict(p.agreement, p.probe_score) for p in infos}
    return absolute_bins(pred, easy=table.easy, hard=table.hard)


def evaluate(sweep: SweepResult, table: Table) -> dict[str, Any]:
    """Held-out curves per budget: compute-optimal (oracle bins and predicted bins), the best fixed config,
    majority, CoT; per bin; plus the confusion matrix of predicted vs oracle bins."""
    held = set(table.holdout_ids)
    infos = {p.id: p for p in sweep.problems if p.id in held}
    oracle = absolute_bins({i: p.pass1 for i, p in infos.items()}, easy=table.easy, hard=table.hard)
    predicted = predicted_bins(table, infos.values())
    cell = {(c.problem_id, c.config, c.budget): c for c in sweep.cells if c.problem_id in held}
    probe_cost = _probe_cost(sweep, table.predictor.probe_n, held)
    labels = bin_order(set(oracle.values()) | set(predicted.values()))
    curves: dict[str, dict[str, list[dict[str, float]]]] = {b: defaultdict(list) for b in [*labels, ALL]}

    def point(ids: list[str], pick, extra_cost: bool) -> dict[str, float] | None:
        got = []
        for pid in ids:
            ch = pick(pid)
            c = cell.get((pid, ch.config, ch.budget)) if ch else None
            if c is None:
                return None
            got.append((c, probe_cost.get(pid, (0.0, 0.0)) if extra_cost else (0.0, 0.0)))
        if not got:
            return None
        n = len(got)
        return {"accuracy": sum(c.accuracy for c, _ in got) / n,
                "tokens": sum(c.tokens + pc[0] for c, pc in got) / n,
                "flops": sum(c.flops + pc[1] for c, pc in got) / n}

    for b in table.budgets:
        for label in [*labels, ALL]:
            ids = sorted(pid for pid in infos if label == ALL or oracle[pid] == label)
            series = {
                "compute-optimal (oracle bins)": point(ids, lambda p, b=b: table.choice(oracle[p], b), False),
                "compute-optimal (predicted bins)": point(ids, lambda p, b=b: table.choice(predicted[p], b), True),
                "best fixed": point(ids, lambda p, b=b: table.fixed.get(max(x for x in table.budgets if x <= b)),
                                    False),
            }
            for cfg in (Majority.name, CoT.name):  # the baselines, at the budgets they can spend
                if strategy_class(cfg).effective_n(b) == b:
                    series[cfg] = point(ids, lambda p, b=b, cfg=cfg: _choice_of(cfg, b), False)
            for name, pt in series.items():
                if pt is not None:
                    curves[label][name].append({"budget": b, **pt})
    confusion = confusion_matrix(oracle, predicted, labels)
    return {"curves": {k: dict(v) for k, v in curves.items()}, "labels": labels, "confusion": confusion,
            "n_holdout": len(infos), "oracle_bins": oracle, "predicted_bins": predicted}


def _choice_of(strategy: str, budget: int) -> Choice:
    """A baseline strategy's cell at a budget (its config is its name)."""
    return Choice(strategy, strategy, strategy_class(strategy).effective_n(budget), None, None, 0.0, 0)


def _probe_cost(sweep: SweepResult, probe_n: int, ids: set[str]) -> dict[str, tuple[float, float]]:
    """(tokens, FLOPs) of the probe per problem: probe_n samples of the pool, scored when the pool was."""
    pooled_cells = [c for c in sweep.cells if strategy_class(c.strategy).pooled]
    scored = any(strategy_class(c.strategy).needs_scorer for c in pooled_cells)
    out: dict[str, tuple[float, float]] = {}
    for c in pooled_cells:
        # the probe's cost per sample is the pool's: PRM-scored cells when the pool was scored
        if c.problem_id in ids and strategy_class(c.strategy).needs_scorer == scored and c.problem_id not in out:
            out[c.problem_id] = (c.tokens / c.budget * probe_n, c.flops / c.budget * probe_n)
    return out
