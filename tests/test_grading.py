"""Tests for testtime.grading and its math-verify worker: extraction, equivalence per kind, time bounds,
threads, batching, and the import graph of grading / extraction / the worker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from testtime import grading
from testtime import math_verify_worker as worker
from testtime.extraction import extract_answer, reference_answer
from testtime.grading import grade, grade_many, is_equivalent, parse_number
from testtime.types import Problem

SRC = Path(grading.__file__).resolve().parents[1]  # the src/ dir of the grading under test


@pytest.fixture(scope="module", autouse=True)
def _one_worker():
    """All tests share the lazy worker; stop it when the module is done."""
    yield
    grading.shutdown()


def _gone(pid: int) -> bool:
    """True when the process no longer exists (a zombie still has a /proc entry)."""
    return not os.path.exists(f"/proc/{pid}")


# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$ in the end", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{x^{2}}}", r"\sqrt{x^{2}}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"first \boxed{1}, then corrected: \boxed{2}.", "2"),
        (r"\fbox{7}", "7"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces are not structure
        (r"\boxed{\left\{ x+1 \right.}", r"\left\{ x+1 \right."),  # an unpaired \{ either
        (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
        (r"\boxed{3} and then a truncated \boxed{\frac{1}{", "3"),
        (r"The answer is $\boxed{10}$. Later the answer is 11", "11"),  # the last statement wins, whatever its form
        ("The answer is 42.", "42"),
        ("the answer is 3.5.", "3.5"),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
        ("**Answer:** 17", "17"),
        ("The final answer is: **12**", "12"),
        ("answer: 5\nmore text\nThe answer is 6", "6"),  # the last one wins
        ("Answer:\n\n$$x^2+1$$", "x^2+1"),
        ("Natalia sold 48 clips.\n#### 1,234", "1,234"),  # as written: grading reads the separator
        ("so #### 5 and then #### 72", "72"),
        ("I think it is 5, or maybe 7.", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_last_number_is_opt_in() -> None:
    text = "She pays 1,250 dollars, then 7 more."
    assert extract_answer(text) is None
    assert extract_answer(text, fallback_last_number=True) == "7"
    assert extract_answer("It costs 1,250 dollars.", fallback_last_number=True) == "1,250"


def test_reference_answer() -> None:
    raw = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 1,234"
    assert reference_answer(raw, "gsm8k") == "1234"
    assert reference_answer(Problem("g1", "q", raw, kind="gsm8k")) == "1234"
    assert reference_answer(r"So the area is $\boxed{3\sqrt{2}}$.", "math") == r"3\sqrt{2}"
    assert reference_answer(" 25 ", "aime") == "25"


def test_parse_number() -> None:
    assert parse_number("1,234") == 1234
    assert parse_number("\\$18") == 18
    assert parse_number("-\\dfrac{3}{4}") == Fraction(-3, 4)
    assert parse_number("1e3") == 1000  # not "1" plus a unit "e3"
    assert parse_number("1.5 \\times 10^{3}") == 1500
    assert parse_number("10 \\text{ cm}") == 10
    assert parse_number("10 \\text{ cm}", lenient=False) is None
    assert parse_number("1,2") is None  # a pair, not a thousands separator
    assert parse_number("\\sqrt{2}") is None
    assert parse_number("1/0") is None
    assert parse_number("1e999999") is None  # would be a million-digit integer


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("0.5", r"\frac{1}{2}"),
        ("1/2", r"\frac{1}{2}"),
        (r"\frac12", r"\dfrac{1}{2}"),
        (r"3\sqrt{2}", r"\sqrt{18}"),
        (r"\frac{\sqrt{3}}{2}", r"\sin(\pi/3)"),
        ("(1,2]", "(1, 2]"),
        (r"(-\infty, 3)", r"\left( -\infty, 3 \right)"),
        (r"(3,\pi/2)", r"\left( 3, \frac{\pi}{2} \right)"),
        ("50", r"50\%"),
        (r"50\%", "50"),
        ("10", r"10 \text{ cm}"),
        ("0.75", r"\dfrac{3}{4}"),
        ("25", "025"),
        ("90", r"90^\circ"),
        (r"90^{\circ}", "90"),
        ("1+x^2", "x^2+1"),
        (r"\{2,1\}", r"\{1,2\}"),
        ("5", "x=5"),
        ("A", r"\text{(A)}"),
    ],
)
def test_math_equivalent(pred: str, ref: str) -> None:
    assert is_equivalent(pred, ref, "math") is True


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("0.33", r"\frac{1}{3}"),
        ("0.6", r"\frac{1}{2}"),
        (r"2\sqrt{3}", r"\sqrt{18}"),
        ("[1,2]", "(1,2]"),
        ("(1,2)", "(1,2]"),
        (r"(3,\pi)", r"\left( 3, \frac{\pi}{2} \right)"),
        ("60", r"50\%"),
        ("12", r"10 \text{ cm}"),
        (r"\frac{4}{3}", r"\dfrac{3}{4}"),
        ("180", r"90^\circ"),
        ("x^2-1", "x^2+1"),
        ("B", r"\text{(A)}"),
        ("123456790", "123456789"),
        ("", "5"),
    ],
)
def test_math_not_equivalent(pred: str, ref: str) -> None:
    assert is_equivalent(pred, ref, "math") is False


def test_none_prediction_is_wrong_for_every_kind() -> None:
    for kind in sorted(grading.KINDS):
        assert is_equivalent(None, "5", kind) is False


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ("025", "25", True),
        ("25.0", "25", True),
        ("25", "025", True),
        (r"\frac{50}{2}", "25", True),
        ("25", "26", False),
        ("25.5", "25.5", False),  # AIME answers are integers; anything else is wrong
        ("twenty-five", "25", False),
    ],
)
def test_aime(pred: str, ref: str, expected: bool) -> None:
    assert is_equivalent(pred, ref, "aime") is expected


@pytest.mark.parametrize("kind", ["gsm8k", "number", "arith"])
@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ("1,234", "1234", True),
        ("$18", "18", True),
        ("\\$18", "18", True),
        ("18.0", "18", True),
        ("18%", "18", True),
        ("18 dollars", "18", True),
        ("3/4", "0.75", True),
        (r"\frac{3}{4}", "0.75", True),
        ("-5", "-5", True),
        ("0.33", "1/3", False),
        ("17", "18", False),
        ("-18", "18", False),
        ("1,2", "12", False),
        ("eighteen", "18", False),
    ],
)
def test_number_kinds(kind: str, pred: str, ref: str, expected: bool) -> None:
    assert is_equivalent(pred, ref, kind) is expected


def test_number_kinds_never_start_the_worker() -> None:
    grading.shutdown()
    assert is_equivalent("1,234", "1234", "gsm8k")
    assert not is_equivalent(r"\sqrt{2}", "1.41421356", "number")  # no sympy for number kinds
    assert grading.worker_stats()["worker_pid"] is None


def test_amc_numbers_then_math_verify() -> None:
    assert is_equivalent("142", "142.0", "amc")
    assert is_equivalent(r"\frac{3}{2}", "1.5", "amc")
    assert not is_equivalent("141", "142.0", "amc")
    assert is_equivalent(r"2\sqrt{2}", "2.8284271247", "amc")  # not a plain number: math-verify decides
    assert not is_equivalent(r"2\sqrt{3}", "2.8284271247", "amc")


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown answer kind"):
        is_equivalent("1", "1", "maths")


def test_grade() -> None:
    p = Problem("m1", "What is 1/2 + 1/4?", r"\frac{3}{4}", kind="math")
    assert grade(p, r"We add: $\frac12 + \frac14 = \boxed{0.75}$.") == ("0.75", True)
    assert grade(p, r"So \boxed{\frac{2}{3}}") == (r"\frac{2}{3}", False)
    assert grade(p, "I give up.") == (None, False)
    g = Problem("g1", "How much?", "1234", kind="gsm8k")
    assert grade(g, "Total is 1,000 + 234.\n#### 1,234") == ("1,234", True)
    assert grade(g, "The answer is $1,235.") == ("1,235", False)
    a = Problem("a1", "Find it.", "25", kind="aime")
    assert grade(a, r"\boxed{025}") == ("025", True)


# ----------------------------------------------------------------------------- bounds, threads, batches


def test_pathological_input_returns_within_bound() -> None:
    is_equivalent(r"\sqrt{2}", r"\sqrt{2}+0")  # start the worker outside the timed region
    t0 = time.perf_counter()
    assert is_equivalent("5", r"10^{10^{10^{10}}}", "math", timeout_s=2.0) is False
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0 + 5.0
    # The worker survived (its own alarm fired, no kill) and still answers correctly.
    assert is_equivalent(r"3\sqrt{2}", r"\sqrt{18}", timeout_s=2.0) is True


def test_stuck_worker_is_killed_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the worker's own alarm does not fire (a long C call, where signals wait), the parent
    kills it at timeout_s, counts the pair wrong, and the next call gets a fresh worker."""
    is_equivalent("x+1", "1+x")
    old = worker._worker
    kills = grading.worker_stats()["kills"]
    assert old is not None
    monkeypatch.setattr(worker, "_inner_budget", lambda timeout_s: 600.0)  # silence the worker alarm
    t0 = time.perf_counter()
    assert is_equivalent("6", r"10^{10^{10^{10}}}", timeout_s=1.0) is False
    assert time.perf_counter() - t0 < 1.0 + 5.0
    assert grading.worker_stats()["kills"] == kills + 1
    assert old.proc.returncode is not None and _gone(old.proc.pid)  # killed and reaped
    # A pair never seen before (settled pairs are answered from the cache without a worker).
    assert is_equivalent(r"4\sqrt{2}", r"\sqrt{32}") is True
    assert worker._worker is not None and worker._worker.proc.pid != old.proc.pid


