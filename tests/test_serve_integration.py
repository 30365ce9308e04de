"""`testtime serve` end to end: the embedded SmolLM2 behind the server (uvicorn in a thread), driven by the
real ``openai`` SDK. Kept small (budgets 2, short max_tokens): CI has 2 cores."""

from __future__ import annotations

import time

import openai
import pytest

from testtime.serve import ServeConfig, Solver, create_app
from testtime.serve.thread import ServerThread

pytestmark = pytest.mark.integration
KEY = "test-key"


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    cfg = ServeConfig(out=str(tmp_path_factory.mktemp("serve-store")), strategy="majority", budget=2,
                      max_tokens=32, max_tokens_cap=256, api_key=KEY, batch_window_ms=10)
    backend = Solver(smollm2, cfg)
    with ServerThread(create_app(backend)) as srv:
        yield srv
    backend.close()


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


def test_completions_and_streaming(client):
    done = client.completions.create(model="testtime", prompt="The capital of France is", max_tokens=8,
                                      extra_body={"tts": {"strategy": "cot"}})
    assert done.choices[0].text and done.model_extra["tts"]["strategy"] == "cot"
    t0 = time.perf_counter()
    arrivals, chunks = [], []
    stream = client.chat.completions.create(
        model="testtime", messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=24, stream=True,
        stream_options={"include_usage": True}, seed=4)
    for chunk in stream:
        arrivals.append(time.perf_counter() - t0)
        chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert arrivals[0] < arrivals[-1]  # the first chunk came before the search ended
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_auto_with_the_shipped_table(client):
    r = client.chat.completions.create(
        model="testtime", messages=[{"role": "user", "content": "What is 7 + 6?"}], max_tokens=24, seed=2,
        extra_body={"tts": {"strategy": "auto", "budget": 2}})
    tts = r.model_extra["tts"]
    assert tts["requested"] == "auto" and tts["predicted_bin"] in ("easy", "medium", "hard")
    assert tts["decided_by"] and tts["budget"] <= 2


def test_non_math_question_says_which_rule_chose(client):
    r = client.chat.completions.create(
        model="testtime", messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        max_tokens=20, seed=3)
    tts = r.model_extra["tts"]
    assert r.choices[0].message.content.strip()
    if tts["answer"] is None:
        assert tts["selection_rule"] == "no_answer_first_sample" and tts["note"]
    else:
        assert tts["selection_rule"] == "majority"


def test_auth_and_caps(server, client):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="testtime", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=100000)
    assert e.value.body["param"] == "max_tokens" and "max_tokens" in e.value.body["message"]
