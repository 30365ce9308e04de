"""`testtime serve --stream-reasoning`: the search's progress as ``reasoning_content`` deltas before the answer.

The pure functions that turn what the request said and what the worker reported into reasoning lines; the
stream's shape on a scripted policy; and, marked integration, the real SmolLM2 behind the server driven by the
real ``openai`` SDK (small budgets and max_tokens: CI has 2 cores)."""

from __future__ import annotations

import json
from dataclasses import replace

import openai
import pytest
from fastapi.testclient import TestClient

from fakes import ScriptedPolicy
from testtime.serve import ServeConfig, Solver, create_app
from testtime.serve.app import reasoning_closing, reasoning_opening, reasoning_progress, settings_sources, tts_object
from testtime.serve.plan import plan_request
from testtime.serve.schemas import ChatRequest
from testtime.serve.solver import Answer
from testtime.serve.thread import ServerThread
from testtime.types import Compute

Q = "What is 2+2?"


def chat(content: str = Q, **extra) -> dict:
    return {"model": "testtime", "messages": [{"role": "user", "content": content}], **extra}


def answer(**kw) -> Answer:
    base = dict(text="... The answer is 4.", finish_reason="stop", rule="majority", note=None, candidates=4,
                prompt_tokens=20, cached_prompt_tokens=0, compute=Compute(generated_tokens=40), strategy="majority",
                budget=4, trace_id="run/req-1", replayed=False, wall_s=0.5, answer="4", generated_now=40,
                votes={"4": 3, "5": 1})
    return Answer(**{**base, **kw})


def one_line_each(lines: list[str]) -> None:
    assert lines and all(line.endswith("\n") and "\n" not in line[:-1] and line.strip() for line in lines), lines


# --- the pure functions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra,sources", [
    ({}, ("the server's default", "the server's default")),
    ({"reasoning_effort": "high"}, ("the server's default", "reasoning_effort high")),
    ({"reasoning_effort": "high", "tts": {"budget": 8, "strategy": "beam"}}, ("tts.strategy", "tts.budget")),
])
def test_settings_sources_follow_the_plans_precedence(extra, sources):
    cfg = ServeConfig(strategy="majority", budget=5)
    body = ChatRequest(**chat(**extra))
    plan = plan_request(body, cfg)
    assert settings_sources(body) == sources
    # the budget the words name is the one the plan got
    expected = {"tts.budget": 8, "reasoning_effort high": cfg.efforts["high"], "the server's default": 5}
    assert plan.budget == expected[sources[1]]


def test_opening_says_strategy_and_budget_before_any_sample():
    line = reasoning_opening("best_of_n", 8, "tts.strategy", "reasoning_effort high")
    assert line == "Strategy best_of_n (tts.strategy), budget 8 (reasoning_effort high).\n"
    auto = reasoning_opening("auto", 16, "the server's default", "reasoning_effort high")
    one_line_each([line, auto])
    assert auto.startswith("Strategy auto (the server's default), budget 16 (reasoning_effort high): ")


def test_progress_lines():
    assert reasoning_progress({"depth": 2, "samples": 16, "index": 0}) == [
        "Step 2: 16 samples drawn in this batch so far.\n"]
    # the worker's own count for this request, when it gives one, is the one said
    assert reasoning_progress({"depth": 3, "samples": 16, "request_samples": 8}) == [
        "Step 3: 8 samples drawn for this request so far.\n"]
    decided = {"strategy": "best_of_n", "budget": 8, "predicted_bin": "medium", "predicted_pass1": 0.3141,
               "decided_by": "table", "why": "raised 2 step(s):\nthe last bought 3 pts/TFLOP"}
    lines = reasoning_progress({"decided": decided, "index": 1})
    assert lines == ["Predicted difficulty: medium (predicted pass@1 0.31).\n",
                     "Searching with best_of_n at budget 8, decided by table.\n",
                     "Why: raised 2 step(s): the last bought 3 pts/TFLOP\n"]
    one_line_each(lines)
    assert reasoning_progress({"index": 0}) == []  # an event of a kind it does not know: nothing said


def test_closing_lines_votes_and_rule():
    lines = reasoning_closing(answer(), auto=False, decision_said=False)
    one_line_each(lines)
    assert lines == ["Kept 4 candidates; 40 tokens generated now.\n", "Votes: 4 (3 samples), 5 (1 sample).\n",
                     "Chose 4 by majority.\n"]
    replayed = reasoning_closing(answer(replayed=True, generated_now=0), auto=False, decision_said=False)
    assert replayed[0].startswith("Answered from the store") and "0 tokens generated now" in replayed[1]
    none = reasoning_closing(answer(answer=None, votes=None, rule="no_answer_best_score",
                                    note="no candidate stated an extractable final answer"), False, False)
    assert none == ["Kept 4 candidates; 40 tokens generated now.\n",
                    "No candidate stated an extractable final answer: replying with the best-scored candidate "
                    "(no_answer_best_score).\n"]


