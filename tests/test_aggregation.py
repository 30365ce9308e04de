"""Aggregation of step rewards and answer selection: the Selection vocabulary, one Pool implementation."""

from __future__ import annotations

import pytest

from testtime.errors import ConfigError
from testtime.search.selection import (
    AGGREGATIONS,
    MAJORITY,
    SELECTIONS,
    Pool,
    Selection,
    aggregate,
    all_selections,
    majority_vote,
    select,
    selection_of,
)


def pick(answers, scores, rule, equivalent=None):
    """A selection over already-aggregated scores: each score as a one-step candidate, aggregated by last."""
    return select(answers, [[s] for s in scores], selection_of("last", rule), equivalent)


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


def test_aggregate_unknown_names_the_field_and_valid_ones():
    with pytest.raises(ConfigError, match="last, min, mean, prod") as e:
        aggregate([1.0], "max")
    assert e.value.field == "aggregation"


def test_aggregate_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        aggregate([0.5, float("nan")], "min")


def test_selection_names_are_registry_keys():
    # the report name is the key: nothing is composed and parsed back
    assert list(SELECTIONS) == (["majority"] + [f"prm_{a}_{r}" for a in AGGREGATIONS for r in ("max", "vote")]
                                + ["confidence_vote", "confidence_top"])
    for name, sel in SELECTIONS.items():
        assert sel.name == name
        assert sel.uses_scores == name.startswith("prm_")  # PRM step rewards; confidence votes use none
    assert selection_of("min", "prm_vote") is SELECTIONS["prm_min_vote"]
    assert selection_of("prod", "majority") is MAJORITY  # majority ignores the aggregation
    with pytest.raises(ConfigError) as e:
        Selection("best_of_n")
    assert e.value.field == "selection" and "majority, prm_max, prm_vote" in str(e.value)
    with pytest.raises(ConfigError) as e:
        Selection("prm_max", "median")
    assert e.value.field == "aggregation"


def test_select_majority_matches_majority_vote():
    answers = ["3", "5", "5.0", None, "3", "$5$"]
    assert select(answers, None, MAJORITY) == "5"
    assert select(answers, None, MAJORITY) == majority_vote(answers)[0]
    assert pick(["3", "5"], [0.0, 1.0], "majority") == "3"  # tie: first seen; scores unused


def test_select_prm_max():
    answers = ["3", "5", None, "7"]
    assert pick(answers, [0.2, 0.9, 1.0, 0.4], "prm_max") == "5"  # the None candidate is skipped
    assert pick(answers, [0.6, 0.6, 1.0, 0.6], "prm_max") == "3"  # tie: earliest
    assert pick(answers, [0.1, 0.6, 1.0, 0.6], "prm_max") == "5"
    assert pick([None, None], [1.0, 0.5], "prm_max") is None
    assert pick([], [], "prm_max") is None


def test_select_prm_vote():
    answers = ["3", "5", "3", "7", "5"]
    scores = [0.4, 0.9, 0.4, 0.1, 0.2]
    # sums: 3 -> 0.8, 5 -> 1.1, 7 -> 0.1
    assert pick(answers, scores, "prm_vote") == "5"
    # prm_max would pick "5" too, but here voting beats the single best candidate:
    scores = [0.5, 0.9, 0.5, 0.1, 0.0]  # 3 -> 1.0, 5 -> 0.9
    assert pick(answers, scores, "prm_vote") == "3"
    assert pick(answers, scores, "prm_max") == "5"
    # tie of sums: the group seen first wins
    assert pick(["7", "3", "3"], [1.0, 0.5, 0.5], "prm_vote") == "7"
    assert pick(["3", "3", "7"], [0.5, 0.5, 1.0], "prm_vote") == "3"
    assert pick([None], [1.0], "prm_vote") is None


def test_prm_vote_pools_equivalent_answers():
    answers = ["2\\sqrt{2}", "3", "\\sqrt{8}"]
    scores = [0.4, 0.7, 0.4]
    assert pick(answers, scores, "prm_vote") == "3"  # 2\sqrt{2} and \sqrt{8} stay apart

    def equivalent(a: str, b: str) -> bool:
        return {a, b} == {"2\\sqrt{2}", "\\sqrt{8}"}

    assert pick(answers, scores, "prm_vote", equivalent) == "2\\sqrt{2}"  # pooled: 0.8 > 0.7
    # answer_key already pools "19", "19.0" and "$19$" without `equivalent`
    assert pick(["19", "20", "19.0"], [0.4, 0.7, 0.4], "prm_vote") == "19"


