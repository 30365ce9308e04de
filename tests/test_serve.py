"""`testtime serve` with fake policies: the OpenAI shapes, usage and the tts object, streaming, batching across
requests, per-request settings, limits, auth, the queue, cancellation, replay, and the CLI's errors.

The real model through the real SDK is in test_serve_integration.py; fuzzing in test_serve_fuzz.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from importlib import resources

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fakes import ScriptedPolicy, words
from testtime.errors import ConfigError
from testtime.policy.prompts import CHAT_PROMPT
from testtime.reward.base import BatchScorer, Scored
from testtime.serve import ServeConfig, Solver, create_app
from testtime.serve.solver import Cancelled, TrackingPolicy, apply_stops
from testtime.serve.thread import ServerThread
from testtime.store import Store

Q = "What is 2+2?"

# the answer instruction the server adds to a chat without a system turn
SYSTEM_TURN = {"role": "system", "content": CHAT_PROMPT["system"]}


def chat(content: str = Q, **extra) -> dict:
    return {"model": "testtime", "messages": [{"role": "user", "content": content}], **extra}


class CountingScorer(BatchScorer):
    """Rewards a candidate by its sample tag's parity; counts calls."""

    name = "counting-scorer"
    n_params = 100
    outcome_only = False

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score_batch(self, requests):
        self.calls.append(len(requests))
        return [Scored([0.9 if "4" in "".join(r.steps) else 0.1 for _ in r.steps], tokens=len(r.steps))
                for r in requests]