def test_closing_says_autos_decision_once():
    a = answer(strategy="best_of_n", budget=8, rule="prm_last_max", predicted_bin="hard", predicted_pass1=0.05,
               decided_by="robust: shift", why="these problems do not look like the calibration problems")
    said_at_end = reasoning_closing(a, auto=True, decision_said=False)
    one_line_each(said_at_end)
    assert said_at_end[:3] == ["Predicted difficulty: hard (predicted pass@1 0.05).\n",
                               "Searching with best_of_n at budget 8, decided by robust: shift.\n",
                               "Why: these problems do not look like the calibration problems\n"]
    # a progress event said it while the search ran: not again
    assert reasoning_closing(a, auto=True, decision_said=True) == said_at_end[3:]
    assert not any("Predicted" in x for x in reasoning_closing(a, auto=False, decision_said=False))


def test_tts_object_carries_why_and_votes():
    plan = plan_request(ChatRequest(**chat()), ServeConfig(strategy="auto"))
    a = answer(decided_by="table", predicted_bin="easy", predicted_pass1=0.9, why="cheapest: nothing helps")
    tts = tts_object(plan, [a])
    assert (tts["why"], tts["votes"]) == ("cheapest: nothing helps", {"4": 3, "5": 1})
    fixed = plan_request(ChatRequest(**chat()), ServeConfig(strategy="majority"))
    tts = tts_object(fixed, [a, answer(votes=None)])
    assert "why" not in tts and tts["votes"] == {"4": 3, "5": 1}  # why is auto's; votes every answer's
    assert tts["per_choice"][0]["votes"] == {"4": 3, "5": 1} and "votes" not in tts["per_choice"][1]


# --- the stream, on a scripted policy -------------------------------------------------------------------------


def make(tmp_path, **cfg):
    policy = ScriptedPolicy({Q: ["4", "5", "4", None]})
    cfg.setdefault("strategy", "majority")
    config = ServeConfig(out=str(tmp_path / "store"), batch_window_ms=5, **cfg)
    return create_app(Solver(policy, config))


def sse(text: str) -> tuple[list[str], list[dict]]:
    events = [block for block in text.split("\n\n") if block]
    return events, [json.loads(e[len("data: "):]) for e in events if e.startswith("data: {")]


def deltas(chunks: list[dict], key: str, index: int = 0) -> list[tuple[int, str]]:
    """(position in the stream, text) of every delta of choice ``index`` carrying ``key``."""
    return [(k, c["delta"][key]) for k, ch in enumerate(chunks) for c in ch["choices"]
            if c["index"] == index and c["delta"].get(key) is not None]


def test_stream_reasoning_then_content(tmp_path):
    with TestClient(make(tmp_path, budget=4, stream_reasoning=True)) as c:
        r = c.post("/v1/chat/completions", json=chat(stream=True, seed=1, stream_options={"include_usage": True}))
        whole = c.post("/v1/chat/completions", json=chat(seed=1)).json()
    events, chunks = sse(r.text)
    assert not any(e.startswith(": progress") for e in events)  # said as reasoning instead
    thought, said = deltas(chunks, "reasoning_content"), deltas(chunks, "content")
    assert thought and said and max(k for k, _ in thought) < min(k for k, _ in said)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(t for _, t in said) == whole["choices"][0]["message"]["content"]
    reasoning = "".join(t for _, t in thought)
    tts = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]][0]["tts"]
    assert tts["votes"] == {"4": 2, "5": 1}  # the script's four samples: 4, 5, 4, no answer
    assert reasoning == ("Strategy majority (the server's default), budget 4 (the server's default).\n"
                         "Step 1: 4 samples drawn in this batch so far.\n"
                         "Kept 4 candidates; " f"{tts['policy_tokens_generated']} tokens generated now.\n"
                         "Votes: 4 (2 samples), 5 (1 sample).\n"
                         "Chose 4 by majority.\n")
    assert chunks[-1]["usage"]["completion_tokens"] == tts["policy_tokens"] and events[-1] == "data: [DONE]"


def test_each_choice_reasons_under_its_own_index(tmp_path):
    with TestClient(make(tmp_path, budget=2, stream_reasoning=True)) as c:
        r = c.post("/v1/chat/completions", json=chat(stream=True, n=2, temperature=0.5))
    _, chunks = sse(r.text)
    for i in (0, 1):
        thought = "".join(t for _, t in deltas(chunks, "reasoning_content", i))
        assert thought.startswith("Strategy majority") and thought.count("Step 1:") == 1, thought
        assert thought.count("Kept 2 candidates") == 1


