"""Answer extraction and equivalence checking, every check bounded in time.

Layers, cheapest first:

* ``extract_answer``: the final answer a model wrote (last ``\\boxed{}``, "The answer is X", ``#### X``).
* A normalized-string fast path and a pure-Python numeric comparator (``fractions.Fraction``, never
  sympy), run in-process. They settle the number kinds (aime, gsm8k, arith, number) alone, and most
  "math" pairs (identical strings, plain numbers) never reach sympy.
* math-verify (sympy) for everything else, run in ONE persistent worker subprocess. Why a subprocess:
  math-verify's own timeouts use ``signal.alarm``, which raises ValueError outside the main thread,
  and sympy can spin on strings such as ``10^{10^{10^{10}}}``. Inside the worker every pair gets its
  own ``setitimer`` budget covering parse + parse + verify (math-verify's whole-second alarms
  would add up to ~6 x timeout per pair: two parses plus one per gold x pred candidate); if the
  worker still does not answer within ``timeout_s`` (stuck in C code, where signals are not
  delivered) the parent kills it, answers False, and the next call starts a fresh one.

The worker is started lazily with ``subprocess`` and loads this very file by path, not through
``multiprocessing``'s spawn: spawn re-imports the parent's ``__main__`` (an unguarded user script
would run again in the worker) and would import the whole ``testtime`` package; loading the file
keeps worker start to interpreter start + ``import math_verify``.

Measured on the dev box (2 CPUs, Python 3.11, math-verify 0.9.0, sympy 1.14, warm disk cache):

* first math-verify call: ~0.37 s = worker start + ``import math_verify`` (~0.25 s) + the first
  sympy parse; allow ~1.4 s on a cold disk cache (measured elsewhere). Not charged to ``timeout_s``.
* later calls reuse the worker; the IPC round trip is <0.1 ms (a pair that fails to parse costs
  ~0.3-0.4 ms in all). Per pair: ~1.3 ms numbers, ~1.5 ms ``k\\sqrt{2}`` vs ``\\sqrt{2k^2}``, ~5 ms
  polynomials, ~10 ms bare symbols, 30-100 ms the first time an interval/tuple shape is seen.
* ``grade_many`` sends a batch in one message and streams verdicts back (so each pair gets its
  own kill deadline); cost ~ the per-pair numbers above. Settled verdicts are cached in-process,
  so replays (the same candidates graded again at another budget) cost ~12 us per pair.
* fast path ~4 us, numeric kinds ~15 us per pair, no worker.
* a pair that exhausts its budget costs ~0.8 x timeout_s (worker alarm); a worker kill costs
  timeout_s, plus ~0.35 s for the restart on the next call.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for hints: the worker loads this file without the testtime package
    from testtime.types import Problem

log = logging.getLogger(__name__)

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
# Extraction
# ---------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:\*\*)?\s*(?:is\s*:?|:)\s*(?:\*\*)?",
    re.IGNORECASE,
)
_GSM8K_RE = re.compile(r"####\s*((?:(?!####)[^\n])*)")
_THOUSANDS_RE = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_LAST_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def _balanced_group(text: str, start: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``start``; None when it is never closed.

    A backslash escapes the next character, so ``\\{`` / ``\\}`` (set braces) do not count, while
    ``\\\\}`` (a line break, then a real brace) does.
    """
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (``\\boxed 5`` too)."""
    found: str | None = None
    for m in _BOXED_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _balanced_group(text, i)
            if end is None:  # truncated generation: keep the last box that was closed
                continue
            found = text[i + 1 : end - 1]
        elif m.end() < len(text) and text[m.end()] == " ":
            # "\boxed 5": the argument is the next token.
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                found = tok.group(0)
    return None if found is None else _clean_answer(found)


def _clean_answer(s: str) -> str:
    """Strip an answer's wrapping: whitespace, ``$``, ``**``, ``\\(..\\)``, a final '.'."""
    prev = None
    while prev != s:
        prev = s
        s = s.strip()
        # Markdown bold, also when the regex already ate the opening "**" ("is: **12**").
        s = s.removeprefix("**").removesuffix("**")
        if s.startswith("\\(") and s.endswith("\\)") or s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        if s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s.strip("$")
        elif s.count("$") == 1 and s.startswith("$"):  # "is $1,235.": currency, or a lost delimiter
            s = s[1:]
        if s.endswith(".") and not s.endswith(("..", "\\right.")):  # `\right.` is a delimiter
            s = s[:-1]
    return s


def _answer_span(rest: str) -> str:
    """The answer right after 'The answer is': a ``$..$`` span, or the sentence up to '. ' / newline."""
    rest = rest.lstrip()
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            if end != -1:
                return _clean_answer(rest[len(open_) : end])
            break
    line = rest.split("\n", 1)[0]
    # A period followed by a space/end closes the sentence ("$5$. I hope it is correct."); a period
    # between digits (3.5) does not.
    m = re.search(r"\.(?:\s|$)", line)
    if m:
        line = line[: m.start()]
    return _clean_answer(line)


