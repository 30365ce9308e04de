"""The compute-optimal report: PNG plots, a self-contained HTML page, and its tree viewer in headless Chromium."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from chromium import find_chromium, load_page
from testtime.optimal.report import ReportDataError, from_dict, write_report

HOSTILE = "<script>alert(1)</script>"
CLOSER = "x </script><b>bold</b> <!-- y"
BUDGETS = [1, 2, 4, 8, 16]
STRATEGIES = {"best_of_n": 0.0, "beam(m=4)": 0.06, "dvts(m=4)": 0.03}
BASE = {"easy": 0.80, "medium": 0.50, "hard": 0.15, "all": 0.48}


def _acc(bin_: str, strategy: str, budget: int) -> float:
    # beam wins on hard problems at large budgets, best-of-N on easy ones: the frontier changes strategy
    gain = 0.04 * budget.bit_length()
    sign = {"easy": -1.0, "medium": (budget.bit_length() - 2.5), "hard": 1.0, "all": 1.0}[bin_]
    tilt = STRATEGIES[strategy] * sign * budget.bit_length() / 3
    return round(min(1.0, max(0.0, BASE[bin_] + gain + tilt)), 4)


def _flops(strategy: str, budget: int) -> float:
    return 2.0e11 * budget * (1.3 if strategy.startswith("beam") else 1.0)


def synthetic() -> dict[str, Any]:
    curves: dict[str, Any] = {}
    frontier: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    for b in BASE:
        curves[b] = {
            s: [{"budget": n, "accuracy": _acc(b, s, n), "flops": _flops(s, n), "tokens": 300.0 * n} for n in BUDGETS]
            for s in STRATEGIES
        }
        frontier[b] = []
        for n in BUDGETS:
            best = max(STRATEGIES, key=lambda s, n=n, b=b: _acc(b, s, n))
            frontier[b].append({"budget": n, "accuracy": _acc(b, best, n), "flops": _flops(best, n), "strategy": best})
        reference[b] = {
            "cot": BASE[b],
            "majority": [{"budget": n, "accuracy": BASE[b] + 0.02 * n.bit_length(), "flops": _flops("m", n)}
                         for n in BUDGETS],
        }
    first = [  # id, parent, depth, step, reward, kept, pruned, terminal, answer
        (0, None, 0, "Let x be the number of apples.", 0.91, True, None, False, None),
        (1, 0, 1, "Then 2x + 3 = 11, so x = 4.", 0.88, True, None, False, None),
        (2, 0, 1, HOSTILE, 0.12, False, "low reward", False, None),
        (3, 1, 2, "The answer is \\boxed{4}.", 0.95, True, None, True, "4"),
        (4, 1, 2, CLOSER, 0.30, False, "beam width", False, None),
        (5, 0, 1, "Guess: 5 & 6 > 4", None, False, None, False, None),
        (6, 5, 2, "So \\boxed{5}.", 0.20, True, None, True, "5"),
    ]
    second = [
        (0, None, 0, "Compute 7 * 6.", 0.8, True, None, False, None),
        (1, 0, 1, "7 * 6 = 42.", 0.9, True, None, True, "42"),
        (2, 0, 1, "7 * 6 = 48.", 0.1, False, "low reward", True, "48"),
        (3, None, 0, "Another root.", 0.5, True, None, False, None),
        (4, 3, 1, "It is 42.", 0.7, True, None, True, "42"),
    ]
    keys = ["id", "parent", "depth", "step", "reward", "kept", "pruned", "terminal", "answer"]
    return {
        "title": "Synthetic scaling <report>",
        "policy": "tiny-policy", "prm": "tiny-prm", "dataset": "arith", "created": "2025-01-01T00:00:00Z",
        "oracle_prm": True,
        "bins": ["easy", "medium", "hard"],
        "curves": curves, "reference": reference, "frontier": frontier,
        "tables": [
            {"title": "Calibration <bins>", "columns": ["bin", "n", "mean pass@1", "note"],
             "rows": [["easy", 10, 0.8123, "fine & dandy"], ["hard", 7, 0.1, None], ["all", 17, float("nan"), ""]]},
            {"title": "Confusion matrix", "columns": ["true \\ predicted", "easy", "hard"],
             "rows": [["easy", 9, 1], ["hard", 2, 5]]},
        ],
        "metrics": {"best relative gain over CoT": "+41.2%", "frontier at N=16 <hard>": "beam(m=4), 61.0%"},
        # numeric-looking ids: a JS object would reorder them ("3" before "17"); the viewer must not
        "trees": {
            "17": {"question": f"How many apples? {CLOSER}", "answer": "4", "strategy": "beam(m=4)",
                   "nodes": [dict(zip(keys, n, strict=True)) for n in first]},
            "3": {"question": "What is 7 * 6?", "answer": "42", "strategy": "dvts(m=4)",
                  "nodes": [dict(zip(keys, n, strict=True)) for n in second]},
        },
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    data = synthetic()
    return data, write_report(data, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium binary found (chromium, chromium-browser, google-chrome, $CHROMIUM); "
                    "`apt-get install -y chromium` provides one")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Files and static HTML


def test_files_written_and_pngs_valid(report) -> None:
    _, files = report
    assert files.html.is_file() and files.html.name == "report.html"
    assert len(files.pngs) == 2
    for png in files.pngs:
        raw = png.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000, png
        assert png.parent == files.html.parent


def test_html_self_contained_and_escaped(report) -> None:
    _, files = report
    page = files.html.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page), "only data: URIs may be referenced"
    assert page.count('src="data:image/png;base64,') == 2
    # the hostile step text lives only in the JSON blob, with every '<' escaped: it cannot close the script
    assert HOSTILE not in page and "alert(1)</script>" not in page
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    assert "<b>bold</b>" not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2
    # strings in the static HTML go through html.escape
    assert "Synthetic scaling &lt;report&gt;" in page and "Calibration &lt;bins&gt;" in page
    assert "fine &amp; dandy" in page and "frontier at N=16 &lt;hard&gt;" in page
    assert 'id="oracle-banner"' in page and "ORACLE / upper bound" in page
    assert "<table>" in page and "Compute-optimal strategy per bin and budget" in page


def test_graceful_with_missing_bins_single_points_and_no_trees(tmp_path: Path) -> None:
    data = {
        "bins": ["q1", "q2", "q3"],
        "curves": {"q1": {"cot": [{"budget": 1, "accuracy": 0.5, "flops": 1e9}]},
                   "q2": {"beam": [{"budget": 4, "accuracy": 0.25}]},  # no FLOPs: left off the FLOPs plot
                   "all": {}},
        "reference": {"q3": {"cot": 0.1, "majority": []}},
        "frontier": {"q1": [{"budget": 1, "accuracy": 0.5, "flops": 1e9, "strategy": "cot"}]},
    }
    files = write_report(data, tmp_path)
    assert all(p.stat().st_size > 0 for p in files.pngs)
    page = files.html.read_text(encoding="utf-8")
    assert "No search trees were recorded" in page and "oracle-banner" not in page
    files = write_report({}, tmp_path / "empty")  # nothing at all still gives a page
    assert files.html.is_file()


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        (lambda d: d["curves"]["easy"]["best_of_n"][0].update(accuracy=80.0), "curves['easy']['best_of_n'][0]"),
        (lambda d: d["trees"]["3"]["nodes"][3].update(parent=4), "parent cycle"),
        (lambda d: d["tables"][0]["rows"].append(["x"]), "tables[0].rows[3]"),
    ],
)
def test_from_dict_rejects_bad_shapes(patch, where: str) -> None:
    data = copy.deepcopy(synthetic())
    patch(data)
    with pytest.raises(ReportDataError, match=re.escape(where)):
        from_dict(data)


# ---------------------------------------------------------------------------------------------------------------
# In a real browser


class _Dom(HTMLParser):
    """Enough of the dumped DOM for the assertions: tags, tree nodes, and the text of step spans."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.steps: list[str] = []
        self._in_step = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if self._in_step:
            self._in_step += 1
        elif tag == "span" and a.get("class") == "step":
            self._in_step = 1
            self.steps.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._in_step:
            self._in_step -= 1

    def handle_data(self, data: str) -> None:
        if self._in_step:
            self.steps[-1] += data

    def nodes(self) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if "data-node-id" in a]

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)