def test_grade_many_resends_the_rest_after_a_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "_inner_budget", lambda timeout_s: 600.0)
    pairs = [(r"5\sqrt{2}", r"\sqrt{50}"), ("7", r"10^{10^{10^{10}}}"), (r"6\sqrt{2}", r"\sqrt{72}"),
             (r"6\sqrt{3}", r"\sqrt{72}")]
    kills = grading.worker_stats()["kills"]
    t0 = time.perf_counter()
    assert grade_many(pairs, "math", timeout_s=1.0) == [True, False, True, False]
    assert time.perf_counter() - t0 < 1.0 + 5.0
    assert grading.worker_stats()["kills"] == kills + 1


def test_interrupted_batch_drops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """If reading verdicts is interrupted (Ctrl-C), the worker's late answers must not leak into
    the next call: the worker is killed, and the next call gets correct verdicts."""
    is_equivalent("x+3", "3+x")

    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "_collect", interrupted)
    kills = grading.worker_stats()["kills"]
    with pytest.raises(KeyboardInterrupt):
        grade_many([(r"7\sqrt{2}", r"\sqrt{98}"), (r"7\sqrt{3}", r"\sqrt{98}")], "math")
    assert grading.worker_stats()["kills"] == kills + 1
    monkeypatch.undo()
    assert grade_many([(r"8\sqrt{3}", r"\sqrt{98}"), (r"7\sqrt{2}", r"\sqrt{98}")], "math") == [False, True]