def test_completions_streams_are_unchanged_by_the_option(tmp_path):
    body = {"model": "testtime", "prompt": Q, "stream": True, "seed": 3, "max_tokens": 16}

    def stream(folder: str, **cfg) -> tuple[list[str], list[dict]]:
        with TestClient(make(tmp_path / folder, **cfg)) as c:
            events, chunks = sse(c.post("/v1/completions", json=body).text)
        for ch in chunks:  # what differs between any two streams: the id, the clock, the trace's timing
            ch["id"] = ch["created"] = None
            ch.get("tts", {}).pop("wall_s", None)
        return [e for e in events if not e.startswith("data: {")], chunks

    on, off = stream("on", stream_reasoning=True), stream("off")  # a fresh store each: neither replays
    assert any(e.startswith(": progress depth=1") for e in on[0])  # progress stays a comment line
    assert not any("reasoning_content" in json.dumps(ch) for ch in on[1])
    assert on == off


# --- the real model through the openai SDK ------------------------------------------------------------------


@pytest.fixture(scope="module")
def solver(smollm2, tmp_path_factory):
    cfg = ServeConfig(out=str(tmp_path_factory.mktemp("reasoning-store")), strategy="majority", budget=2,
                      max_tokens=24, max_tokens_cap=256, batch_window_ms=10)
    solver = Solver(smollm2, cfg)
    yield solver
    solver.close()


@pytest.fixture(scope="module")
def clients(solver):
    """Two servers over one solver (requests one at a time): with --stream-reasoning and without."""
    with ServerThread(create_app(solver, replace(solver.cfg, stream_reasoning=True))) as on, \
            ServerThread(create_app(solver)) as off:
        yield tuple(openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=300)
                    for s in (on, off))


def ask(client: openai.OpenAI, content: str, seed: int, **kw):
    return client.chat.completions.create(model="testtime", messages=[{"role": "user", "content": content}],
                                          max_tokens=24, seed=seed, **kw)


def read(stream) -> tuple[list[tuple[int, str]], list[tuple[int, str]], list]:
    """(reasoning deltas, content deltas, chunks), each delta with its position in the stream."""
    chunks = list(stream)
    thought, said = [], []
    for k, ch in enumerate(chunks):
        for c in ch.choices:
            r = (c.delta.model_extra or {}).get("reasoning_content")
            if r is not None:
                thought.append((k, r))
            if c.delta.content is not None:
                said.append((k, c.delta.content))
    return thought, said, chunks


@pytest.mark.integration
def test_sdk_reads_reasoning_before_the_answer(clients):
    on, _ = clients
    thought, said, chunks = read(ask(on, "What is 4 + 3?", 11, stream=True))
    assert thought and said and thought[-1][0] < said[0][0], (thought, said)
    reasoning = "".join(t for _, t in thought)
    tts = chunks[-1].model_extra["tts"]
    assert reasoning.startswith("Strategy majority (the server's default), budget 2 (the server's default).\n")
    assert "Step 1: 2 samples drawn in this batch so far.\n" in reasoning  # the search ran now, on the model
    # the last line names the rule that chose the reply (majority, or the no-answer fallback)
    assert not tts["replayed"] and tts["selection_rule"] in reasoning.splitlines()[-1]
    whole = ask(on, "What is 4 + 3?", 11)  # the same seeded request, not streamed
    assert "".join(t for _, t in said) == whole.choices[0].message.content


@pytest.mark.integration
def test_plain_clients_read_the_answer_unchanged(clients):
    on, off = clients
    plain = list(ask(off, "What is 9 - 4?", 12, stream=True))
    assert not any((c.delta.model_extra or {}).get("reasoning_content") for ch in plain for c in ch.choices)
    thought, _, chunks = read(ask(on, "What is 9 - 4?", 12, stream=True))
    assert thought  # the option was on: the reasoning came, and a client reading content only never sees it
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(c.choices[0].delta.content or "" for c in plain if c.choices)
    assert text.strip()


@pytest.mark.integration
def test_auto_reasoning_says_what_decided(clients, solver):
    on, _ = clients
    thought, said, chunks = read(ask(on, "What is 7 + 6?", 13, stream=True, reasoning_effort="low",
                                     extra_body={"tts": {"strategy": "auto"}}))
    tts = chunks[-1].model_extra["tts"]
    reasoning = "".join(t for _, t in thought)
    assert reasoning.startswith(f"Strategy auto (tts.strategy), budget {solver.cfg.efforts['low']} "
                                "(reasoning_effort low): ")
    decision = f"Searching with {tts['strategy']} at budget {tts['budget']}, decided by {tts['decided_by']}.\n"
    assert reasoning.count(decision) == 1, reasoning
    # auto says its decision as soon as it is made, before the search draws anything (not only at the end)
    assert "Step 1:" in reasoning and reasoning.index(decision) < reasoning.index("Step 1:"), reasoning
    assert f"Predicted difficulty: {tts['predicted_bin']} (predicted pass@1 {tts['predicted_pass1']:.2f}).\n" \
        in reasoning
    if tts.get("votes"):
        assert "Votes: " + ", ".join(f"{a} ({n} sample{'s' if n != 1 else ''})"
                                     for a, n in tts["votes"].items()) in reasoning
    else:  # no sample stated an answer: no vote to report
        assert "Votes:" not in reasoning
    assert thought[-1][0] < said[0][0]
