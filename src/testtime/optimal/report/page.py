"""The report's self-contained HTML page: tables, embedded PNGs and the search-tree viewer.

The page loads nothing from anywhere (no CDN, no fonts, the PNGs are base64 data URIs, a hash-pinned CSP
forbids the rest), so it works opened straight from disk (file://) and can be mailed as a single file.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testtime.optimal.report.model import ReportData, ReportTable, panel_keys

CSS = """
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


def escape(s: Any) -> str:
    return html.escape(str(s), quote=True)


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survive, so neither '</script>' nor '<!--' can appear."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _cell(v: str | float | int | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return '<td class="na">\u2014</td>'
    if isinstance(v, bool):
        return f"<td>{escape(v)}</td>"
    if isinstance(v, int):
        return f'<td class="num">{v}</td>'
    if isinstance(v, float):
        return f'<td class="num">{escape(format(v, ".4g"))}</td>'
    return f"<td>{escape(v)}</td>"


def table_html(t: ReportTable) -> str:
    head = "".join(f"<th scope=\"col\">{escape(c)}</th>" for c in t["columns"])
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in t["rows"])
    caption = f"<caption>{escape(t['title'])}</caption>" if t["title"] else ""
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f'<div class="table-wrap"><table>{caption}{thead}<tbody>{body}</tbody></table></div>'


def frontier_table(data: ReportData) -> ReportTable | None:
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
    return ReportTable(title="Compute-optimal strategy per bin and budget (accuracy [95% interval])",
                 columns=["bin"] + [f"N={b}" for b in budgets], rows=rows)


def png_figure(path: Path, alt: str, caption: str) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def render_html(data: ReportData, pngs: Sequence[tuple[Path, str, str]]) -> str:
    """The whole page as one string; ``pngs`` are (file, alt text, caption) to embed."""
    parts: list[str] = []
    parts.append(f"<h1>{escape(data['title'])}</h1>")
    if data["oracle_prm"]:
        parts.append('<div class="banner oracle" id="oracle-banner" role="alert">ORACLE / upper bound: an oracle '
                     "scorer (ground-truth correctness) was involved, so these accuracies are an upper bound, not "
                     "what a real PRM achieves.</div>")
    meta = [("policy", data["policy"]), ("PRM", data["prm"] + (" (oracle)" if data["oracle_prm"] else "")),
            ("dataset", data["dataset"]), ("created", data["created"]), ("bins", ", ".join(data["bins"]))]
    parts.append('<dl class="meta">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in meta if v)
                 + "</dl>")
    if data["metrics"]:
        parts.append("<h2>Headline figures</h2>")
        parts.append('<dl class="metrics">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>"
                                                      for k, v in data["metrics"].items()) + "</dl>")
    if data["how_sure"] or data["warnings"]:
        parts.append('<h2 id="how-sure">How sure</h2>')
        if data["how_sure"]:
            parts.append(f'<p class="how-sure">{escape(data["how_sure"])}</p>')
        if data["warnings"]:
            parts.append('<ul class="warnings" role="alert">'
                         + "".join(f"<li>{escape(w)}</li>" for w in data["warnings"]) + "</ul>")
    if pngs:
        parts.append("<h2>Scaling curves</h2>")
        parts += [png_figure(p, alt, cap) for p, alt, cap in pngs]
    tables = [t for t in [frontier_table(data)] if t is not None] + data["tables"]
    if tables:
        parts.append("<h2>Tables</h2>")
        parts += [table_html(t) for t in tables]
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
    csp = (f"default-src 'none'; img-src data:; style-src {csp_hash(CSS)}; script-src {csp_hash(_JS)}; "
           "base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(data['title'])}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )

