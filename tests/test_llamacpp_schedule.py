"""Prefix-aware scheduling of the llama.cpp policy: the lane planner, and how generate / next_token_logprobs
route requests to slots (a scripted server stands in for llama.cpp; the real one: test_integration_schedule)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testtime.backends.llamacpp import common_prefix_len, distinct_chars, in_slot, plan_lanes
from testtime.policy.base import GenerationRequest, SamplingParams
from testtime.policy.llamacpp import LlamaCppPolicy

FEWSHOT = {level: f"system\nworked examples for level {level}: " + "x" * 400 + "\n" for level in (1, 2, 3)}


def _prompts(per_level: int) -> list[str]:
    # interleaved levels, as a batch of problems comes
    return [FEWSHOT[level] + f"question {q} of level {level}?" for q in range(per_level) for level in (1, 2, 3)]


def test_distinct_chars_is_the_prefix_trie_size():
    assert distinct_chars(["abc", "abd", "x"]) == 3 + 1 + 1
    assert distinct_chars(["abc", "abc"]) == 3
    assert common_prefix_len("abc", "abd") == 2


def test_one_lane_per_few_shot_prefix_under_a_small_budget():
    prompts = _prompts(4)
    assert len(plan_lanes(prompts, max_lanes=16, overhead=0.0).lanes) == 1  # levels share the system turn
    plan = plan_lanes(prompts, max_lanes=16, overhead=0.05)  # room to repeat the system turn, not a prefix
    assert len(plan.lanes) == 3
    for lane in plan.lanes:
        levels = {prompts[i].split("level ")[1][0] for i in lane}
        assert len(levels) == 1  # a lane never mixes few-shot prefixes it would evaluate twice
        assert [prompts[i] for i in lane] == sorted(prompts[i] for i in lane)
    assert plan.planned_chars == plan.distinct_chars + 2 * len("system\nworked examples for level ")


def test_more_lanes_only_within_the_overhead_budget():
    prompts = _prompts(6)
    tight = plan_lanes(prompts, max_lanes=16, overhead=0.1)
    loose = plan_lanes(prompts, max_lanes=16, overhead=1.0)
    assert len(loose.lanes) > len(tight.lanes) >= 3
    for plan, overhead in ((tight, 0.1), (loose, 1.0)):
        assert plan.planned_chars <= plan.distinct_chars * (1 + overhead)
    assert len(plan_lanes(prompts, max_lanes=2, overhead=1.0).lanes) == 2


@given(st.lists(st.text(alphabet="ab", max_size=6), max_size=12), st.integers(1, 6), st.floats(0, 2))
def test_lanes_cover_every_prompt_once(prompts, max_lanes, overhead):
    plan = plan_lanes(prompts, max_lanes, overhead)
    assert sorted(i for lane in plan.lanes for i in lane) == list(range(len(prompts)))
    assert len(plan.lanes) <= max(1, max_lanes)
    assert all(plan.lanes)
    # what the lanes evaluate from cold slots, counted directly
    evaluated = 0
    for lane in plan.lanes:
        prev = ""
        for i in lane:
            evaluated += len(prompts[i]) - common_prefix_len(prev, prompts[i])
            prev = prompts[i]
    assert evaluated == plan.planned_chars
    assert plan.distinct_chars <= plan.planned_chars <= plan.distinct_chars * (1 + overhead) + 1e-9


def test_in_slot_pins_a_copy():
    body = {"prompt": "p"}
    assert in_slot(body, 3) == {"prompt": "p", "id_slot": 3} and "id_slot" not in body
    assert in_slot(body, None) is body


class _Info:
    eog_ids = frozenset({2})


class ScriptedServer:
    """Answers like llama.cpp's completion handler; one cached prompt per slot; records what it got."""

    def __init__(self, fail_on: str | None = None):
        self.bodies: list[dict] = []
        self.cache: dict[int, str] = {}
        self.lock = threading.Lock()
        self.fail_on = fail_on

    def handle_completions(self, body: dict) -> dict:
        with self.lock:
            self.bodies.append(body)
            slot = body.get("id_slot", -1)  # unpinned: one shared cache stands in for the server's pick
            cached = common_prefix_len(self.cache.get(slot, ""), body["prompt"])
            self.cache[slot] = body["prompt"]
        if self.fail_on and self.fail_on in body["prompt"]:
            return {"error": "boom"}
        n = body["n"]
        return {
            "timings": {"prompt_n": len(body["prompt"]) - cached, "cache_n": cached},
            "choices": [{"index": k, "text": f"{body['prompt'][-12:]}|{body['seed']}", "finish_reason": "length",
                         "logprobs": {"content": [{"id": 7, "top_logprobs": [{"token": "Yes", "logprob": -0.1}]}]}}
                        for k in range(n)],
        }


