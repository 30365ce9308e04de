"""From a sweep and its calibration table to the report: held-out curves, the paper's metrics, trees.

Everything shown is measured on the held-out problems (never the ones the table was chosen on):

* per strategy family (cot, majority, best_of_n, beam(m=4), ...): the curve of the family's selection
  that did best on the calibration problems;
* the compute-optimal curve (each problem gets its oracle bin's calibrated config), the same with bins
  predicted by the probe (what `run --strategy optimal` does; probe compute included), and the best
  single fixed config per budget;
* the paper's metrics: performance gain over CoT, efficiency gain over majority voting, and whether
  compute-optimal beats the best fixed config at each budget.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from testtime.optimal.calibrate import ALL, FIXED, HINDSIGHT, OPT_ORACLE, OPT_PRED, Table, evaluate, mean_accuracy
from testtime.optimal.metrics import bin_accuracy, efficiency_gain, performance_gain
from testtime.optimal.sweep import SweepResult
from testtime.search import CoT, Majority
from testtime.store import Store

BASELINES = (Majority.name, CoT.name)  # the paper's references, drawn apart from the searched strategies


def _family(config: str) -> str:
    return config.split("/")[0]


def family_curves(sweep: SweepResult, table: Table, bins: dict[str, str]) -> dict[str, dict[str, list[dict]]]:
    """Per bin (and all): per strategy family, its calibration-best selection's held-out curve."""
    calib = set(table.calibration_ids)
    acc = mean_accuracy(sweep.cells, calib)
    best_key: dict[str, str] = {}
    score: dict[str, float] = {}
    for config, _b in acc:
        fam = _family(config)
        per_config = [v[0] for k, v in acc.items() if k[0] == config]
        mean = sum(per_config) / len(per_config)
        if fam not in best_key or mean > score[fam] or (mean == score[fam] and config < best_key[fam]):
            best_key[fam], score[fam] = config, mean
    held = set(table.holdout_ids)
    out: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    labels = sorted(set(bins.values())) + [ALL]
    for fam, config in sorted(best_key.items()):
        for label in labels:
            ids = {p for p in held if label == ALL or bins.get(p) == label}
            pts: dict[int, list] = defaultdict(list)
            for c in sweep.cells:
                if c.config == config and c.problem_id in ids:
                    pts[c.budget].append(c)
            curve = [
                {"budget": b, "accuracy": sum(c.accuracy for c in cs) / len(cs),
                 "flops": sum(c.flops for c in cs) / len(cs), "tokens": sum(c.tokens for c in cs) / len(cs)}
                for b, cs in sorted(pts.items()) if len(cs) == len(ids)
            ]
            if curve:
                name = config if "/" not in config else f"{fam} [{config.split('/', 1)[1]}]"
                out[label][name] = curve
    return dict(out)


def build_report(sweep: SweepResult, table: Table, store_dir: str | Path | None = None) -> dict[str, Any]:
    ev = evaluate(sweep, table)
    labels: list[str] = ev["labels"]
    oracle_bins: dict[str, str] = ev["oracle_bins"]
    fam = family_curves(sweep, table, oracle_bins)
    curves: dict[str, dict[str, list[dict]]] = {}
    reference: dict[str, dict[str, Any]] = {}
    frontier: dict[str, list[dict]] = {}
    for label in [*labels, ALL]:
        ev_curves = ev["curves"].get(label, {})
        curves[label] = {k: v for k, v in fam.get(label, {}).items() if k not in BASELINES}
        for name in (OPT_PRED, FIXED, HINDSIGHT):
            if ev_curves.get(name):
                curves[label][name] = ev_curves[name]
        cot = ev_curves.get(CoT.name) or []
        reference[label] = {"cot": cot[0]["accuracy"] if cot else None, "majority": ev_curves.get(Majority.name, [])}
        frontier[label] = [
            {**pt, "strategy": _frontier_label(table, label, pt["budget"])} for pt in ev_curves.get(OPT_ORACLE, [])
        ]
    metrics, fig_rows = _metrics(ev, table)
    tables = [
        {"title": "Calibrated best config per difficulty bin and budget (chosen on the calibration problems)",
         "columns": ["bin", *[f"N <= {b}" for b in table.budgets]],
         "rows": [[label, *[f"{row[b].config} @ N={row[b].budget} ({row[b].accuracy:.0%})" if b in row else "-"
                            for b in table.budgets]] for label, row in table.table.items()]},
        {"title": "Held-out accuracy per budget (all bins)", "columns": ["budget", *fig_rows["series"]],
         "rows": fig_rows["rows"]},
        {"title": "Held-out accuracy of every fixed config (strategy, selection, budget) that fits the budget",
         "columns": ["budget", "compute-optimal (predicted)", "fixed configs matched or beaten", "best fixed config"],
         "rows": _fixed_rows(ev)},
        {"title": "Predicted (probe) vs oracle difficulty bins on held-out problems: rows = oracle",
         "columns": ["oracle \\ predicted", *labels],
         "rows": [[lab, *row] for lab, row in zip(labels, ev["confusion"], strict=True)]},
    ]
    return {
        "title": f"Compute-optimal TTS: {sweep.recipe.get('name')} ({sweep.recipe.get('dataset')})",
        "policy": sweep.policy, "prm": sweep.prm or "-", "dataset": sweep.recipe.get("dataset", "?"),
        "created": time.strftime("%Y-%m-%d %H:%M"), "oracle_prm": sweep.oracle_prm,
        "bins": labels, "curves": curves, "reference": reference, "frontier": frontier,
        "tables": tables, "metrics": metrics, "trees": _trees(sweep, store_dir),
    }