def test_select_validation():
    with pytest.raises(ValueError):
        select(["1", "2"], [[1.0]], SELECTIONS["prm_last_max"])
    with pytest.raises(ValueError, match="not scored"):
        Pool.of([0, 1]).choose(SELECTIONS["prm_last_max"])


def test_all_selections_hand_computed():
    answers = ["3", "5", "3", None]
    rewards = [[0.9, 0.2], [0.6, 0.7], [0.3, 0.4], [1.0, 1.0]]
    out = all_selections(answers, rewards)
    assert list(out) == [k for k, s in SELECTIONS.items() if not s.uses_confidence]  # no confidences given
    assert out["majority"] == "3"
    # last: 0.2, 0.7, 0.4 -> max "5"; vote 3: 0.6, 5: 0.7 -> "5"
    assert out["prm_last_max"] == "5"
    assert out["prm_last_vote"] == "5"
    # min: 0.2, 0.6, 0.3 -> max "5"; vote 3: 0.5, 5: 0.6 -> "5"
    assert out["prm_min_max"] == "5"
    assert out["prm_min_vote"] == "5"
    # mean: 0.55, 0.65, 0.35 -> max "5"; vote 3: 0.9, 5: 0.65 -> "3"
    assert out["prm_mean_max"] == "5"
    assert out["prm_mean_vote"] == "3"
    # prod: 0.18, 0.42, 0.12 -> max "5"; vote 3: 0.30, 5: 0.42 -> "5"
    assert out["prm_prod_max"] == "5"
    assert out["prm_prod_vote"] == "5"
    # an unscored pool supports majority only
    assert list(all_selections(answers, None)) == ["majority"]


def test_all_selections_consistent_with_individual_selections():
    answers = ["x+1", "1+x", "2", None, "(x+1)", "2", "", "3"]
    rewards = [[0.2, 0.9], [0.7], [0.5, 0.5, 0.6], [1.0], [0.3, 0.3], [], [0.9], [0.95, 0.1]]

    def equivalent(a: str, b: str) -> bool:
        return {a, b} <= {"x+1", "1+x", "(x+1)"}

    for eq in (None, equivalent):
        out = all_selections(answers, rewards, eq)
        for name, sel in SELECTIONS.items():
            if sel.uses_confidence:  # this pool has no per-sample confidences (tests/test_confidence.py)
                assert name not in out
                continue
            assert out[name] == select(answers, rewards, sel, eq), (name, eq)
            # the same rule over flat scores of that aggregation
            if sel.uses_scores:
                scores = [aggregate(r, sel.aggregation) for r in rewards]
                assert out[name] == pick(answers, scores, sel.rule, eq), (name, eq)
    # equivalence changes the majority: x+1 ~ 1+x ~ (x+1) (3 votes) beats "2" (2 votes)
    assert all_selections(answers, rewards)["majority"] == "2"
    assert all_selections(answers, rewards, equivalent)["majority"] == "x+1"
    # and prm_vote on mean scores: apart, x+1 0.55, 1+x 0.7, 2 0.533 + 0.0, (x+1) 0.3, 3 0.525;
    # pooled, x+1 ~ 1+x ~ (x+1) sum to 1.55
    assert all_selections(answers, rewards)["prm_mean_vote"] == "1+x"
    assert all_selections(answers, rewards, equivalent)["prm_mean_vote"] == "x+1"


def test_all_selections_no_answers():
    out = all_selections([None, None], [[1.0], [0.5]])
    assert all(v is None for v in out.values())
    with pytest.raises(ValueError):
        all_selections(["1"], [[1.0], [0.5]])


def test_subset_choice_equals_choice_on_the_subset_pool():
    # what makes offline curves exact: choosing on a subset of a pool == choosing on that subset alone
    answers = ["3", "5", "3", None, "7", "5", "5"]
    rewards = [[0.9, 0.2], [0.6, 0.7], [0.3, 0.4], [1.0], [0.8], [0.1], [0.5, 0.5]]
    pool = Pool.from_answers(answers, rewards)
    for subset in ([0, 1, 2], [1, 3, 4], [2, 5, 6], [0, 4], [3]):
        sub_answers = [answers[i] for i in subset]
        sub = all_selections(sub_answers, [rewards[i] for i in subset])
        for name, i in pool.choices(subset).items():
            assert (None if i is None else answers[i]) == sub[name], (subset, name)
