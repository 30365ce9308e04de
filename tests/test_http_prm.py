"""HTTPScorer / HTTPPoolingForward / serve_scorer against real servers on 127.0.0.1 (stdlib, threads)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from httpserver import Reply, TestServer
from testtime.netretry import RequestFailed, post_json
from testtime.reward.base import BatchScorer, RewardError, Scored, ScoreRequest
from testtime.reward.http import (
    HTTPPoolingForward,
    HTTPScorer,
    RetryPolicy,
    load_http_prm,
    serve_scorer,
    split_urls,
)
from testtime.reward.neural import Encoded, Readout, TokenPRM, rewards_from

TAG = 7

# -- helpers -------------------------------------------------------------------------------------------


class LengthScorer(BatchScorer):
    """A deterministic stand-in PRM: longer steps score higher; tokens = words."""

    name = "length-prm"

    def __init__(self) -> None:
        self.calls = 0

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        self.calls += 1
        return [
            Scored([min(1.0, len(s) / 20) for s in r.steps], sum(len(s.split()) for s in r.steps) + 3 if r.steps else 0)
            for r in requests
        ]


App = Callable[[str, dict], "tuple[int, object]"]


def _serve(app: App, delay_s: float = 0.0) -> TestServer:
    """A shared ``TestServer`` answering with ``app(path, body) -> (status, reply)``."""

    def script(k: int, path: str, body: dict) -> Reply:
        status, reply = app(path, body)
        return Reply(status, reply)

    return TestServer(script, delay_s=delay_s)


@pytest.fixture
def start():
    servers: list[TestServer] = []

    def go(app: App, delay_s: float = 0.0) -> TestServer:
        s = _serve(app, delay_s)
        servers.append(s)
        return s

    yield go
    for s in servers:
        s.close()


def score_app(scorer: BatchScorer) -> App:
    """A correct ``testtime`` protocol server around ``scorer``."""

    def app(path: str, body: dict):
        reqs = [ScoreRequest(it["question"], tuple(it["steps"])) for it in body["items"]]
        scored = scorer.score_batch(reqs)
        return 200, {"rewards": [s.rewards for s in scored], "tokens": [s.tokens for s in scored]}

    return app


def sample_requests(n: int = 7) -> list[ScoreRequest]:
    reqs = [
        ScoreRequest(f"question {i}", tuple("step " * (j + 1) + str(i) for j in range(1 + i % 3))) for i in range(n)
    ]
    reqs.insert(2, ScoreRequest("no steps", ()))
    return reqs


def fast_retry(sleeps: list[float] | None = None, **kw) -> RetryPolicy:
    """Retries whose backoff sleeps are recorded instead of slept."""
    sink = sleeps if sleeps is not None else []
    opts = dict(timeout_s=2.0, retries=2, backoff_s=0.5, max_backoff_s=4.0, sleep=sink.append)
    opts.update(kw)
    return RetryPolicy(**opts)


# -- the testtime protocol -----------------------------------------------------------------------------


def test_round_trip_through_serve_scorer_equals_direct_scoring():
    direct = LengthScorer()
    served = LengthScorer()
    server, url = serve_scorer(served)
    try:
        client = HTTPScorer(url, name="length-prm", model="length-prm", batch_size=3, retry=fast_retry())
        reqs = sample_requests()
        assert client.score_batch(reqs) == direct.score_batch(reqs)
        assert client.requests_sent == 3 and served.calls == 3  # 7 solutions with steps, 3 per request
        assert client.score("question 0", [["a b", "c"], []]) == direct.score("question 0", [["a b", "c"], []])
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_serve_scorer_rejects_bad_requests():
    class Boom(LengthScorer):
        def score_batch(self, requests):
            raise RuntimeError("model fell over")

    server, url = serve_scorer(LengthScorer())
    boom_server, boom_url = serve_scorer(Boom())
    post = dict(timeout_s=2.0, retries=0, backoff_s=0.0, max_backoff_s=0.0)
    try:
        with pytest.raises(RequestFailed, match="HTTP 400.*not 'other-prm'"):
            post_json(f"{url}/score", {"model": "other-prm", "items": []}, **post)
        with pytest.raises(RequestFailed, match="HTTP 400.*steps"):
            post_json(f"{url}/score", {"items": [{"question": "q", "steps": "not a list"}]}, **post)
        with pytest.raises(RequestFailed, match="HTTP 404"):
            post_json(f"{url}/other", {"items": []}, **post)
        with pytest.raises(RequestFailed, match="HTTP 500.*model fell over"):
            post_json(f"{boom_url}/score", {"items": [{"question": "q", "steps": ["s"]}]}, **post)
        assert post_json(f"{url}/score", {"items": []}, **post) == {"model": "length-prm", "rewards": [], "tokens": []}
    finally:
        for s in (server, boom_server):
            s.shutdown()
            s.server_close()


def test_load_spreads_over_two_servers_and_restores_order(start):
    a, b = start(score_app(LengthScorer())), start(score_app(LengthScorer()))
    client = HTTPScorer([a.url, b.url], batch_size=2, max_concurrency=4, retry=fast_retry())
    reqs = sample_requests(8)  # 8 with steps -> 4 requests
    assert client.score_batch(reqs) == LengthScorer().score_batch(reqs)
    assert len(a.bodies) == 2 and len(b.bodies) == 2
    # the rotation continues across calls: two one-request calls hit both servers
    client.score_batch(reqs[:1])
    client.score_batch(reqs[:1])
    assert len(a.bodies) == 3 and len(b.bodies) == 3
    client.close()


def test_concurrency_is_bounded(start):
    srv = start(score_app(LengthScorer()), delay_s=0.05)
    reqs = sample_requests(8)
    for bound in (1, 2):
        srv.max_inflight = 0
        client = HTTPScorer(srv.url, batch_size=1, max_concurrency=bound, retry=fast_retry())
        assert client.score_batch(reqs) == LengthScorer().score_batch(reqs)
        assert srv.max_inflight == bound
        client.close()


def test_retries_429_then_succeeds(start):
    state = {"n": 0}
    ok = score_app(LengthScorer())

    def app(path, body):
        state["n"] += 1
        return (429, {"error": "slow down"}) if state["n"] == 1 else ok(path, body)

    srv = start(app)
    sleeps: list[float] = []
    client = HTTPScorer(srv.url, retry=fast_retry(sleeps))
    reqs = sample_requests(3)
    assert client.score_batch(reqs) == LengthScorer().score_batch(reqs)
    assert sleeps == [pytest.approx(0.5, rel=0.11)] and len(srv.bodies) == 2


def test_fails_over_to_the_next_server_when_retries_run_out(start):
    dead = start(lambda path, body: (503, {"error": "overloaded"}))
    alive = start(score_app(LengthScorer()))
    client = HTTPScorer([dead.url, alive.url], batch_size=100, retry=fast_retry(retries=1))
    reqs = sample_requests(3)
    assert client.score_batch(reqs) == LengthScorer().score_batch(reqs)
    assert len(dead.bodies) == 2 and len(alive.bodies) == 1


def test_400_fails_immediately_without_failover(start):
    bad = start(lambda path, body: (400, {"error": "bad request"}))
    other = start(score_app(LengthScorer()))
    client = HTTPScorer([bad.url, other.url], batch_size=100, retry=fast_retry())
    with pytest.raises(RequestFailed, match="HTTP 400"):
        client.score_batch(sample_requests(3))
    assert len(bad.bodies) == 1 and len(other.bodies) == 0


@pytest.mark.parametrize(
    "reply, message",
    [
        ({"rewards": [[0.5]]}, "1 reward lists for 3 solutions"),
        ({"rewards": [[0.5], [0.5, 0.5], [0.5]]}, "solution 0 has 2 steps but got 1 rewards"),
        ({"rewards": "nope"}, "no 'rewards' list"),
        ({"rewards": [[0.5, "x"], [0.5, 0.5], [0.1, 0.2]]}, "not a finite number"),
        ({"rewards": [[0.5, None], [0.5, 0.5], [0.1, 0.2]]}, "not a finite number"),
        ({"rewards": [[0.5, 0.1], [0.5, 0.5], [0.1, 0.2]], "tokens": [1, 2]}, "'tokens'"),
    ],
)
def test_invalid_responses_raise_reward_errors_naming_the_url(start, reply, message):
    srv = start(lambda path, body: (200, reply))
    client = HTTPScorer(srv.url, retry=fast_retry())
    reqs = [ScoreRequest("q", ("a", "b")), ScoreRequest("q", ("c", "d")), ScoreRequest("q", ("e", "f"))]
    with pytest.raises(RewardError) as err:
        client.score_batch(reqs)
    assert f"{srv.url}/score" in str(err.value) and message in str(err.value)


def test_malformed_json_names_the_url(start):
    srv = start(lambda path, body: (200, b"{oops"))
    client = HTTPScorer(srv.url, retry=fast_retry())
    with pytest.raises(RequestFailed) as err:
        client.score_batch(sample_requests(2))
    assert f"{srv.url}/score" in str(err.value) and "not JSON" in str(err.value)


def test_wrong_served_model_is_refused(start):
    srv = start(lambda path, body: (200, {"model": "someone-else", "rewards": [[0.1]]}))
    client = HTTPScorer(srv.url, model="length-prm", retry=fast_retry())
    with pytest.raises(RewardError, match="someone-else"):
        client.score_batch([ScoreRequest("q", ("a",))])


# -- the vllm-pooling protocol -------------------------------------------------------------------------


class FakeTokenizer:
    pass


@dataclass
class FakeFormat:
    name: str = "fake"
    kind: str = "two_class"

    def readout(self, tokenizer) -> Readout:
        return Readout(self.kind)  # type: ignore[arg-type]

    def encode(self, tokenizer, question: str, steps: Sequence[str]) -> Encoded:
        ids, positions = [1] + [20 + len(w) for w in question.split()], []
        for step in steps:
            ids += [20 + len(w) for w in step.split()]
            positions.append(len(ids))
            ids.append(TAG)
        return Encoded(ids, positions)


def token_logits(ids: Sequence[int], width: int = 2) -> np.ndarray:
    n = np.arange(len(ids), dtype=np.float64)
    t = np.asarray(ids, dtype=np.float64)
    return np.stack([np.sin(0.7 * n + 0.1 * t), np.cos(0.3 * n - 0.2 * t)][:width], axis=1) * 3.0


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def pooling_app(mode: str = "logits", width: int = 2, shuffle: bool = False) -> App:
    """vLLM's /pooling: one entry per input, ``data`` = per-token rows (ALL) or per-tag rows (STEP)."""

    def app(path: str, body: dict):
        assert path == "/pooling"
        data = []
        for i, ids in enumerate(body["input"]):
            rows = token_logits(ids, width)
            if mode == "probs":  # an older server that ignores use_activation=false
                rows = softmax(rows)
            elif mode == "step":
                rows = rows[[k for k, t in enumerate(ids) if t == TAG]]
            values = rows[:, 0].tolist() if width == 1 else rows.tolist()
            data.append({"index": i, "object": "pooling", "data": values})
        if shuffle:
            data.reverse()
        return 200, {"id": "pool-1", "object": "list", "model": body.get("model"), "data": data,
                     "usage": {"prompt_tokens": 1, "total_tokens": 1}}

    return app


