"""particle_filter on the scripted step policy and scorer of the tree-search tests: resampling, batching, replay."""

from __future__ import annotations

import random

import pytest

from test_tree_search import PROBLEMS, NameScorer, StepPolicy, ctx_for, path_names
from testtime import engine
from testtime.errors import ConfigError
from testtime.search import strategy_class
from testtime.search.particle import ParticleFilter, ParticleOptions, resample


def test_traits_budgets_and_options():
    cls = strategy_class("particle_filter")
    assert cls is ParticleFilter and cls.needs_scorer and cls.is_tree and not cls.pooled
    assert cls.sweep_budgets([1, 2, 3, 8], ParticleOptions()) == [1, 2, 3, 8]  # any N: no beam width
    ParticleFilter(budget=3)  # no multiple-of-M rule
    with pytest.raises(ConfigError) as e:
        ParticleFilter(budget=0)
    assert e.value.field == "n"
    with pytest.raises(ConfigError) as e:
        ParticleOptions(softmax_temperature=0)
    assert e.value.field == "softmax_temperature"


def test_resample_draws_with_replacement_in_proportion():
    rng = random.Random(0)
    counts = [0, 0, 0]
    for _ in range(2000):
        for i, k in enumerate(resample([0.7, 0.2, 0.1], 1, rng)):
            counts[i] += k
    assert [round(c / 2000, 1) for c in counts] == [0.7, 0.2, 0.1]
    assert sum(resample([0.5, 0.5], 7, rng)) == 7 and resample([1.0], 0, rng) == [0]


def test_low_reward_particles_die_and_good_ones_multiply():
    # depth 1: r.0 is good, the rest poor; with T = 0.01 every resampled particle descends from r.0
    rewards = {"r.0": 0.9, "r.1": 0.1, "r.2": 0.1, "r.3": 0.1}
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 else None)
    pf = ParticleFilter(budget=4, options=ParticleOptions(softmax_temperature=0.01))
    [trace] = pf.run(PROBLEMS[:1], ctx_for(policy, NameScorer(rewards)))
    assert [(path_names(r.prompt)[-1], r.n) for r in policy.calls[1]] == [("r.0", 4)]
    assert sorted(c.steps[0].split(" ")[0] for c in trace.candidates) == ["r.0"] * 4
    assert trace.meta["finished"] == 4 and trace.answer == "7"
    pruned = sorted(n.step.split(" ")[0] for n in trace.tree if n.pruned == "rank")
    assert pruned == ["r.1", "r.2", "r.3"]


def test_flat_rewards_keep_diversity_where_beam_would_not():
    # equal rewards: the draw spreads the 8 particles over several parents (beam would keep fixed top ones)
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 else None)
    [trace] = ParticleFilter(budget=8).run(PROBLEMS[:1], ctx_for(policy, NameScorer({})))
    parents = [(path_names(r.prompt)[-1], r.n) for r in policy.calls[1]]
    assert sum(k for _p, k in parents) == 8 and len(parents) > 1
    assert len(trace.candidates) == 8


def test_one_policy_and_one_scorer_call_per_depth_for_every_problem():
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 3 else None)
    scorer = NameScorer({})
    ParticleFilter(budget=4).run(PROBLEMS, ctx_for(policy, scorer))
    assert len(policy.calls) == 3 and len(scorer.calls) == 3
    assert len(policy.calls[0]) == 3  # three roots, one request each
    for call in policy.calls:  # every depth: 4 samples per problem, all problems in one call
        per_problem: dict[str, int] = {}
        for r in call:
            q = r.prompt.split("question ")[1][0]
            per_problem[q] = per_problem.get(q, 0) + r.n
        assert per_problem == {"0": 4, "1": 4, "2": 4}


def test_finished_particles_leave_and_the_rest_are_resampled():
    # r.1 answers at depth 1: 3 particles remain to share depth 2
    policy = StepPolicy(lambda n: "answer" if n == "r.1" or n.count(".") == 2 else None)
    [trace] = ParticleFilter(budget=4).run(PROBLEMS[:1], ctx_for(policy, NameScorer({})))
    assert sum(r.n for r in policy.calls[1]) == 3
    assert "r.1" not in {path_names(r.prompt)[-1] for r in policy.calls[1]}
    assert len(trace.candidates) == 4


def test_the_draw_is_seeded_so_runs_replay_from_the_store(tmp_path):
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 3 else None)
    cfg = engine.RunConfig(dataset="arith", strategy="particle_filter", n=6, out=str(tmp_path), fewshot=0)
    first = engine.run(cfg, policy, PROBLEMS, scorer=NameScorer({"r.2": 0.8}))
    calls = len(policy.calls)
    again = engine.run(cfg, policy, PROBLEMS, scorer=NameScorer({"r.2": 0.8}))
    assert len(policy.calls) == calls and again.compute.new_generations == 0
    assert again.results[0].trace.tree == first.results[0].trace.tree
    s = first.summary()
    assert s["strategy"] == "particle_filter" and "prm_max" not in s["selections"] and "prm_last_max" in s["selections"]


def test_sweeps_run_it_at_every_budget():
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import plan

    r = load_recipe(None, ["n_max=4", "budgets=[1, 2, 4]", "strategies=[cot, particle_filter]"])
    assert [(s.label, n) for s, n in plan(r)][-3:] == [("particle_filter", 1), ("particle_filter", 2),
                                                      ("particle_filter", 4)]
