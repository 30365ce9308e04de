"""The compute-optimal scaling report: two PNG plots and one self-contained HTML page.

``write_report(data, out_dir)`` takes a *report model*, a plain JSON-able dict (``ReportData``), and writes
``accuracy_vs_budget.png``, ``accuracy_vs_flops.png`` and ``report.html`` into ``out_dir``. The HTML page
loads nothing from anywhere (no CDN, no fonts, the PNGs are base64 data URIs, a CSP forbids the rest), so
it works opened straight from disk (file://) and can be mailed as a single file.

The report model (accuracy is always a fraction in [0, 1]; every key is optional except where noted)::

    {
      "title": str, "policy": str, "prm": str, "dataset": str, "created": str,
      "oracle_prm": bool,            # an oracle scorer was used: the report is an upper bound (banner)
      "bins": [str, ...],            # display order of the difficulty bins: ["easy", "medium", "hard"],
                                     # ["q1", ...]; "all" is an extra panel, always shown last
      "curves": {bin_or_all: {strategy_label: [
          {"budget": int, "accuracy": float, "flops": float | None, "tokens": float | None,
           "ci": [low, high] | None}, ...]}},   # ci: confidence interval of the accuracy (a band on the plots)
      "reference": {bin_or_all: {"cot": float | None,
                                 "majority": [{"budget": int, "accuracy": float, "flops": float | None}]}},
      "frontier": {bin_or_all: [{"budget": int, "accuracy": float, "flops": float | None, "strategy": str}]},
      "tables": [{"title": str, "columns": [str], "rows": [[str | float | int | None]]}],
      "metrics": {name: str},        # headline figures, already formatted; shown as a definition list
      "warnings": [str],             # claims the data cannot carry (too few problems, ...): shown boxed
      "how_sure": str,               # a paragraph on the figures' uncertainty, shown under the headline
      "intervals": {name: any},      # the headline intervals as data (for --json); not rendered
      "trees": {problem_id: {"question": str, "answer": str, "strategy": str, "nodes": [
          {"id": int (required), "parent": int | None, "depth": int, "step": str,
           "reward": float | None, "kept": bool, "pruned": str | None (reason), "terminal": bool,
           "answer": str | None}]}}
    }

``from_dict`` checks that shape, fills defaults, sorts curves by budget and raises ``ReportDataError``
(a ``ValueError``) naming the offending path, e.g. ``curves['easy']['beam'][2].accuracy``.

A tree node is shown as *pruned* when it has a ``pruned`` reason or is not ``kept``, else *kept*; a
``terminal`` node is also marked *finished* (CSS classes ``node kept``, ``node pruned``, ``node terminal``).
The viewer opens the first problem, or the one named in the URL fragment ``#tree=<problem_id>``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter, PercentFormatter  # noqa: E402

ALL = "all"
HTML_NAME = "report.html"
BUDGET_PNG = "accuracy_vs_budget.png"
FLOPS_PNG = "accuracy_vs_flops.png"


# ---------------------------------------------------------------------------------------------------------------
# The report model


class CurvePoint(TypedDict):
    budget: int
    accuracy: float
    flops: float | None
    tokens: float | None
    ci: list[float] | None


class RefPoint(TypedDict):
    budget: int
    accuracy: float
    flops: float | None
    ci: list[float] | None


class Reference(TypedDict):
    cot: float | None
    majority: list[RefPoint]


class FrontierPoint(TypedDict):
    budget: int
    accuracy: float
    flops: float | None
    strategy: str
    ci: list[float] | None


class Table(TypedDict):
    title: str
    columns: list[str]
    rows: list[list[str | float | int | None]]


class TreeNode(TypedDict):
    id: int
    parent: int | None
    depth: int
    step: str
    reward: float | None
    kept: bool
    pruned: str | None
    terminal: bool
    answer: str | None


class Tree(TypedDict):
    question: str
    answer: str
    strategy: str
    nodes: list[TreeNode]


class ReportData(TypedDict):
    title: str
    policy: str
    prm: str
    dataset: str
    created: str
    oracle_prm: bool
    bins: list[str]
    curves: dict[str, dict[str, list[CurvePoint]]]
    reference: dict[str, Reference]
    frontier: dict[str, list[FrontierPoint]]
    tables: list[Table]
    metrics: dict[str, str]
    trees: dict[str, Tree]
    warnings: list[str]
    how_sure: str
    intervals: dict[str, Any]


class ReportDataError(ValueError):
    """The report model has the wrong shape; the message names the path of the bad value."""


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pngs: list[Path]


def _fail(path: str, msg: str) -> ReportDataError:
    return ReportDataError(f"{path}: {msg}")


def _mapping(v: Any, path: str) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise _fail(path, f"expected an object, got {type(v).__name__}")
    return v


def _list(v: Any, path: str) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, str | bytes) or not isinstance(v, Sequence):
        raise _fail(path, f"expected a list, got {type(v).__name__}")
    return list(v)


def _str(v: Any, path: str, default: str = "") -> str:
    if v is None:
        return default
    if not isinstance(v, str | int | float):
        raise _fail(path, f"expected a string, got {type(v).__name__}")
    return str(v)


def _int(v: Any, path: str) -> int:
    # bool is an int subclass, but True as a budget is always a bug upstream
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise _fail(path, f"expected an integer, got {v!r}")
    return int(v)


def _float_or_none(v: Any, path: str) -> float | None:
    """A number, or None when absent or not finite (NaN cannot go into strict JSON or onto a log axis)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _fail(path, f"expected a number, got {v!r}")
    f = float(v)
    return f if math.isfinite(f) else None