def expected(fmt: FakeFormat, req: ScoreRequest, width: int = 2) -> list[float]:
    enc = fmt.encode(None, req.question, req.steps)
    return rewards_from(fmt.readout(None), token_logits(enc.input_ids, width)[enc.positions])


def pooling_prm(urls, fmt=None, **kw) -> TokenPRM:
    fmt = fmt or FakeFormat()
    forward = HTTPPoolingForward(urls, model="org/prm", retry=fast_retry(), **kw)
    return TokenPRM("org/prm", fmt, FakeTokenizer(), forward, close=forward.close)


@pytest.mark.parametrize("mode", ["logits", "probs", "step"])
def test_pooling_forward_reads_our_positions(start, mode):
    srv = start(pooling_app(mode, shuffle=True))
    prm = pooling_prm(srv.url, batch_size=3)
    reqs = sample_requests(7)
    scored = prm.score_batch(reqs)
    fmt = FakeFormat()
    for req, s in zip(reqs, scored, strict=True):
        assert s.rewards == pytest.approx(expected(fmt, req) if req.steps else [])
    body = srv.bodies[0]
    assert body["task"] == "token_classify" and body["encoding_format"] == "float"
    assert body["use_activation"] is False and body["model"] == "org/prm"
    sent = sorted(ids for b in srv.bodies for ids in b["input"])
    assert sent == sorted(fmt.encode(None, r.question, r.steps).input_ids for r in reqs if r.steps)
    assert prm.forward_calls == 1 and len(srv.bodies) == 3  # one forward, split into requests of <= 3
    prm.close()


