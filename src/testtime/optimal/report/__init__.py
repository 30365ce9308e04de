"""The compute-optimal scaling report: two PNG plots and one self-contained HTML page.

``write_report(data, out_dir)`` takes a *report model*, a plain JSON-able dict (``ReportData``), and writes
``accuracy_vs_budget.png``, ``accuracy_vs_flops.png`` and ``report.html`` into ``out_dir``. The HTML page
loads nothing from anywhere (no CDN, no fonts, the PNGs are base64 data URIs, a CSP forbids the rest), so
it works opened straight from disk (file://) and can be mailed as a single file.

The report model (``ReportData``, its shape and validation: ``report.model``), the plots (``report.plots``)
and the HTML page (``report.page``) live apart; this module writes the three files and re-exports the names
callers use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testtime.optimal.report.model import ALL, ReportData, ReportDataError, ReportTable, from_dict, panel_keys
from testtime.optimal.report.page import frontier_table, render_html
from testtime.optimal.report.plots import plot_accuracy

__all__ = ["ALL", "BUDGET_PNG", "FLOPS_PNG", "HTML_NAME", "ReportData", "ReportDataError", "ReportFiles",
           "ReportTable", "frontier_table", "from_dict", "panel_keys", "plot_accuracy", "render_html", "write_report"]

HTML_NAME = "report.html"
BUDGET_PNG = "accuracy_vs_budget.png"
FLOPS_PNG = "accuracy_vs_flops.png"


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pngs: list[Path]



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