def _accuracy(v: Any, path: str) -> float:
    f = _float_or_none(v, path)
    if f is None:
        raise _fail(path, f"expected an accuracy, got {v!r}")
    # a percentage slipped in would silently plot at 100x: refuse it
    if not 0.0 <= f <= 1.0:
        raise _fail(path, f"accuracy must be a fraction in [0, 1], got {f}")
    return f


def _budget(v: Any, path: str) -> int:
    b = _int(v, path)
    if b < 1:
        raise _fail(path, f"budget must be >= 1, got {b}")
    return b


def _ci(v: Any, path: str, accuracy: float) -> list[float] | None:
    if v is None:
        return None
    bounds = _list(v, path)
    if len(bounds) != 2:
        raise _fail(path, f"expected [low, high], got {len(bounds)} values")
    low, high = (_accuracy(b, f"{path}[{i}]") for i, b in enumerate(bounds))
    # an interval that misses its own estimate was built from other data: refuse it (float slack allowed)
    if not low - 1e-9 <= accuracy <= high + 1e-9:
        raise _fail(path, f"[{low}, {high}] does not contain the accuracy {accuracy}")
    return [low, high]


def _point(v: Any, path: str) -> CurvePoint:
    p = _mapping(v, path)
    acc = _accuracy(p.get("accuracy"), f"{path}.accuracy")
    return CurvePoint(
        budget=_budget(p.get("budget"), f"{path}.budget"),
        accuracy=acc,
        flops=_float_or_none(p.get("flops"), f"{path}.flops"),
        tokens=_float_or_none(p.get("tokens"), f"{path}.tokens"),
        ci=_ci(p.get("ci"), f"{path}.ci", acc),
    )


def _curve(v: Any, path: str) -> list[CurvePoint]:
    pts = [_point(p, f"{path}[{i}]") for i, p in enumerate(_list(v, path))]
    return sorted(pts, key=lambda p: p["budget"])


def _ref_curve(v: Any, path: str) -> list[RefPoint]:
    return [
        RefPoint(budget=p["budget"], accuracy=p["accuracy"], flops=p["flops"], ci=p["ci"]) for p in _curve(v, path)
    ]


def _frontier(v: Any, path: str) -> list[FrontierPoint]:
    pts: list[FrontierPoint] = []
    for i, p in enumerate(_list(v, path)):
        pp = f"{path}[{i}]"
        c = _point(p, pp)
        pts.append(FrontierPoint(budget=c["budget"], accuracy=c["accuracy"], flops=c["flops"],
                                 strategy=_str(_mapping(p, pp).get("strategy"), f"{pp}.strategy", "?"), ci=c["ci"]))
    return sorted(pts, key=lambda p: p["budget"])


