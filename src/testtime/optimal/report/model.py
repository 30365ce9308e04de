"""The report model: a plain JSON-able dict (``ReportData``) and its validation, ``from_dict``.

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

ALL = "all"


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


class ReportTable(TypedDict):
    """A table of the report (the calibration table is ``calibrate.Table``)."""

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
    tables: list[ReportTable]
    metrics: dict[str, str]
    trees: dict[str, Tree]
    warnings: list[str]
    how_sure: str
    intervals: dict[str, Any]


class ReportDataError(ValueError):
    """The report model has the wrong shape; the message names the path of the bad value."""


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


def _table(v: Any, path: str) -> ReportTable:
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
    return ReportTable(title=_str(t.get("title"), f"{path}.title"), columns=columns, rows=rows)


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


def panel_keys(data: ReportData) -> list[str]:
    """Panels in display order: the declared bins, any other bin found in the data, then "all" last."""
    keys = [b for b in data["bins"] if b != ALL]
    present = set(data["curves"]) | set(data["reference"]) | set(data["frontier"])
    keys += sorted(present - set(keys) - {ALL})
    if ALL in present or ALL in data["bins"]:
        keys.append(ALL)
    return keys