def _dom(text: str) -> _Dom:
    d = _Dom()
    d.feed(text)
    return d


def test_chromium_console_capture_catches_deliberate_errors(chromium: str, tmp_path: Path) -> None:
    # Without this, a Chromium whose log format changed would make every "no console errors" check pass vacuously.
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p id=ok></p><script>console.error('deliberate-error');"
                    "document.getElementById('ok').textContent='ran';"
                    "setTimeout(function () { null.boom; }, 50);</script></body></html>")
    run = load_page(chromium, page.as_uri())
    messages = [m.message for m in run.console]
    assert "deliberate-error" in messages, run.stderr[-2000:]
    assert any(m.uncaught and "null" in m.message for m in run.console), messages
    assert '<p id="ok">ran</p>' in run.dom


def test_chromium_renders_first_tree_without_errors(report, chromium: str) -> None:
    data, files = report
    run = load_page(chromium, files.html.as_uri())
    assert run.console == [], [m.message for m in run.console]  # the report logs nothing, so any line is a fault
    dom = _dom(run.dom)
    first = data["trees"]["17"]
    nodes = dom.nodes()
    assert len(nodes) == len(first["nodes"])
    classes = [set((n["class"] or "").split()) for n in nodes]
    assert all("node" in c for c in classes)
    assert sum("pruned" in c for c in classes) == 3 and sum("kept" in c for c in classes) == 4
    assert sum("terminal" in c for c in classes) == 2
    # the hostile text came through as text, not as elements
    assert HOSTILE in dom.steps and CLOSER in dom.steps
    assert dom.count("script") == 2 and dom.count("b") == 0
    assert any(a.get("id") == "oracle-banner" for _, a in dom.tags)
    options = [a for t, a in dom.tags if t == "option"]
    assert [o["value"] for o in options] == ["0", "1"]


