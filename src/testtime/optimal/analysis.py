"""From a sweep and its calibration table to the report: held-out curves, the paper's metrics, trees.

Everything shown is measured on the held-out problems (never the ones the table was chosen on):

* per strategy family (cot, majority, best_of_n, beam(m=4), ...): the curve of the family's selection
  that did best on the calibration problems;
* the compute-optimal curve (each problem gets its oracle bin's calibrated config), the same with bins
  predicted by the probe (what `run --strategy optimal` does; probe compute included), and the best
  single fixed config per budget;
* the paper's metrics: performance gain over CoT, efficiency gain over majority voting, and whether
  compute-optimal beats the best fixed config at each budget.

Every figure carries its uncertainty (``testtime.stats``): curve points a bootstrap interval over the
held-out problems (stratified by oracle bin), the comparisons with the best fixed config, CoT and majority
a paired difference with McNemar's exact test, the gains a bootstrap interval, and the report lists the
claims the data cannot carry (too few held-out problems, thin bins, a gain whose interval includes 1x).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from testtime import stats
from testtime.optimal.calibrate import (
    ALL,
    FIXED,
    HINDSIGHT,
    OPT_ORACLE,
    OPT_PRED,
    Curve,
    Evaluation,
    HeldoutPoint,
    Table,
    evaluate,
    mean_accuracy,
)
from testtime.optimal.metrics import absolute_bins, bin_accuracy, efficiency_gain, performance_gain
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
                 "flops": sum(c.flops for c in cs) / len(cs), "tokens": sum(c.tokens for c in cs) / len(cs),
                 "ci": stats.mean_ci([c.accuracy for c in cs], _strata(cs, bins, label)).as_list(),
                 **_spread_field([c.seed_accuracies for c in cs])}
                for b, cs in sorted(pts.items()) if len(cs) == len(ids)
            ]
            if curve:
                name = config if "/" not in config else f"{fam} [{config.split('/', 1)[1]}]"
                out[label][name] = curve
    return dict(out)


def _strata(cells: Sequence[Any], bins: Mapping[str, str], label: str) -> list[str] | None:
    """Oracle bins of the cells' problems for the all-problems panel (a bin's own panel is one stratum)."""
    return [bins.get(c.problem_id, "?") for c in cells] if label == ALL else None


def _spread_field(per_problem: Sequence[Sequence[float] | None]) -> dict[str, Any]:
    """{"seed_spread": ...} for a point whose every problem has per-seed accuracies; {} otherwise."""
    if not per_problem or any(not r for r in per_problem):
        return {}
    spread = stats.seed_spread([list(r or []) for r in per_problem])
    return {"seed_spread": spread.as_dict()} if spread else {}


def with_intervals(curve: Curve, bins: Mapping[str, str], label: str,
                   confidence: float = stats.DEFAULT_CONFIDENCE) -> list[dict]:
    """A held-out curve as the report's points: a bootstrap interval over their problems ("ci") and, over
    several sampling seeds, the seed-to-seed spread ("seed_spread"); no per-problem values."""
    out = []
    for p in curve:
        q: dict[str, Any] = {"budget": p.budget, "accuracy": p.accuracy, "tokens": p.tokens, "flops": p.flops}
        if p.per_problem:
            strata = [bins.get(pid, "?") for pid in p.per_problem] if label == ALL else None
            q["ci"] = stats.mean_ci(list(p.per_problem.values()), strata, confidence=confidence).as_list()
        q.update(_spread_field(list((p.per_seed or {}).values())))
        out.append(q)
    return out


def build_report(sweep: SweepResult, table: Table, store_dir: str | Path | None = None,
                 confidence: float = stats.DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """``confidence``: the level of every interval in the headline, its paragraph and the plotted bands."""
    ev = evaluate(sweep, table)
    labels, oracle_bins = ev.labels, ev.oracle_bins
    metrics, fig_rows, sure = _metrics(ev, table, confidence)
    shown = {label: {name: with_intervals(curve, oracle_bins, label, confidence) for name, curve in by.items()}
             for label, by in ev.curves.items()}
    fam = family_curves(sweep, table, oracle_bins)
    curves: dict[str, dict[str, list[dict]]] = {}
    reference: dict[str, dict[str, Any]] = {}
    frontier: dict[str, list[dict]] = {}
    for label in [*labels, ALL]:
        ev_curves = shown.get(label, {})
        curves[label] = {k: v for k, v in fam.get(label, {}).items() if k not in BASELINES}
        for name in (OPT_PRED, FIXED, HINDSIGHT):
            if ev_curves.get(name):
                curves[label][name] = ev_curves[name]
        cot = ev_curves.get(CoT.name) or []
        reference[label] = {"cot": cot[0]["accuracy"] if cot else None, "majority": ev_curves.get(Majority.name, [])}
        frontier[label] = [
            {**pt, "strategy": _frontier_label(table, label, pt["budget"])} for pt in ev_curves.get(OPT_ORACLE, [])
        ]
    tables = [
        {"title": "Calibrated best config per difficulty bin and budget (chosen on the calibration problems; in "
                  "brackets its accuracy on the bin's calibration problems, 95% bootstrap interval)",
         "columns": ["bin", *[f"N <= {b}" for b in table.budgets]],
         "rows": calibrated_rows(sweep, table)},
        {"title": "Held-out accuracy per budget (all bins)", "columns": ["budget", *fig_rows["series"]],
         "rows": fig_rows["rows"]},
        {"title": "Held-out accuracy of every fixed config (strategy, selection, budget) that fits the budget",
         "columns": ["budget", "compute-optimal (predicted)", "fixed configs matched or beaten", "best fixed config"],
         "rows": _fixed_rows(ev)},
        {"title": "Predicted (probe) vs oracle difficulty bins on held-out problems: rows = oracle",
         "columns": ["oracle \\ predicted", *labels],
         "rows": [[lab, *row] for lab, row in zip(labels, ev.confusion, strict=True)]},
    ]
    return {
        "title": f"Compute-optimal TTS: {sweep.recipe.get('name')} ({sweep.recipe.get('dataset')})",
        "policy": sweep.policy, "prm": sweep.prm or "-", "dataset": sweep.recipe.get("dataset", "?"),
        "created": time.strftime("%Y-%m-%d %H:%M"), "oracle_prm": sweep.oracle_prm,
        "bins": labels, "curves": curves, "reference": reference, "frontier": frontier,
        "tables": tables, "metrics": metrics, "trees": _trees(sweep, store_dir),
        "warnings": sure["warnings"], "how_sure": sure["paragraph"], "intervals": sure["intervals"],
    }


def calibrated_rows(sweep: SweepResult, table: Table) -> list[list[Any]]:
    """The calibrated table's rows: each choice with its accuracy on the bin's calibration problems and that
    accuracy's interval; a bin calibrated on fewer than ``stats.MIN_BIN_CALIBRATION`` problems is marked."""
    calib = set(table.calibration_ids)
    # the bins the table was chosen with: oracle pass@1 of the calibration problems at the table's thresholds
    bins = absolute_bins({p.id: p.pass1 for p in sweep.problems if p.id in calib}, easy=table.easy, hard=table.hard)
    # per problem first (a merged sweep may hold a problem twice), and the bootstrap is over problems
    per_problem: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in sweep.cells:
        if c.problem_id in calib:
            for label in {bins.get(c.problem_id, "?"), ALL}:
                per_problem[(label, c.config, c.budget)][c.problem_id].append(c.accuracy)
    values = {k: [sum(v) / len(v) for v in by.values()] for k, by in per_problem.items()}
    strata = {k: [bins.get(pid, "?") for pid in by] for k, by in per_problem.items()}
    support = table.bin_support()
    rows = []
    for label, row in table.table.items():
        name = label
        if label != ALL and label in support:
            name = f"{label} ({support[label]} problems" + (": UNRELIABLE, selector uses the robust choice)"
                                                            if table.unreliable(label) else ")")
        cells = []
        for b in table.budgets:
            ch = row.get(b)
            if ch is None:
                cells.append("-")
                continue
            vals = values.get((label, ch.config, ch.budget))
            if vals:
                iv = stats.mean_ci(vals, strata[(label, ch.config, ch.budget)] if label == ALL else None)
                cells.append(f"{ch.config} @ N={ch.budget} ({iv.pct()}, n={len(vals)})")
            else:  # the sweep has no cells of this choice on the bin's problems (a table from another sweep)
                cells.append(f"{ch.config} @ N={ch.budget} ({ch.accuracy:.0%})")
        rows.append([name, *cells])
    return rows