def test_works_from_threads() -> None:
    # In-process math-verify would raise "signal only works in main thread" here.
    cases = [
        (r"3\sqrt{2}", r"\sqrt{18}", True),
        (r"2\sqrt{3}", r"\sqrt{18}", False),
        ("(1,2]", "(1, 2]", True),
        ("[1,2]", "(1,2]", False),
        ("0.5", r"\frac{1}{2}", True),
        ("5", r"10^{10^{10^{10}}}", False),
    ]
    results: dict[int, bool] = {}
    errors: list[BaseException] = []

    def run(i: int, pred: str, ref: str) -> None:
        try:
            results[i] = is_equivalent(pred, ref, timeout_s=2.0)
        except BaseException as e:  # surface failures from the thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, p, r)) for i, (p, r, _) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert results == {i: want for i, (_, _, want) in enumerate(cases)}


def test_grade_many_agrees_with_is_equivalent() -> None:
    pairs: list[tuple[str | None, str]] = [
        (r"3\sqrt{2}", r"\sqrt{18}"),
        (r"2\sqrt{3}", r"\sqrt{18}"),
        ("0.5", r"\frac{1}{2}"),
        ("0.33", r"\frac{1}{3}"),
        (None, "5"),
        ("(1,2]", "(1, 2]"),
        ("[1,2]", "(1,2]"),
        (r"(3,\pi/2)", r"\left( 3, \frac{\pi}{2} \right)"),
        ("x^2+1", "1+x^2"),
        ("7", "8"),
    ]
    batch = grade_many(pairs, "math", timeout_s=5.0)
    single = [is_equivalent(p, r, "math", timeout_s=5.0) for p, r in pairs]
    assert batch == single == [True, False, True, False, False, True, False, True, True, False]
    assert grade_many([("1,234", "1234"), ("17", "18")], "gsm8k") == [True, False]


