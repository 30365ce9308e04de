"""Aggregation of step rewards and answer selection, every pair in one pass."""

from __future__ import annotations

import pytest

from testtime.search.aggregation import AGGREGATIONS, NO_AGGREGATION, aggregate, all_selections, select
from testtime.search.selection import majority_vote


def test_aggregate_hand_computed():
    r = [0.9, 0.5, 0.8]
    assert aggregate(r, "last") == pytest.approx(0.8)
    assert aggregate(r, "min") == pytest.approx(0.5)
    assert aggregate(r, "mean") == pytest.approx(2.2 / 3)
    assert aggregate(r, "prod") == pytest.approx(0.36)
    assert aggregate([0.25], "prod") == 0.25


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_aggregate_empty_is_zero(how):
    assert aggregate([], how) == 0.0


def test_aggregate_unknown_names_valid_ones():
    with pytest.raises(ValueError, match="last, min, mean, prod"):
        aggregate([1.0], "max")


def test_select_majority_matches_majority_vote():
    answers = ["3", "5", "5.0", None, "3", "$5$"]
    assert select(answers, [0.0] * 6, "majority") == "5"
    assert select(answers, [0.0] * 6, "majority") == majority_vote(answers)[0]
    assert select(["3", "5"], [0.0, 1.0], "majority") == "3"  # tie: first seen; scores unused


def test_select_prm_max():
    answers = ["3", "5", None, "7"]
    assert select(answers, [0.2, 0.9, 1.0, 0.4], "prm_max") == "5"  # the None candidate is skipped
    assert select(answers, [0.6, 0.6, 1.0, 0.6], "prm_max") == "3"  # tie: earliest
    assert select(answers, [0.1, 0.6, 1.0, 0.6], "prm_max") == "5"
    assert select([None, None], [1.0, 0.5], "prm_max") is None
    assert select([], [], "prm_max") is None


def test_select_prm_vote():
    answers = ["3", "5", "3", "7", "5"]
    scores = [0.4, 0.9, 0.4, 0.1, 0.2]
    # sums: 3 -> 0.8, 5 -> 1.1, 7 -> 0.1
    assert select(answers, scores, "prm_vote") == "5"
    # prm_max would pick "5" too, but here voting beats the single best candidate:
    scores = [0.5, 0.9, 0.5, 0.1, 0.0]  # 3 -> 1.0, 5 -> 0.9
    assert select(answers, scores, "prm_vote") == "3"
    assert select(answers, scores, "prm_max") == "5"
    # tie of sums: the group seen first wins
    assert select(["7", "3", "3"], [1.0, 0.5, 0.5], "prm_vote") == "7"
    assert select(["3", "3", "7"], [0.5, 0.5, 1.0], "prm_vote") == "3"
    assert select([None], [1.0], "prm_vote") is None


def test_prm_vote_pools_equivalent_answers():
    answers = ["2\\sqrt{2}", "3", "\\sqrt{8}"]
    scores = [0.4, 0.7, 0.4]
    assert select(answers, scores, "prm_vote") == "3"  # 2\sqrt{2} and \sqrt{8} stay apart

    def equivalent(a: str, b: str) -> bool:
        return {a, b} == {"2\\sqrt{2}", "\\sqrt{8}"}

    assert select(answers, scores, "prm_vote", equivalent) == "2\\sqrt{2}"  # pooled: 0.8 > 0.7
    # answer_key already pools "19", "19.0" and "$19$" without `equivalent`
    assert select(["19", "20", "19.0"], [0.4, 0.7, 0.4], "prm_vote") == "19"


def test_select_validation():
    with pytest.raises(ValueError, match="majority, prm_max, prm_vote"):
        select(["1"], [1.0], "best_of_n")
    with pytest.raises(ValueError):
        select(["1", "2"], [1.0], "prm_max")


def test_all_selections_hand_computed():
    answers = ["3", "5", "3", None]
    rewards = [[0.9, 0.2], [0.6, 0.7], [0.3, 0.4], [1.0, 1.0]]
    out = all_selections(answers, rewards)
    assert set(out) == {(NO_AGGREGATION, "majority")} | {
        (a, s) for a in AGGREGATIONS for s in ("prm_max", "prm_vote")
    }
    assert out[(NO_AGGREGATION, "majority")] == "3"
    # last: 0.2, 0.7, 0.4 -> max "5"; vote 3: 0.6, 5: 0.7 -> "5"
    assert out[("last", "prm_max")] == "5"
    assert out[("last", "prm_vote")] == "5"
    # min: 0.2, 0.6, 0.3 -> max "5"; vote 3: 0.5, 5: 0.6 -> "5"
    assert out[("min", "prm_max")] == "5"
    assert out[("min", "prm_vote")] == "5"
    # mean: 0.55, 0.65, 0.35 -> max "5"; vote 3: 0.9, 5: 0.65 -> "3"
    assert out[("mean", "prm_max")] == "5"
    assert out[("mean", "prm_vote")] == "3"
    # prod: 0.18, 0.42, 0.12 -> max "5"; vote 3: 0.30, 5: 0.42 -> "5"
    assert out[("prod", "prm_max")] == "5"
    assert out[("prod", "prm_vote")] == "5"


def test_all_selections_consistent_with_individual_functions():
    answers = ["x+1", "1+x", "2", None, "(x+1)", "2", "", "3"]
    rewards = [[0.2, 0.9], [0.7], [0.5, 0.5, 0.6], [1.0], [0.3, 0.3], [], [0.9], [0.95, 0.1]]

    def equivalent(a: str, b: str) -> bool:
        return {a, b} <= {"x+1", "1+x", "(x+1)"}

    for eq in (None, equivalent):
        out = all_selections(answers, rewards, eq)
        assert out[(NO_AGGREGATION, "majority")] == select(answers, [0.0] * len(answers), "majority", eq)
        for agg in AGGREGATIONS:
            scores = [aggregate(r, agg) for r in rewards]
            for how in ("prm_max", "prm_vote"):
                assert out[(agg, how)] == select(answers, scores, how, eq), (agg, how, eq)
    # equivalence changes the majority: x+1 ~ 1+x ~ (x+1) (3 votes) beats "2" (2 votes)
    assert all_selections(answers, rewards)[(NO_AGGREGATION, "majority")] == "2"
    assert all_selections(answers, rewards, equivalent)[(NO_AGGREGATION, "majority")] == "x+1"
    # and prm_vote on mean scores: apart, x+1 0.55, 1+x 0.7, 2 0.533 + 0.0, (x+1) 0.3, 3 0.525;
    # pooled, x+1 ~ 1+x ~ (x+1) sum to 1.55
    assert all_selections(answers, rewards)[("mean", "prm_vote")] == "1+x"
    assert all_selections(answers, rewards, equivalent)[("mean", "prm_vote")] == "x+1"


def test_all_selections_no_answers():
    out = all_selections([None, None], [[1.0], [0.5]])
    assert all(v is None for v in out.values())
    with pytest.raises(ValueError):
        all_selections(["1"], [[1.0], [0.5]])
