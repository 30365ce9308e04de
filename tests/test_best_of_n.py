"""Best-of-N through the engine with a scripted policy and a scripted scorer: every selection graded."""

from __future__ import annotations

import copy
import math

import pytest

from fakes import ScriptedPolicy
from testtime import engine
from testtime.datasets import load_dataset
from testtime.errors import ConfigError
from testtime.reward.base import BatchScorer, RewardError, Scored, ScoreRequest
from testtime.search.selection import AGGREGATIONS, selection_of


class ScriptedScorer(BatchScorer):
    """Rewards by (question, candidate position within one call); counts calls and solutions scored."""

    def __init__(self, rewards: dict[str, list[list[float]]], n_params: int = 500, outcome_only: bool = False):
        self.rewards = rewards
        self.n_params = n_params
        self.outcome_only = outcome_only
        self.name = "scripted-scorer"
        self.calls: list[int] = []

    def score_batch(self, requests):
        self.calls.append(len(requests))
        seen: dict[str, int] = {}
        out = []
        for r in requests:
            i = seen.get(r.question, 0)
            seen[r.question] = i + 1
            out.append(Scored(list(self.rewards[r.question][i]), tokens=10 * len(r.steps)))
        return out


@pytest.fixture(scope="module")
def problems():
    ps = load_dataset("arith", limit=2)
    assert [p.answer for p in ps] == ["9", "5"]
    return ps


# problem 0 (answer 9): the table in test_selections_per_pair; problem 1 (answer 5): every pair right.
ANSWERS = [["9", "7", "7", "9.0"], ["5", "5", "3", "5"]]
REWARDS = [
    [[1.0, 0.9], [0.1, 0.8], [1.0, 0.8], [1.0, 0.2]],
    [[0.5, 0.5], [0.5, 0.5], [0.9, 0.7], [0.5, 0.5]],
]


def setup(problems, **kw):
    policy = ScriptedPolicy({p.question: a for p, a in zip(problems, ANSWERS, strict=True)}, n_params=1000)
    scorer = ScriptedScorer({p.question: copy.deepcopy(r) for p, r in zip(problems, REWARDS, strict=True)}, **kw)
    return policy, scorer


def config(tmp_path, **kw):
    base = dict(dataset="arith", strategy="best_of_n", n=4, limit=2, out=str(tmp_path / "runs"), max_tokens=64)
    return engine.RunConfig(**{**base, **kw})


def test_selections_per_pair(tmp_path, problems):
    policy, scorer = setup(problems)
    res = engine.run(config(tmp_path), policy, problems, scorer=scorer)
    t0 = res.results[0].trace
    # max picks candidate 0 ("9") under every aggregation; vote sums per answer group:
    # last: 9 -> .9+.2=1.1, 7 -> .8+.8=1.6 (wrong); min: 1.1 vs .9; mean: 1.55 vs 1.35; prod: 1.1 vs .88
    expected = {"majority": "9"}
    for agg in AGGREGATIONS:
        expected[f"prm_{agg}_max"] = "9"
        expected[f"prm_{agg}_vote"] = "7" if agg == "last" else "9"
    assert t0.selections == expected
    assert t0.selections_correct == {k: v != "7" for k, v in expected.items()}
    # problem 1: the lone "3" has the top score, so every max pick is "3"; votes and majority pick "5"
    t1 = res.results[1].trace
    assert {k for k, v in t1.selections.items() if v == "3"} == {f"prm_{a}_max" for a in AGGREGATIONS}
    s = res.summary()
    assert s["selections"]["prm_last_vote"] == 0.5 and s["selections"]["majority"] == 1.0
    assert s["selections"]["prm_min_max"] == 0.5 and s["selections"]["prm_min_vote"] == 1.0
    assert s["selection"] == "prm_last_max" and t0.answer == "9" and s["accuracy"] == 0.5
    assert s["prm"] == "scripted-scorer" and s["oracle_upper_bound"] is False


def test_one_scoring_call_per_batch_and_prm_compute(tmp_path, problems):
    policy, scorer = setup(problems)
    res = engine.run(config(tmp_path), policy, problems, scorer=scorer)
    assert scorer.calls == [8]  # both problems' 4 candidates in one call
    for r in res.results:
        steps = sum(len(c.steps) for c in r.trace.candidates)
        assert r.trace.compute.prm_tokens == 10 * steps
        assert r.trace.compute.prm_flops == 2.0 * 500 * 10 * steps
    s = res.summary()
    assert s["prm_tokens"] == 10 * 16 and s["flops"] == pytest.approx(res.compute.policy_flops + 2.0 * 500 * 160)


