"""post_json against real local servers that misbehave on purpose; backoff sleeps are injected."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from email.utils import formatdate

import pytest

from httpserver import Reply, TestServer
from testtime.netretry import RequestFailed, backoff_delay, parse_retry_after, post_json


def ok(obj: dict | None = None) -> Reply:
    return Reply(200, obj or {"ok": True})


def status(code: int, headers: dict[str, str] | None = None) -> Reply:
    return Reply(code, {"error": f"status {code}"}, headers or {})


def hang(seconds: float) -> Reply:
    """Answer nothing for this long, then drop the connection."""
    return Reply(delay_s=seconds, hang=True)


@pytest.fixture
def serve():
    servers: list[TestServer] = []

    def start(script: Callable[[int, dict], Reply]) -> TestServer:
        s = TestServer(lambda k, path, body: script(k, body), url_path="/score")
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def _transports() -> list[str]:
    try:
        import httpx  # noqa: F401
    except ImportError:
        return ["urllib"]
    return ["urllib", "httpx"]


@pytest.fixture(params=_transports())
def transport(request) -> str:
    return request.param


def call(url: str, transport: str, sleeps: list[float], **kw) -> dict:
    opts = dict(timeout_s=2.0, retries=3, backoff_s=0.5, max_backoff_s=4.0, jitter=0.0)
    opts.update(kw)
    return post_json(url, {"x": 1}, sleep=sleeps.append, transport=transport, **opts)


def test_429_then_200_retries_once(serve, transport):
    srv = serve(lambda k, body: status(429) if k == 0 else ok({"value": body["x"]}))
    sleeps: list[float] = []
    assert call(srv.url, transport, sleeps) == {"value": 1}
    assert srv.count == 2
    assert sleeps == [0.5]


def test_retry_after_is_honoured(serve, transport):
    srv = serve(lambda k, body: status(429, {"Retry-After": "7"}) if k == 0 else ok())
    sleeps: list[float] = []
    call(srv.url, transport, sleeps)
    assert sleeps == [7.0]


def test_retry_after_is_bounded(serve, transport):
    srv = serve(lambda k, body: status(503, {"Retry-After": "3600"}) if k == 0 else ok())
    sleeps: list[float] = []
    call(srv.url, transport, sleeps, max_retry_after_s=30.0)
    assert sleeps == [30.0]


def test_503_n_times_backs_off_exponentially_with_cap(serve, transport):
    srv = serve(lambda k, body: status(503) if k < 4 else ok())
    sleeps: list[float] = []
    assert call(srv.url, transport, sleeps, retries=5) == {"ok": True}
    assert srv.count == 5
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # 8.0 would exceed max_backoff_s


def test_jitter_stays_small_and_positive(serve, transport):
    srv = serve(lambda k, body: status(502) if k < 3 else ok())
    sleeps: list[float] = []
    call(srv.url, transport, sleeps, jitter=0.1, rng=random.Random(0))
    for got, base in zip(sleeps, [0.5, 1.0, 2.0], strict=True):
        assert base <= got <= base * 1.1


def test_retries_run_out_with_a_one_line_message(serve, transport):
    srv = serve(lambda k, body: status(503))
    sleeps: list[float] = []
    with pytest.raises(RequestFailed) as err:
        call(srv.url, transport, sleeps, retries=3)
    assert srv.count == 4 and len(sleeps) == 3
    msg = str(err.value)
    assert "\n" not in msg
    assert srv.url in msg and "HTTP 503" in msg and "4 attempts" in msg
    assert err.value.status == 503 and err.value.retryable


def test_400_fails_immediately(serve, transport):
    srv = serve(lambda k, body: status(400))
    sleeps: list[float] = []
    with pytest.raises(RequestFailed) as err:
        call(srv.url, transport, sleeps)
    assert srv.count == 1 and sleeps == []
    assert "HTTP 400" in str(err.value) and "1 attempt" in str(err.value)
    assert not err.value.retryable


def test_hanging_response_times_out_and_is_retried(serve, transport):
    srv = serve(lambda k, body: hang(1.0) if k == 0 else ok())
    sleeps: list[float] = []
    start = time.monotonic()
    assert call(srv.url, transport, sleeps, timeout_s=0.2) == {"ok": True}
    assert time.monotonic() - start < 0.9  # gave up on the hang, did not wait for it
    assert srv.count == 2 and sleeps == [0.5]


def test_hanging_every_time_reports_a_timeout(serve, transport):
    srv = serve(lambda k, body: hang(0.6))
    with pytest.raises(RequestFailed) as err:
        call(srv.url, transport, [], timeout_s=0.15, retries=1)
    assert "timed out" in str(err.value) and "2 attempts" in str(err.value)


def test_connection_refused_is_retried_then_reported(transport):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{port}/score"
    with pytest.raises(RequestFailed) as err:
        call(url, transport, sleeps, retries=2)
    assert len(sleeps) == 2
    assert "connection error" in str(err.value) and url in str(err.value) and "3 attempts" in str(err.value)


def test_malformed_json_is_not_retried(serve, transport):
    srv = serve(lambda k, body: Reply(200, b"{not json"))
    with pytest.raises(RequestFailed) as err:
        call(srv.url, transport, [])
    assert srv.count == 1 and "not JSON" in str(err.value)


def test_json_that_is_not_an_object_is_rejected(serve, transport):
    srv = serve(lambda k, body: Reply(200, b"[1, 2]"))
    with pytest.raises(RequestFailed, match="not an object"):
        call(srv.url, transport, [])


def test_headers_are_sent(serve, transport):
    srv = serve(lambda k, body: ok())
    call(srv.url, transport, [], headers={"Authorization": "Bearer t0k"})
    assert srv.headers[0]["Authorization"] == "Bearer t0k"
    assert srv.headers[0]["Content-Type"] == "application/json"


def test_parse_retry_after_forms():
    assert parse_retry_after(None) is None
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_backoff_delay_sequence():
    rng = random.Random(1)
    assert [backoff_delay(a, 0.25, 1.0, 0.0, rng) for a in range(1, 6)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_bad_arguments():
    with pytest.raises(ValueError):
        post_json("http://127.0.0.1:1/x", {}, timeout_s=0, retries=1, backoff_s=0.1, max_backoff_s=1)
