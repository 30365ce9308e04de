"""`testtime serve` end to end: the embedded SmolLM2 behind the server (uvicorn in a thread), driven by the
real ``openai`` SDK. Kept small (budgets 2, short max_tokens): CI has 2 cores."""

from __future__ import annotations

import time

import openai
import pytest

from testtime.extraction import extract_answers
from testtime.optimal.metrics import absolute_bins
from testtime.serve import ServeConfig, Solver, create_app
from testtime.serve.thread import ServerThread
from testtime.store import Store

pytestmark = pytest.mark.integration
KEY = "test-key"


@pytest.fixture(scope="module")
def solver(smollm2, tmp_path_factory):
    cfg = ServeConfig(out=str(tmp_path_factory.mktemp("serve-store")), strategy="majority", budget=2,
                      max_tokens=32, max_tokens_cap=256, api_key=KEY, batch_window_ms=10)
    solver = Solver(smollm2, cfg)
    yield solver
    solver.close()


@pytest.fixture(scope="module")
def server(solver):
    with ServerThread(create_app(solver)) as srv:  # in this process: its clock is the test's
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=300)


def test_chat_with_a_strategy_from_extra_body(client):
    r = client.chat.completions.create(
        model="testtime", messages=[{"role": "user", "content": "What is 3 + 5?"}], max_tokens=32, seed=1,
        extra_body={"tts": {"strategy": "best_of_n", "budget": 2}})
    tts = r.model_extra["tts"]
    assert (tts["strategy"], tts["budget"], tts["candidates"]) == ("best_of_n", 2, 2)
    assert r.choices[0].message.content.strip()
    u = r.usage
    assert 10 < u.prompt_tokens < 80  # the rendered chat, once
    assert u.completion_tokens == tts["policy_tokens"] >= 2
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert tts["trace_id"].startswith("serve-best_of_n-n2-") and tts["policy_flops"] > 0


def test_completions_and_streaming(client, solver, monkeypatch):
    done = client.completions.create(model="testtime", prompt="The capital of France is", max_tokens=8,
                                      extra_body={"tts": {"strategy": "cot"}})
    assert done.choices[0].text and done.model_extra["tts"]["strategy"] == "cot"
    # the search's end, seen from the server: when its last policy call returned (the server runs in this
    # process, so the two clocks are one)
    calls: list[float] = []
    generate = solver.policy.inner.generate

    def timed(requests, on_chunk=None):
        out = generate(requests, on_chunk)
        calls.append(time.perf_counter())
        return out

    monkeypatch.setattr(solver.policy.inner, "generate", timed)
    t0 = time.perf_counter()
    arrivals, chunks = [], []
    stream = client.chat.completions.create(
        model="testtime", messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=24, stream=True,
        stream_options={"include_usage": True}, seed=4)
    for chunk in stream:
        arrivals.append(time.perf_counter())
        chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert calls and not chunks[-2].model_extra["tts"]["replayed"]  # the search ran now, on the model
    search_end = calls[-1]
    # the first chunk came before the search ended, after a small share of the time the search took: a server
    # that held every chunk back until the answer was known gives a share above 1 (its first chunk comes after
    # the search), one that streams gives a few percent (measured: 2% on a loaded 2-core machine). 0.5 leaves
    # room for a first chunk delayed by load (the search slows with it)
    share = (arrivals[0] - t0) / (search_end - t0)
    assert share < 0.5, (share, arrivals[0] - t0, search_end - t0)
    assert all(a > search_end for a in arrivals[1:])  # the text itself is the search's answer: it comes after


# the rules the shipped chat table (make table-chat, 2026-12-08) decides these by, each alone in its batch at
# reasoning_effort high (average budget 16): 17 * 3 is predicted pass@1 0.11, "medium", and raised two steps to
# best_of_n@8; the word problem 0.02, "hard", where nothing costlier is predicted to help, so it gets CoT
RULE_17X3 = "bin medium: allocation, raised 2 step(s)"
RULE_WORD = "bin hard: allocation, cheapest"
# a GSM8K-style word problem (not from the GSM8K file the chat table was calibrated on)
WORD_PROBLEM = ("A baker makes 48 muffins and sells them in boxes of 6. Each box costs $4. How much money does the "
                "baker make if he sells every box?")