def _table(v: Any, path: str) -> Table:
    t = _mapping(v, path)
    columns = [_str(c, f"{path}.columns[{i}]") for i, c in enumerate(_list(t.get("columns"), f"{path}.columns"))]
    rows: list[list[str | float | int | None]] = []
    for r, row in enumerate(_list(t.get("rows"), f"{path}.rows")):
        rp = f"{path}.rows[{r}]"
        cells = _list(row, rp)
        if columns and len(cells) != len(columns):
            raise _fail(rp, f"{len(cells)} cells for {len(columns)} columns")
        out: list[str | float | int | None] = []
        for c, cell in enumerate(cells):
            if cell is None or isinstance(cell, str | int | float):
                out.append(cell)
            else:
                raise _fail(f"{rp}[{c}]", f"expected a string, number or null, got {type(cell).__name__}")
        rows.append(out)
    return Table(title=_str(t.get("title"), f"{path}.title"), columns=columns, rows=rows)


def _tree(v: Any, path: str) -> Tree:
    t = _mapping(v, path)
    nodes: list[TreeNode] = []
    seen: dict[int, int | None] = {}
    for i, n in enumerate(_list(t.get("nodes"), f"{path}.nodes")):
        np_ = f"{path}.nodes[{i}]"
        n = _mapping(n, np_)
        node_id = _int(n.get("id"), f"{np_}.id")
        if node_id in seen:
            raise _fail(f"{np_}.id", f"duplicate node id {node_id}")
        parent = None if n.get("parent") is None else _int(n.get("parent"), f"{np_}.parent")
        seen[node_id] = parent
        pruned = n.get("pruned")
        answer = n.get("answer")
        nodes.append(
            TreeNode(
                id=node_id,
                parent=parent,
                depth=_int(n.get("depth", 0), f"{np_}.depth"),
                step=_str(n.get("step"), f"{np_}.step"),
                reward=_float_or_none(n.get("reward"), f"{np_}.reward"),
                kept=bool(n.get("kept", True)),
                pruned=None if pruned is None else _str(pruned, f"{np_}.pruned"),
                terminal=bool(n.get("terminal", False)),
                answer=None if answer is None else _str(answer, f"{np_}.answer"),
            )
        )
    # A parent cycle would never be reached from a root: the viewer would silently drop those nodes.
    for start in seen:
        walked: set[int] = set()
        cur: int | None = start
        while cur is not None and cur in seen:
            if cur in walked:
                raise _fail(f"{path}.nodes", f"parent cycle through node {cur}")
            walked.add(cur)
            cur = seen[cur]
    return Tree(
        question=_str(t.get("question"), f"{path}.question"),
        answer=_str(t.get("answer"), f"{path}.answer"),
        strategy=_str(t.get("strategy"), f"{path}.strategy"),
        nodes=nodes,
    )


