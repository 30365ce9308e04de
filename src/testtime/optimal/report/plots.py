"""The report's two matplotlib figures: accuracy vs budget (log2) and vs FLOPs (log10), one panel per bin."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter, PercentFormatter  # noqa: E402

from testtime.optimal.report.model import ALL, ReportData, panel_keys  # noqa: E402


def strategy_colors(data: ReportData) -> dict[str, Any]:
    """One color per strategy across all panels, so a strategy reads the same everywhere."""
    names: list[str] = []
    for by_strategy in data["curves"].values():
        names += [s for s in by_strategy if s not in names]
    for pts in data["frontier"].values():
        names += [p["strategy"] for p in pts if p["strategy"] not in names]
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {s: cmap(i % cmap.N) for i, s in enumerate(names)}


def _xy(points: Sequence[Mapping[str, Any]], x: str) -> tuple[list[float], list[float]]:
    # log axes: points without a positive x (FLOPs unknown) cannot be placed
    pts = [p for p in points if p.get(x) is not None and p[x] > 0]
    pts.sort(key=lambda p: p[x])
    return [float(p[x]) for p in pts], [100.0 * p["accuracy"] for p in pts]


def _band(points: Sequence[Mapping[str, Any]], x: str) -> tuple[list[float], list[float], list[float]]:
    """(x, low %, high %) of the points that carry an interval, in x order."""
    pts = sorted((p for p in points if p.get(x) is not None and p[x] > 0 and p.get("ci")), key=lambda p: p[x])
    return [float(p[x]) for p in pts], [100.0 * p["ci"][0] for p in pts], [100.0 * p["ci"][1] for p in pts]


def draw_panel(ax: Axes, data: ReportData, key: str, x: str, colors: Mapping[str, Any]) -> None:
    xs_seen: set[float] = set()
    for strategy, pts in data["curves"].get(key, {}).items():
        xs, ys = _xy(pts, x)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.5, color=colors[strategy], label=strategy)
            bx, lo, hi = _band(pts, x)
            if bx:  # the accuracy's confidence interval, shaded in the curve's colour
                ax.fill_between(bx, lo, hi, color=colors[strategy], alpha=0.12, linewidth=0)
            xs_seen.update(xs)
    ref = data["reference"].get(key)
    if ref is not None:
        xs, ys = _xy(ref["majority"], x)
        if xs:
            ax.plot(xs, ys, marker="s", markersize=3, linestyle=":", linewidth=1.3, color="0.45",
                    label="majority vote (reference)")
            bx, lo, hi = _band(ref["majority"], x)
            if bx:
                ax.fill_between(bx, lo, hi, color="0.45", alpha=0.08, linewidth=0)
            xs_seen.update(xs)
    frontier = data["frontier"].get(key, [])
    fxs, fys = _xy(frontier, x)
    if fxs:
        fpts = sorted((p for p in frontier if p.get(x) is not None and p[x] > 0), key=lambda p: p[x])
        ax.plot(fxs, fys, color="black", linewidth=4, alpha=0.25, solid_capstyle="round", zorder=1,
                label="compute-optimal frontier")
        bx, lo, hi = _band(frontier, x)
        if bx:
            ax.fill_between(bx, lo, hi, color="black", alpha=0.08, linewidth=0, zorder=0)
        ax.scatter(fxs, fys, s=60, c=[colors[p["strategy"]] for p in fpts], edgecolors="black", linewidths=1.2,
                   zorder=5)
        previous = None
        for px, py, p in zip(fxs, fys, fpts, strict=True):
            # label where the optimal choice changes: every point would pile up on dense budgets
            if p["strategy"] != previous:
                ax.annotate(p["strategy"], (px, py), xytext=(0, 9), textcoords="offset points", ha="center",
                            fontsize=7, zorder=6, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                                        "alpha": 0.75})
            previous = p["strategy"]
        xs_seen.update(fxs)
    title = "all problems" if key == ALL else key
    ax.set_title(title, fontsize=10)
    if not xs_seen:
        cot = ref["cot"] if ref is not None else None
        note = "no data" if cot is None else f"no curves (CoT {100 * cot:.1f}%)"
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if ref is not None and ref["cot"] is not None:
        ax.axhline(100 * ref["cot"], color="0.35", linestyle="--", linewidth=1.2, label="CoT (greedy)")
    if x == "budget":
        ax.set_xscale("log", base=2)
        ticks = sorted(xs_seen)
        ax.set_xticks(ticks, [str(int(t)) for t in ticks])
        ax.minorticks_off()
        if len(ticks) == 1:  # a lone point: give the log axis some width around it
            ax.set_xlim(ticks[0] / 2, ticks[0] * 2)
    else:
        ax.set_xscale("log")
        # plain 10^k labels crowd the axis with 2x10^11, 3x10^11...: engineering prefixes at 1-2-5 steps read better
        span = math.log10(max(xs_seen) / min(xs_seen)) if min(xs_seen) > 0 else 0.0
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if span > 3 else (1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(EngFormatter(places=0, sep=""))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if len(xs_seen) == 1:
            only = next(iter(xs_seen))
            ax.set_xlim(only / 3, only * 3)
    ax.grid(alpha=0.3)


def plot_accuracy(data: ReportData, x: str, path: str | Path) -> Path:
    """Accuracy vs ``x`` ("budget": log2 axis, or "flops": log10 axis), one panel per bin plus "all"."""
    path = Path(path)
    keys = panel_keys(data) or [ALL]
    n = len(keys)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    colors = strategy_colors(data)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.9), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax, key in zip(flat, keys, strict=False):
        draw_panel(ax, data, key, x, colors)
        ax.yaxis.set_major_formatter(PercentFormatter(100.0))  # panels plot accuracy x 100
    for ax in flat[n:]:
        ax.set_visible(False)
    for r in range(nrows):
        flat[r * ncols].set_ylabel("accuracy (%)")
    xlabel = "budget (generations per problem, N)" if x == "budget" else "inference FLOPs per problem (cache-aware)"
    for ax in flat[max(0, n - ncols):n]:
        ax.set_xlabel(xlabel)
    # one legend for the figure: the same strategies recur in every panel
    handles: dict[str, Any] = {}
    for ax in flat[:n]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 4), fontsize=8, frameon=False)
    title = data["title"] + (" (ORACLE PRM: upper bound)" if data["oracle_prm"] else "")
    sub = ", ".join(s for s in (data["policy"], data["prm"] and f"PRM {data['prm']}", data["dataset"]) if s)
    fig.suptitle(title + (f"\n{sub}" if sub else ""), fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
