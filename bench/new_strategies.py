"""Issue 17's measurements from a finished sweep: what the adaptive and confidence-based strategies buy.

    python bench/new_strategies.py runs/sweep/sweep-NAME.json [--json]

On the held-out half of the sweep (the calibration split of ``testtime calibrate``):
* accuracy and FLOPs per budget for every strategy family (the report's family curves);
* adaptive self-consistency: samples drawn per problem at each N vs majority@N's N, and their accuracies;
* confidence-weighted voting vs plain majority voting at each N, per oracle difficulty bin;
* the compute-optimal curve (oracle and predicted bins) calibrated on every config vs on the paper's
  configs only (no confidence votes, no adaptive voting, no particle filter): what the richer space buys.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import replace
from typing import Any

from testtime.optimal.analysis import family_curves
from testtime.optimal.calibrate import ALL, OPT_ORACLE, OPT_PRED, calibrate, evaluate
from testtime.optimal.sweep import SweepResult
from testtime.search.adaptive import AdaptiveMajority
from testtime.search.particle import ParticleFilter
from testtime.search.selection import CONFIDENCE_SELECTIONS

NEW = (*CONFIDENCE_SELECTIONS, AdaptiveMajority.name, ParticleFilter.name)


def is_new(config: str) -> bool:
    return config.split("/")[0].split("(")[0] in NEW


def by_bin(sweep: SweepResult, ids: set[str], bins: dict[str, str], config: str) -> dict[str, dict[int, float]]:
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in sweep.cells:
        if c.config == config and c.problem_id in ids:
            for label in (bins[c.problem_id], ALL):
                acc[label][c.budget].append(c.accuracy)
    return {label: {b: sum(v) / len(v) for b, v in sorted(per.items())} for label, per in acc.items()}


def measure(sweep: SweepResult) -> dict[str, Any]:
    table = calibrate(sweep)
    ev = evaluate(sweep, table)
    held = set(table.holdout_ids)
    bins: dict[str, str] = ev["oracle_bins"]
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
    # the paper's space only: the same sweep without the new configs, calibrated the same way
    paper = replace(sweep, cells=[c for c in sweep.cells if not is_new(c.config)])
    ev_paper = evaluate(paper, calibrate(paper))
    optimal = {}
    for name, e in (("with new strategies", ev), ("paper's strategies only", ev_paper)):
        curves = e["curves"].get(ALL, {})
        optimal[name] = {k: {p["budget"]: (round(p["accuracy"], 4), p["flops"]) for p in curves.get(k, [])}
                         for k in (OPT_ORACLE, OPT_PRED)}
    chosen = {label: {b: ch.config for b, ch in row.items()} for label, row in table.table.items()}
    return {"held_out": len(held), "calibration": len(table.calibration_ids),
            "bins": {label: sum(1 for p in held if bins[p] == label) for label in set(bins.values())},
            "families": families.get(ALL, {}), "adaptive": adaptive, "confidence": confidence,
            "optimal": optimal, "chosen": chosen, "metrics": ev.get("decided_by")}


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
    print("\ncompute-optimal curve (held out) with and without the new strategies:")
    for name, curves in out["optimal"].items():
        for k, pts in curves.items():
            print(f"  {name:24s} {k:32s} " + "  ".join(f"N={b}: {a:.1%}" for b, (a, _f) in pts.items()))
    print("\ncalibrated choice per bin and budget:", json.dumps(out["chosen"]))


if __name__ == "__main__":
    main()
