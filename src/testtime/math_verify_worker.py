"""The bounded math-verify worker: one persistent subprocess that runs math-verify (sympy) for
``grading`` (equivalence of answer pairs) and ``extraction`` (its ``fallback`` policy's extraction).

Why a subprocess: math-verify's own timeouts use ``signal.alarm``, which raises ValueError outside the
main thread, and sympy can spin on strings such as ``10^{10^{10^{10}}}``. Inside the worker every item
gets its own ``setitimer`` budget covering parse + parse + verify (math-verify's whole-second alarms
would add up to ~6 x timeout per pair: two parses plus one per gold x pred candidate); if the worker
still does not answer within ``timeout_s`` (stuck in C code, where signals are not delivered) the
parent kills it, answers "failed" (False / None), and the next call starts a fresh one.

The worker is started lazily with ``subprocess`` and loads this very file by path, not through
``multiprocessing``'s spawn: spawn re-imports the parent's ``__main__`` (an unguarded user script
would run again in the worker) and would import the whole ``testtime`` package; loading the file
keeps worker start to interpreter start + ``import math_verify``. So this module imports nothing
from ``testtime``: ``grading`` and ``extraction`` import it, never the other way round.

Measured on the dev box (2 CPUs, Python 3.11, math-verify 0.9.0, sympy 1.14, warm disk cache):

* first call: ~0.37 s = worker start + ``import math_verify`` (~0.25 s) + the first sympy parse;
  allow ~1.4 s on a cold disk cache (measured elsewhere). Not charged to ``timeout_s``.
* later calls reuse the worker; the IPC round trip is <0.1 ms (a pair that fails to parse costs
  ~0.3-0.4 ms in all). Per pair: ~1.3 ms numbers, ~1.5 ms ``k\\sqrt{2}`` vs ``\\sqrt{2k^2}``, ~5 ms
  polynomials, ~10 ms bare symbols, 30-100 ms the first time an interval/tuple shape is seen.
* a batch goes in one message and verdicts stream back (so each item gets its own kill deadline);
  settled answers are cached in-process, so replays cost ~12 us per pair.
* an item that exhausts its budget costs ~0.8 x timeout_s (worker alarm); a worker kill costs
  timeout_s, plus ~0.35 s for the restart on the next call.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

# The worker process loads this file under this module name (tests find the process by it).
WORKER_MODULE = "_testtime_grading_worker"


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


def _raw_span(text: str, match: re.Match[str]) -> str:
    """The text a math-verify extraction regex matched, as written (not math-verify's normalized
    LaTeX): each LaTeX group's span, several joined with ", "; for a plain number or expression, the
    span from its first to its last group (``1,234.5``, ``50%``)."""
    spans = [(name, match.span(name)) for name, val in match.groupdict().items() if val]
    latex = [text[a:b].strip() for name, (a, b) in spans if "_latex" in name]
    if latex:
        return ", ".join(s for s in latex if s)
    plain = [(a, b) for name, (a, b) in spans if name.rstrip("0123456789") in ("expr", "integer", "decimal", "percent")]
    if not plain:
        return text[match.start() : match.end()].strip()
    return text[min(a for a, _ in plain) : max(b for _, b in plain)].strip()


def _worker_main(fd: int) -> None:  # pragma: no cover - runs in the worker process
    """Worker loop: ("verify", [(gold, pred), ...], budget_s) -> one (i, ok, timed_out) per pair;
    ("extract", [text, ...], budget_s) -> one (i, answer or None, timed_out) per text."""
    logging.disable(logging.CRITICAL)  # math-verify warns on every timeout; the parent logs instead
    conn = Connection(fd)
    t0 = time.perf_counter()
    from itertools import groupby

    from math_verify import parse, verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, extract_match, get_extraction_regexes

    # math-verify's default targets for a prediction: LaTeX, then plain numbers and expressions.
    patterns = sorted(((rx, target, prio) for rxs, target in get_extraction_regexes(
        (LatexExtractionConfig(), ExprExtractionConfig())) for rx, prio in rxs), key=lambda x: x[2])
    by_priority = [list(g) for _, g in groupby(patterns, key=lambda x: x[2])]

    armed = False

    def on_alarm(signum: int, frame: Any) -> None:
        if armed:
            raise _PairTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    conn.send(("ready", time.perf_counter() - t0))

    def check(gold: str, pred: str) -> bool:
        # Timeouts None: the itimer bounds the whole pair; math-verify's alarm() would reset it.
        g = parse(_wrap_latex(gold), parsing_timeout=None)
        p = parse(_wrap_latex(pred), parsing_timeout=None)
        return bool(g and p and verify(g, p, timeout_seconds=None))

    def extract(text: str) -> str | None:
        # math-verify's extract_target_from_pred, step for step (priority groups, rightmost match first,
        # the first that parses wins), keeping the match so the answer is returned as the model wrote it.
        for group in by_priority:
            found = sorted(((m, target) for rx, target, _ in group for m in rx.finditer(text)),
                           key=lambda x: (x[0].end(), -x[0].start()), reverse=True)
            for m, target in found:
                if extract_match(m, target)[0] is not None:
                    return _raw_span(text, m) or None
        return None

    def one(fn: Any, args: tuple, budget: float, failed: Any) -> tuple[Any, bool]:
        nonlocal armed
        armed = True
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            return fn(*args), False
        except _PairTimeout:
            return failed, True
        except Exception:
            return failed, False
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
        if op in ("verify", "extract"):
            _, items, budget = msg
            fn, failed = (check, False) if op == "verify" else (extract, None)
            for i, item in enumerate(items):
                try:
                    out, timed_out = one(fn, item if op == "verify" else (item,), budget, failed)
                except _PairTimeout:  # the alarm landed between the body and `finally`
                    out, timed_out = failed, True
                conn.send((i, out, timed_out))


_WORKER_BOOT = (
    "import importlib.util, json, sys\n"
    "sys.path[:] = json.loads(sys.argv[3])\n"
    f"spec = importlib.util.spec_from_file_location({WORKER_MODULE!r}, sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod._worker_main(int(sys.argv[2]))\n"
)

STARTUP_TIMEOUT_S = 120.0  # import math_verify on a loaded machine; not charged to timeout_s


class _Worker:
    """One math-verify subprocess plus the socket to it."""

    def __init__(self) -> None:
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
_extract_cache: dict[str, str | None] = {}
_CACHE_MAX = 200_000
_EXTRACT_CACHE_MAX = 20_000  # keyed by whole outputs (kilobytes each), so fewer


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
        out["cache_size"] = len(_cache) + len(_extract_cache)
        return out


def _inner_budget(timeout_s: float) -> float:
    # The worker's own alarm fires first so an ordinary timeout does not cost a restart (~0.35 s);
    # the parent's kill at timeout_s is for the cases where the signal cannot be delivered.
    return max(0.01, min(timeout_s * 0.8, timeout_s - 0.2))


def math_verify_many(pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[bool]:
    """(gold, pred) pairs through the worker: one request, results streamed back one per pair,
    each awaited at most ``timeout_s`` (so n pairs take at most ~n x timeout_s)."""
    return _ask_worker("verify", pairs, timeout_s, _cache, False, _CACHE_MAX)


def math_verify_extract_many(texts: Sequence[str], timeout_s: float = 5.0) -> list[str | None]:
    """math-verify's extraction of each text's final answer-bearing expression, as written (a substring
    of the text, or several joined with ", "); None where it finds none or takes over ``timeout_s``.
    One round trip for all texts; what ``extraction``'s ``fallback`` policy calls."""
    return _ask_worker("extract", list(texts), timeout_s, _extract_cache, None, _EXTRACT_CACHE_MAX)