def _fixed_rows(ev: Evaluation) -> list[list[Any]]:
    pred = {p.budget: p.accuracy for p in ev.curve(OPT_PRED)}
    rows = []
    for b, accs in sorted(ev.fixed_configs.items()):
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


def _at(curve: Curve, budget: int) -> HeldoutPoint | None:
    return next((p for p in curve if p.budget == budget), None)


def _per(curve: Curve, budget: int) -> dict[str, float] | None:
    p = _at(curve, budget)
    return None if p is None else p.per_problem


def _paired(a: Mapping[str, float] | None, b: Mapping[str, float] | None, bins: Mapping[str, str],
            confidence: float) -> stats.PairedComparison | None:
    """a vs b on the problems both were measured on, stratified by oracle bin."""
    if not a or not b:
        return None
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return None
    return stats.compare_paired([a[i] for i in ids], [b[i] for i in ids], [bins.get(i, "?") for i in ids],
                                confidence=confidence)


def _matrix(curve: Curve, ids: Sequence[str]) -> tuple[list[int], np.ndarray]:
    """(budgets, problems x budgets accuracies) of a curve, over `ids`, at the budgets that measured all of them."""
    pts = [p for p in curve if p.per_problem and all(i in p.per_problem for i in ids)]
    return [p.budget for p in pts], np.array([[p.per_problem[i] for p in pts] for i in ids]).reshape(
        len(ids), len(pts))