def test_rerun_replays_rewards_and_generations(tmp_path, problems):
    policy, scorer = setup(problems)
    first = engine.run(config(tmp_path), policy, problems, scorer=scorer)
    generated = policy.n_generated
    # the same run again resumes from its stored results: nothing generated, nothing scored
    again = engine.run(config(tmp_path), policy, problems, scorer=scorer)
    assert again.run_id == first.run_id and again.compute.new_generations == 0
    assert len(scorer.calls) == 1 and policy.n_generated == generated
    assert again.summary()["selections"] == first.summary()["selections"]
    # another run over the same samples (another reported selection: another run id) replays them and
    # their step rewards from the store
    second = engine.run(config(tmp_path, aggregation="min"), policy, problems, scorer=scorer)
    assert second.run_id != first.run_id
    assert len(scorer.calls) == 1 and policy.n_generated == generated
    assert second.results[0].trace.scoring.rewards_from_store == 4
    assert second.results[0].trace.scoring.selection == "prm_min_max"
    assert [r.trace.scoring.rewards for r in second.results] == [r.trace.scoring.rewards for r in first.results]
    assert second.summary()["selections"] == first.summary()["selections"]


def test_best_of_n_reuses_majority_samples(tmp_path, problems):
    policy, scorer = setup(problems)
    engine.run(config(tmp_path, strategy="majority"), policy, problems)
    generated = policy.n_generated
    res = engine.run(config(tmp_path, selection="majority"), policy, problems, scorer=scorer)
    assert policy.n_generated == generated  # same prompts, seeds and keys as majority voting
    assert [r.trace.answer for r in res.results] == ["9", "5"]


def test_chosen_selection_and_run_identity(tmp_path, problems):
    policy, scorer = setup(problems)
    a = engine.run(config(tmp_path, aggregation="min", selection="prm_vote"), policy, problems, scorer=scorer)
    b = engine.run(config(tmp_path, aggregation="last", selection="prm_vote"), policy, problems, scorer=scorer)
    assert a.results[0].trace.answer == "9" and b.results[0].trace.answer == "7"
    assert a.run_id != b.run_id
    # majority runs keep the identity they had before PRM options existed
    assert "prm" not in config(tmp_path, strategy="majority").identity("m")


def test_nan_reward_is_an_error_not_a_silent_pick(tmp_path, problems):
    policy, scorer = setup(problems)
    scorer.rewards[problems[0].question][2] = [1.0, math.nan]
    with pytest.raises(RewardError, match="not a number"):
        engine.run(config(tmp_path), policy, problems, scorer=scorer)


def test_wrong_reward_count_is_an_error(tmp_path, problems):
    policy, scorer = setup(problems)
    scorer.rewards[problems[1].question][0] = [1.0]
    with pytest.raises(RewardError, match="2 steps but got 1 rewards"):
        engine.run(config(tmp_path), policy, problems, scorer=scorer)


def test_needs_a_scorer(tmp_path, problems):
    policy, _ = setup(problems)
    with pytest.raises(ConfigError, match="needs a step scorer") as e:
        engine.run(config(tmp_path), policy, problems)
    assert e.value.field == "prm"  # the field, not a CLI flag: the CLI spells it --prm


def test_oracle_runs_are_flagged_and_reach_pass_at_n(tmp_path, problems):
    policy, _ = setup(problems)
    res = engine.run(config(tmp_path, prm="oracle"), policy, problems)
    s = res.summary()
    assert s["oracle_upper_bound"] is True and s["prm"] == "oracle"
    assert s["accuracy"] == s["pass@n"] == 1.0


def test_arith_check_by_spec(tmp_path, problems):
    policy, _ = setup(problems)
    res = engine.run(config(tmp_path, prm="arith-check"), policy, problems)
    # scripted steps state no arithmetic: every reward is the neutral 0.5
    assert all(r == 0.5 for x in res.results for c in x.trace.scoring.rewards for r in c)


def test_selection_names():
    assert selection_of("last", "majority").name == "majority"
    assert selection_of("min", "prm_vote").name == "prm_min_vote"
    assert selection_of("last", "prm_max").name == "prm_last_max"


def test_scored_request_steps_are_stripped(tmp_path, problems):
    policy, scorer = setup(problems)
    seen: list[ScoreRequest] = []
    inner = scorer.score_batch

    def spy(requests):
        seen.extend(requests)
        return inner(requests)

    scorer.score_batch = spy
    engine.run(config(tmp_path), policy, problems, scorer=scorer)
    assert all(s == s.strip() for r in seen for s in r.steps)
    assert seen[0].reference == "9" and seen[0].kind == "arith"