class GatedPolicy(ScriptedPolicy):
    """A ScriptedPolicy whose generate waits for ``gate`` (so tests can hold a batch in flight)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def generate(self, requests, on_chunk=None):
        self.entered.set()
        assert self.gate.wait(20), "test gate never opened"
        return super().generate(requests, on_chunk)


def make(tmp_path, policy=None, scorer=None, **cfg):
    policy = policy or ScriptedPolicy({Q: ["4", "5", "4", None]})
    cfg.setdefault("strategy", "best_of_n")
    cfg.setdefault("batch_window_ms", 5)
    config = ServeConfig(out=str(tmp_path / "store"), **cfg)
    backend = Solver(policy, config, scorer)
    return create_app(backend), policy, backend


# --- the answer, usage and the tts object --------------------------------------------------------------


def test_chat_answer_usage_and_tts(tmp_path):
    app, policy, _ = make(tmp_path, scorer=CountingScorer())
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json=chat(seed=3))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    prompt = policy.render_chat([SYSTEM_TURN, {"role": "user", "content": Q}])
    assert [call.prompt for call in policy.calls[0]] == [prompt]  # the chat template, one call for all 4 samples
    texts = [policy.text_for(prompt, s, i) for (p, s, i) in policy.generated]
    content = body["choices"][0]["message"]["content"]
    assert content in texts and content.endswith("The answer is 4.")  # the full text of a candidate stating 4
    u = body["usage"]
    assert u["prompt_tokens"] == words(prompt)  # once, not once per sample
    assert u["completion_tokens"] == sum(words(t) for t in texts)  # every sample
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["prompt_tokens_details"]["cached_tokens"] == 0
    tts = body["tts"]
    assert (tts["strategy"], tts["budget"], tts["candidates"]) == ("best_of_n", 4, 4)
    assert tts["selection_rule"] == "prm_last_max" and tts["answer"] == "4"
    assert tts["prm_tokens"] == 4 * 2 and tts["policy_tokens"] == u["completion_tokens"]
    run_id, pid = tts["trace_id"].split("/")
    with Store(tmp_path / "store") as store:
        stored = [t for t in store.get_results(run_id) if t["problem_id"] == pid]
        assert stored and stored[0]["answer"] == "4"


def test_multi_turn_chat_is_rendered_with_the_template(tmp_path):
    app, policy, _ = make(tmp_path, strategy="majority", budget=2)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": Q}]
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={"model": "m", "messages": messages})
    assert r.status_code == 200
    assert policy.calls[0][0].prompt == policy.render_chat(messages)


def test_completions_use_the_raw_prompt(tmp_path):
    app, policy, _ = make(tmp_path, strategy="majority", budget=2)
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"model": "m", "prompt": "Q: 1+1?\nA:", "max_tokens": 50})
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
    assert policy.calls[0][0].prompt == "Q: 1+1?\nA:"
    assert r.json()["choices"][0]["text"].startswith("Step 1")


def test_no_extractable_answer_falls_back_and_says_so(tmp_path):
    policy = ScriptedPolicy({"poem": [None]})
    app, _, _ = make(tmp_path, policy, scorer=CountingScorer(), strategy="majority", budget=3)
    with TestClient(app) as c:
        maj = c.post("/v1/chat/completions", json=chat("Write a poem")).json()
        bon = c.post("/v1/chat/completions", json=chat("Write a poem", tts={"strategy": "best_of_n"})).json()
    assert maj["tts"]["selection_rule"] == "no_answer_first_sample"
    assert bon["tts"]["selection_rule"] == "no_answer_best_score"
    for body in (maj, bon):
        assert body["tts"]["note"] == "no candidate stated an extractable final answer"
        assert body["tts"]["answer"] is None
        assert body["choices"][0]["message"]["content"].endswith("I am not sure how to finish.")


def test_stop_n_and_seed_replay(tmp_path):
    app, policy, _ = make(tmp_path, strategy="majority", budget=2)
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json=chat(stop=["\n\n"], n=2, seed=7)).json()
        generated = policy.n_generated
        again = c.post("/v1/chat/completions", json=chat(stop=["\n\n"], n=2, seed=7)).json()
        fresh = c.post("/v1/chat/completions", json=chat(stop=["\n\n"], n=2)).json()
    texts = [ch["message"]["content"] for ch in r["choices"]]
    assert len(texts) == 2 and texts[0] != texts[1] and all("\n\n" not in t for t in texts)
    assert all(ch["finish_reason"] == "stop" for ch in r["choices"])
    assert r["usage"]["completion_tokens"] == r["tts"]["per_choice"][0]["policy_tokens"] + \
        r["tts"]["per_choice"][1]["policy_tokens"]
    # an identical seeded request replays from the store; an unseeded one samples afresh
    assert generated == 4 and policy.n_generated == 8
    assert [ch["message"]["content"] for ch in again["choices"]] == texts and again["tts"]["replayed"]
    # nothing was generated for the replay: no completion tokens billed, the samples it used still reported
    assert again["usage"]["completion_tokens"] == 0 and again["tts"]["policy_tokens"] == r["tts"]["policy_tokens"]
    assert not fresh["tts"]["replayed"]


def test_apply_stops():
    assert apply_stops("a STOP b", ["STOP", "b"]) == ("a ", True)
    assert apply_stops("abc", ["x"]) == ("abc", False)


# --- per-request settings ------------------------------------------------------------------------------


def test_settings_come_from_the_request_and_never_leak(tmp_path):
    app, policy, _ = make(tmp_path, strategy="majority", budget=2, efforts={"low": 1, "medium": 3, "high": 5})
    with TestClient(app) as c:
        a = c.post("/v1/chat/completions", json=chat(temperature=0.1, tts={"budget": 6})).json()
        b = c.post("/v1/chat/completions", json=chat()).json()
        e = c.post("/v1/chat/completions", json=chat(reasoning_effort="high")).json()
        x = c.post("/v1/chat/completions", json=chat(reasoning_effort="high", tts={"budget": 1})).json()
    assert [a["tts"]["budget"], b["tts"]["budget"], e["tts"]["budget"], x["tts"]["budget"]] == [6, 2, 5, 1]
    temps = [call.temperature for calls in policy.calls for call in calls]
    assert temps[0] == 0.1 and set(temps[1:]) == {0.7}


def test_config_validates_and_names_the_field():
    with pytest.raises(ConfigError) as e:
        ServeConfig(strategy="nope")
    assert e.value.field == "strategy"
    with pytest.raises(ConfigError) as e:
        ServeConfig(efforts={"low": 1, "medium": 2, "high": 999})
    assert e.value.field == "efforts.high"
    with pytest.raises(ConfigError) as e:
        ServeConfig(max_tokens=5000)
    assert e.value.field == "max_tokens"


# --- errors, caps, auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body,param", [
    (chat(max_tokens=99999), "max_tokens"),
    (chat(max_completion_tokens=99999), "max_completion_tokens"),
    (chat(n=9), "n"),
    (chat(tts={"budget": 65}), "tts.budget"),
    (chat(tts={"strategy": "beam", "budget": 6}), "tts.budget"),
    (chat(tts={"strategy": "mcts"}), "tts.strategy"),
    (chat(tts={"prm": "hf:/some/model"}), "tts.prm"),
    (chat(temperature=3), "temperature"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_bad_requests_are_400_naming_the_field(tmp_path, body, param):
    app, policy, _ = make(tmp_path)
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
    assert policy.calls == []


def test_body_size_json_and_unknown_paths(tmp_path):
    app, _, _ = make(tmp_path, max_body_bytes=2000)
    with TestClient(app) as c:
        big = c.post("/v1/chat/completions", json=chat("x" * 5000))
        bad = c.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        lost = c.get("/v1/nothing")
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert lost.status_code == 404 and lost.json()["error"]["type"] == "not_found_error"


def test_api_key_on_every_endpoint_but_health(tmp_path):
    app, _, _ = make(tmp_path, api_key="sekret")
    good = {"Authorization": "Bearer sekret"}
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        for method, path in (("get", "/v1/models"), ("get", "/metrics"), ("post", "/v1/chat/completions"),
                             ("get", "/openapi.json")):
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "sekret"}):
                r = getattr(c, method)(path, headers=headers, **({"json": chat()} if method == "post" else {}))
                assert r.status_code == 401, (path, headers)
                assert r.json()["error"]["code"] == "invalid_api_key"
        assert c.get("/v1/models", headers=good).json()["data"][0]["id"] == "testtime"
        assert c.post("/v1/chat/completions", json=chat(), headers=good).status_code == 200


def test_client_key_is_never_forwarded_upstream(tmp_path):
    from httpserver import Reply, TestServer
    from testtime.policy.openai_compat import OpenAICompatPolicy

    def reply(k, path, body):
        choices = [{"index": i, "text": "The answer is 4.", "finish_reason": "stop",
                    "logprobs": {"content": [{"token": "x", "logprob": 0.0}] * 5}} for i in range(body.get("n", 1))]
        return Reply(body={"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 5}})

    upstream = TestServer(reply)
    try:
        policy = OpenAICompatPolicy(upstream.url, "tiny", api_key="upstream-key", retries=0, n_params=1000)
        app, _, _ = make(tmp_path, policy, strategy="majority", budget=2, api_key="client-key")
        with TestClient(app) as c:
            r = c.post("/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer client-key"})
        assert r.status_code == 200, r.text
        assert upstream.headers and all(h.get("Authorization") == "Bearer upstream-key" for h in upstream.headers)
        assert not any("client-key" in json.dumps(h) for h in upstream.headers)
    finally:
        upstream.close()
        policy.close()


# --- streaming --------------------------------------------------------------------------------------------


def sse_events(text: str) -> list[str]:
    return [block for block in text.split("\n\n") if block]


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_format(tmp_path, include_usage):
    app, policy, _ = make(tmp_path, strategy="majority", budget=2)
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json=chat(stream=True, seed=1,
                                                      stream_options={"include_usage": include_usage}))
        whole = c.post("/v1/chat/completions", json=chat(seed=1)).json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "data: [DONE]"
    assert any(e.startswith(": progress depth=1 samples=2") for e in events)
    chunks = [json.loads(e[len("data: "):]) for e in events if e.startswith("data: {")]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == whole["choices"][0]["message"]["content"] and len(chunks) > 3  # in pieces
    final = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["tts"]["strategy"] == "majority"
    usage = [ch for ch in chunks if ch.get("usage")]
    if include_usage:
        assert chunks[-1]["choices"] == [] and usage == [chunks[-1]]
        u = usage[0]["usage"]
        assert u["completion_tokens"] == final[0]["tts"]["policy_tokens"] > 0
        assert u["prompt_tokens"] == whole["usage"]["prompt_tokens"]
        # the second, identical request replayed the stream's samples: its prompt all cached, nothing generated
        assert whole["usage"]["prompt_tokens_details"]["cached_tokens"] == whole["usage"]["prompt_tokens"]
        assert whole["usage"]["completion_tokens"] == 0
    else:
        assert usage == []


def test_sdk_streams_and_raises_named_errors(tmp_path):
    app, _, _ = make(tmp_path, strategy="majority", budget=2)
    with ServerThread(app) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="testtime", messages=[{"role": "user", "content": Q}],
                                                stream=True, stream_options={"include_usage": True}, seed=2)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.endswith(".") and chunks[-1].usage.total_tokens > 0
        done = client.completions.create(model="testtime", prompt="2+2=", max_tokens=20, extra_body={
            "tts": {"strategy": "cot"}})
        assert done.model_extra["tts"]["strategy"] == "cot" and done.usage.completion_tokens > 0
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="testtime", messages=[{"role": "user", "content": Q}], n=50)
        assert e.value.body["param"] == "n"


# --- batching across requests, the queue, cancellation, deadline ------------------------------------------


async def _concurrent(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))


def test_concurrent_requests_share_backend_calls(tmp_path):
    scorer = CountingScorer()
    app, policy, _ = make(tmp_path, scorer=scorer, batch_window_ms=300, max_batch=16)
    bodies = [chat(f"Question {i}: what is {i}+{i}?") for i in range(5)] + [chat("Other", temperature=0.2)]
    with ServerThread(app) as srv:
        rs = asyncio.run(_concurrent(srv.url, bodies))
        metrics = httpx.get(srv.url + "/metrics").text
    assert [r.status_code for r in rs] == [200] * 6
    # the five with the same settings: one policy call and one scorer call; the sixth on its own
    sizes = sorted(len(call) for call in policy.calls)
    assert sizes == [1, 5]
    assert sorted(scorer.calls) == [4, 20]
    assert "testtime_batch_size_count 2.0" in metrics
    assert 'testtime_requests_total{endpoint="/v1/chat/completions",status="200"} 6.0' in metrics
    generated = sum(r.json()["usage"]["completion_tokens"] for r in rs)
    assert f"testtime_generated_tokens_total {float(generated)}" in metrics


def test_full_queue_answers_429_with_retry_after(tmp_path):
    policy = GatedPolicy()
    app, _, _ = make(tmp_path, policy, strategy="majority", budget=1, queue_size=2, retry_after_s=3)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        holder = threading.Thread(target=lambda: client.post("/v1/chat/completions", json=chat(n=2)))
        holder.start()
        assert policy.entered.wait(10)
        assert httpx.get(srv.url + "/health").json()["queue_depth"] == 2
        r = client.post("/v1/chat/completions", json=chat())
        policy.gate.set()
        holder.join(10)
        after = client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert after.status_code == 200


def test_a_client_that_goes_away_cancels_its_queued_work(tmp_path):
    policy = GatedPolicy({Q: ["4"]})
    app, _, _ = make(tmp_path, policy, strategy="majority", budget=1)
    with ServerThread(app) as srv:
        holder = threading.Thread(target=lambda: httpx.post(srv.url + "/v1/chat/completions", json=chat("hold"),
                                                            timeout=30))
        holder.start()
        assert policy.entered.wait(10)
        with pytest.raises(httpx.ReadTimeout):  # waits behind the held batch, then gives up
            httpx.post(srv.url + "/v1/chat/completions", json=chat("gone", temperature=0.3), timeout=0.5)
        time.sleep(1.0)  # the server notices the disconnect within its 0.5 s poll
        policy.gate.set()
        holder.join(10)
        depth = httpx.get(srv.url + "/health").json()["queue_depth"]
    prompts = [call.prompt for calls in policy.calls for call in calls]
    assert any("hold" in p for p in prompts) and not any("gone" in p for p in prompts)
    assert depth == 0


def test_batch_stops_when_every_client_is_gone():
    inner = ScriptedPolicy()
    policy = TrackingPolicy(inner)
    gone = threading.Event()
    progress = []
    policy.begin({"p"}, lambda calls, samples: progress.append((calls, samples)), gone.is_set)
    from testtime.policy.base import GenerationRequest

    policy.generate([GenerationRequest("p", 2, 0)])
    assert progress == [(1, 2)] and policy.prompt_tokens_seen("p") == (1, 0)
    gone.set()
    with pytest.raises(Cancelled):
        policy.generate([GenerationRequest("p", 2, 0)])
    assert len(inner.calls) == 1


def test_deadline_is_504(tmp_path):
    policy = GatedPolicy()
    app, _, _ = make(tmp_path, policy, strategy="majority", budget=1, deadline_s=0.3)
    with ServerThread(app) as srv:
        r = httpx.post(srv.url + "/v1/chat/completions", json=chat(), timeout=10)
        policy.gate.set()
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"


# --- auto --------------------------------------------------------------------------------------------------


def test_auto_runs_the_selector_with_a_table(tmp_path):
    policy = ScriptedPolicy({Q: ["4", "4", "5", "4"]})
    shipped = resources.files("testtime.optimal").joinpath("shipped", "smollm2-135m-arith-check.json")
    table = json.loads(shipped.read_text())
    table["policy"] = policy.model_id  # the shipped table, said to be calibrated for the fake
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    app, _, _ = make(tmp_path, policy, strategy="auto", budget=4, table=str(path))
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json=chat(seed=5))
        samples = list(policy.generated)
        small = c.post("/v1/chat/completions", json=chat(tts={"strategy": "auto", "budget": 1}))
    assert r.status_code == 200, r.text
    tts = r.json()["tts"]
    from testtime.optimal.calibrate import Table
    from testtime.optimal.metrics import absolute_bins

    loaded = Table.load(path)
    # the bin is the table's thresholds applied to the predicted pass@1, not any of the three
    assert tts["requested"] == "auto"
    assert tts["predicted_bin"] == absolute_bins({"q": tts["predicted_pass1"]}, loaded.easy, loaded.hard)["q"]
    # a chat request is a number question without shots, the table's calibration arith with 3: a shift
    robust = table["robust"]["4"]
    assert (tts["decided_by"], tts["strategy"], tts["budget"]) == ("robust: shift", robust["strategy"], 4)
    assert 0.0 <= tts["predicted_pass1"] <= 1.0
    # every sample generated for it counts once: the probe's, and the chosen config's beyond what it reused
    prompt = policy.render_chat([SYSTEM_TURN, {"role": "user", "content": Q}])
    generated = sum(words(policy.text_for(p, s_, i)) for p, s_, i in samples if p == prompt)
    assert r.json()["usage"]["completion_tokens"] == generated > 0
    assert tts["policy_tokens"] >= generated
    assert small.status_code == 200 and small.json()["tts"]["budget"] == 1  # within the request's own budget


def test_auto_says_which_rule_decided(tmp_path):
    """Each of the selector's rules, made to fire by editing the table the server reads: the reply names it and
    runs the config it gives."""
    from testtime.optimal.calibrate import ROBUST_SHIFT, ROBUST_UNCERTAIN, ROBUST_UNRELIABLE, TABLE_RULE, Table
    from testtime.optimal.metrics import absolute_bins

    shipped = json.loads(resources.files("testtime.optimal").joinpath("shipped",
                                                                      "smollm2-135m-arith-check.json").read_text())

    def ask(name: str, **edits) -> tuple[dict, Table]:
        policy = ScriptedPolicy({Q: ["4", "4", "5", "4"]})
        table = {**shipped, "policy": policy.model_id, **edits}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(table))
        app, _, _ = make(tmp_path / name, policy, strategy="auto", budget=4, table=str(path))
        with TestClient(app) as c:
            r = c.post("/v1/chat/completions", json=chat(seed=5))
        assert r.status_code == 200, r.text
        return r.json()["tts"], Table.load(path)

    def config(tts: dict) -> tuple[str, int]:
        return tts["strategy"], tts["budget"]

    tts, table = ask("shipped")  # calibrated on arith problems, 3-shot: a chat request is neither
    assert table.profile.kinds.keys() == {"arith"} and table.profile.prompt["fewshot"] == 3
    robust = table.fallback("robust", 4)
    assert tts["decided_by"] == ROBUST_SHIFT and config(tts) == (robust.strategy, robust.budget)
    p = tts["predicted_pass1"]
    assert tts["predicted_bin"] == absolute_bins({"q": p}, table.easy, table.hard)["q"] == "easy"
    # a profile that matches the requests (number answers, no shots): no shift, the predicted bin's choice
    matched = {**shipped["profile"], "kinds": {"number": 261}, "prompt": {**shipped["profile"]["prompt"],
                                                                          "fewshot": 0}}
    assert min(abs(p - table.easy), abs(p - table.hard)) >= 0.05  # away from a threshold: certain
    tts, table = ask("matched", profile=matched)
    choice = table.choice("easy", 4)
    assert (choice.strategy, choice.budget) != (robust.strategy, robust.budget)  # so the two rules differ
    assert tts["decided_by"] == TABLE_RULE and config(tts) == (choice.strategy, choice.budget)
    assert tts["predicted_pass1"] == p
    # the easy bin calibrated on fewer than MIN_BIN_CALIBRATION (10) problems: the robust choice
    tts, _ = ask("unreliable", profile=matched, support={**shipped["support"], "easy": 5})
    assert tts["decided_by"] == ROBUST_UNRELIABLE and config(tts) == (robust.strategy, robust.budget)
    # the easy threshold just below the predicted pass@1 (within the 0.05 margin): the bin is uncertain
    tts, _ = ask("uncertain", profile=matched, easy=round(p - 0.02, 6))
    assert tts["predicted_bin"] == "easy"
    assert tts["decided_by"] == ROBUST_UNCERTAIN and config(tts) == (robust.strategy, robust.budget)


# --- the command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["--budget", "0"], "--budget 0: must be >= 1"),
    (["--effort", "huge=3"], "--effort huge=3"),
    (["--strategy", "mcts"], "--strategy mcts: unknown"),
    (["--upstream-api-key", "k"], "--upstream-api-key: only applies to backend openai"),
])
def test_cli_refuses_bad_options_in_one_line(args, message):
    from testtime.cli import app

    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_store_folder_is_created(tmp_path):
    app, _, _ = make(tmp_path / "deep" / "er", strategy="cot")
    with TestClient(app) as c:
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200
    assert (tmp_path / "deep" / "er" / "store").is_dir()
    shutil.rmtree(tmp_path / "deep")


def test_a_stream_closed_early_cancels_its_work(tmp_path):
    policy = GatedPolicy({Q: ["4"]})
    app, _, _ = make(tmp_path, policy, strategy="majority", budget=1)
    with ServerThread(app) as srv:
        holder = threading.Thread(target=lambda: httpx.post(srv.url + "/v1/chat/completions", json=chat("hold"),
                                                            timeout=30))
        holder.start()
        assert policy.entered.wait(10)
        with httpx.stream("POST", srv.url + "/v1/chat/completions", timeout=10,
                          json=chat("gone", temperature=0.3, stream=True)) as r:
            first = next(r.iter_lines())
            assert first.startswith("data: ") and '"role": "assistant"' in first
        time.sleep(0.5)
        policy.gate.set()
        holder.join(10)
        depth = httpx.get(srv.url + "/health").json()["queue_depth"]
    prompts = [call.prompt for calls in policy.calls for call in calls]
    assert any("hold" in p for p in prompts) and not any("gone" in p for p in prompts)
    assert depth == 0


def test_top_p_reaches_the_backend_and_keeps_old_run_ids(tmp_path):
    from testtime.config import RunConfig

    seen = []

    class Recording(ScriptedPolicy):
        def generate(self, requests, on_chunk=None):
            seen.extend(r.params.top_p for r in requests)
            return super().generate(requests, on_chunk)

    app, _, _ = make(tmp_path, Recording(), strategy="majority", budget=2)
    with TestClient(app) as c:
        assert c.post("/v1/chat/completions", json=chat(top_p=0.5)).status_code == 200
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200
    assert seen == [0.5, 1.0]
    assert "top_p" not in RunConfig().identity("m") and RunConfig(top_p=0.9).identity("m")["top_p"] == 0.9
    with pytest.raises(ConfigError) as e:
        RunConfig(top_p=0)
    assert e.value.field == "top_p"
