"""Adaptive self-consistency (adaptive_majority): windows, ESC's stopping rule, and the majority pool's samples."""

from __future__ import annotations

import pytest

from fakes import ScriptedPolicy
from testtime import engine
from testtime.errors import ConfigError
from testtime.search import strategy_class
from testtime.search.adaptive import AdaptiveMajority, AdaptiveOptions, settled
from testtime.types import Problem

PROBLEMS = [
    Problem("easy", "What is 2 + 2?", "4", kind="number"),  # the first window agrees: stops after 4
    Problem("split", "What is 3 + 5?", "8", kind="number"),  # never unanimous: draws all 16
    Problem("late", "What is 9 - 2?", "7", kind="number"),  # window 2 agrees: stops after 8
]
SCRIPT = {
    "What is 2 + 2?": ["4"],
    "What is 3 + 5?": ["8", "8", "6"],
    "What is 9 - 2?": ["7", "1", "7", None, "7", "7", "7", "7"],
}


def config(tmp_path, strategy="adaptive_majority", n=16):
    return engine.RunConfig(dataset="arith", strategy=strategy, n=n, out=str(tmp_path), fewshot=0, max_tokens=32)


def test_settled_is_escs_unanimous_window():
    assert settled(["4", "4.0", "$4$"])  # the same number however it is written
    assert not settled(["4", "4", "5"])
    assert not settled(["4", None])  # a sample without an answer settles nothing
    assert not settled([])


def test_traits_and_options():
    cls = strategy_class("adaptive_majority")
    assert cls is AdaptiveMajority and not cls.needs_scorer and not cls.is_tree and not cls.pooled
    with pytest.raises(ConfigError) as e:
        AdaptiveOptions(window=0)
    assert e.value.field == "window"


def test_stops_each_problem_when_its_window_agrees(tmp_path):
    policy = ScriptedPolicy(SCRIPT)
    res = engine.run(config(tmp_path), policy, PROBLEMS)
    used = {r.problem.id: r.trace.meta["samples_used"] for r in res.results}
    assert used == {"easy": 4, "split": 16, "late": 8}
    s = res.summary()  # --json: the samples actually drawn, of N = 16 per problem
    assert s["samples_used"] == 28 and s["mean_samples_used"] == pytest.approx(28 / 3)
    assert all(r.trace.correct for r in res.results)
    # one batched call per window, carrying every problem still voting, each asking for the next window
    assert [len(call) for call in policy.calls] == [3, 2, 1, 1]
    assert [(c.first_index, c.n) for c in policy.calls[1]] == [(4, 4), (4, 4)]
    assert res.summary()["generated_tokens"] < engine.run(config(tmp_path / "m", "majority"), ScriptedPolicy(SCRIPT),
                                                          PROBLEMS).summary()["generated_tokens"]


def test_samples_are_majority_votings_own(tmp_path):
    # after a majority@16 pool, adaptive voting generates nothing: sample i is the pool's sample i
    policy = ScriptedPolicy(SCRIPT)
    majority = engine.run(config(tmp_path, "majority"), policy, PROBLEMS)
    before = policy.n_generated
    res = engine.run(config(tmp_path), policy, PROBLEMS)
    assert policy.n_generated == before and res.compute.new_generations == 0
    for a, m in zip(res.results, majority.results, strict=True):
        k = a.trace.meta["samples_used"]
        assert [c.steps for c in a.trace.candidates] == [c.steps for c in m.trace.candidates[:k]]


def test_sweeps_run_it_per_budget_after_the_pool():
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import plan

    r = load_recipe(None, ["n_max=8", "prm=null", "strategies=[cot, adaptive_majority]"])
    assert [(s.label, n) for s, n in plan(r)] == [("majority", 8), ("cot", 1), ("adaptive_majority", 1),
                                                  ("adaptive_majority", 2), ("adaptive_majority", 4),
                                                  ("adaptive_majority", 8)]