def test_chromium_deep_link_and_no_banner_without_oracle(report, chromium: str, tmp_path: Path) -> None:
    data, _ = report
    data = copy.deepcopy(data)
    data["oracle_prm"] = False
    files = write_report(data, tmp_path)
    run = load_page(chromium, files.html.as_uri() + "#tree=3")
    assert run.console == [], [m.message for m in run.console]
    dom = _dom(run.dom)
    assert len(dom.nodes()) == len(data["trees"]["3"]["nodes"])
    assert not any(a.get("id") == "oracle-banner" for _, a in dom.tags)
    assert "ORACLE" not in run.dom


def test_chromium_csp_blocks_a_smuggled_script(report, chromium: str, tmp_path: Path) -> None:
    # defense in depth: even a script that got into the page some other way must not run (hash-pinned CSP)
    _, files = report
    page = tmp_path / "tampered.html"
    smuggled = "<script>document.body.setAttribute('data-pwned', '1');</script>"
    page.write_text(files.html.read_text(encoding="utf-8").replace("</body>", smuggled + "</body>"), encoding="utf-8")
    run = load_page(chromium, page.as_uri())
    assert 'data-pwned="1"' not in run.dom
    assert any("Content Security Policy" in m.message for m in run.console), [m.message for m in run.console]
    assert len(_dom(run.dom).nodes()) == 7  # the report's own script still ran
