"""The paper's analysis (Liu et al. 2025, Table 5) from sweeps: ``testtime report --paper``.

Two protocols, reported side by side and never mixed:

* **paper** -- how the paper's numbers are made: every problem of the benchmark, difficulty bins from the
  oracle pass@1 (over the pool), each bin's best config at each budget chosen on those same problems
  (in-sample). Nothing is held out, so it is an optimistic figure, and the one to compare with Table 5.
* **deployment** -- what ``run --strategy optimal`` would get: held-out problems only, bins predicted by
  the probe (its cost included), configs chosen on the calibration problems (``calibrate.evaluate``).

Each row has Table 5's columns: CoT, majority voting at its largest budget, compute-optimal accuracy, the
performance gain over CoT and the efficiency gain over majority voting. Beside the calibrated per-bin
choice stands the authors' own rule, a reference policy fixed by model size (``authors_rule``), so a user
sees whether calibration beats it. FLOPs are given twice: cache-aware (what the run did; prompt tokens
served from a prefix cache cost nothing) and cache-independent (every sample pays its whole prompt, as
papers count).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testtime.optimal.calibrate import Choice, Table, best_within, decide, heldout_shift, mean_accuracy
from testtime.optimal.metrics import EfficiencyGain, absolute_bins, efficiency_gain, performance_gain
from testtime.optimal.sweep import Cell, SweepResult
from testtime.search import CoT, Majority, strategy_class

PAPER = "paper protocol: all problems, oracle bins, choice in-sample"
DEPLOYMENT = "deployment: held-out problems, predicted bins, choice from calibration"
CALIBRATED = "calibrated per-bin choice"
AUTHORS = "authors' rule (by model size)"

# --- the authors' reference policy --------------------------------------------------------------------------

_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([BM])(?![a-z])", re.IGNORECASE)


def params_from_name(model_id: str) -> float | None:
    """A policy's size in billions from its name ("Qwen2.5-7B-Instruct" -> 7.0, "SmolLM2-135M" -> 0.135)."""
    found = _SIZE.findall(model_id.rsplit("/", 1)[-1])
    if not found:
        return None
    value, unit = found[-1]
    return float(value) / (1000.0 if unit.upper() == "M" else 1.0)


def authors_rule(params_b: float, dataset: str) -> tuple[dict[str, str], str]:
    """The authors' compute-optimal choice by policy size: bin -> strategy name, and the rule's wording.

    Their issue #4: on MATH-500, below 7B beam search; 7B to 32B DVTS on easy and medium problems and beam
    search on hard ones; above 32B Best-of-N. On AIME24, below 14B DVTS; from 14B Best-of-N. Other datasets
    get the MATH-500 rule (said so in the wording)."""
    bins = ("easy", "medium", "hard")
    if dataset.startswith("aime"):
        if params_b < 14:
            return dict.fromkeys(bins, "dvts"), "AIME24, < 14B: DVTS"
        return dict.fromkeys(bins, "best_of_n"), "AIME24, >= 14B: Best-of-N"
    where = "MATH-500" if dataset.startswith("math500") else f"{dataset} (MATH-500 rule)"
    if params_b < 7:
        return dict.fromkeys(bins, "beam"), f"{where}, < 7B: beam search"
    if params_b <= 32:
        return {"easy": "dvts", "medium": "dvts", "hard": "beam"}, f"{where}, 7-32B: DVTS easy/medium, beam hard"
    return dict.fromkeys(bins, "best_of_n"), f"{where}, > 32B: Best-of-N"


# --- choices and curves ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    budget: int
    accuracy: float
    flops: float  # cache-aware, per problem
    flops_uncached: float | None  # cache-independent, per problem (None: a sweep written before it existed)


Pick = Callable[[str, int], tuple[str, int] | None]  # (problem, budget) -> (config, budget of its cell)


def per_bin_choices(cells: Sequence[Cell], bins: Mapping[str, str], budgets: Sequence[int],
                    strategies: Mapping[str, str] | None = None) -> dict[str, dict[int, Choice]]:
    """bin -> budget -> the best config within the budget on that bin's problems (in-sample); with
    ``strategies`` (bin -> strategy name) only that strategy's configs compete (its best selection)."""
    out: dict[str, dict[int, Choice]] = {}
    for label in sorted(set(bins.values())):
        ids = {p for p, b in bins.items() if b == label}
        wanted = None if strategies is None else strategies.get(label)
        acc = {k: v for k, v in mean_accuracy(cells, ids).items()
               if v[1] == len(ids) and (wanted is None or v[2].strategy == wanted)}
        row = {b: c for b in budgets if (c := best_within(acc, b)) is not None}
        out[label] = row
    return out