def _ask_worker(op: str, items: Sequence[Any], timeout_s: float, cache: dict[Any, Any], failed: Any,
                cache_max: int) -> list[Any]:
    """``op`` over ``items`` in the worker, cached answers first; an item that times out gets ``failed``."""
    results: list[Any] = [failed] * len(items)
    todo: list[int] = []
    with _lock:
        for i, key in enumerate(items):
            if key in cache:
                results[i] = cache[key]
                _stats["cache_hits"] += 1
            else:
                todo.append(i)
        _stats["calls"] += 1
        while todo:
            worker = _get_worker()
            batch = [items[i] for i in todo]
            try:
                worker.conn.send((op, batch, _inner_budget(timeout_s)))
                done = _collect(worker, items, todo, results, timeout_s, cache, cache_max)
            except BaseException:
                # Ctrl-C or a bug mid-batch: the worker still owes answers that the next call would
                # misread as its own, so it must go.
                _kill_worker()
                raise
            todo = todo[done:]
    return results


def _describe(item: Any) -> str:
    """An item in a log line: a (gold, pred) pair as "pred vs gold", a text by its end."""
    if isinstance(item, tuple):
        return f"{item[1][:80]!r} vs {item[0][:80]!r}"
    return f"extraction from ...{item[-80:]!r}"


def _collect(worker: _Worker, items: Sequence[Any], todo: list[int], results: list[Any], timeout_s: float,
             cache: dict[Any, Any], cache_max: int = _CACHE_MAX) -> int:
    """Read the answers for ``todo`` in order; returns how many items are settled (a timeout settles
    the item it hit as failed and kills the worker; the caller resends the rest)."""
    done = 0
    for j, i in enumerate(todo):
        try:
            msg = worker.conn.recv() if worker.conn.poll(timeout_s) else None
        except (EOFError, OSError):
            msg = None
        if msg is None or msg[0] != j:
            log.warning("math-verify check exceeded %.1fs (or its worker died); killing the worker, counting "
                        "%s as failed", timeout_s, _describe(items[i]))
            _stats["timeouts"] += 1
            _kill_worker()
            done = j + 1  # this item failed; resend the rest to a fresh worker
            break
        _, out, timed_out = msg
        results[i] = out
        _stats["pairs"] += 1
        if timed_out:
            _stats["timeouts"] += 1
            log.warning("math-verify check exceeded its %.2fs budget; counting %s as failed",
                        _inner_budget(timeout_s), _describe(items[i]))
        else:  # only settled answers are cached: a timeout might pass on a quieter machine
            if len(cache) >= cache_max:
                cache.clear()
            cache[items[i]] = out
        done = j + 1
    return done


__all__ = ["STARTUP_TIMEOUT_S", "math_verify_extract_many", "math_verify_many", "shutdown", "worker_stats"]