def test_pooling_forward_value_head(start):
    srv = start(pooling_app(width=1))
    fmt = FakeFormat(kind="value_head")
    prm = pooling_prm(srv.url, fmt=fmt)
    reqs = sample_requests(4)
    for req, s in zip(reqs, prm.score_batch(reqs), strict=True):
        assert s.rewards == pytest.approx(expected(fmt, req, width=1) if req.steps else [])


def test_pooling_forward_spreads_over_servers(start):
    a, b = start(pooling_app()), start(pooling_app())
    prm = pooling_prm([a.url, b.url], batch_size=2)
    prm.score_batch(sample_requests(8))
    assert len(a.bodies) == 2 and len(b.bodies) == 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["data"].pop(), "1 pooling results for 2 inputs"),
        (lambda r: r["data"][0].update(data="AAAA"), "encoding_format=float"),
        (lambda r: r["data"][0].update(index=5), "index"),
        (lambda r: r["data"][0].update(data=[[float("nan"), 0.0]] * len(r["data"][0]["data"])), "NaN"),
        (lambda r: r["data"][0].update(data=[[0.1, 0.2, 0.3]] * len(r["data"][0]["data"])), "values per token"),
        (lambda r: r["data"][0].update(data=[[0.1, 0.2]] * 3), "pooled rows"),
    ],
)
def test_bad_pooling_responses_name_the_url(start, mutate, message):
    good = pooling_app()

    def app(path, body):
        status, reply = good(path, body)
        mutate(reply)
        return status, reply

    srv = start(app)
    prm = pooling_prm(srv.url)
    reqs = [ScoreRequest("q " * 30, ("a b", "c")), ScoreRequest("q", ("d",))]  # item 0 is the longest
    with pytest.raises(RewardError) as err:
        prm.score_batch(reqs)
    assert f"{srv.url}/pooling" in str(err.value) and message in str(err.value)


