"""POST JSON with retries: the one network primitive remote backends (PRM services, OpenAI-compatible
policies) share.

Transient failures -- HTTP 429 and 5xx, refused or dropped connections, timeouts -- are retried with
exponential backoff plus a little jitter (so many clients that failed together don't retry together),
and a server's ``Retry-After`` is honoured. Anything else (a 400 says the request itself is wrong) fails
at once. Every failure is a ``RequestFailed`` with a one-line message naming the URL, the status or
cause, and how many attempts were made.

Circuit breaker (``Circuits``, one per client: a policy, a scorer). Retrying one request rides out a
server that restarts, but a server that is gone makes every request spend its whole retry budget: 240
requests at 16 at a time with 5 retries of up to 30 s took minutes to fail. So, per origin
(scheme://host:port), the breaker opens when a request has spent *all* its attempts on connection
failures (refused, reset, unreachable, a connect timeout) and no request to that origin got any HTTP
answer since its first failure: the server was unreachable for a whole retry window, the outage the retry
settings were sized to ride out. Many failures in a row across concurrent requests are not enough on their own (a
restart shorter than the retry window produces those too), and an HTTP status (4xx, 5xx, with a body) or
a read timeout never counts: the server is there. While open, requests -- queued ones and those waiting
out a backoff -- fail at once with a ``RequestFailed`` saying ``circuit open``, the origin and what was
seen. After ``max_backoff_s`` (the slowest pace the retries would have polled at anyway) one call is let
through as a probe with a single attempt (half-open; concurrent calls wait for its verdict): any answer
closes the circuit and requests flow again, a connection failure opens it for another ``max_backoff_s``.

httpx is used when importable (a shared client keeps connections alive across threads); otherwise the
standard library's urllib.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from testtime.errors import ProblemFailure

Transport = Literal["auto", "httpx", "urllib"]

_SNIPPET = 200  # characters of a response body quoted in an error


class RequestFailed(ProblemFailure):
    """A POST that did not produce a usable JSON object (after retries, where retrying made sense)."""

    def __init__(
        self,
        url: str,
        cause: str,
        attempts: int,
        *,
        status: int | None = None,
        retryable: bool = False,
        circuit_open: bool = False,
    ):
        self.url = url
        self.cause = _one_line(cause)
        self.attempts = attempts
        self.status = status
        # True when the failure was transient (the retries ran out): another server may still succeed.
        self.retryable = retryable
        # True when the origin's circuit is open (this request opened it, or was refused by it)
        self.circuit_open = circuit_open
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(f"POST {url} failed after {attempts} {plural}: {self.cause}")


class _Transient(Exception):
    """A network-level failure (no HTTP status): always worth retrying. ``connection``: no answer could
    come (refused, reset, unreachable, connect timeout), which the circuit breaker counts; False for a
    read timeout, where the server took the request and was merely slow."""

    def __init__(self, message: str, *, connection: bool = True):
        super().__init__(message)
        self.connection = connection


# -- the circuit breaker ----------------------------------------------------------------------------------

Admit = Literal["go", "probe", "wait", "refuse"]


@dataclass
class Circuit:
    """One origin's breaker: a pure state machine (the caller holds a lock and passes the time ``now``).

    closed -> open: ``exhausted`` for a request whose every attempt was a connection failure, with no
    HTTP answer from the origin since its first one failed (``answers`` unchanged: a request in flight when
    the server died counts too, one that failed while others were being answered does not). open -> half_open: the first
    ``admit`` at or after ``retry_at`` (that call is the probe; others ``wait`` for its verdict).
    half_open -> closed: the probe reached the server (``answered``, ``timed_out``); half_open -> open:
    the probe got a connection failure (``failed``). Any HTTP answer closes the circuit from any state.
    """

    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0  # connection failures in a row (across requests) since the last HTTP answer
    answers: int = 0  # HTTP answers seen, of any status
    last_error: str = ""
    why: str = ""  # what opened it
    retry_at: float = 0.0  # open: when the next call may probe
    probing: bool = False

    def admit(self, now: float) -> Admit:
        if self.state == "closed":
            return "go"
        if self.state == "open":
            if now < self.retry_at:
                return "refuse"
            self.state = "half_open"
        if self.probing:
            return "wait"
        self.probing = True
        return "probe"

    def answered(self) -> None:
        """An HTTP status line arrived: the server is up, whatever the status."""
        self.state, self.failures, self.probing = "closed", 0, False
        self.answers += 1

    def timed_out(self) -> None:
        """A read timeout: the server accepted the request, so it is reachable (a probe closes the circuit);
        neither a failure nor an answer for the count."""
        if self.probing:
            self.state, self.probing = "closed", False

    def failed(self, cause: str, now: float, cooldown_s: float) -> bool:
        """A connection failure; True when it (re)opened the circuit (a failed probe)."""
        self.failures += 1
        self.last_error = cause
        if self.probing:
            self._open("the probe after the cooldown got no answer either", now, cooldown_s)
            return True
        return False

    def exhausted(self, attempts: int, only_connection: bool, answers_then: int, now: float, cooldown_s: float) -> bool:
        """A request ran out of retries; True when that opened the circuit."""
        if self.state != "closed" or not only_connection or self.answers != answers_then:
            return False
        plural = "attempt" if attempts == 1 else "attempts"
        self._open(f"a request got no answer in all its {attempts} {plural}", now, cooldown_s)
        return True

    def release(self) -> None:
        """The probe ended without a verdict (an unexpected error): let the next call probe."""
        self.probing = False

    def _open(self, why: str, now: float, cooldown_s: float) -> None:
        self.state, self.why, self.retry_at, self.probing = "open", why, now + cooldown_s, False

    def describe(self, origin: str, now: float) -> str:
        return (
            f"circuit open for {origin} ({self.why}; {self.failures} connection failures in a row, last: "
            f"{self.last_error}); next probe in {max(0.0, self.retry_at - now):.3g} s"
        )


def origin_of(url: str) -> str:
    """The part of a URL a connection failure is about: scheme://host:port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Circuits:
    """The breakers of one client (a policy, a scorer), one ``Circuit`` per origin, thread-safe.

    ``clock`` (monotonic seconds) times the cooldowns; tests pass their own."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._cond = threading.Condition()
        self._circuits: dict[str, Circuit] = {}

    def get(self, url: str) -> Circuit:
        """A snapshot of the circuit of ``url``'s origin (for reports and tests)."""
        with self._cond:
            return replace(self._circuit(origin_of(url)))

    def _circuit(self, origin: str) -> Circuit:
        return self._circuits.setdefault(origin, Circuit())

    def admit(self, url: str, wait_s: float) -> tuple[Admit, str]:
        """The verdict ("go", "probe", or "refuse" with the reason); a call arriving while a probe is out waits up to
        ``wait_s`` for its verdict."""
        origin = origin_of(url)
        deadline = time.monotonic() + wait_s
        with self._cond:
            c = self._circuit(origin)
            while True:
                verdict = c.admit(self.clock())
                if verdict != "wait":
                    return verdict, (c.describe(origin, self.clock()) if verdict == "refuse" else "")
                left = deadline - time.monotonic()
                if left <= 0:
                    return "refuse", f"circuit half-open for {origin}: its probe is still unanswered"
                self._cond.wait(left)

    def record(
        self, url: str, *, answered: bool = False, failure: _Transient | None = None, cooldown_s: float = 0.0
    ) -> tuple[str, int]:
        """An attempt's outcome; returns the open circuit's description when this outcome (re)opened it
        (else ""), and the number of HTTP answers the origin has given so far."""
        origin = origin_of(url)
        with self._cond:
            c = self._circuit(origin)
            opened = False
            if answered:
                c.answered()
            elif failure is not None and failure.connection:
                opened = c.failed(str(failure), self.clock(), cooldown_s)
            elif failure is not None:
                c.timed_out()
            self._cond.notify_all()
            return (c.describe(origin, self.clock()) if opened else ""), c.answers

    def exhausted(self, url: str, attempts: int, only_connection: bool, answers_then: int, cooldown_s: float) -> str:
        """A request ran out of retries; the open circuit's description if it is open now."""
        origin = origin_of(url)
        with self._cond:
            c = self._circuit(origin)
            c.exhausted(attempts, only_connection, answers_then, self.clock(), cooldown_s)
            self._cond.notify_all()
            return c.describe(origin, self.clock()) if c.state == "open" else ""

    def release(self, url: str) -> None:
        with self._cond:
            self._circuit(origin_of(url)).release()
            self._cond.notify_all()

    def __getstate__(self) -> dict:  # a pickled client starts with fresh circuits (a lock cannot travel)
        return {"clock": self.clock}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["clock"])


