"""The adaptive and confidence-based strategies on the real embedded model (SmolLM2-135M via llama.cpp):
llama.cpp's log-probabilities become stored confidences and confidence votes; adaptive voting reuses
majority's samples; particle filtering runs on the real step loop. Small token limits."""

from __future__ import annotations

import math

import pytest

from testtime import engine
from testtime.datasets import load_dataset
from testtime.reward import ArithCheck

pytestmark = pytest.mark.integration


def test_llamacpp_confidences_are_stored_and_vote(smollm2, tmp_path):
    problems = load_dataset("arith", limit=3, levels=[1, 2, 3])
    config = engine.RunConfig(dataset="arith", strategy="majority", n=4, out=str(tmp_path), max_tokens=96)
    first = engine.run(config, smollm2, problems)
    s = first.summary()
    assert set(s["selections"]) == {"majority", "confidence_vote", "confidence_top"}
    confs = [c.confidence for r in first.results for c in r.trace.candidates]
    for c, cand in zip(confs, [c for r in first.results for c in r.trace.candidates], strict=True):
        # one token confidence per generated token; -mean(top-5 logprob) is positive and finite
        assert c is not None and c.tokens == cand.generated_tokens
        assert min(c.lowest_group, c.mean, c.tail) > 0 and all(map(math.isfinite, (c.lowest_group, c.mean, c.tail)))
    assert len({round(c.mean, 6) for c in confs}) > 1  # real, per-sample figures
    again = engine.run(config, smollm2, problems)  # replayed from the store, confidences included
    assert again.summary()["new_generations"] == 0
    assert [c.confidence for r in again.results for c in r.trace.candidates] == confs
    assert again.summary()["selections"] == s["selections"]


def test_adaptive_majority_draws_majoritys_samples_and_fewer_of_them(smollm2, tmp_path):
    problems = load_dataset("arith", limit=2, levels=[1])  # single-digit addition: windows agree early
    base = engine.RunConfig(dataset="arith", strategy="majority", n=8, out=str(tmp_path), max_tokens=96)
    majority = engine.run(base, smollm2, problems)
    adaptive = engine.run(base.with_strategy("adaptive_majority", 8), smollm2, problems)
    s = adaptive.summary()
    assert s["new_generations"] == 0  # every sample it drew is one of the pool's
    assert s["samples_used"] < 16 and s["generated_tokens"] < majority.summary()["generated_tokens"]
    for a, m in zip(adaptive.results, majority.results, strict=True):
        k = a.trace.meta["samples_used"]
        assert [c.text for c in a.trace.candidates] == [c.text for c in m.trace.candidates[:k]]


def test_particle_filter_on_the_step_loop(smollm2, tmp_path):
    problems = load_dataset("arith", limit=2, levels=[1])
    config = engine.RunConfig(dataset="arith", strategy="particle_filter", n=3, out=str(tmp_path), max_tokens=96,
                              prm="arith-check", max_depth=6)
    first = engine.run(config, smollm2, problems, scorer=ArithCheck())
    for r in first.results:
        t = r.trace
        assert t.tree and 1 <= len(t.candidates) <= 3 and t.scoring is not None
        # each depth below the root holds at most N = 3 step samples (the particles)
        depths = [n.depth for n in t.tree if n.parent is not None]
        assert max(depths.count(d) for d in set(depths)) <= 3
    assert first.summary()["accuracy"] > 0  # level 1 is easy for the 135M model
    again = engine.run(config, smollm2, problems, scorer=ArithCheck())
    assert again.summary()["new_generations"] == 0
    assert [r.trace.tree for r in again.results] == [r.trace.tree for r in first.results]


def test_deepconf_online_thresholds_from_real_confidences(smollm2, tmp_path):
    problems = load_dataset("arith", limit=1, levels=[2])
    config = engine.RunConfig(dataset="arith", strategy="deepconf_online", n=6, out=str(tmp_path), max_tokens=96)
    first = engine.run(config, smollm2, problems)
    t = first.results[0].trace
    assert t.meta["threshold"] is not None and t.meta["threshold"] > 0  # llama.cpp gave every warm-up sample one
    assert len(t.candidates) + t.meta["stopped"] == 6
    assert "confidence_vote" in t.selections and t.answer == t.selections["confidence_vote"]
    assert t.compute.generated_tokens == sum(c.generated_tokens for c in t.candidates) + t.meta["stopped_tokens"]
    again = engine.run(config, smollm2, problems)
    assert again.summary()["new_generations"] == 0 and again.results[0].trace.answer == t.answer
