"""POST JSON with retries: the one network primitive remote backends (PRM services, OpenAI-compatible
policies) share.

Transient failures -- HTTP 429 and 5xx, refused or dropped connections, timeouts -- are retried with
exponential backoff plus a little jitter (so many clients that failed together don't retry together),
and a server's ``Retry-After`` is honoured. Anything else (a 400 says the request itself is wrong) fails
at once. Every failure is a ``RequestFailed`` with a one-line message naming the URL, the status or
cause, and how many attempts were made.

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
from datetime import UTC, datetime
from typing import Any, Literal

from testtime.errors import ProblemFailure

Transport = Literal["auto", "httpx", "urllib"]

_SNIPPET = 200  # characters of a response body quoted in an error


class RequestFailed(ProblemFailure):
    """A POST that did not produce a usable JSON object (after retries, where retrying made sense)."""

    def __init__(self, url: str, cause: str, attempts: int, *, status: int | None = None, retryable: bool = False):
        self.url = url
        self.cause = _one_line(cause)
        self.attempts = attempts
        self.status = status
        # True when the failure was transient (the retries ran out): another server may still succeed.
        self.retryable = retryable
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(f"POST {url} failed after {attempts} {plural}: {self.cause}")


class _Transient(Exception):
    """A network-level failure (no HTTP status): always worth retrying."""


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
) -> dict:
    """POST ``payload`` as JSON to ``url`` and return the decoded JSON object of a 2xx response.

    Retries (at most ``retries`` times after the first attempt) on 429, 5xx, connection errors and
    timeouts, sleeping ``backoff_s * 2**k`` (capped at ``max_backoff_s``) plus up to ``jitter`` of that
    at random; a ``Retry-After`` header replaces the computed delay, bounded by ``max_retry_after_s``
    (default: the larger of 60 s and ``max_backoff_s``) so one bad header cannot stall a whole sweep.
    Other 4xx statuses, and 2xx bodies that are not a JSON object, raise ``RequestFailed`` at once.
    """
    if retries < 0 or timeout_s <= 0 or backoff_s < 0 or max_backoff_s < 0:
        raise ValueError("retries, backoff_s and max_backoff_s must be >= 0 and timeout_s > 0")
    send = _pick_transport(transport)
    body = json.dumps(payload).encode("utf-8")
    all_headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    cap_retry_after = max(60.0, max_backoff_s) if max_retry_after_s is None else max_retry_after_s
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            status, resp_headers, content = send(url, body, all_headers, timeout_s)
        except _Transient as exc:
            status, cause = None, str(exc)
        else:
            if 200 <= status < 300:
                return _decode(url, status, content, attempt)
            cause = f"HTTP {status}: {_snippet(content)}"
            if status != 429 and not 500 <= status < 600:
                # The request itself is wrong (or unauthorised): repeating it cannot help.
                raise RequestFailed(url, cause, attempt, status=status)
            retry_after = parse_retry_after(resp_headers.get("retry-after"))
        if attempt > retries:
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
        raise RequestFailed(url, f"HTTP {status} but the body is not JSON: {_snippet(content)}", attempt,
                            status=status) from None
    if not isinstance(data, dict):
        raise RequestFailed(url, f"HTTP {status} but the JSON body is a {type(data).__name__}, not an object",
                            attempt, status=status)
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
    except urllib.error.URLError as exc:
        raise _Transient(f"connection error: {_describe(exc.reason)}") from None
    except TimeoutError:
        raise _Transient(f"timed out after {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
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
    except httpx.TimeoutException:
        raise _Transient(f"timed out after {timeout_s:g} s") from None
    except httpx.TransportError as exc:
        raise _Transient(f"connection error: {_describe(exc)}") from None


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def _describe(exc: object) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return _one_line(f"{type(exc).__name__}: {text}" if isinstance(exc, BaseException) else text)