def curve(cells: Sequence[Cell], ids: Sequence[str], budgets: Sequence[int], pick: Pick,
          extra: Mapping[str, tuple[float, float]] | None = None) -> list[Point]:
    """Mean accuracy and FLOPs over `ids` at each budget where `pick` gives every problem a cell;
    `extra`: per-problem (cache-aware, cache-independent) FLOPs added to each (the probe's)."""
    index = {(c.problem_id, c.config, c.budget): c for c in cells}
    out = []
    for b in budgets:
        got = []
        for pid in ids:
            key = pick(pid, b)
            cell = index.get((pid, *key)) if key is not None else None
            if cell is None:
                break
            got.append(cell)
        if not ids or len(got) != len(ids):
            continue
        add = [(extra or {}).get(c.problem_id, (0.0, 0.0)) for c in got]
        full = None if any(c.flops_uncached is None for c in got) else (
            sum(c.flops_uncached or 0.0 for c in got) + sum(a[1] for a in add)) / len(got)
        out.append(Point(b, sum(c.accuracy for c in got) / len(got),
                         (sum(c.flops for c in got) + sum(a[0] for a in add)) / len(got), full))
    return out


def _baseline(name: str) -> Pick:
    def pick(pid: str, b: int) -> tuple[str, int] | None:
        n = strategy_class(name).effective_n(b)
        return (name, n) if n == b or name == CoT.name else None
    return pick


def _from(choices: Mapping[str, Mapping[int, Choice]], bins: Mapping[str, str]) -> Pick:
    def pick(pid: str, b: int) -> tuple[str, int] | None:
        c = choices.get(bins[pid], {}).get(b)
        return None if c is None else (c.config, c.budget)
    return pick


# --- Table 5 rows ----------------------------------------------------------------------------------------------


@dataclass
class PaperRow:
    """One policy's Table 5 row under one protocol and one compute-optimal rule."""

    policy: str
    dataset: str
    protocol: str  # PAPER or DEPLOYMENT
    rule: str  # CALIBRATED or AUTHORS (with its wording)
    n_problems: int
    cot: float | None
    majority: Point | None  # at majority's largest budget
    optimal: Point | None  # at the largest budget
    gain: float | None  # performance gain over CoT (None: CoT 0% or missing)
    efficiency: EfficiencyGain | None


def row_of(policy: str, dataset: str, protocol: str, rule: str, n: int, cot: list[Point], maj: list[Point],
           opt: list[Point]) -> PaperRow:
    c = cot[0].accuracy if cot else None
    top = opt[-1] if opt else None
    gain = performance_gain(top.accuracy, c) if top is not None and c is not None else None
    eff = efficiency_gain([(p.budget, p.accuracy) for p in maj], [(p.budget, p.accuracy) for p in opt]) \
        if maj and opt else None
    return PaperRow(policy, dataset, protocol, rule, n, c, maj[-1] if maj else None, top, gain, eff)


def paper_rows(sweep: SweepResult, table: Table | None = None) -> list[PaperRow]:
    """A sweep's rows: the paper protocol (calibrated per-bin choice, the authors' rule) and, given the
    calibration table, the deployment protocol (the same two on held-out problems with predicted bins)."""
    diff = sweep.recipe.get("difficulty", {})
    easy, hard = diff.get("easy", 0.5), diff.get("hard", 0.1)
    dataset = str(sweep.recipe.get("dataset", "?"))
    budgets = sorted({c.budget for c in sweep.cells})
    ids = sorted(p.id for p in sweep.problems)
    bins = absolute_bins({p.id: p.pass1 for p in sweep.problems}, easy=easy, hard=hard)
    size = params_from_name(sweep.policy)
    rule, wording = authors_rule(size, dataset) if size is not None else (None, "")
    cot = curve(sweep.cells, ids, [1], _baseline(CoT.name))
    maj = curve(sweep.cells, ids, budgets, _baseline(Majority.name))
    rows = [row_of(sweep.policy, dataset, PAPER, CALIBRATED, len(ids), cot, maj,
                   curve(sweep.cells, ids, budgets, _from(per_bin_choices(sweep.cells, bins, budgets), bins)))]
    if rule is not None:
        ref = per_bin_choices(sweep.cells, bins, budgets, rule)
        rows.append(row_of(sweep.policy, dataset, PAPER, f"{AUTHORS}: {wording}", len(ids), cot, maj,
                           curve(sweep.cells, ids, budgets, _from(ref, bins))))
    if table is not None:
        rows.extend(_deployment_rows(sweep, table, dataset, rule, wording))
    return rows