def from_dict(d: Mapping[str, Any]) -> ReportData:
    """Validate a report model (e.g. loaded from JSON) and return it normalized; see the module docstring."""
    d = _mapping(d, "report")
    curves: dict[str, dict[str, list[CurvePoint]]] = {}
    for b, strategies in _mapping(d.get("curves"), "curves").items():
        curves[str(b)] = {
            str(s): _curve(pts, f"curves[{b!r}][{s!r}]")
            for s, pts in _mapping(strategies, f"curves[{b!r}]").items()
        }
    reference: dict[str, Reference] = {}
    for b, ref in _mapping(d.get("reference"), "reference").items():
        ref = _mapping(ref, f"reference[{b!r}]")
        cot = ref.get("cot")
        reference[str(b)] = Reference(
            cot=None if cot is None else _accuracy(cot, f"reference[{b!r}].cot"),
            majority=_ref_curve(ref.get("majority"), f"reference[{b!r}].majority"),
        )
    frontier = {
        str(b): _frontier(pts, f"frontier[{b!r}]") for b, pts in _mapping(d.get("frontier"), "frontier").items()
    }
    bins = [_str(b, f"bins[{i}]") for i, b in enumerate(_list(d.get("bins"), "bins"))]
    if not bins:  # no explicit order: the order the curves came in
        bins = [b for b in curves if b != ALL]
    return ReportData(
        title=_str(d.get("title"), "title", "Compute-optimal test-time scaling"),
        policy=_str(d.get("policy"), "policy"),
        prm=_str(d.get("prm"), "prm"),
        dataset=_str(d.get("dataset"), "dataset"),
        created=_str(d.get("created"), "created"),
        oracle_prm=bool(d.get("oracle_prm", False)),
        bins=bins,
        curves=curves,
        reference=reference,
        frontier=frontier,
        tables=[_table(t, f"tables[{i}]") for i, t in enumerate(_list(d.get("tables"), "tables"))],
        metrics={str(k): _str(v, f"metrics[{k!r}]") for k, v in _mapping(d.get("metrics"), "metrics").items()},
        trees={str(k): _tree(v, f"trees[{k!r}]") for k, v in _mapping(d.get("trees"), "trees").items()},
        warnings=[_str(w, f"warnings[{i}]") for i, w in enumerate(_list(d.get("warnings"), "warnings"))],
        how_sure=_str(d.get("how_sure"), "how_sure"),
        intervals=dict(_mapping(d.get("intervals"), "intervals")),
    )


# ---------------------------------------------------------------------------------------------------------------
# Plots


def panel_keys(data: ReportData) -> list[str]:
    """Panels in display order: the declared bins, any other bin found in the data, then "all" last."""
    keys = [b for b in data["bins"] if b != ALL]
    present = set(data["curves"]) | set(data["reference"]) | set(data["frontier"])
    keys += sorted(present - set(keys) - {ALL})
    if ALL in present or ALL in data["bins"]:
        keys.append(ALL)
    return keys


def _strategy_colors(data: ReportData) -> dict[str, Any]:
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


def _draw_panel(ax: Axes, data: ReportData, key: str, x: str, colors: Mapping[str, Any]) -> None:
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
    colors = _strategy_colors(data)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.9), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax, key in zip(flat, keys, strict=False):
        _draw_panel(ax, data, key, x, colors)
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


_CSS = """
:root { --fg: #1d2430; --muted: #5b6575; --line: #d9dee7; --kept: #1a7f37; --pruned: #b42318;
        --done: #0b5cad; --bg2: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1200px; padding: 1.2rem 1.5rem 3rem; color: var(--fg);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 1.6rem; margin: 0.2rem 0 0.6rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.6rem; border-bottom: 1px solid var(--line); padding-bottom: 0.2rem; }
dl.meta, dl.metrics { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; margin: 0; }
dl.metrics { background: var(--bg2); padding: 0.8rem 1rem; border-radius: 6px; }
dt { color: var(--muted); }
dd { margin: 0; font-variant-numeric: tabular-nums; }
.banner.oracle { background: #fff4e5; border: 2px solid #d97706; color: #7a3e00; padding: 0.6rem 1rem;
                 border-radius: 6px; font-weight: 600; margin: 0.8rem 0; }
figure { margin: 0.8rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.9rem; }
.table-wrap { overflow-x: auto; margin: 0.6rem 0 1.4rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
caption { text-align: left; font-weight: 600; padding: 0.3rem 0; }
th, td { border: 1px solid var(--line); padding: 0.25rem 0.6rem; vertical-align: top; }
th { background: var(--bg2); text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: var(--muted); text-align: center; }
.tree-controls { display: flex; gap: 0.6rem; align-items: center; flex-wrap: wrap; }
.tree-controls select { max-width: 100%; font: inherit; }
#tree-meta { background: var(--bg2); border-radius: 6px; padding: 0.6rem 1rem; margin: 0.6rem 0; }
#tree-meta .question { white-space: pre-wrap; }
.legend span.node { margin-right: 1rem; }
#tree-root ul { list-style: none; margin: 0; padding-left: 1.3rem; border-left: 1px dashed var(--line); }
#tree-root > ul { padding-left: 0; border-left: none; }
#tree-root li { margin: 0.2rem 0; }
#tree-root summary { cursor: pointer; }
.node { display: inline-block; padding: 0.1rem 0.4rem; border-radius: 4px; border-left: 4px solid var(--muted); }
.node.kept { border-left-color: var(--kept); background: #eef8f0; }
.node.pruned { border-left-color: var(--pruned); background: #fdf0ef; opacity: 0.85; }
.node.terminal { outline: 1px solid var(--done); }
.node .nid { color: var(--muted); font-size: 0.8rem; margin-right: 0.4rem; }
.node .reward { font-variant-numeric: tabular-nums; font-size: 0.8rem; margin-right: 0.4rem; }
.node .mark { font-size: 0.8rem; font-weight: 700; margin-right: 0.4rem; }
.node.kept .mark.status { color: var(--kept); }
.node.pruned .mark.status { color: var(--pruned); }
.node .mark.finished { color: var(--done); }
.node .step { white-space: pre-wrap; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.85rem; }
.node .answer { color: var(--done); font-weight: 600; margin-left: 0.4rem; }
.muted { color: var(--muted); }
ul.warnings { background: #fff4e5; border: 1px solid #d97706; color: #7a3e00; border-radius: 6px;
              padding: 0.5rem 1rem 0.5rem 2rem; }
"""