def efficiency_interval(maj: Curve, opt: Curve, ids: Sequence[str], bins: Mapping[str, str],
                        confidence: float = stats.DEFAULT_CONFIDENCE) -> stats.Interval | None:
    """The efficiency gain's bootstrap interval over problems: both curves recomputed on each resample. A
    resample whose optimal curve never reaches majority's best counts as gain 0 (below any measured gain)."""
    bm, am = _matrix(maj, ids)
    bo, ao = _matrix(opt, ids)
    if not bm or not bo:
        return None

    def gain(idx: np.ndarray) -> float:
        e = efficiency_gain(list(zip(bm, am[idx].mean(axis=0), strict=True)),
                            list(zip(bo, ao[idx].mean(axis=0), strict=True)))
        return 0.0 if e.value is None else min(e.value, stats.UNBOUNDED)

    return stats.statistic_ci(gain, len(ids), [bins.get(i, "?") for i in ids], confidence=confidence)


def gain_interval(tts: Mapping[str, float], cot: Mapping[str, float], bins: Mapping[str, str],
                  confidence: float = stats.DEFAULT_CONFIDENCE) -> stats.Interval | None:
    """The performance gain over CoT, (acc - acc_cot) / acc_cot, with a bootstrap interval over problems (a
    resample where CoT scores 0 counts as an unbounded gain, or 0 when neither scores)."""
    ids = sorted(tts.keys() & cot.keys())
    if not ids:
        return None
    a, c = np.array([tts[i] for i in ids]), np.array([cot[i] for i in ids])

    def gain(idx: np.ndarray) -> float:
        g = performance_gain(float(a[idx].mean()), float(c[idx].mean()))
        return (stats.UNBOUNDED if a[idx].mean() > 0 else 0.0) if g is None else g

    if c.mean() == 0:
        return None  # the gain itself is undefined: "n/a (CoT 0%)"
    return stats.statistic_ci(gain, len(ids), [bins.get(i, "?") for i in ids], confidence=confidence)


def _ratio_text(iv: stats.Interval) -> str:
    return f"[{stats.fmt_ratio(iv.low)}, {stats.fmt_ratio(iv.high)}]"


def _gain_text(iv: stats.Interval) -> str:
    high = "unbounded" if iv.high >= stats.UNBOUNDED / 10 else f"{iv.high:+.0%}"
    return f"[{iv.low:+.0%}, {high}]"


@dataclass
class _Headline:
    """The headline being built: formatted figures (display order), their intervals as data, the sentences of
    the "how sure" paragraph, and the efficiency intervals the warnings look at."""

    figures: dict[str, str]
    intervals: dict[str, Any] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)
    efficiency: dict[str, stats.Interval | None] = field(default_factory=dict)