def _deployment_rows(sweep: SweepResult, table: Table, dataset: str, rule: Mapping[str, str] | None,
                     wording: str) -> list[PaperRow]:
    held = sorted(table.holdout_ids)
    infos = {p.id: p for p in sweep.problems if p.id in set(held)}
    held = [p for p in held if p in infos]
    if not held:
        return []
    budgets = table.budgets
    pred_pass1 = {i: table.predictor.predict(p.agreement, p.probe_score) for i, p in infos.items()}
    predicted = absolute_bins(pred_pass1, easy=table.easy, hard=table.hard)
    shift = heldout_shift(table, infos.values())
    probe = _probe_cost(sweep, table.predictor.probe_n, set(held))
    selected = {b: decide(table, b, pred_pass1, shift) for b in budgets}
    cot = curve(sweep.cells, held, [1], _baseline(CoT.name))
    maj = curve(sweep.cells, held, budgets, _baseline(Majority.name))

    def calibrated(pid: str, b: int) -> tuple[str, int] | None:
        ch = selected[b][pid][0]
        return ch.config, ch.budget

    # the selector's choices as calibrate.evaluate replays them (its held-out curve, tested equal)
    opt = curve(sweep.cells, held, budgets, calibrated, probe)
    rows = [row_of(sweep.policy, dataset, DEPLOYMENT, CALIBRATED, len(held), cot, maj, opt)]
    if rule is not None:
        calib = {p.id: p.pass1 for p in sweep.problems if p.id in set(table.calibration_ids)}
        cal_bins = absolute_bins(calib, easy=table.easy, hard=table.hard) if calib else {}
        ref = per_bin_choices(sweep.cells, cal_bins, budgets, rule)  # its selection chosen on calibration
        depends_on_bin = len(set(rule.values())) > 1  # only then must a deployment pay for the probe
        ref_curve = curve(sweep.cells, held, budgets, _from(ref, predicted), probe if depends_on_bin else None)
        rows.append(row_of(sweep.policy, dataset, DEPLOYMENT, f"{AUTHORS}: {wording}", len(held), cot, maj,
                           ref_curve))
    return rows


def _probe_cost(sweep: SweepResult, probe_n: int, ids: set[str]) -> dict[str, tuple[float, float]]:
    """(cache-aware, cache-independent) FLOPs of the probe per problem: probe_n samples of the pool, scored
    when the pool was (as ``calibrate.evaluate`` charges it)."""
    pooled = [c for c in sweep.cells if strategy_class(c.strategy).pooled]
    scored = any(strategy_class(c.strategy).needs_scorer for c in pooled)
    out: dict[str, tuple[float, float]] = {}
    for c in pooled:
        if c.problem_id in ids and strategy_class(c.strategy).needs_scorer == scored and c.problem_id not in out:
            out[c.problem_id] = (c.flops / c.budget * probe_n, (c.flops_uncached or 0.0) / c.budget * probe_n)
    return out


# --- rendering -------------------------------------------------------------------------------------------------

COLUMNS = ["policy", "dataset", "problems", "rule", "CoT", "majority@N", "compute-optimal@N",
           "gain over CoT", "efficiency gain over majority", "FLOPs/problem (cache-aware)",
           "FLOPs/problem (cache-independent)"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def row_cells(r: PaperRow) -> list[Any]:
    maj = "-" if r.majority is None else f"{_pct(r.majority.accuracy)} (N={r.majority.budget})"
    opt = "-" if r.optimal is None else f"{_pct(r.optimal.accuracy)} (N={r.optimal.budget})"
    gain = "n/a" if r.gain is None else f"{r.gain:+.1%}"
    eff = "n/a" if r.efficiency is None else f"{r.efficiency}x" if r.efficiency.value is not None else "n/a"
    return [r.policy, r.dataset, r.n_problems, r.rule, _pct(r.cot), maj, opt, gain, eff,
            _flops(r.optimal.flops if r.optimal else None),
            _flops(r.optimal.flops_uncached if r.optimal else None)]


def paper_tables(rows: Sequence[PaperRow]) -> list[dict[str, Any]]:
    """One table per protocol (title says which), in the report's table shape."""
    out = []
    for protocol in (PAPER, DEPLOYMENT):
        mine = [r for r in rows if r.protocol == protocol]
        if mine:
            out.append({"title": f"Table 5 ({protocol}); accuracies in %, FLOPs at the compute-optimal budget",
                        "columns": COLUMNS, "rows": [row_cells(r) for r in mine]})
    return out