# -- loading -------------------------------------------------------------------------------------------


def test_load_http_prm_testtime(start):
    a, b = start(score_app(LengthScorer())), start(score_app(LengthScorer()))
    prm = load_http_prm(f"{a.url}, {b.url}/", name="length-prm", retries=0, timeout_s=2)
    assert isinstance(prm, HTTPScorer)
    assert prm.urls == [a.url, b.url] and prm.name == "length-prm" and prm.model == "length-prm"
    reqs = sample_requests(3)
    assert prm.score_batch(reqs) == LengthScorer().score_batch(reqs)
    assert a.bodies[0]["model"] == "length-prm"


def test_load_http_prm_vllm_pooling(start):
    srv = start(pooling_app())
    prm = load_http_prm(srv.url, "vllm-pooling", model="org/prm", tokenizer=FakeTokenizer(), format=FakeFormat(),
                        retries=0, step_tag_id=TAG)
    assert isinstance(prm, TokenPRM) and prm.name == "org/prm"
    reqs = sample_requests(3)
    for req, s in zip(reqs, prm.score_batch(reqs), strict=True):
        assert s.rewards == pytest.approx(expected(FakeFormat(), req) if req.steps else [])
    prm.close()


def test_load_http_prm_argument_errors():
    with pytest.raises(ValueError, match="unknown protocol"):
        load_http_prm("http://127.0.0.1:1", "grpc")
    with pytest.raises(ValueError, match="tokenizer"):
        load_http_prm("http://127.0.0.1:1", "vllm-pooling", format=FakeFormat())
    with pytest.raises(TypeError, match="unexpected options"):
        load_http_prm("http://127.0.0.1:1", "testtime", task="token_classify")
    with pytest.raises(ValueError, match="format"):
        load_http_prm("http://127.0.0.1:1", "vllm-pooling", tokenizer=FakeTokenizer(), format=None)


def test_split_urls():
    assert split_urls("http://a:1/, https://b:2") == ["http://a:1", "https://b:2"]
    assert split_urls(["http://a:1"]) == ["http://a:1"]
    with pytest.raises(ValueError):
        split_urls("")
    with pytest.raises(ValueError, match="not an http"):
        split_urls("a:1")