def post_json(
    url: str,
    payload: Any,
    *,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    max_backoff_s: float,
    headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    jitter: float = 0.1,
    max_retry_after_s: float | None = None,
    rng: random.Random | None = None,
    transport: Transport = "auto",
    circuits: Circuits | None = None,
) -> dict:
    """POST ``payload`` as JSON to ``url`` and return the decoded JSON object of a 2xx response.

    Retries (at most ``retries`` times after the first attempt) on 429, 5xx, connection errors and
    timeouts, sleeping ``backoff_s * 2**k`` (capped at ``max_backoff_s``) plus up to ``jitter`` of that
    at random; a ``Retry-After`` header replaces the computed delay, bounded by ``max_retry_after_s``
    (default: the larger of 60 s and ``max_backoff_s``) so one bad header cannot stall a whole sweep.
    Other 4xx statuses, and 2xx bodies that are not a JSON object, raise ``RequestFailed`` at once.
    With ``circuits``, every attempt first asks the origin's circuit breaker (see the module docstring);
    its cooldown is ``max_backoff_s``.
    """
    if retries < 0 or timeout_s <= 0 or backoff_s < 0 or max_backoff_s < 0:
        raise ValueError("retries, backoff_s and max_backoff_s must be >= 0 and timeout_s > 0")
    send = _pick_transport(transport)
    body = json.dumps(payload).encode("utf-8")
    all_headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    cap_retry_after = max(60.0, max_backoff_s) if max_retry_after_s is None else max_retry_after_s
    rng = rng or random.Random()
    only_connection = True  # every attempt so far failed on the connection
    answers_then = 0  # the origin's answer count when this request's first attempt failed
    cause = ""
    attempt = 0
    while True:
        probe = False
        if circuits is not None:
            verdict, why = circuits.admit(url, timeout_s)
            if verdict == "refuse":
                mine = f"; this request's last error: {cause}" if attempt else ""
                raise RequestFailed(url, why + mine, attempt, retryable=True, circuit_open=True)
            probe = verdict == "probe"
        attempt += 1
        retry_after: float | None = None
        try:
            status, resp_headers, content = send(url, body, all_headers, timeout_s)
        except _Transient as exc:
            status, cause = None, str(exc)
            only_connection = only_connection and exc.connection
            if circuits is not None:
                reopened, answers = circuits.record(url, failure=exc, cooldown_s=max_backoff_s)
                if attempt == 1:
                    answers_then = answers
                if reopened:  # a failed probe: the server is still gone, no point retrying
                    raise RequestFailed(
                        url, f"{cause}; {reopened}", attempt, retryable=True, circuit_open=True
                    ) from None
        except BaseException:
            if probe:  # an unexpected error gives no verdict: let the next call probe
                circuits.release(url)  # type: ignore[union-attr]
            raise
        else:
            only_connection = False
            if circuits is not None:
                circuits.record(url, answered=True)
            if 200 <= status < 300:
                return _decode(url, status, content, attempt)
            cause = f"HTTP {status}: {_snippet(content)}"
            if status != 429 and not 500 <= status < 600:
                # The request itself is wrong (or unauthorised): repeating it cannot help.
                raise RequestFailed(url, cause, attempt, status=status)
            retry_after = parse_retry_after(resp_headers.get("retry-after"))
        if attempt > retries:
            if circuits is not None:
                why = circuits.exhausted(url, attempt, only_connection, answers_then, max_backoff_s)
                if why:
                    raise RequestFailed(
                        url, f"{cause}; {why}", attempt, status=status, retryable=True, circuit_open=True
                    )
            raise RequestFailed(url, cause, attempt, status=status, retryable=True)
        if retry_after is not None:
            delay = min(retry_after, cap_retry_after)
        else:
            delay = backoff_delay(attempt, backoff_s, max_backoff_s, jitter, rng)
        sleep(delay)