# The viewer: data only ever reaches the DOM through textContent, never innerHTML.
_JS = """
(function () {
  "use strict";
  var blob = document.getElementById("tree-data");
  var select = document.getElementById("tree-select");
  var root = document.getElementById("tree-root");
  var meta = document.getElementById("tree-meta");
  if (!blob || !select || !root || !meta) { return; }
  var trees = JSON.parse(blob.textContent);

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function clear(e) { while (e.firstChild) { e.removeChild(e.firstChild); } }
  function isPruned(n) { return n.pruned !== null || !n.kept; }

  function nodeLine(n) {
    var pruned = isPruned(n);
    var line = el("span", "node " + (pruned ? "pruned" : "kept") + (n.terminal ? " terminal" : ""));
    line.setAttribute("data-node-id", String(n.id));
    line.appendChild(el("span", "nid", "#" + n.id));
    line.appendChild(el("span", "reward", n.reward === null ? "r=n/a" : "r=" + n.reward.toFixed(3)));
    var status = pruned ? "pruned" + (n.pruned ? " (" + n.pruned + ")" : "") : "kept";
    line.appendChild(el("span", "mark status", status));
    if (n.terminal) { line.appendChild(el("span", "mark finished", "finished")); }
    line.appendChild(el("span", "step", n.step));
    if (n.terminal && n.answer !== null) { line.appendChild(el("span", "answer", "\\u2192 " + n.answer)); }
    return line;
  }

  function render(index) {
    var t = trees[index];
    clear(meta);
    clear(root);
    if (!t) { return; }
    var ids = {}, children = {}, roots = [];
    var kept = 0, pruned = 0, finished = 0;
    t.nodes.forEach(function (n) { ids[n.id] = true; });
    t.nodes.forEach(function (n) {
      // a node whose parent was not recorded still shows, as a root
      if (n.parent === null || !ids[n.parent]) { roots.push(n); }
      else { (children[n.parent] = children[n.parent] || []).push(n); }
      if (isPruned(n)) { pruned += 1; } else { kept += 1; }
      if (n.terminal) { finished += 1; }
    });
    function byId(a, b) { return a.id - b.id; }
    function build(n) {
      var li = el("li");
      var kids = (children[n.id] || []).sort(byId);
      if (kids.length) {
        var det = el("details");
        det.open = true;
        var sum = el("summary");
        sum.appendChild(nodeLine(n));
        det.appendChild(sum);
        var ul = el("ul");
        kids.forEach(function (k) { ul.appendChild(build(k)); });
        det.appendChild(ul);
        li.appendChild(det);
      } else {
        li.appendChild(nodeLine(n));
      }
      return li;
    }
    var q = el("div", "question");
    q.appendChild(el("strong", null, "Question: "));
    q.appendChild(document.createTextNode(t.question));
    meta.appendChild(q);
    var info = el("div", "muted", "reference answer: " + t.answer + " \\u00b7 strategy: " + t.strategy + " \\u00b7 " +
      t.nodes.length + " nodes: " + kept + " kept, " + pruned + " pruned, " + finished + " finished");
    meta.appendChild(info);
    var top = el("ul");
    roots.sort(byId).forEach(function (n) { top.appendChild(build(n)); });
    root.appendChild(top);
  }

  trees.forEach(function (t, i) {
    var o = el("option", null, t.id + " \\u2014 " + t.strategy + " (" + t.nodes.length + " nodes)");
    o.value = String(i);
    select.appendChild(o);
  });
  var start = 0;
  var m = /^#tree=(.*)$/.exec(window.location.hash);
  if (m) {
    var wanted = decodeURIComponent(m[1]);
    trees.forEach(function (t, i) { if (t.id === wanted) { start = i; } });
  }
  select.value = String(start);
  select.addEventListener("change", function () {
    var i = Number(select.value);
    render(i);
    // keep the choice in the URL, so a link can point at one tree; some opaque origins refuse it
    try { history.replaceState(null, "", "#tree=" + encodeURIComponent(trees[i].id)); } catch (e) { /* ignore */ }
  });
  function setAll(open) {
    Array.prototype.forEach.call(root.querySelectorAll("details"), function (d) { d.open = open; });
  }
  document.getElementById("tree-expand").addEventListener("click", function () { setAll(true); });
  document.getElementById("tree-collapse").addEventListener("click", function () { setAll(false); });
  render(start);
})();
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survive, so neither '</script>' nor '<!--' can appear."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _cell(v: str | float | int | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return '<td class="na">\u2014</td>'
    if isinstance(v, bool):
        return f"<td>{_e(v)}</td>"
    if isinstance(v, int):
        return f'<td class="num">{v}</td>'
    if isinstance(v, float):
        return f'<td class="num">{_e(format(v, ".4g"))}</td>'
    return f"<td>{_e(v)}</td>"


def _table_html(t: Table) -> str:
    head = "".join(f"<th scope=\"col\">{_e(c)}</th>" for c in t["columns"])
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in t["rows"])
    caption = f"<caption>{_e(t['title'])}</caption>" if t["title"] else ""
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f'<div class="table-wrap"><table>{caption}{thead}<tbody>{body}</tbody></table></div>'


def frontier_table(data: ReportData) -> Table | None:
    """Per bin and budget, the compute-optimal strategy and its accuracy: the report's main answer."""
    keys = [k for k in panel_keys(data) if data["frontier"].get(k)]
    if not keys:
        return None
    budgets = sorted({p["budget"] for k in keys for p in data["frontier"][k]})
    rows: list[list[str | float | int | None]] = []
    for k in keys:
        by_budget = {p["budget"]: p for p in data["frontier"][k]}
        row: list[str | float | int | None] = [k]
        for b in budgets:
            p = by_budget.get(b)
            ci = "" if p is None or not p["ci"] else f" [{100 * p['ci'][0]:.0f}, {100 * p['ci'][1]:.0f}]"
            row.append(None if p is None else f"{p['strategy']} ({100 * p['accuracy']:.1f}%{ci})")
        rows.append(row)
    return Table(title="Compute-optimal strategy per bin and budget (accuracy [95% interval])",
                 columns=["bin"] + [f"N={b}" for b in budgets], rows=rows)


