"""Issue 17's measurements from a finished sweep: what the adaptive and confidence-based strategies buy.

    python bench/new_strategies.py runs/sweep/sweep-NAME.json [--json]

On the held-out half of the sweep (the calibration split of ``testtime calibrate``):
* accuracy and FLOPs per budget for every strategy family (the report's family curves);
* adaptive self-consistency: samples drawn per problem at each N vs majority@N's N, and their accuracies;
* confidence-weighted voting vs plain majority voting at each N, per oracle difficulty bin;
* the compute-optimal curve (oracle and predicted bins) calibrated on every config vs on the paper's
  configs only: what the richer space buys. A config is the paper's when its strategy class and its
  selection both say so (``Strategy.from_paper``, ``Selection.from_paper``): cot, majority, best_of_n, beam
  and dvts with majority / PRM-Max / PRM-Vote; the confidence votes, adaptive voting, DeepConf online,
  REBASE and the particle filter are new.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import replace
from typing import Any

from testtime.optimal.analysis import family_curves
from testtime.optimal.calibrate import ALL, OPT_ORACLE, OPT_PRED, calibrate, evaluate
from testtime.optimal.sweep import Cell, SweepResult
from testtime.search import strategy_class
from testtime.search.adaptive import AdaptiveMajority
from testtime.search.selection import CONFIDENCE_SELECTIONS, SELECTIONS
from testtime.stats import compare_paired


def from_paper(cell: Cell) -> bool:
    """Whether a cell's config is in the paper's space: its strategy and its selection both are."""
    return strategy_class(cell.strategy).from_paper and (cell.selection is None
                                                        or SELECTIONS[cell.selection].from_paper)


def new_votes(sweep: SweepResult) -> list[str]:
    """The new PRM-free configs (confidence votes, adaptive voting, DeepConf online): compared with majority@N."""
    return sorted({c.config for c in sweep.cells if not from_paper(c) and not strategy_class(c.strategy).needs_scorer})


def by_bin(sweep: SweepResult, ids: set[str], bins: dict[str, str], config: str) -> dict[str, dict[int, float]]:
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in sweep.cells:
        if c.config == config and c.problem_id in ids:
            for label in (bins[c.problem_id], ALL):
                acc[label][c.budget].append(c.accuracy)
    return {label: {b: sum(v) / len(v) for b, v in sorted(per.items())} for label, per in acc.items()}


def per_problem(sweep: SweepResult, ids: list[str], config: str, budget: int) -> list[float] | None:
    """One config's held-out accuracies at one budget, in `ids` order (None: not measured on every problem)."""
    acc = {c.problem_id: c.accuracy for c in sweep.cells if c.config == config and c.budget == budget}
    return [acc[p] for p in ids] if all(p in acc for p in ids) else None


def paired(a: list[float] | None, b: list[float] | None, strata: list[str]) -> str | None:
    """a - b on the same problems: difference, bootstrap interval (stratified by bin), McNemar's exact test."""
    return compare_paired(a, b, strata).describe() if a is not None and b is not None else None


