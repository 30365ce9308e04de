"""OpenAICompatPolicy against scripted local /v1/completions servers (tests/httpserver.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from faultserver import Clock, FaultServer, completions, openai_handler
from httpserver import Reply, TestServer
from testtime import engine
from testtime.datasets import load_dataset
from testtime.netretry import Circuits, RequestFailed
from testtime.policy import GenerationRequest, SamplingParams, load_policy
from testtime.policy.base import Policy
from testtime.policy.openai_compat import GenerationFailed, OpenAICompatPolicy
from testtime.replay import CachedGenerator
from testtime.store import Store

PARAMS = SamplingParams(max_tokens=32, temperature=0.8, top_p=0.95, stop=("\n\n",))


def completion(
    body: dict, *, prompt_tokens: int = 10, cached: int | None = 4, extra_tokens: int = 1, **choice_fields
) -> dict:
    """A vLLM-like reply: sample i's text names its seed (body seed + i); 3 tokens per sample plus
    ``extra_tokens`` so the even split has a remainder."""
    n = body["n"]
    usage: dict = {"prompt_tokens": prompt_tokens, "completion_tokens": 3 * n + extra_tokens}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    choices = [
        {"index": i, "text": f"{body['prompt']}|seed={body['seed'] + i}", "finish_reason": "stop", **choice_fields}
        for i in range(n)
    ]
    return {"id": "cmpl-1", "object": "text_completion", "choices": choices[::-1], "usage": usage}


def ok(k: int, path: str, body: dict) -> Reply:
    return Reply(200, completion(body))


@pytest.fixture
def serve():
    servers: list[TestServer] = []

    def start(script: Callable[[int, str, dict], Reply] = ok, **kw) -> TestServer:
        s = TestServer(script, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def policy(urls, **kw) -> OpenAICompatPolicy:
    opts = dict(timeout_s=5.0, retries=2, backoff_s=0.0, n_params=1000)  # a scripted server reports no size
    opts.update(kw)
    return OpenAICompatPolicy(urls, "org/model", **opts)


def test_body_fields_seeds_and_split(serve):
    srv = serve()
    pol = policy(srv.url, max_n_per_request=2, api_key="k3y")
    assert isinstance(pol, Policy) and pol.model_id == "openai:org/model"
    chunks: list[tuple[int, int, int]] = []
    req = GenerationRequest("P", n=5, seed=100, params=PARAMS, first_index=2)
    out = pol.generate([req], on_chunk=lambda ri, first, done: chunks.append((ri, first, len(done))))
    assert [c.text for c in out[0]] == [f"P|seed={s}" for s in range(102, 107)]  # sample i uses seed + i
    assert sorted(chunks) == [(0, 2, 2), (0, 4, 2), (0, 6, 1)]
    assert sorted((b["seed"], b["n"]) for b in srv.bodies) == [(102, 2), (104, 2), (106, 1)]
    body = srv.bodies[0]
    assert body["model"] == "org/model" and body["prompt"] == "P" and body["max_tokens"] == 32
    assert body["temperature"] == 0.8 and body["top_p"] == 0.95
    # the server exposes no chat template: plain Question:/Answer: prompts also stop at the next turn
    assert pol.prompt_format == "plain" and body["stop"] == ["\n\n", "\nQuestion:"]
    assert body["top_k"] == -1 and body["min_p"] == 0.0
    assert body["logprobs"] == 5  # per-sample token counts and top-5 for the confidence
    assert set(srv.paths) == {"/v1/completions"}
    assert srv.headers[0]["Authorization"] == "Bearer k3y"
    pol.close()


def test_usage_token_counts(serve):
    srv = serve()
    pol = policy(srv.url)
    [out] = pol.generate([GenerationRequest("P", n=3, seed=0, params=PARAMS)])
    assert [c.generated_tokens for c in out] == [4, 3, 3]  # 10 completion tokens split evenly, remainder first
    assert [c.prompt_tokens for c in out] == [10, 10, 10]
    assert [c.cached_prompt_tokens for c in out] == [4, 10, 10]  # siblings share the first one's prompt KV
    pol.close()


def test_exact_tokens_from_logprobs_and_missing_cache_details(serve):
    def script(k, path, body):
        reply = completion(body, cached=None)
        for c in reply["choices"]:
            c["logprobs"] = {"tokens": ["t"] * (c["index"] + 1)}
        return Reply(200, reply)

    pol = policy(serve(script).url)
    [out] = pol.generate([GenerationRequest("P", n=3, seed=0, params=PARAMS)])
    assert [c.generated_tokens for c in out] == [1, 2, 3]
    assert out[0].cached_prompt_tokens == 0
    pol.close()


@pytest.mark.parametrize(
    "fields, stops, expected",
    [
        ({"finish_reason": "length", "stop_reason": None}, ("\n\n",), ("length", None)),
        ({"stop_reason": "\n\n"}, ("\n\n", "END"), ("stop", "\n\n")),
        ({"stop_reason": None}, ("\n\n",), ("eos", None)),
        ({"stop_reason": 151643}, ("\n\n",), ("eos", None)),
        ({"matched_stop": "END"}, ("\n\n", "END"), ("stop", "END")),
        ({"matched_stop": 2}, ("\n\n",), ("eos", None)),
        ({"stop_reason": "\nQuestion:"}, ("\n\n",), ("eos", None)),  # the next turn's marker: the answer ended
        ({"stop_reason": "\nQuestion:"}, (), ("eos", None)),
        ({}, ("\n\n",), ("stop", "\n\n")),
        ({}, ("\n\n", "END"), ("stop", None)),
        ({}, (), ("eos", None)),
    ],
)
def test_finish_reasons(serve, fields, stops, expected):
    srv = serve(lambda k, path, body: Reply(200, completion(body, **fields)))
    pol = policy(srv.url)
    [[c]] = pol.generate([GenerationRequest("P", n=1, seed=0, params=SamplingParams(stop=stops))])
    assert (c.finish_reason, c.stop) == expected
    pol.close()


def test_round_robin_over_two_servers(serve):
    a, b = serve(), serve()
    pol = policy([a.url + "/v1/", b.url])  # with or without the /v1 suffix
    reqs = [GenerationRequest(f"P{i}", n=1, seed=i, params=PARAMS) for i in range(4)]
    out = pol.generate(reqs)
    assert [o[0].text for o in out] == [f"P{i}|seed={i}" for i in range(4)]
    assert a.count == 2 and b.count == 2
    pol.generate(reqs[:1])  # the rotation continues across calls
    pol.generate(reqs[:1])
    assert a.count == 3 and b.count == 3
    assert set(a.paths) | set(b.paths) == {"/v1/completions"}
    pol.close()


def test_concurrency_is_bounded(serve):
    srv = serve(delay_s=0.05)
    reqs = [GenerationRequest(f"P{i}", n=1, seed=i, params=PARAMS) for i in range(8)]
    for bound in (1, 3):
        srv.max_inflight = 0
        pol = policy(srv.url, max_concurrency=bound)
        pol.generate(reqs)
        assert srv.max_inflight == bound
        pol.close()


def test_429_and_503_are_retried(serve):
    srv = serve(lambda k, path, body: Reply([429, 503][k], {"error": "busy"}) if k < 2 else ok(k, path, body))
    pol = policy(srv.url, retries=3)
    [[c]] = pol.generate([GenerationRequest("P", n=1, seed=7, params=PARAMS)])
    assert c.text == "P|seed=7" and srv.count == 3
    pol.close()


def test_a_failing_request_raises_after_the_others_were_reported(serve):
    def script(k, path, body):
        if body["prompt"] == "bad":
            return Reply(503, {"error": "down"})
        return Reply(200, completion(body), delay_s=0.1)  # finish well after the bad one gave up

    srv = serve(script)
    pol = policy(srv.url, retries=1)
    chunks: list[tuple[int, int, list[str]]] = []
    reqs = [GenerationRequest(p, n=2, seed=0, params=PARAMS) for p in ("a", "bad", "c")]
    with pytest.raises(GenerationFailed) as err:
        pol.generate(reqs, on_chunk=lambda ri, first, done: chunks.append((ri, first, [c.text for c in done])))
    assert sorted(chunks) == [(0, 0, ["a|seed=0", "a|seed=1"]), (2, 0, ["c|seed=0", "c|seed=1"])]
    [(ri, first, n, cause)] = err.value.failures
    assert (ri, first, n) == (1, 0, 2) and "HTTP 503" in str(cause)
    assert sum(b["prompt"] == "bad" for b in srv.bodies) == 2  # first try + 1 retry
    pol.close()


def test_wrong_number_of_choices_is_a_failure(serve):
    srv = serve(lambda k, path, body: Reply(200, {"choices": [], "usage": {}}))
    pol = policy(srv.url)
    with pytest.raises(GenerationFailed, match="0 choices for n=2"):
        pol.generate([GenerationRequest("P", n=2, seed=0, params=PARAMS)])
    pol.close()


def test_cached_generator_rerun_makes_no_http_calls(serve, tmp_path):
    srv = serve()
    pol = policy(srv.url, max_n_per_request=3)
    reqs = [GenerationRequest("A", n=4, seed=1, params=PARAMS), GenerationRequest("B", n=2, seed=5, params=PARAMS)]
    with Store(tmp_path) as store:
        first = CachedGenerator(pol, store).generate(reqs)
    calls = srv.count
    assert calls == 3  # A: [0, 3) + [3, 4); B: [0, 2)
    with Store(tmp_path) as store:
        again = CachedGenerator(pol, store).generate(reqs)
        # a wider request only asks the server for the missing tail, seeded as sample 4 and 5
        wider = CachedGenerator(pol, store).generate([GenerationRequest("A", n=6, seed=1, params=PARAMS)])
    assert [[c.text for c in o] for o in again] == [[c.text for c in o] for o in first]
    assert all(c.from_store for o in again for c in o)
    assert srv.count == calls + 1 and srv.bodies[-1]["seed"] == 5 and srv.bodies[-1]["n"] == 2
    assert [c.text for c in wider[0]] == [f"A|seed={s}" for s in range(1, 7)]
    pol.close()


def test_load_policy_openai(serve):
    srv = serve()
    pol = load_policy(
        "org/model", backend="openai", base_urls=[srv.url], model_id="vllm:org/model@q8", retries=0, n_params=1000
    )
    assert isinstance(pol, OpenAICompatPolicy) and pol.model_id == "vllm:org/model@q8"
    assert pol.render_chat([{"role": "user", "content": "2+2?"}]) == "Question: 2+2?\nAnswer:\n"
    [[c]] = pol.generate([GenerationRequest("P", n=1, seed=3, params=PARAMS)])
    assert c.text == "P|seed=3"
    pol.close()
    with pytest.raises(ValueError, match="base_urls"):
        load_policy("org/model", backend="openai")


def test_jinja_chat_template():
    pol = OpenAICompatPolicy(
        "http://127.0.0.1:1",
        "m",
        retries=0,
        chat_template="{% for m in messages %}<{{ m.content }}>{% endfor %}"
        "{% if add_generation_prompt %}[A]{% endif %}",
    )
    assert pol.render_chat([{"role": "user", "content": "hi"}]) == "<hi>[A]"
    pol.close()


def test_llama_cpp_style_logprobs_content_counts_tokens(serve):
    def script(k, path, body):
        reply = completion(body)
        reply["usage"]["completion_tokens"] = 2  # llama.cpp: only the first choice is counted
        for c in reply["choices"]:
            c["logprobs"] = {"content": [{"id": 1, "token": "t", "logprob": -0.1}] * (2 + c["index"])}
        return Reply(200, reply)

    pol = policy(serve(script).url)
    [out] = pol.generate([GenerationRequest("P", n=3, seed=0, params=PARAMS)])
    assert [c.generated_tokens for c in out] == [2, 3, 4]
    pol.close()


def test_exact_token_counts_can_be_turned_off(serve):
    srv = serve()
    pol = policy(srv.url, exact_token_counts=False)
    pol.generate([GenerationRequest("P", n=1, seed=0, params=PARAMS)])
    assert "logprobs" not in srv.bodies[0]
    pol.close()


# -- a server that is gone: the circuit breaker (testtime.netretry.Circuits) ---------------------------------




def prod_policy(server: FaultServer, clock: Clock, sleep=lambda s: None) -> OpenAICompatPolicy:
    """The production retry settings (5 retries, 1 s doubling to 30 s, 16 requests at once), with the
    backoff sleeps injected and the breakers on ``clock``."""
    pol = OpenAICompatPolicy(server.base_url, "fake", n_params=1000)
    assert (pol._post_opts["retries"], pol._post_opts["backoff_s"], pol._post_opts["max_backoff_s"]) == (5, 1.0, 30.0)
    pol._post_opts["sleep"] = sleep
    pol.circuits = Circuits(clock)
    return pol


def one_each(k: int, tag: str = "P") -> list[GenerationRequest]:
    return [GenerationRequest(f"{tag}{i}", n=1, seed=i, params=PARAMS) for i in range(k)]


@pytest.fixture
def stopped():
    """A fault server that was up when the policy opened and is gone now (connections refused)."""
    servers: list[FaultServer] = []

    def make() -> FaultServer:
        s = FaultServer(openai_handler)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def test_a_dead_server_fails_a_batch_fast_with_the_breakers_reason(stopped, attempts):
    srv = stopped()
    pol = prod_policy(srv, Clock())
    url = pol.urls[0] + "/completions"
    srv.stop()
    try:
        # without a breaker (what the bench ran into): every one of the 64 requests spends all 6 attempts
        pol.circuits = None
        with pytest.raises(GenerationFailed) as before:
            pol.generate(one_each(64))
        assert attempts[url] == 64 * 6 and len(before.value.failures) == 64
        attempts.clear()
        pol.circuits = Circuits(Clock())
        with pytest.raises(GenerationFailed) as err:
            pol.generate(one_each(64))
    finally:
        pol.close()
    # only the 16 requests in flight when the first ran out of retries made attempts; the 48 queued made none
    assert 6 <= attempts[url] <= 16 * 6
    failures = err.value.failures
    assert sorted(ri for ri, _first, _n, _e in failures) == list(range(64))  # every request has its record
    origin = pol.urls[0].removesuffix("/v1")
    for _ri, _first, _n, e in failures:
        assert isinstance(e, RequestFailed) and e.circuit_open and f"circuit open for {origin}" in str(e)
    assert sum(e.attempts == 0 for *_, e in failures) >= 64 - 16
    assert "connection failures in a row" in str(err.value) and "\n" not in str(err.value)


def test_every_problem_of_a_run_against_a_dead_server_is_recorded_with_the_reason(stopped, attempts, tmp_path):
    srv = stopped()
    pol = prod_policy(srv, Clock())
    srv.stop()
    problems = load_dataset("arith", limit=12, seed=3)
    config = engine.RunConfig(dataset="arith", strategy="majority", n=4, out=str(tmp_path), fewshot=0)
    try:
        result = engine.run(config, pol, problems)
    finally:
        pol.close()
    s = result.summary()
    assert s["failed"] == len(problems) and set(s["failures"]) == {p.id for p in problems}
    assert all("circuit open for http://127.0.0.1:" in why for why in s["failures"].values())
    with Store(tmp_path) as store:
        rows = store.get_results(result.run_id)
    assert len(rows) == len(problems) and all("circuit open" in r["error"] for r in rows)
    # the batch's first 16 requests spent their retries; its rest and the one-problem reruns were refused
    assert attempts[pol.urls[0] + "/completions"] <= 16 * 6


def test_one_refused_attempt_then_the_server_is_back_succeeds(stopped, attempts):
    srv = stopped()
    lock = threading.Lock()

    def back_during_the_backoff(delay: float) -> None:
        with lock:
            if srv.server is None:
                srv._start()  # the same port again (what FaultServer.down does after its pause)

    pol = prod_policy(srv, Clock(), back_during_the_backoff)
    srv.stop()
    try:
        out = pol.generate(one_each(8))
    finally:
        pol.close()
    assert [o[0].text for o in out] == [
        completions(
            {"prompt": f"P{i}", "n": 1, "seed": i, "stop": list(PARAMS.stop) + ["\nQuestion:"], "max_tokens": 32}
        )["choices"][0]["text"]
        for i in range(8)
    ]
    url = pol.urls[0] + "/completions"
    assert attempts[url] >= 9 and pol.circuits.get(url).state == "closed"


def test_http_errors_with_a_body_never_open_the_breaker(serve, attempts):
    srv = serve(lambda k, path, body: Reply(503, {"error": "overloaded"}))
    pol = OpenAICompatPolicy(srv.url, "org/model", n_params=1000)  # production retries
    pol._post_opts["sleep"] = lambda s: None
    try:
        with pytest.raises(GenerationFailed) as err:
            pol.generate(one_each(16))
        # every request spent all its retries: nothing was cut short (the server may miss an attempt whose
        # connection broke under the load; the client counts each one)
        assert attempts[srv.url + "/v1/completions"] == 16 * 6
        assert all("HTTP 503" in str(e) and not e.circuit_open for *_, e in err.value.failures)
        srv.script = lambda k, path, body: Reply(400, {"error": "bad prompt"})
        before = srv.count
        with pytest.raises(GenerationFailed, match="HTTP 400"):
            pol.generate(one_each(16))
        assert srv.count - before == 16
        assert pol.circuits.get(srv.url + "/v1/completions").state == "closed"
        srv.script = ok
        assert len(pol.generate(one_each(4))) == 4
    finally:
        pol.close()


def test_half_open_probe_brings_back_a_server_that_returned(stopped, attempts):
    srv = stopped()
    clock = Clock()
    pol = prod_policy(srv, clock)
    url = pol.urls[0] + "/completions"
    srv.stop()
    try:
        with pytest.raises(GenerationFailed):
            pol.generate(one_each(16))
        opened = attempts[url]
        srv._start()  # the server is back, but the breaker cannot know before its cooldown ends
        with pytest.raises(GenerationFailed, match="circuit open"):
            pol.generate(one_each(8))
        assert attempts[url] == opened and not srv.requests
        srv.stop()
        clock.now += 30.0  # max_backoff_s later: one request probes; the server is still gone
        with pytest.raises(GenerationFailed) as err:
            pol.generate(one_each(8))
        assert attempts[url] == opened + 1  # the probe's one attempt; the other 7 waited for it and were refused
        assert any("probe" in str(e) for *_, e in err.value.failures)
        srv._start()
        clock.now += 30.0  # the next probe gets an answer: the other requests, which waited for it, go too
        out = pol.generate(one_each(8))
        assert len(out) == 8 and all(len(o) == 1 for o in out)
        assert attempts[url] >= opened + 1 + 8 and len(srv.requests) >= 8
        assert pol.circuits.get(url).state == "closed"
    finally:
        pol.close()
