"""Answer equivalence checking, every check bounded in time.

Layers, cheapest first:

* A normalized-string fast path and a pure-Python numeric comparator (``fractions.Fraction``, never
  sympy), run in-process. They settle the number kinds (aime, gsm8k, arith, number) alone, and most
  "math" pairs (identical strings, plain numbers) never reach sympy.
* math-verify (sympy) for everything else, in the bounded worker subprocess of
  ``testtime.math_verify_worker`` (why a subprocess, and what each call costs, is documented there).

``grade`` / ``grade_outputs`` read whole model outputs first, through ``testtime.extraction`` (import
the extraction's names from there). Measured on the dev box (2 CPUs, Python 3.11): fast path ~4 us,
numeric kinds ~15 us per pair, no worker; math-verify pairs cost what the worker module lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING

from testtime.extraction import DEFAULT_EXTRACTION, extract_answer, extract_answers
from testtime.math_verify_worker import math_verify_many, shutdown, worker_stats

if TYPE_CHECKING:
    from testtime.types import Problem

MATH_KINDS = frozenset({"math"})
INTEGER_KINDS = frozenset({"aime"})
NUMBER_KINDS = frozenset({"number", "gsm8k", "arith"})
# amc references are numbers, but a model may answer 2\sqrt{2}: numeric first, then math-verify.
NUMBER_THEN_MATH_KINDS = frozenset({"amc"})
KINDS = MATH_KINDS | INTEGER_KINDS | NUMBER_KINDS | NUMBER_THEN_MATH_KINDS

# Absolute tolerance of the numeric comparator. It mirrors math-verify's float_rounding=6, so the
# numeric fast path never says True where math-verify would say False: 0.333333 == 1/3, 0.33 != 1/3,
# and large integers must match exactly (a relative tolerance would make 123456789 == 123456790).
NUMERIC_ABS_TOL = Fraction(1, 10**6)

# ---------------------------------------------------------------------------------------------
# Pure-Python comparators (no sympy, microseconds, safe in any thread)
# ---------------------------------------------------------------------------------------------

_SPACING_RE = re.compile(r"\\[!,;: ]|\\(?:left|right)(?![A-Za-z])|\\displaystyle|\$")
_FRAC_CMD_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")


def normalize_str(s: str) -> str:
    """Spacing-insensitive form for the exact-match fast path (never a reason to say False)."""
    s = _FRAC_CMD_RE.sub(r"\\frac", s)
    s = _SPACING_RE.sub("", s)
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUM_RE = re.compile(_NUM)
_FRAC_RE = re.compile(r"([+-]?)\\frac\{([^{}]+)\}\{([^{}]+)\}")
_FRAC_SHORT_RE = re.compile(r"([+-]?)\\frac(\d)(\d)")
_SLASH_RE = re.compile(rf"({_NUM})/({_NUM})")
_SCI_RE = re.compile(rf"({_NUM})(?:\\times|\\cdot|\*|x)10\^\{{?([+-]?\d{{1,4}})\}}?")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\{([^{}]*)\}")
_DEGREE_RE = re.compile(r"\^\{?\\circ\}?|°|\\degree")
_UNIT_TAIL_RE = re.compile(r"^(.*?\d\.?)\s*[A-Za-z][A-Za-z\s./^23]*$")
_ASSIGN_RE = re.compile(r"^[A-Za-z]\w*\s*=\s*")
_MAX_DIGITS = 4000  # Python refuses int(str) beyond 4300 digits; an answer that long is not a number


def _plain_number(s: str) -> Fraction | None:
    if not _NUM_RE.fullmatch(s) or len(s) > _MAX_DIGITS:
        return None
    mant, _, exp = s.lower().partition("e")
    if exp and abs(int(exp)) > 1000:  # 1e999999 would build a million-digit integer
        return None
    try:
        return Fraction(mant.replace(",", "")) * (Fraction(10) ** int(exp) if exp else 1)
    except (ValueError, ZeroDivisionError):
        return None


def parse_number(s: str, lenient: bool = True) -> Fraction | None:
    """An exact value for a written number, or None when it is not one.

    Always understood: ``$``/``\\$``, LaTeX spacing, ``1,234``, decimals, ``1e3``, ``a/b``,
    ``\\frac{a}{b}`` (and ``\\dfrac``, ``\\frac12``), ``1.5 \\times 10^{3}``, ``%``, degrees.
    ``lenient`` (the number kinds) also drops units and words (``10 \\text{ cm}``, ``18 dollars``)
    and a leading assignment (``x = 5``); the "math" fast path keeps it off so that variables and
    units stay math-verify's call.
    """
    if s is None:
        return None
    s = s.strip().replace("\u2212", "-")
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "")
    s = _DEGREE_RE.sub("", s)
    s = _FRAC_CMD_RE.sub(r"\\frac", s)
    s = _SPACING_RE.sub(" ", s).strip().rstrip(".").strip()
    val = _parse_core(s)
    if val is None and lenient:
        # Only now drop words: "1e3" must stay 1000, not "1" + a unit "e3".
        s = _TEXT_CMD_RE.sub(r" \1 ", s).strip()
        s = _ASSIGN_RE.sub("", s)
        m = _UNIT_TAIL_RE.match(s)
        if m:
            s = m.group(1)
        val = _parse_core(s.strip().rstrip("."))
    return val


def _parse_core(s: str) -> Fraction | None:
    if re.search(r",\s", s):  # "32, 349" is two numbers (a tuple for math-verify), never 32349
        return None
    s = re.sub(r"\s+", "", s)
    if not s or len(s) > _MAX_DIGITS:
        return None
    if s.startswith("+"):
        s = s[1:]
    for rx in (_FRAC_RE, _FRAC_SHORT_RE):
        m = rx.fullmatch(s)
        if m:
            num, den = _plain_number(m.group(2)), _plain_number(m.group(3))
            if num is None or den is None or den == 0:
                return None
            val = num / den
            return -val if m.group(1) == "-" else val
    m = _SLASH_RE.fullmatch(s)
    if m:
        num, den = _plain_number(m.group(1)), _plain_number(m.group(2))
        if num is None or den is None or den == 0:
            return None
        return num / den
    m = _SCI_RE.fullmatch(s)
    if m:
        mant = _plain_number(m.group(1))
        return None if mant is None else mant * Fraction(10) ** int(m.group(2))
    return _plain_number(s)


def numbers_equal(pred: str, ref: str, lenient: bool = True) -> bool | None:
    """Numeric equality within ``NUMERIC_ABS_TOL``; None when either side is not a number."""
    a, b = parse_number(pred, lenient), parse_number(ref, lenient)
    if a is None or b is None:
        return None
    return abs(a - b) <= NUMERIC_ABS_TOL


def integers_equal(pred: str, ref: str) -> bool:
    """AIME: both sides must be integers ("025" == "25" == "25.0"); anything else is wrong."""
    a, b = parse_number(pred), parse_number(ref)
    if a is None or b is None or a.denominator != 1 or b.denominator != 1:
        return False
    return a == b


def _fast_equal(pred: str, ref: str) -> bool:
    return normalize_str(pred) == normalize_str(ref) and normalize_str(ref) != ""


# ---------------------------------------------------------------------------------------------
# Public comparison API
# ---------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {sorted(KINDS)}")


def _local_verdict(pred: str | None, ref: str, kind: str) -> bool | None:
    """The in-process verdict, or None when math-verify has to decide."""
    if pred is None or not pred.strip():
        return False
    if kind in INTEGER_KINDS:
        return integers_equal(pred, ref)
    if _fast_equal(pred, ref):
        return True
    if kind in NUMBER_KINDS:
        return bool(numbers_equal(pred, ref))
    if kind in NUMBER_THEN_MATH_KINDS:
        eq = numbers_equal(pred, ref)
        return eq if eq is not None else None
    # math: plain numbers on both sides settle True here (0.5 vs \frac{1}{2}); a numeric False is not
    # trusted, since math-verify knows more (50\% vs 0.5, x=5, sets of numbers).
    if numbers_equal(pred, ref, lenient=False):
        return True
    return None


def is_equivalent(pred: str | None, ref: str, kind: str = "math", timeout_s: float = 5.0) -> bool:
    """Whether the answer ``pred`` matches the reference ``ref`` for this answer ``kind``.

    aime: integers only. number/gsm8k/arith: numbers (commas, ``$``, ``%``, units, fractions). amc:
    numbers, math-verify when the prediction is not a plain number. math: math-verify. At most
    ``timeout_s`` seconds (plus a one-off worker start); over it the answer counts as wrong.
    Thread-safe. Raises ValueError for an unknown kind, RuntimeError if the worker cannot start.
    """
    _check_kind(kind)
    verdict = _local_verdict(pred, ref, kind)
    if verdict is not None:
        return verdict
    assert pred is not None
    return math_verify_many([(ref, pred)], timeout_s)[0]


def grade_many(pairs: Iterable[tuple[str | None, str]], kind: str = "math",
               timeout_s: float = 5.0) -> list[bool]:
    """``is_equivalent`` over (pred, ref) pairs; what needs math-verify goes in one round trip.

    Each pair is bounded by ``timeout_s`` separately, so the call takes at most ~len(pairs) x
    timeout_s; in practice milliseconds per pair.
    """
    _check_kind(kind)
    pairs = list(pairs)
    out: list[bool | None] = [_local_verdict(p, r, kind) for p, r in pairs]
    need = [i for i, v in enumerate(out) if v is None]
    if need:
        # (gold, pred) order, as math-verify's verify() is not symmetric; preds here are never None.
        verdicts = math_verify_many([(pairs[i][1], str(pairs[i][0])) for i in need], timeout_s)
        for i, v in zip(need, verdicts, strict=True):
            out[i] = v
    return [bool(v) for v in out]


def grade(problem: Problem, text: str, timeout_s: float = 5.0, fallback_last_number: bool = False,
          policy: str | None = None) -> tuple[str | None, bool]:
    """Extract the final answer from ``text`` under ``policy`` (None: ``DEFAULT_EXTRACTION``, what runs
    use) and compare it with ``problem.answer`` by ``problem.kind``."""
    pred = extract_answer(text, fallback_last_number, policy=policy or DEFAULT_EXTRACTION, timeout_s=timeout_s)
    return pred, is_equivalent(pred, problem.answer, problem.kind, timeout_s)


def grade_answers(items: Iterable[tuple[str | None, str, str]], timeout_s: float = 5.0) -> list[bool]:
    """``grade_many`` over (pred, ref, kind) triples of mixed kinds: one batch per kind."""
    items = list(items)
    verdicts: list[bool] = [False] * len(items)
    for kind in dict.fromkeys(k for _, _, k in items):
        idx = [i for i, (_, _, k) in enumerate(items) if k == kind]
        for i, ok in zip(idx, grade_many([items[i][:2] for i in idx], kind, timeout_s), strict=True):
            verdicts[i] = ok
    return verdicts


def grade_outputs(items: Iterable[tuple[str, str, str]], policy: str,
                  timeout_s: float = 5.0) -> list[tuple[str | None, bool]]:
    """(whole model output, reference, kind) -> (extracted answer, verdict): the extraction and grading a run
    does, batched (one extraction round trip, one grading batch per kind)."""
    items = list(items)
    preds = extract_answers([t for t, _, _ in items], policy, timeout_s)
    verdicts = grade_answers(((p, r, k) for p, (_, r, k) in zip(preds, items, strict=True)), timeout_s)
    return list(zip(preds, verdicts, strict=True))


__all__ = [
    "KINDS",
    "grade",
    "grade_answers",
    "grade_outputs",
    "grade_many",
    "integers_equal",
    "is_equivalent",
    "normalize_str",
    "numbers_equal",
    "parse_number",
    "shutdown",
    "worker_stats",
]