def _policy(server: ScriptedServer, slots: int = 8) -> LlamaCppPolicy:
    policy = LlamaCppPolicy.__new__(LlamaCppPolicy)  # no model: the scheduling alone
    policy.info = _Info()
    policy.slots = slots
    policy.prefix_overhead = 0.05
    policy.pin_lanes = True
    policy.turn_stops = ()  # a chat-templated model: no plain-turn stop
    policy._server = server
    policy._pool = ThreadPoolExecutor(max_workers=slots)
    return policy


def test_generate_pins_each_shared_prefix_to_one_slot_and_keeps_sample_order():
    server = ScriptedServer()
    policy = _policy(server)
    prompts = _prompts(3)
    params = SamplingParams(max_tokens=4, temperature=0.0)
    requests = [GenerationRequest(p, 2, 10 * i, params) for i, p in enumerate(prompts)]
    chunks = []
    out = policy.generate(requests, on_chunk=lambda ri, first, comps: chunks.append((ri, first, len(comps))))
    assert [[c.text for c in comps] for comps in out] == [[f"{p[-12:]}|{10 * i}"] * 2 for i, p in enumerate(prompts)]
    assert sorted(chunks) == [(i, 0, 2) for i in range(len(prompts))]
    slots = {}
    for body in server.bodies:
        slots.setdefault(body["prompt"].split("level ")[1][0], set()).add(body["id_slot"])
    assert all(len(s) == 1 for s in slots.values()) and len(set().union(*slots.values())) == 3
    # each few-shot prefix evaluated once: the slots evaluate the distinct text and the system turn twice more
    evaluated = sum(c.prompt_tokens - c.cached_prompt_tokens for comps in out for c in comps[:1])
    assert evaluated == distinct_chars(prompts) + 2 * len("system\nworked examples for level ")


def test_generate_splits_a_request_wider_than_the_slots_within_its_lane():
    server = ScriptedServer()
    policy = _policy(server, slots=4)
    req = GenerationRequest(_prompts(1)[0], 10, 5, SamplingParams(max_tokens=4), first_index=2)
    [comps] = policy.generate([req])
    assert [b["seed"] for b in server.bodies] == [7, 11, 15]  # pieces of 4, 4, 2 samples, one after another
    assert [b["n"] for b in server.bodies] == [4, 4, 2]
    assert len({b["id_slot"] for b in server.bodies}) == 1
    assert len(comps) == 10


def test_generate_lanes_leave_room_for_the_samples_of_each_request():
    server = ScriptedServer()
    policy = _policy(server, slots=8)
    policy.prefix_overhead = 10.0  # as many lanes as the slots allow
    reqs = [GenerationRequest(f"prompt {i}", 4, i, SamplingParams()) for i in range(8)]
    policy.generate(reqs)
    assert {b["id_slot"] for b in server.bodies} == {0, 1}  # 8 slots // 4 samples per request


def test_generate_raises_the_backend_error_after_reporting_finished_pieces():
    server = ScriptedServer(fail_on="question 1 of level 2")
    policy = _policy(server)
    seen = []
    with pytest.raises(RuntimeError, match="completion failed"):
        policy.generate([GenerationRequest(p, 1, 0, SamplingParams()) for p in _prompts(2)],
                        on_chunk=lambda ri, first, comps: seen.append(ri))
    assert seen  # other lanes' finished pieces reached the store before the error


def test_next_token_logprobs_runs_a_solutions_growing_prompts_in_one_slot():
    server = ScriptedServer()
    policy = _policy(server)
    policy.prefix_overhead = 0.5
    chains = [[f"question {q} solution {s} " + "step. " * k for k in range(1, 5)] for q in range(2) for s in range(3)]
    prompts = [p for chain in chains for p in chain]
    out = policy.next_token_logprobs(prompts, top_k=5)
    assert len(out) == len(prompts) and all(r.top == {"Yes": -0.1} for r in out)
    slot_of = {b["prompt"]: b["id_slot"] for b in server.bodies}
    assert all(len({slot_of[p] for p in chain}) == 1 for chain in chains)
    assert len(set(slot_of.values())) == len(chains)  # the chains run side by side
    # each prompt after the first of a chain evaluates only its new step: the question repeats at most
    evaluated = sum(r.prompt_tokens - r.cached_prompt_tokens for r in out)
    assert distinct_chars(prompts) <= evaluated <= 1.5 * distinct_chars(prompts) < sum(map(len, prompts)) / 2


def test_unpinned_lanes_leave_the_slot_to_the_server_but_keep_lane_order():
    server = ScriptedServer()
    policy = _policy(server)
    policy.pin_lanes = False
    prompts = _prompts(2)
    out = policy.generate([GenerationRequest(p, 1, 0, SamplingParams()) for p in prompts])
    assert len(out) == len(prompts) and all("id_slot" not in b for b in server.bodies)
    plan = plan_lanes(prompts, policy.slots, policy.prefix_overhead)
    for lane in plan.lanes:  # each lane's requests reached the server in sorted order
        sent = [b["prompt"] for b in server.bodies if b["prompt"] in {prompts[i] for i in lane}]
        assert sent == sorted(sent)
