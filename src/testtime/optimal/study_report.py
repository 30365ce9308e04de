"""The allocation study as a self-contained HTML page with two plots: accuracy vs FLOPs per series, and where
the budget went per difficulty level (compute-optimal allocation vs uniform Best-of-N)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from testtime.optimal.report import ReportFiles  # noqa: E402
from testtime.optimal.report.page import CSS, csp_hash, escape, png_figure, table_html  # noqa: E402
from testtime.optimal.study import ALLOCATED, COT, HINDSIGHT, MAJORITY, UNIFORM, Study, rows_by_series  # noqa: E402

CURVES_PNG = "accuracy_vs_flops.png"
BUDGET_PNG = "budget_by_level.png"
STYLE = {ALLOCATED: ("tab:green", "o-"), UNIFORM: ("tab:blue", "s-"), HINDSIGHT: ("tab:cyan", "s:"),
         MAJORITY: ("tab:orange", "^--"), COT: ("black", "D")}


def plot_curves(study: Study, path: Path, confidence: float = 0.95) -> Path:
    rows = study.rows(confidence)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for series, (color, fmt) in STYLE.items():
        pts = sorted((r for r in rows if r["series"] == series), key=lambda r: r["flops"])
        if not pts:
            continue
        x = [r["flops"] for r in pts]
        y = [100 * r["accuracy"] for r in pts]
        err = [[100 * (r["accuracy"] - r["accuracy_ci"][0]) for r in pts],
               [100 * (r["accuracy_ci"][1] - r["accuracy"]) for r in pts]]
        ax.errorbar(x, y, yerr=err, fmt=fmt, color=color, capsize=3, label=series, alpha=0.9)
        for r in pts:
            if series != COT:
                ax.annotate(f"{r['budget']}", (r["flops"], 100 * r["accuracy"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per problem (policy + PRM + predictor; labels: average budget N)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{len(study.problems)} problems: accuracy vs compute ({confidence:.0%} intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_budget(study: Study, path: Path) -> Path:
    """Mean FLOPs per problem of each level: uniform Best-of-N at the headline budget, and the allocation at
    every average budget (where the budget moves as it grows)."""
    per = {p.budget: study.budget_by_level(p.budget) for p in study.curve(ALLOCATED)}
    head = study.budget_by_level()
    levels = list(head)
    series = [(f"{UNIFORM} @{study.headline}", [head[lv].get(UNIFORM, 0.0) for lv in levels], STYLE[UNIFORM][0])]
    greens = plt.cm.Greens(np.linspace(0.35, 0.9, max(1, len(per))))
    for k, (b, by) in enumerate(sorted(per.items())):
        series.append((f"compute-optimal @{b}", [by[lv].get(ALLOCATED, 0.0) for lv in levels], greens[k]))
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    width = 0.8 / len(series)
    for k, (label, vals, color) in enumerate(series):
        ax.bar([i + (k - (len(series) - 1) / 2) * width for i in range(len(levels))], vals, width, label=label,
               color=color)
    ax.set_xticks(range(len(levels)), [f"level {lv}" for lv in levels])
    ax.set_ylabel("mean FLOPs per problem")
    ax.set_title("Where the budget went, per level (compute-optimal at each average budget)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_tables(study: Study, summary: dict[str, Any]) -> list[dict[str, Any]]:
    budgets = sorted({p.budget for p in study.points})
    rows = []
    for series, by_b in rows_by_series(summary["rows"]).items():
        rows.append([series] + [None if b not in by_b else
                                f"{100 * by_b[b]['accuracy']:.1f}% [{100 * by_b[b]['accuracy_ci'][0]:.0f}, "
                                f"{100 * by_b[b]['accuracy_ci'][1]:.0f}] ({by_b[b]['flops']:.3g} FLOPs)"
                                for b in budgets])
    acc = {"title": f"Accuracy [{summary.get('confidence', 0.95):.0%} interval] (mean FLOPs per problem) by "
                    "average budget N",
           "columns": ["series"] + [f"N={b}" for b in budgets], "rows": rows}
    paired = {"title": f"compute-optimal at average budget {study.headline} minus each baseline (paired, same "
                       "problems; bootstrap stratified by level; McNemar's exact test)",
              "columns": ["baseline", "difference", "FLOPs ratio"],
              "rows": [[k, v["text"], f"{v['flops_ratio']:.2f}x"] for k, v in summary["paired"].items()]}
    configs = {"title": "configs the allocator gave, per average budget",
               "columns": ["N", "configs (problems)"],
               "rows": [[b, ", ".join(f"{c} x{n}" for c, n in cs.items())] for b, cs in summary["configs"].items()]}
    return [acc, paired, configs]


def headline_lines(study: Study, summary: dict[str, Any]) -> list[str]:
    """The figures a reader looks for first, each with its interval, in plain sentences."""
    out = []
    ftm = summary["flops_to_match_uniform"]
    if ftm["estimate"] is None:
        out.append(f"compute-optimal never reaches uniform Best-of-{study.headline}'s accuracy on this curve")
    else:
        ci = ftm["ci"]
        out.append(f"FLOPs compute-optimal needs to match uniform Best-of-{study.headline}'s accuracy: "
                   f"{100 * ftm['estimate']:.0f}% of Best-of-{study.headline}'s"
                   + (f" [{100 * ci[0]:.0f}%, {100 * ci[1]:.0f}%]" if ci else " (interval undefined: in "
                      f"{ftm['undefined']} of {ftm['rounds']} resamples the curve never reaches it)"))
    eg = summary["efficiency_gain_over_majority"]
    if eg["estimate"] is not None:
        ci = eg["ci"]
        out.append(f"efficiency gain over majority voting (FLOPs majority needs for its best accuracy / FLOPs "
                   f"compute-optimal needs for it): {eg['estimate']:.2f}x"
                   + (f" [{ci[0]:.2f}x, {ci[1]:.2f}x]" if ci else " (interval undefined)"))
    return out


def write_study_report(study: Study, summary: dict[str, Any], out_dir: str | Path, title: str) -> ReportFiles:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    confidence = summary.get("confidence", 0.95)
    curves = plot_curves(study, out / CURVES_PNG, confidence)
    budget = plot_budget(study, out / BUDGET_PNG)
    parts = [f"<h1>{escape(title)}</h1>", "<h2>Headline figures</h2>",
             "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in headline_lines(study, summary)) + "</ul>",
             "<h2>Plots</h2>",
             png_figure(curves, "accuracy vs FLOPs per series", "Accuracy vs mean FLOPs per problem: "
                        "compute-optimal allocation (green) against uniform Best-of-N, majority voting and CoT; "
                        f"bars are {confidence:.0%} intervals over problems."),
             png_figure(budget, "where the budget went per level", "Mean FLOPs per problem of each level: "
                        "uniform Best-of-N at the headline budget, and compute-optimal at each average budget "
                        "(easy and hopeless levels stay cheap while the middle ones get more)."),
             "<h2>Tables</h2>", *[table_html(t) for t in study_tables(study, summary)]]  # type: ignore[arg-type]
    csp = f"default-src 'none'; img-src data:; style-src {csp_hash(CSS)}; base-uri 'none'; form-action 'none'"
    page = out / "report.html"
    page.write_text("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                    f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">'
                    f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(parts)
                    + "\n</body></html>\n", encoding="utf-8")
    return ReportFiles(html=page, pngs=[curves, budget])