def _clean_number_text(s: str) -> str:
    """Remove thousands separators and a currency sign: '$1,234' -> '1234' (GSM8K style)."""
    s = _clean_answer(s).replace("\\$", "").lstrip("$").strip()
    return _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), s)


def extract_answer(text: str, fallback_last_number: bool = False) -> str | None:
    """The final answer a model wrote, or None.

    Priority: the last complete ``\\boxed{}``/``\\fbox{}``; else the last "The (final) answer is X" /
    "Answer: X"; else the last GSM8K ``#### X``; else (only with ``fallback_last_number``) the
    last number in the text. No guessing by default: a solution without a marked answer is wrong.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        ans = _answer_span(text[m.end() :])
        if ans:
            return ans
    hashes = _GSM8K_RE.findall(text)
    for raw in reversed(hashes):
        ans = _clean_number_text(raw)
        if ans:
            return ans
    if fallback_last_number:
        nums = _LAST_NUMBER_RE.findall(text)
        if nums:
            return nums[-1].replace(",", "")
    return None


def reference_answer(problem_or_raw: Problem | str, kind: str | None = None) -> str:
    """The clean reference answer from a dataset's raw answer field.

    gsm8k: the worked solution's final line ``#### 1,234`` -> ``1234``. math: a full MATH solution
    (it contains ``\\boxed``) -> the boxed content; an already-clean answer is returned stripped.
    Given a Problem, its ``answer`` and (unless ``kind`` is passed) its ``kind`` are used.
    """
    if isinstance(problem_or_raw, str):
        raw, kind = problem_or_raw, kind or "math"
    else:
        raw, kind = problem_or_raw.answer, kind or problem_or_raw.kind
    if kind == "gsm8k" or "####" in raw:
        hashes = _GSM8K_RE.findall(raw)
        if hashes:
            return _clean_number_text(hashes[-1])
    if "\\boxed" in raw or "\\fbox" in raw:
        boxed = last_boxed(raw)
        if boxed is not None:
            return boxed
    return raw.strip()


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
# math-verify worker
# ---------------------------------------------------------------------------------------------


class _PairTimeout(BaseException):
    """Raised by the worker's itimer. BaseException so that math-verify's and sympy's
    ``except Exception`` (and math-verify's ``except TimeoutException``) cannot swallow it."""


def _wrap_latex(s: str) -> str:
    # A bare `\sqrt{18}` parses to [] in math-verify; inside `$...$` it parses. Strip any
    # delimiters the answer already has so it is wrapped exactly once.
    s = s.strip()
    for open_, close in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(open_) and s.endswith(close):
            s = s[len(open_) : -len(close)]
    return "$" + s.strip().strip("$").strip() + "$"


def _worker_main(fd: int) -> None:  # pragma: no cover - runs in the worker process
    """Worker loop: ("verify", [(gold, pred), ...], budget_s) -> one (i, ok, timed_out) per pair."""
    logging.disable(logging.CRITICAL)  # math-verify warns on every timeout; the parent logs instead
    conn = Connection(fd)
    t0 = time.perf_counter()
    from math_verify import parse, verify

    armed = False

    def on_alarm(signum: int, frame: Any) -> None:
        if armed:
            raise _PairTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    conn.send(("ready", time.perf_counter() - t0))

    def one(gold: str, pred: str, budget: float) -> tuple[bool, bool]:
        nonlocal armed
        armed = True
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            # Timeouts None: the itimer bounds the whole pair; math-verify's alarm() would reset it.
            g = parse(_wrap_latex(gold), parsing_timeout=None)
            p = parse(_wrap_latex(pred), parsing_timeout=None)
            return bool(g and p and verify(g, p, timeout_seconds=None)), False
        except _PairTimeout:
            return False, True
        except Exception:
            return False, False
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent went away
        op = msg[0]
        if op == "stop":
            return
        if op == "verify":
            _, pairs, budget = msg
            for i, (gold, pred) in enumerate(pairs):
                try:
                    ok, timed_out = one(gold, pred, budget)
                except _PairTimeout:  # the alarm landed between the body and `finally`
                    ok, timed_out = False, True
                conn.send((i, ok, timed_out))


_WORKER_BOOT = (
    "import importlib.util, json, sys\n"
    "sys.path[:] = json.loads(sys.argv[3])\n"
    "spec = importlib.util.spec_from_file_location('_testtime_grading_worker', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod._worker_main(int(sys.argv[2]))\n"
)

STARTUP_TIMEOUT_S = 120.0  # import math_verify on a loaded machine; not charged to timeout_s


class _Worker:
    """One math-verify subprocess plus the socket to it."""

    def __init__(self) -> None:
        import json

        parent_sock, child_sock = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__),
                 str(child_sock.fileno()), json.dumps(sys.path)],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.pid = os.getpid()  # a forked copy of this process must not talk to our worker
        t0 = time.perf_counter()
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError("math-verify grading worker did not start")
        try:
            tag, self.import_s = self.conn.recv()
        except (EOFError, OSError) as e:
            self.kill()
            raise RuntimeError("math-verify grading worker died at start (is math-verify installed?)") from e
        self.start_s = time.perf_counter() - t0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()  # reap: no zombie

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


