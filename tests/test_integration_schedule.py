"""Prefix-aware lanes on the real llama.cpp server: same greedy texts as one request at a time, and each
shared few-shot prefix evaluated once per lane instead of once per request. Small: 6 prompts, 12 tokens."""

from __future__ import annotations

import pytest

from testtime.datasets import load_dataset
from testtime.policy.base import GenerationRequest, SamplingParams
from testtime.replay import CachedGenerator
from testtime.search.base import SearchContext

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fresh_policy():
    """A server of its own: its slots hold no prefix from other tests."""
    from testtime.policy import load_policy

    policy = load_policy(None, slots=8, ctx_per_slot=2048)
    yield policy
    policy.close()


def test_lanes_keep_greedy_texts_and_evaluate_each_prefix_once(fresh_policy):
    problems = load_dataset("arith", limit=12, levels=[1, 3])
    problems = [p for p in problems if p.level == 1][:3] + [p for p in problems if p.level == 3][:3]
    ctx = SearchContext(CachedGenerator(fresh_policy, None))
    params = SamplingParams(max_tokens=12, temperature=0.0)
    requests = [GenerationRequest(ctx.prompt_for(p), 1, 17 + i, params) for i, p in enumerate(problems)]

    together = fresh_policy.generate(requests)
    evaluated = sum(c.prompt_tokens - c.cached_prompt_tokens for [c] in together)
    total = sum(c.prompt_tokens for [c] in together)
    # two few-shot prefixes shared by three prompts each: scattered over 8 slots, all 6 would be
    # evaluated in full; in lanes each prefix is evaluated about once (distinct ~= 0.4 x total here)
    assert evaluated <= 0.6 * total

    alone = [fresh_policy.generate([r])[0][0] for r in requests]
    assert [c.text for [c] in together] == [c.text for c in alone]
    assert [c.generated_tokens for [c] in together] == [c.generated_tokens for c in alone]