def test_grade_many_bounds_each_pair_and_keeps_going() -> None:
    pairs = [("5", r"10^{10^{10^{10}}}"), (r"3\sqrt{2}", r"\sqrt{18}"), (r"2\sqrt{2}", r"\sqrt{8}")]
    t0 = time.perf_counter()
    assert grade_many(pairs, "math", timeout_s=1.0) == [False, True, True]
    assert time.perf_counter() - t0 < 1.0 + 5.0


def test_shutdown_reaps_worker_and_next_call_restarts() -> None:
    is_equivalent("x+2", "2+x")
    w = worker._worker
    assert w is not None
    grading.shutdown()
    assert grading.worker_stats()["worker_pid"] is None
    assert w.proc.returncode is not None and _gone(w.proc.pid)
    assert is_equivalent("x+2", "2+x") is True


def test_atexit_leaves_no_worker_behind() -> None:
    script = textwrap.dedent(
        """
        from testtime import grading
        assert grading.is_equivalent(r"3\\sqrt{2}", r"\\sqrt{18}")
        print(grading.worker_stats()["worker_pid"])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    pid = int(out.stdout.strip())
    assert _gone(pid)  # stopped and reaped by atexit before the parent exited


# ----------------------------------------------------------------------------- import graph

_GRAPH_MODULES = ("testtime.grading", "testtime.extraction", "testtime.math_verify_worker")


def _imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports anywhere: top level, inside functions, under ``if TYPE_CHECKING``."""
    import ast

    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .grading import y
                base = ".".join([package, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # from testtime import grading
    return out


def _import_graph() -> dict[str, set[str]]:
    root = SRC / "testtime"
    return {m: _imported_modules(root / f"{m.rsplit('.', 1)[1]}.py", "testtime") & set(_GRAPH_MODULES)
            for m in _GRAPH_MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    def walk(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                return [*path[path.index(nxt):], nxt]
            found = walk(nxt, [*path, nxt])
            if found:
                return found
        return None

    return next((c for m in sorted(graph) if (c := walk(m, [m]))), None)


def test_grading_extraction_and_the_worker_import_no_cycle() -> None:
    """grading -> extraction -> worker, grading -> worker; nothing points back (lazy imports count too).
    The worker is loaded by path in its subprocess, so it imports nothing from testtime at all."""
    graph = _import_graph()
    assert _cycle(graph) is None, _cycle(graph)
    assert graph["testtime.grading"] == {"testtime.extraction", "testtime.math_verify_worker"}
    assert graph["testtime.extraction"] == {"testtime.math_verify_worker"}
    worker_imports = _imported_modules(SRC / "testtime" / "math_verify_worker.py", "testtime")
    assert not {m for m in worker_imports if m == "testtime" or m.startswith("testtime.")}


def test_cycle_finder_sees_a_lazy_import(tmp_path: Path) -> None:
    """The check above is not vacuous: a function-level import back into grading is a cycle."""
    lazy = tmp_path / "extraction.py"
    lazy.write_text("def f():\n    from testtime.grading import is_equivalent\n    from . import grading\n")
    assert {"testtime.grading", "testtime.grading.is_equivalent"} <= _imported_modules(lazy, "testtime")
    graph = {"testtime.grading": {"testtime.extraction"},
             "testtime.extraction": _imported_modules(lazy, "testtime") & set(_GRAPH_MODULES),
             "testtime.math_verify_worker": set()}
    assert _cycle(graph) == ["testtime.extraction", "testtime.grading", "testtime.extraction"]