def _metrics(ev: Evaluation, table: Table, confidence: float = stats.DEFAULT_CONFIDENCE
             ) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The headline figures (formatted, with intervals), the held-out accuracy table, and "how sure": the
    warnings, a paragraph generated from the numbers, and the intervals as data (for --json)."""
    bins = ev.oracle_bins
    pred = ev.curve(OPT_PRED)
    h = _Headline({"held-out problems": str(ev.n_holdout), "calibration problems": str(len(table.calibration_ids))})
    if pred:
        _top_accuracy(h, pred[-1], bins, confidence)
        _vs_cot(h, pred, ev.curve(CoT.name), bins, confidence)
    for which, name in (("predicted bins", OPT_PRED), ("oracle bins", OPT_ORACLE)):
        _efficiency(h, which, ev.curve(Majority.name), ev.curve(name), bins, confidence)
    for name, series in (("best fixed", FIXED), ("best fixed in hindsight", HINDSIGHT), ("majority", Majority.name)):
        _vs_reference(h, name, pred, ev.curve(series), bins, confidence)
    _selector_checks(h, ev, confidence)
    warnings = stats.small_sample_warnings(ev.n_holdout, table.bin_support(), h.efficiency)
    paragraph = " ".join([f"These figures rest on {ev.n_holdout} held-out problems "
                          f"({len(table.calibration_ids)} calibration problems chose the table).", *h.sentences,
                          *(["Caution: " + "; ".join(warnings) + "."] if warnings else [])])
    series = [s for s in (OPT_ORACLE, OPT_PRED, FIXED, HINDSIGHT, *BASELINES) if ev.curve(s)]
    rows = [[b, *[_cell_text(ev.curve(s), b, bins, confidence) for s in series]] for b in table.budgets]
    return h.figures, {"series": series, "rows": rows}, {"warnings": warnings, "paragraph": paragraph,
                                                         "intervals": h.intervals}


def _top_accuracy(h: _Headline, top: HeldoutPoint, bins: Mapping[str, str], confidence: float) -> None:
    """Compute-optimal (predicted bins) at its largest budget, with its interval and seed-to-seed spread."""
    b, per = top.budget, top.per_problem
    if not per:
        return
    ids = sorted(i for i in bins if i in per)
    iv = stats.mean_ci([per[i] for i in ids], [bins[i] for i in ids], confidence=confidence)
    spread = _seed_spread([top], b)
    h.figures[f"compute-optimal (predicted bins) accuracy at N={b}"] = iv.pct(1) + (
        f" ({spread.text()})" if spread else "")
    h.intervals[f"accuracy at N={b} (predicted bins)"] = {
        "estimate": iv.estimate, "ci": iv.as_list(), **({"seed_spread": spread.as_dict()} if spread else {})}
    h.sentences.append(f"At N={b} compute-optimal (predicted bins) reaches {iv.pct(1)} ({confidence:.0%} bootstrap "
                       "interval over the held-out problems, stratified by difficulty bin)" + (
                           f"; over {len(spread.per_seed)} sampling seeds it ranged "
                           f"{100 * spread.low:.1f}-{100 * spread.high:.1f}% (sd {100 * spread.sd:.1f} "
                           "points)." if spread else "."))


def _vs_cot(h: _Headline, pred: Curve, cot: Curve, bins: Mapping[str, str], confidence: float) -> None:
    """The performance gain over CoT at the largest budget, and the paired difference."""
    if not cot:
        return
    top, base = pred[-1], cot[0]
    g = performance_gain(top.accuracy, base.accuracy)
    name = f"performance gain over CoT at N={top.budget} (predicted bins)"
    if g is None:
        h.figures[name] = "n/a (CoT 0%)"
    else:
        iv = gain_interval(top.per_problem, base.per_problem, bins, confidence)
        h.figures[name] = f"{g:+.1%}" + (f" {_gain_text(iv)}" if iv else "")
        if iv:
            h.intervals[name] = {"estimate": iv.estimate, "ci": iv.as_list()}
            sure = "excludes" if iv.low > 0 or iv.high < 0 else "includes"
            h.sentences.append(f"The performance gain over CoT is {g:+.1%} {_gain_text(iv)}; the interval {sure} "
                               "no gain.")
    pc = _paired(top.per_problem, base.per_problem, bins, confidence)
    if pc is not None:
        h.figures[f"compute-optimal (predicted) at N={top.budget} - CoT (paired)"] = pc.describe()
        h.intervals[f"vs CoT at N={top.budget}"] = _paired_dict(pc)


def _efficiency(h: _Headline, which: str, maj: Curve, curve: Curve, bins: Mapping[str, str],
                confidence: float) -> None:
    """The efficiency gain over majority voting of one compute-optimal curve."""
    if not (maj and curve):
        return
    e = efficiency_gain([(p.budget, p.accuracy) for p in maj], [(p.budget, p.accuracy) for p in curve])
    name = f"efficiency gain over majority voting ({which})"
    iv = efficiency_interval(maj, curve, sorted(bins), bins, confidence) if e.value is not None else None
    h.efficiency[name] = iv
    h.figures[name] = (str(e) if e.value is None else f"{e}x") + (f" {_ratio_text(iv)}" if iv else "")
    if iv:
        h.intervals[name] = {"estimate": iv.estimate, "ci": iv.as_list(), "lower_bound": e.lower_bound}
        if which == "predicted bins":
            sure = ("includes 1x: the data do not show that compute-optimal needs less compute than "
                    "majority voting" if iv.low <= 1 else "excludes 1x")
            h.sentences.append(f"The efficiency gain over majority voting is {e} {_ratio_text(iv)}; the "
                               f"interval {sure}.")


def _vs_reference(h: _Headline, name: str, pred: Curve, ref: Curve, bins: Mapping[str, str],
                  confidence: float) -> None:
    """Compute-optimal (predicted) against a reference series, paired, at every budget both measured
    (majority cannot spend every budget)."""
    if not (ref and pred):
        return
    paired = {p.budget: c for p in pred
              if (c := _paired(p.per_problem, _per(ref, p.budget), bins, confidence)) is not None}
    if not paired:
        return
    head = stats.wins_headline(list(paired.values()))
    h.figures[f"compute-optimal (predicted) vs {name}"] = head
    h.intervals[f"vs {name}"] = {str(b): _paired_dict(c) for b, c in paired.items()}
    if name == "best fixed":
        h.sentences.append(f"Against the best fixed config (chosen on the same calibration problems) it is {head} "
                           f"(McNemar's exact test, p < {1 - confidence:.2g}).")


def _selector_checks(h: _Headline, ev: Evaluation, confidence: float) -> None:
    """How many fixed configs the selector matches, the held-out shift score, and the probe's bin accuracy."""
    pred = ev.curve(OPT_PRED)
    accs = list(ev.fixed_configs.get(pred[-1].budget, {}).values()) if pred else []
    if accs:
        beaten = sum(1 for a in accs if pred[-1].accuracy >= a - 1e-12)
        h.figures[f"fixed configs at N <= {pred[-1].budget} that compute-optimal (predicted) matches or beats"] = (
            f"{beaten} of {len(accs)}")
    if ev.shift is not None:
        h.figures["held-out shift score (> 1: shifted)"] = f"{ev.shift.score:.2f}" + (
            " SHIFTED" if ev.shift.shifted else "")
    bins, ids = ev.oracle_bins, sorted(ev.oracle_bins)
    try:
        acc = bin_accuracy(ev.confusion)
    except ValueError:  # no problem in both bin maps
        return
    hits = [float(ev.predicted_bins.get(i) == bins[i]) for i in ids]
    iv = stats.mean_ci(hits, [bins[i] for i in ids], confidence=confidence)
    h.figures["probe bin accuracy"] = f"{acc:.0%} [{100 * iv.low:.0f}, {100 * iv.high:.0f}]"
    h.intervals["probe bin accuracy"] = {"estimate": acc, "ci": iv.as_list()}


def _paired_dict(c: stats.PairedComparison) -> dict[str, Any]:
    return {"difference": c.difference.estimate, "ci": c.difference.as_list(), "p_value": c.test.p_value,
            "better": c.test.better, "worse": c.test.worse, "significant": c.significant}


def _cell_text(curve: Curve, budget: int, bins: Mapping[str, str], confidence: float) -> str | None:
    """A held-out accuracy with its interval, "62% [41, 80]"; None where the series has no point."""
    per = _per(curve, budget)
    if not per:
        p = _at(curve, budget)
        return None if p is None else f"{p.accuracy:.0%}"
    text = stats.mean_ci(list(per.values()), [bins.get(i, "?") for i in per], confidence=confidence).pct()
    spread = _seed_spread(curve, budget)
    return f"{text} ({spread.text()})" if spread else text


def _seed_spread(curve: Curve, budget: int) -> stats.SeedSpread | None:
    """A curve point's seed-to-seed spread (a sweep over several sampling seeds), None otherwise."""
    p = _at(curve, budget)
    return stats.seed_spread(list(p.per_seed.values())) if p is not None and p.per_seed else None


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