def _fixed_rows(ev: dict[str, Any]) -> list[list[Any]]:
    pred = {p["budget"]: p["accuracy"] for p in ev["curves"].get(ALL, {}).get(OPT_PRED, [])}
    rows = []
    for b, accs in sorted(ev.get("fixed_configs", {}).items()):
        if b not in pred or not accs:
            continue
        best = max(accs, key=lambda k: (accs[k], k))
        beaten = sum(1 for a in accs.values() if pred[b] >= a - 1e-12)
        rows.append([b, f"{pred[b]:.0%}", f"{beaten} of {len(accs)}", f"{best} ({accs[best]:.0%})"])
    return rows


def _frontier_label(table: Table, label: str, budget: int) -> str:
    if label == ALL:
        return "per-bin choice"
    try:
        ch = table.choice(label, budget)
    except (ValueError, KeyError):
        return "?"
    return f"{ch.config}@{ch.budget}"


def _at(curve: list[dict], budget: int) -> float | None:
    return next((p["accuracy"] for p in curve if p["budget"] == budget), None)


def _metrics(ev: dict[str, Any], table: Table) -> tuple[dict[str, str], dict[str, Any]]:
    allc = ev["curves"].get(ALL, {})
    opt, pred, fixed = allc.get(OPT_ORACLE, []), allc.get(OPT_PRED, []), allc.get(FIXED, [])
    maj, cot = allc.get(Majority.name, []), allc.get(CoT.name, [])
    out: dict[str, str] = {"held-out problems": str(ev["n_holdout"]),
                           "calibration problems": str(len(table.calibration_ids))}
    if cot and pred:
        b = pred[-1]["budget"]
        g = performance_gain(pred[-1]["accuracy"], cot[0]["accuracy"])
        out[f"performance gain over CoT at N={b} (predicted bins)"] = "n/a (CoT 0%)" if g is None else f"{g:+.1%}"
    if maj and pred:
        e = efficiency_gain([(p["budget"], p["accuracy"]) for p in maj], [(p["budget"], p["accuracy"]) for p in pred])
        out["efficiency gain over majority voting (predicted bins)"] = str(e)
    if maj and opt:
        e = efficiency_gain([(p["budget"], p["accuracy"]) for p in maj], [(p["budget"], p["accuracy"]) for p in opt])
        out["efficiency gain over majority voting (oracle bins)"] = str(e)
    if fixed and pred:
        wins = [(p["budget"], p["accuracy"], _at(fixed, p["budget"])) for p in pred]
        ok = sum(1 for _b, a, f in wins if f is not None and a >= f - 1e-12)
        out["compute-optimal (predicted) >= best fixed"] = f"at {ok} of {len(wins)} budgets"
    hind = allc.get(HINDSIGHT, [])
    if hind and pred:
        wins = [(p["budget"], p["accuracy"], _at(hind, p["budget"])) for p in pred]
        ok = sum(1 for _b, a, f in wins if f is not None and a >= f - 1e-12)
        out["compute-optimal (predicted) >= best fixed in hindsight"] = f"at {ok} of {len(wins)} budgets"
    if pred and ev.get("fixed_configs"):
        b = pred[-1]["budget"]
        accs = list(ev["fixed_configs"].get(b, {}).values())
        if accs:
            beaten = sum(1 for a in accs if pred[-1]["accuracy"] >= a - 1e-12)
            out[f"fixed configs at N <= {b} that compute-optimal (predicted) matches or beats"] = (
                f"{beaten} of {len(accs)}")
    if ev.get("shift") is not None:
        sh = ev["shift"]
        out["held-out shift score (> 1: shifted)"] = f"{sh['score']:.2f}" + (" SHIFTED" if sh["shifted"] else "")
    try:
        out["probe bin accuracy"] = f"{bin_accuracy(ev['confusion']):.0%}"
    except ValueError:
        pass
    series = [s for s in (OPT_ORACLE, OPT_PRED, FIXED, HINDSIGHT, *BASELINES) if allc.get(s)]
    rows = [[b, *[(_at(allc[s], b) if _at(allc[s], b) is not None else None) for s in series]]
            for b in table.budgets]
    return out, {"series": series, "rows": rows}


def _trees(sweep: SweepResult, store_dir: str | Path | None) -> dict[str, Any]:
    if not sweep.trees or store_dir is None:
        return {}
    out: dict[str, Any] = {}
    path = Path(store_dir)
    if not (path / Store.FILENAME).exists():
        return {}
    with Store(path) as store:
        for pid, info in sweep.trees.items():
            nodes = store.get_tree(info["run_id"], pid)
            if nodes:
                problem = store.get_problem(info["run_id"], pid)
                out[pid] = {"question": problem.get("question", ""), "answer": problem.get("answer", ""),
                            "strategy": info["strategy"],
                            "nodes": [{k: getattr(n, k) for k in ("id", "parent", "depth", "step", "reward", "kept",
                                                                 "pruned", "terminal", "answer")} for n in nodes]}
    return out
