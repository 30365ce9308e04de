"""The circuit breaker of netretry: the pure state machine (``Circuit``, with hypothesis), then
``post_json`` and the HTTP scorer with ``Circuits`` against real local sockets. Backoff sleeps are
injected and the cooldown clock is a fake one, so nothing here waits on, or asserts on, wall time."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faultserver import Clock, FaultServer, score_handler, scores
from httpserver import Reply, TestServer
from testtime.netretry import Circuit, Circuits, RequestFailed, origin_of, post_json
from testtime.reward.base import ScoreRequest
from testtime.reward.http import HTTPScorer, RetryPolicy

COOLDOWN = 30.0

# -- the state machine -----------------------------------------------------------------------------------


def test_opens_only_when_a_request_saw_nothing_but_connection_failures():
    c = Circuit()
    start = c.answers
    for _ in range(50):  # many failures in a row (a restart, 16 requests at once) do not open it alone
        assert not c.failed("refused", now=0.0, cooldown_s=COOLDOWN)
    assert c.state == "closed" and c.failures == 50
    assert not c.exhausted(6, only_connection=False, answers_then=start, now=0.0, cooldown_s=COOLDOWN)
    assert c.state == "closed"  # that request also saw an HTTP status: the server was there
    assert c.exhausted(6, only_connection=True, answers_then=start, now=0.0, cooldown_s=COOLDOWN)
    assert c.state == "open" and c.retry_at == COOLDOWN and "all its 6 attempts" in c.why


def test_an_answer_to_another_request_meanwhile_keeps_it_closed():
    c = Circuit()
    start = c.answers
    c.failed("refused", 0.0, COOLDOWN)
    c.answered()  # e.g. a 503 to another request: the server is up
    assert not c.exhausted(6, True, start, 1.0, COOLDOWN)
    assert c.state == "closed" and c.failures == 0


def test_half_open_probe_then_close_or_reopen():
    c = Circuit()
    c.exhausted(6, True, 0, now=100.0, cooldown_s=COOLDOWN)
    assert c.admit(100.0) == "refuse" and c.admit(129.9) == "refuse"
    assert c.admit(130.0) == "probe" and c.state == "half_open"
    assert c.admit(130.0) == "wait"  # one probe at a time
    assert c.failed("refused", 131.0, COOLDOWN)  # the probe failed: open again, for another cooldown
    assert c.state == "open" and c.retry_at == 161.0 and "probe" in c.why
    assert c.admit(160.0) == "refuse"
    assert c.admit(161.0) == "probe"
    c.answered()
    assert c.state == "closed" and c.admit(161.0) == "go" and c.failures == 0


def test_a_probe_that_times_out_reached_the_server():
    c = Circuit()
    c.exhausted(2, True, 0, 0.0, 1.0)
    assert c.admit(1.0) == "probe"
    c.timed_out()  # a read timeout: the connection was taken, the server is there
    assert c.state == "closed"
    c.timed_out()  # outside a probe: no change, not a failure
    assert c.state == "closed" and c.failures == 0


def test_a_probe_without_a_verdict_lets_the_next_call_probe():
    c = Circuit()
    c.exhausted(2, True, 0, 0.0, 1.0)
    assert c.admit(1.0) == "probe"
    c.release()
    assert c.state == "half_open" and c.admit(1.0) == "probe"


EVENTS = st.one_of(
    st.tuples(st.just("admit"), st.floats(0, 50)),
    st.tuples(st.just("answered")),
    st.tuples(st.just("timed_out")),
    st.tuples(st.just("failed")),
    st.tuples(st.just("release")),
    st.tuples(st.just("exhausted"), st.booleans(), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=60), st.floats(0, 40))
def test_state_machine_invariants(events, cooldown):
    c = Circuit()
    now = 0.0
    probe_out = False  # a "probe" was handed out and no verdict came since
    for ev in events:
        before = c.state
        kind = ev[0]
        if kind == "admit":
            now += ev[1]
            verdict = c.admit(now)
            if before == "closed":
                assert verdict == "go"
            elif before == "open" and now < c.retry_at:
                assert verdict == "refuse"  # never a request through an open circuit before its cooldown
            if verdict == "probe":
                assert not probe_out  # at most one probe at a time
                probe_out = True
            if verdict == "wait":
                assert probe_out
        elif kind == "answered":
            c.answered()
            assert c.state == "closed" and c.failures == 0  # any HTTP answer closes it
            probe_out = False
        elif kind == "timed_out":
            c.timed_out()
            if probe_out:
                assert c.state == "closed"
            else:
                assert c.state == before
            probe_out = False
        elif kind == "failed":
            opened = c.failed("refused", now, cooldown)
            assert opened == probe_out  # only a failed probe (re)opens on a single failure
            if opened:
                assert c.state == "open" and c.retry_at == now + cooldown
            else:
                assert c.state == before
            probe_out = False
        elif kind == "release":
            c.release()
            probe_out = False
        else:
            _, only_connection, fresh = ev
            start = c.answers if fresh else c.answers - 1
            opened = c.exhausted(6, only_connection, start, now, cooldown)
            # opens exactly when closed, every attempt a connection failure and no answer meanwhile
            assert opened == (before == "closed" and only_connection and fresh)
            assert c.state == ("open" if opened else before)
        assert c.probing == probe_out
        assert c.state in ("closed", "open", "half_open")
        if c.state == "open":
            assert not c.probing


def test_origin_is_scheme_host_and_port():
    assert origin_of("http://127.0.0.1:8000/v1/completions") == "http://127.0.0.1:8000"
    assert origin_of("https://prm.example:9/score?x=1") == "https://prm.example:9"


# -- post_json with Circuits, on real sockets ------------------------------------------------------------




def dead_url(path: str = "/score") -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: every connection is refused
    return f"http://127.0.0.1:{port}{path}"


@pytest.fixture(params=["urllib", "httpx"])
def transport(request) -> str:
    return request.param


PROD = dict(timeout_s=600.0, retries=5, backoff_s=1.0, max_backoff_s=30.0)  # the policy's defaults


def post(url, circuits, transport, sleeps=None, **kw):
    opts = {**PROD, **kw}
    return post_json(
        url,
        {"x": 1},
        sleep=(sleeps if sleeps is not None else []).append,
        transport=transport,
        circuits=circuits,
        **opts,
    )


def test_refused_opens_after_one_exhausted_request_then_fails_fast(attempts, transport):
    url, clock = dead_url(), Clock()
    circuits = Circuits(clock)
    with pytest.raises(RequestFailed) as first:
        post(url, circuits, transport)
    assert attempts[url] == 6 and first.value.circuit_open and first.value.attempts == 6
    msg = str(first.value)
    assert "connection error" in msg and f"circuit open for {origin_of(url)}" in msg and "\n" not in msg
    for _ in range(20):
        with pytest.raises(RequestFailed) as later:
            post(url, circuits, transport)
        assert later.value.attempts == 0 and later.value.circuit_open and later.value.retryable
        assert "circuit open" in str(later.value) and "6 connection failures in a row" in str(later.value)
    assert attempts[url] == 6  # the 20 later requests were not sent


def test_a_request_in_backoff_stops_when_another_opens_the_circuit(attempts, transport):
    url, clock = dead_url(), Clock()
    circuits = Circuits(clock)

    def sleep_while_another_exhausts(delay):
        if attempts[url] == 1:  # while this request waits, another one runs out of retries
            with pytest.raises(RequestFailed):
                post(url, circuits, transport)

    with pytest.raises(RequestFailed) as err:
        post_json(url, {}, sleep=sleep_while_another_exhausts, transport=transport, circuits=circuits, **PROD)
    assert err.value.attempts == 1 and err.value.circuit_open
    assert "this request's last error: connection error" in str(err.value)
    assert attempts[url] == 7  # 1 + the other's 6, not 12


def test_a_request_in_flight_when_the_server_died_opens_it(attempts, transport):
    """Answers to other requests before this one's first failure do not keep the circuit closed (the bench's
    case: vLLM died under 16 requests that had all started while it was answering)."""
    release = threading.Event()

    def script(k, path, body):
        if k == 0:  # held open until another request was answered, then dropped unanswered
            release.wait(30)
            return Reply(hang=True)
        return Reply(200, {"ok": True})

    srv = TestServer(script, url_path="/score")
    circuits = Circuits(Clock())
    down = threading.Event()

    def server_dies(delay):
        if not down.is_set():
            down.set()
            srv.close()  # from now on connections are refused

    result: dict = {}

    def first():
        try:
            post_json(srv.url, {}, sleep=server_dies, transport=transport, circuits=circuits, **PROD)
        except RequestFailed as e:
            result["err"] = e

    t = threading.Thread(target=first)
    t.start()
    while srv.count < 1:  # the first request is at the server
        t.join(0.01)
    assert post(srv.url, circuits, transport) == {"ok": True}  # another request is answered meanwhile
    release.set()
    t.join(60)
    err = result["err"]
    assert err.attempts == 6 and err.circuit_open and "circuit open" in str(err)
    with pytest.raises(RequestFailed, match="circuit open") as later:
        post(srv.url, circuits, transport)
    assert later.value.attempts == 0


def test_half_open_probe_recovers_a_server_that_came_back(attempts, transport):
    srv = FaultServer(lambda path, body: {"ok": True})
    srv.stop()  # gone: its port refuses connections
    url, clock = srv.base_url + "/score", Clock()
    circuits = Circuits(clock)
    try:
        with pytest.raises(RequestFailed):
            post(url, circuits, transport, retries=2, max_backoff_s=5.0)
        clock.now += 4.9
        with pytest.raises(RequestFailed, match="circuit open"):
            post(url, circuits, transport)
        clock.now += 0.1  # the cooldown (max_backoff_s) is over: the next call is a one-attempt probe
        with pytest.raises(RequestFailed, match="the probe after the cooldown got no answer") as probe:
            post(url, circuits, transport)
        assert probe.value.attempts == 1 and attempts[url] == 3 + 1
        srv._start()  # back on the same port (what FaultServer.down does after its pause)
        with pytest.raises(RequestFailed, match="circuit open"):  # still in the new cooldown: not sent
            post(url, circuits, transport)
        assert attempts[url] == 4 and not srv.requests
        clock.now += 30.0
        assert post(url, circuits, transport) == {"ok": True}  # the probe gets through: closed again
        assert circuits.get(url).state == "closed"
        assert post(url, circuits, transport) == {"ok": True}
        assert attempts[url] == 4 + 2 and len(srv.requests) == 2
    finally:
        srv.stop()


def test_http_statuses_with_a_body_never_open_it(attempts, transport):
    srv = TestServer(lambda k, path, body: Reply([503, 500, 429, 404][k % 4], {"error": "injected"}), url_path="/score")
    circuits = Circuits(Clock())
    try:
        for _ in range(10):
            with pytest.raises(RequestFailed) as err:
                post(srv.url, circuits, transport)
            assert not err.value.circuit_open and "circuit" not in str(err.value)
        assert circuits.get(srv.url).state == "closed"
        # 503, 500, 429 are retried and the 404 ends each request: 4 attempts each, every one of them sent
        assert attempts[srv.url] == srv.count == 40
    finally:
        srv.close()


def test_a_single_failure_that_recovers_and_slow_answers_do_not_open_it(attempts, transport):
    srv = FaultServer(
        lambda path, body: {"ok": True},
        lambda k, path, body: "drop" if k == 0 else ("slow" if k in (2, 3) else None),
        slow_s=0.5,
    )
    url, circuits = srv.base_url + "/score", Circuits(Clock())
    try:
        assert post(url, circuits, transport) == {"ok": True}  # dropped once, answered on the retry
        # every attempt of this request times out: the server took them, so the circuit stays closed
        with pytest.raises(RequestFailed, match="timed out") as err:
            post(url, circuits, transport, timeout_s=0.2, retries=1)
        assert not err.value.circuit_open and circuits.get(url).state == "closed"
        assert post(url, circuits, transport) == {"ok": True}
        assert attempts[url] == 2 + 2 + 1
    finally:
        srv.stop()


def test_circuits_are_per_origin(attempts, transport):
    clock = Clock()
    circuits = Circuits(clock)
    dead = dead_url()
    srv = TestServer(lambda k, path, body: Reply(200, {"ok": True}), url_path="/score")
    try:
        with pytest.raises(RequestFailed):
            post(dead, circuits, transport, retries=1)
        with pytest.raises(RequestFailed, match="circuit open"):
            post(dead.replace("/score", "/other"), circuits, transport)  # another path of the same server
        assert post(srv.url, circuits, transport) == {"ok": True}  # another server is not affected
        assert attempts[dead] == 2
    finally:
        srv.close()


def test_a_pickled_client_gets_fresh_circuits():
    import pickle

    circuits = Circuits()
    circuits._circuit("http://h:1").exhausted(2, True, 0, 0.0, 1e9)
    again = pickle.loads(pickle.dumps(circuits))
    assert circuits.get("http://h:1/x").state == "open" and again.get("http://h:1/x").state == "closed"


# -- the HTTP scorer shares one breaker across its requests ----------------------------------------------


def scorer_requests(k: int) -> list[ScoreRequest]:
    return [ScoreRequest(f"q{i}", (f"step {i}",)) for i in range(k)]


def test_http_scorer_fails_fast_against_a_dead_server(attempts):
    url = dead_url("")
    retry = RetryPolicy(sleep=lambda s: None, circuits=Circuits(Clock()))  # production: 3 retries, 0.5 .. 8 s
    scorer = HTTPScorer(url, name="prm", batch_size=1, max_concurrency=4, retry=retry)
    try:
        with pytest.raises(RequestFailed) as err:
            scorer.score_batch(scorer_requests(32))
    finally:
        scorer.close()
    assert err.value.circuit_open and "circuit open" in str(err.value)
    # without the breaker: 32 requests x 4 attempts = 128; with it only the 4 in flight spend their retries
    assert 4 <= attempts[url + "/score"] <= 4 * 4


def test_http_scorer_moves_off_a_dead_server_to_a_live_one(attempts):
    dead = dead_url("")
    srv = FaultServer(score_handler)
    retry = RetryPolicy(sleep=lambda s: None, circuits=Circuits(Clock()))
    scorer = HTTPScorer([dead, srv.base_url], name="prm", batch_size=1, max_concurrency=4, retry=retry)
    try:
        got = scorer.score_batch(scorer_requests(32))
    finally:
        scorer.close()
        srv.stop()
    assert [s.rewards for s in got] == [
        scores({"items": [{"question": f"q{i}", "steps": [f"step {i}"]}]})["rewards"][0] for i in range(32)
    ]
    assert attempts[dead + "/score"] <= 4 * 4  # then every request went straight to the live one