def measure(sweep: SweepResult) -> dict[str, Any]:
    table = calibrate(sweep)
    ev = evaluate(sweep, table)
    held = set(table.holdout_ids)
    bins = ev.oracle_bins
    families = family_curves(sweep, table, bins)
    # adaptive: the samples it drew, from its tokens over the pool's tokens per sample
    per_sample = {c.problem_id: c.tokens / c.budget for c in sweep.cells if c.config == "majority"}
    drawn: dict[int, list[float]] = defaultdict(list)
    for c in sweep.cells:
        if c.config == AdaptiveMajority.name and c.problem_id in held and per_sample.get(c.problem_id):
            drawn[c.budget].append(c.tokens / per_sample[c.problem_id])
    maj, ada = by_bin(sweep, held, bins, "majority"), by_bin(sweep, held, bins, AdaptiveMajority.name)
    adaptive = {b: {"samples_drawn": sum(v) / len(v), "accuracy": ada.get(ALL, {}).get(b),
                    "majority_accuracy": maj.get(ALL, {}).get(b)} for b, v in sorted(drawn.items())}
    confidence = {cfg: by_bin(sweep, held, bins, cfg) for cfg in ("majority", *CONFIDENCE_SELECTIONS)}
    ids = sorted(held)
    strata = [bins[p] for p in ids]
    budgets = sorted({c.budget for c in sweep.cells})
    versus_majority = {cfg: {b: paired(per_problem(sweep, ids, cfg, b), per_problem(sweep, ids, "majority", b), strata)
                             for b in budgets} for cfg in new_votes(sweep)}
    # the paper's space only: the same sweep without the new configs, calibrated the same way
    paper = replace(sweep, cells=[c for c in sweep.cells if from_paper(c)])
    ev_paper = evaluate(paper, calibrate(paper))
    optimal = {}
    richer: dict[str, dict[int, str | None]] = {}
    for k in (OPT_ORACLE, OPT_PRED):
        new_pts = {p.budget: p for p in ev.curve(k)}
        old_pts = {p.budget: p for p in ev_paper.curve(k)}
        richer[k] = {b: paired([new_pts[b].per_problem[p] for p in ids], [old_pts[b].per_problem[p] for p in ids],
                               strata) for b in sorted(set(new_pts) & set(old_pts))}
    for name, e in (("with new strategies", ev), ("paper's strategies only", ev_paper)):
        optimal[name] = {k: {p.budget: (round(p.accuracy, 4), p.flops) for p in e.curve(k)}
                         for k in (OPT_ORACLE, OPT_PRED)}
    chosen = {label: {b: ch.config for b, ch in row.items()} for label, row in table.table.items()}
    return {"held_out": len(held), "calibration": len(table.calibration_ids),
            "bins": {label: sum(1 for p in held if bins[p] == label) for label in set(bins.values())},
            "families": families.get(ALL, {}), "adaptive": adaptive, "confidence": confidence,
            "versus_majority": versus_majority, "optimal": optimal, "richer_minus_paper": richer, "chosen": chosen,
            "paper_configs": sorted({c.config for c in paper.cells}),
            "new_configs": sorted({c.config for c in sweep.cells if not from_paper(c)}), "metrics": ev.decided_by}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = measure(SweepResult.load(args.sweep))
    if args.json:
        print(json.dumps(out, default=str))
        return
    print(f"held-out problems: {out['held_out']} (calibration {out['calibration']}); bins {out['bins']}")
    print(f"new configs (left out of the paper's space): {', '.join(out['new_configs'])}")
    print("\naccuracy (FLOPs) per budget, held out, per family:")
    for fam, pts in out["families"].items():
        print(f"  {fam:40s} " + "  ".join(f"N={p['budget']}: {p['accuracy']:.1%} ({p['flops']:.2e})" for p in pts))
    print("\nadaptive self-consistency vs majority@N (held out):")
    for b, a in out["adaptive"].items():
        print(f"  N={b}: drew {a['samples_drawn']:.2f} samples, accuracy {a['accuracy']:.1%} vs majority "
              f"{a['majority_accuracy']:.1%}")
    print("\nconfidence votes vs majority per oracle bin (held out):")
    for label in sorted(out["confidence"]["majority"]):
        for cfg, per in out["confidence"].items():
            row = per.get(label, {})
            print(f"  {label:7s} {cfg:16s} " + "  ".join(f"N={b}: {a:.1%}" for b, a in row.items()))
    print("\npaired vs majority@N on the same held-out problems (interval stratified by bin):")
    for cfg, per in out["versus_majority"].items():
        for b, text in per.items():
            if text:
                print(f"  {cfg:18s} N={b}: {text}")
    print("\ncompute-optimal curve (held out) with and without the new strategies:")
    for name, curves in out["optimal"].items():
        for k, pts in curves.items():
            print(f"  {name:24s} {k:32s} " + "  ".join(f"N={b}: {a:.1%}" for b, (a, _f) in pts.items()))
    print("\nwith minus without the new strategies, paired on the held-out problems:")
    for k, per in out["richer_minus_paper"].items():
        for b, text in per.items():
            print(f"  {k:32s} N={b}: {text}")
    print("\ncalibrated choice per bin and budget:", json.dumps(out["chosen"]))


if __name__ == "__main__":
    main()