def backoff_delay(attempt: int, backoff_s: float, max_backoff_s: float, jitter: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped, jittered."""
    base = min(max_backoff_s, backoff_s * (2 ** (attempt - 1)))
    return base * (1.0 + jitter * rng.random())


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (delta seconds or an HTTP date) as seconds to wait; None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
        seconds = (when - now_dt).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _decode(url: str, status: int, content: bytes, attempt: int) -> dict:
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestFailed(
            url, f"HTTP {status} but the body is not JSON: {_snippet(content)}", attempt, status=status
        ) from None
    if not isinstance(data, dict):
        raise RequestFailed(
            url, f"HTTP {status} but the JSON body is a {type(data).__name__}, not an object", attempt, status=status
        )
    return data


def _snippet(content: bytes) -> str:
    text = content.decode("utf-8", errors="replace").strip()
    text = _one_line(text)
    return (text[:_SNIPPET] + "...") if len(text) > _SNIPPET else (text or "(empty body)")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- transports: (url, body, headers, timeout_s) -> (status, lower-cased headers, body bytes) ------------

SendFn = Callable[[str, bytes, Mapping[str, str], float], "tuple[int, dict[str, str], bytes]"]


def _pick_transport(transport: Transport) -> SendFn:
    if transport == "urllib":
        return _send_urllib
    if transport == "httpx":
        return _send_httpx
    try:
        import httpx  # noqa: F401
    except ImportError:
        return _send_urllib
    return _send_httpx


def _send_urllib(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, _lower(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:  # a status line arrived: not a transport failure
        try:
            content = exc.read()
        except (OSError, http.client.HTTPException):
            content = b""
        return exc.code, _lower((exc.headers or {}).items()), content
    except urllib.error.URLError as exc:  # raised while connecting and sending: the server was not reached
        raise _Transient(f"connection error: {_describe(exc.reason)}") from None
    except TimeoutError:  # the request went out; no answer in time
        raise _Transient(f"timed out after {timeout_s:g} s", connection=False) from None
    except (OSError, http.client.HTTPException) as exc:  # reset, closed, cut short
        raise _Transient(f"connection error: {_describe(exc)}") from None


_httpx_client: Any = None
_httpx_lock = threading.Lock()


def _send_httpx(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, dict, bytes]:
    import httpx

    global _httpx_client
    with _httpx_lock:
        if _httpx_client is None:  # one pooled, thread-safe client for the whole process
            _httpx_client = httpx.Client()
        client = _httpx_client
    try:
        resp = client.post(url, content=body, headers=dict(headers), timeout=timeout_s)
        return resp.status_code, _lower(resp.headers.items()), resp.content
    except httpx.ConnectTimeout:  # the server (or the route to it) never took the connection
        raise _Transient(f"connection error: connect timed out after {timeout_s:g} s") from None
    except httpx.TimeoutException:  # the request went out; no answer in time
        raise _Transient(f"timed out after {timeout_s:g} s", connection=False) from None
    except httpx.TransportError as exc:
        raise _Transient(f"connection error: {_describe(exc)}") from None


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def _describe(exc: object) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return _one_line(f"{type(exc).__name__}: {text}" if isinstance(exc, BaseException) else text)