@pytest.fixture(scope="module")
def default_client(smollm2, tmp_path_factory):
    """A server with no options but its store: strategy auto, the shipped chat table, the default efforts."""
    solver = Solver(smollm2, ServeConfig(out=str(tmp_path_factory.mktemp("serve-default"))))
    try:
        with ServerThread(create_app(solver)) as srv:
            yield openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=300), solver
    finally:
        solver.close()


@pytest.mark.parametrize(("question", "rule"), [("What is 17 * 3?", RULE_17X3), (WORD_PROBLEM, RULE_WORD)])
def test_auto_decides_ordinary_chat_questions_by_the_table(default_client, question, rule):
    """The issue's case: a chat with reasoning_effort high and no tts object, on a server started with no
    options, is decided by the shipped chat table's bin and allocator (not by a fallback), by this exact rule."""
    client, solver = default_client
    r = client.chat.completions.create(model="testtime", messages=[{"role": "user", "content": question}],
                                       reasoning_effort="high", max_tokens=24, seed=5)
    tts = r.model_extra["tts"]
    assert tts["requested"] == "auto" and solver.cfg.strategy == "auto"
    assert tts["decided_by"] == rule, (tts["decided_by"], tts["predicted_pass1"], tts.get("why"))
    table = solver.table()
    assert tts["predicted_bin"] == absolute_bins({"q": tts["predicted_pass1"]}, table.easy, table.hard)["q"]
    # the other side of the shift check: the same question in another language is not decided by the table
    r = client.chat.completions.create(
        model="testtime", reasoning_effort="high", max_tokens=24, seed=5,
        messages=[{"role": "user", "content": "Combien font dix-sept fois trois ? Réponds en français."}])
    assert r.model_extra["tts"]["decided_by"] == "prm-free: shift"


def test_auto_with_the_shipped_table(client, solver):
    r = client.chat.completions.create(
        model="testtime", messages=[{"role": "user", "content": "What is 7 + 6?"}], max_tokens=24, seed=2,
        extra_body={"tts": {"strategy": "auto", "budget": 2}})
    tts = r.model_extra["tts"]
    table = solver.table()
    assert tts["requested"] == "auto"
    # the shipped chat table was calibrated on questions asked as this one is (zero-shot, the server's system
    # turn): no shift, so the question-only predictor and the allocator decide, and the rule names the bin
    assert table.profile.prompt["fewshot"] == 0
    assert tts["predicted_bin"] == absolute_bins({"q": tts["predicted_pass1"]}, table.easy, table.hard)["q"]
    assert tts["decided_by"].startswith(f"bin {tts['predicted_bin']}: allocation, "), tts["decided_by"]
    # a system prompt that changes the format is a shift: the PRM-free fallback decides, and says why
    r = client.chat.completions.create(
        model="testtime", messages=[{"role": "system", "content": "You are a pirate. Answer in rhymes."},
                                    {"role": "user", "content": "What is 7 + 6?"}], max_tokens=24, seed=2,
        extra_body={"tts": {"strategy": "auto", "budget": 2}})
    tts = r.model_extra["tts"]
    free = table.fallback("prm_free", 2)
    assert tts["decided_by"] == "prm-free: shift"
    assert (tts["strategy"], tts["budget"]) == (free.strategy, free.budget)


def test_non_math_question_says_which_rule_chose(client, solver):
    r = client.chat.completions.create(
        model="testtime", messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        max_tokens=20, seed=3)
    tts = r.model_extra["tts"]
    reply = r.choices[0].message.content
    run_id, problem_id = tts["trace_id"].split("/")
    with Store(solver.cfg.out) as st:
        (trace,) = st.get_results(run_id, [problem_id])
    samples = ["".join(c["steps"]) for c in trace["candidates"]]
    # neither sample states a final answer the server's extraction reads (a sentence about the sea: no marker,
    # nothing math-verify takes for one), so no vote can choose: the reply is the first sample, and says so
    assert extract_answers(samples, solver.cfg.extraction) == [None, None], samples
    assert tts["answer"] is None and tts["selection_rule"] == "no_answer_first_sample"
    assert tts["note"] == "no candidate stated an extractable final answer"
    assert reply == samples[0] and reply.strip()


def test_auth_and_caps(server, client):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="testtime", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=100000)
    assert e.value.body["param"] == "max_tokens" and "max_tokens" in e.value.body["message"]