_lock = threading.RLock()
_worker: _Worker | None = None
_stats = {"starts": 0, "kills": 0, "timeouts": 0, "calls": 0, "pairs": 0, "cache_hits": 0}
_cache: dict[tuple[str, str], bool] = {}
_CACHE_MAX = 200_000


def _get_worker() -> _Worker:
    global _worker
    if _worker is not None and (_worker.pid != os.getpid() or not _worker.alive()):
        if _worker.pid == os.getpid():
            _worker.kill()
        _worker = None  # in a forked child: forget the parent's worker, never touch it
    if _worker is None:
        _worker = _Worker()
        _stats["starts"] += 1
    return _worker


def _kill_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker = None
        _stats["kills"] += 1


def shutdown() -> None:
    """Stop the math-verify worker (also registered with atexit). The next check starts a new one."""
    global _worker
    with _lock:
        if _worker is not None and _worker.pid == os.getpid():
            _worker.stop()
        _worker = None


atexit.register(shutdown)


def worker_stats() -> dict[str, Any]:
    """Counters (worker starts, kills, timeouts, calls, pairs, cache hits) and the worker's pid."""
    with _lock:
        out: dict[str, Any] = dict(_stats)
        out["worker_pid"] = _worker.proc.pid if _worker is not None else None
        out["cache_size"] = len(_cache)
        return out


def _inner_budget(timeout_s: float) -> float:
    # The worker's own alarm fires first so an ordinary timeout does not cost a restart (~0.35 s);
    # the parent's kill at timeout_s is for the cases where the signal cannot be delivered.
    return max(0.01, min(timeout_s * 0.8, timeout_s - 0.2))


def _math_verify_many(pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[bool]:
    """(gold, pred) pairs through the worker: one request, results streamed back one per pair,
    each awaited at most ``timeout_s`` (so n pairs take at most ~n x timeout_s)."""
    results: list[bool] = [False] * len(pairs)
    todo: list[int] = []
    with _lock:
        for i, key in enumerate(pairs):
            hit = _cache.get(key)
            if hit is None:
                todo.append(i)
            else:
                results[i] = hit
                _stats["cache_hits"] += 1
        _stats["calls"] += 1
        while todo:
            worker = _get_worker()
            batch = [pairs[i] for i in todo]
            try:
                worker.conn.send(("verify", batch, _inner_budget(timeout_s)))
                done = _collect(worker, pairs, todo, results, timeout_s)
            except BaseException:
                # Ctrl-C or a bug mid-batch: the worker still owes answers that the next call would
                # misread as its own, so it must go.
                _kill_worker()
                raise
            todo = todo[done:]
    return results


def _collect(worker: _Worker, pairs: Sequence[tuple[str, str]], todo: list[int], results: list[bool],
             timeout_s: float) -> int:
    """Read the verdicts for ``todo`` in order; returns how many pairs are settled (a timeout settles
    the pair it hit as False and kills the worker; the caller resends the rest)."""
    done = 0
    for j, i in enumerate(todo):
        try:
            msg = worker.conn.recv() if worker.conn.poll(timeout_s) else None
        except (EOFError, OSError):
            msg = None
        if msg is None or msg[0] != j:
            log.warning("math-verify check exceeded %.1fs (or its worker died); killing the "
                        "worker, counting %r vs %r as wrong", timeout_s, pairs[i][1][:80],
                        pairs[i][0][:80])
            _stats["timeouts"] += 1
            _kill_worker()
            done = j + 1  # this pair is False; resend the rest to a fresh worker
            break
        _, ok, timed_out = msg
        results[i] = ok
        _stats["pairs"] += 1
        if timed_out:
            _stats["timeouts"] += 1
            log.warning("math-verify check exceeded its %.2fs budget; counting %r vs %r as "
                        "wrong", _inner_budget(timeout_s), pairs[i][1][:80], pairs[i][0][:80])
        else:  # only settled answers are cached: a timeout might pass on a quieter machine
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[pairs[i]] = ok
        done = j + 1
    return done


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
    return _math_verify_many([(ref, pred)], timeout_s)[0]


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
        verdicts = _math_verify_many([(pairs[i][1], str(pairs[i][0])) for i in need], timeout_s)
        for i, v in zip(need, verdicts, strict=True):
            out[i] = v
    return [bool(v) for v in out]


def grade(problem: Problem, text: str, timeout_s: float = 5.0,
          fallback_last_number: bool = False) -> tuple[str | None, bool]:
    """Extract the final answer from ``text`` and compare it with ``problem.answer`` by ``problem.kind``."""
    pred = extract_answer(text, fallback_last_number=fallback_last_number)
    return pred, is_equivalent(pred, problem.answer, problem.kind, timeout_s)


__all__ = [
    "KINDS",
    "extract_answer",
    "grade",
    "grade_many",
    "integers_equal",
    "is_equivalent",
    "last_boxed",
    "normalize_str",
    "numbers_equal",
    "parse_number",
    "reference_answer",
    "shutdown",
    "worker_stats",
]