# --- the reported selection follows the scorer unless given ---------------------------------------------


class DeclaringScorer(ScriptedScorer):
    """The same rewards, from a scorer that says its last step carries nothing (as arith-check does)."""

    aggregations = ("min", "mean", "prod")
    default_selection = "prm_mean_vote"


def declaring(problems):
    policy, scorer = setup(problems)
    return policy, DeclaringScorer(scorer.rewards)


def test_unset_aggregation_and_selection_follow_the_scorer(tmp_path, problems):
    policy, scorer = declaring(problems)
    res = engine.run(config(tmp_path), policy, problems, scorer=scorer)
    t0 = res.results[0].trace
    # prm_last_max (what a scorer that declares nothing reports) would also say "9" here; prm_last_vote "7"
    assert t0.scoring.selection == "prm_mean_vote" and t0.answer == "9"
    s = res.summary()
    assert s["selection"] == "prm_mean_vote" and s["accuracy"] == s["selections"]["prm_mean_vote"] == 1.0
    assert (res.config.aggregation, res.config.selection) == ("mean", "prm_vote")  # the run as it was built
    # the same config with a scorer that declares nothing reports prm_last_max: another run id
    plain = engine_run(config(tmp_path, out=str(tmp_path / "plain")), problems, setup)
    assert plain.summary()["selection"] == "prm_last_max" and plain.run_id != res.run_id


def engine_run(cfg, problems, scorer_factory):
    policy, scorer = scorer_factory(problems)
    return engine.run(cfg, policy, problems, scorer=scorer)


def test_a_given_selection_is_never_overridden_and_keeps_its_run_id(tmp_path, problems, caplog):
    cfg = config(tmp_path, aggregation="last", selection="prm_vote", batch_sequences=4)  # two batches
    with caplog.at_level("WARNING", logger="testtime.engine"):
        res = engine_run(cfg, problems, declaring)
    assert res.results[0].trace.scoring.selection == "prm_last_vote" and res.results[0].trace.answer == "7"
    # measured anyway, with one line (once per run, not per batch) saying the scorer finds no signal in it
    warned = [r.getMessage() for r in caplog.records if r.name == "testtime.engine"]
    assert warned == ["aggregation last: scorer scripted-scorer declares no signal in it (supported: min, mean, "
                      "prod); reporting it anyway"]
    # the declaration does not enter an explicit run's identity: same run id as with a scorer declaring nothing
    other = engine_run(config(tmp_path, aggregation="last", selection="prm_vote", out=str(tmp_path / "o")),
                       problems, setup)
    assert other.run_id == res.run_id


@pytest.mark.parametrize("given, reported", [
    ({"selection": "prm_max"}, "prm_mean_max"),  # the rule given, the scorer's aggregation
    ({"aggregation": "min"}, "prm_min_vote"),  # the aggregation given, the scorer's rule
    ({"aggregation": "prod", "selection": "prm_max"}, "prm_prod_max"),
    ({"selection": "majority"}, "majority"),
])
def test_only_what_is_left_unset_follows_the_scorer(tmp_path, problems, caplog, given, reported):
    with caplog.at_level("WARNING", logger="testtime.engine"):
        res = engine_run(config(tmp_path, **given), problems, declaring)
    assert res.summary()["selection"] == reported and not caplog.records
    for k, v in given.items():
        assert getattr(res.config, k) == v


def test_run_ids_of_given_selections_are_those_from_before_scorers_declared_defaults():
    """Pinned: run ids computed before aggregation / selection could follow the scorer. An explicit
    selection, or a scorer that declares nothing (the judge), keeps its run id; majority ignores the
    aggregation and keeps the one it carried; only arith-check's default run moved (prm_last_max -> mean)."""
    from testtime.execution import ScorerInfo
    from testtime.reward import ArithCheck

    arith, judge = ScorerInfo.of(ArithCheck()), ScorerInfo("judge")

    def rid(info, **kw):
        cfg = engine.RunConfig(strategy="best_of_n", n=8, prm="arith-check", **kw).for_scorer(info)
        return engine.run_id_for(cfg.identity("m", info.name))

    assert rid(arith, aggregation="min", selection="prm_vote") == "arith-best_of_n-n8-08c52ac46d2a"
    assert rid(arith, aggregation="last", selection="prm_max") == "arith-best_of_n-n8-55b9e4b61b9f"
    assert rid(arith, selection="majority") == "arith-best_of_n-n8-992c060c1f27"
    assert rid(judge) == "arith-best_of_n-n8-715507b95e4c"
    assert rid(arith) == rid(arith, aggregation="mean", selection="prm_max") != rid(
        arith, aggregation="last", selection="prm_max")