def _png_figure(path: Path, alt: str, caption: str) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_html(data: ReportData, pngs: Sequence[tuple[Path, str, str]]) -> str:
    """The whole page as one string; ``pngs`` are (file, alt text, caption) to embed."""
    parts: list[str] = []
    parts.append(f"<h1>{_e(data['title'])}</h1>")
    if data["oracle_prm"]:
        parts.append('<div class="banner oracle" id="oracle-banner" role="alert">ORACLE / upper bound: an oracle '
                     "scorer (ground-truth correctness) was involved, so these accuracies are an upper bound, not "
                     "what a real PRM achieves.</div>")
    meta = [("policy", data["policy"]), ("PRM", data["prm"] + (" (oracle)" if data["oracle_prm"] else "")),
            ("dataset", data["dataset"]), ("created", data["created"]), ("bins", ", ".join(data["bins"]))]
    parts.append('<dl class="meta">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta if v) + "</dl>")
    if data["metrics"]:
        parts.append("<h2>Headline figures</h2>")
        parts.append('<dl class="metrics">'
                     + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in data["metrics"].items()) + "</dl>")
    if data["how_sure"] or data["warnings"]:
        parts.append('<h2 id="how-sure">How sure</h2>')
        if data["how_sure"]:
            parts.append(f'<p class="how-sure">{_e(data["how_sure"])}</p>')
        if data["warnings"]:
            parts.append('<ul class="warnings" role="alert">'
                         + "".join(f"<li>{_e(w)}</li>" for w in data["warnings"]) + "</ul>")
    if pngs:
        parts.append("<h2>Scaling curves</h2>")
        parts += [_png_figure(p, alt, cap) for p, alt, cap in pngs]
    tables = [t for t in [frontier_table(data)] if t is not None] + data["tables"]
    if tables:
        parts.append("<h2>Tables</h2>")
        parts += [_table_html(t) for t in tables]
    trees = [{"id": pid, **t} for pid, t in data["trees"].items()]  # a list: JS would reorder numeric keys
    parts.append("<h2>Search trees</h2>")
    if trees:
        parts.append(
            '<div class="tree-controls"><label for="tree-select">Problem</label> <select id="tree-select"></select>'
            ' <button type="button" id="tree-expand">expand all</button>'
            ' <button type="button" id="tree-collapse">collapse all</button></div>'
            '<div class="legend muted">markers: <span class="node kept">kept</span>'
            '<span class="node pruned">pruned (reason)</span><span class="node terminal">finished</span>'
            "; r = PRM reward of the step</div>"
            '<div id="tree-meta"></div><div id="tree-root"></div>'
            "<noscript><p>The search-tree viewer needs JavaScript.</p></noscript>"
            f'<script type="application/json" id="tree-data">{_json_for_script(trees)}</script>'
            f"<script>{_JS}</script>"
        )
    else:
        parts.append('<p class="muted">No search trees were recorded.</p>')
    # Hash-pinned CSP: nothing loads from outside, and a script smuggled in through the data could not run.
    csp = (f"default-src 'none'; img-src data:; style-src {_csp_hash(_CSS)}; script-src {_csp_hash(_JS)}; "
           "base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data['title'])}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def write_report(data: ReportData | Mapping[str, Any], out_dir: str | Path) -> ReportFiles:
    """Write the two PNG plots and the self-contained ``report.html`` into ``out_dir``."""
    model = from_dict(data)  # also accepts an already-normalized ReportData: validation is idempotent
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_budget = plot_accuracy(model, "budget", out / BUDGET_PNG)
    by_flops = plot_accuracy(model, "flops", out / FLOPS_PNG)
    figures = [
        (by_budget, "accuracy vs budget per difficulty bin",
         "Accuracy vs budget N (log2), one panel per difficulty bin. Thick grey line and outlined markers: the "
         "compute-optimal frontier, each point coloured and labelled by the strategy chosen there; dashed: CoT; "
         "dotted: majority vote. Shaded bands: 95% bootstrap intervals over the held-out problems."),
        (by_flops, "accuracy vs FLOPs per difficulty bin",
         "The same against inference FLOPs per problem (log10), policy plus PRM, cache-aware: prompt tokens "
         "served from the prefix cache are not counted (the cache-independent figure: report --paper)."),
    ]
    page = out / HTML_NAME
    page.write_text(render_html(model, figures), encoding="utf-8")
    return ReportFiles(html=page, pngs=[by_budget, by_flops])
