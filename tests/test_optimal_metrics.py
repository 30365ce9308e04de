"""The paper's metrics: subsampled curves, Best-of-N selections on subsets, difficulty bins, gains, frontiers."""

from __future__ import annotations

import itertools
import math

import pytest

from testtime.optimal.metrics import (
    PAPER_THRESHOLDS,
    EfficiencyGain,
    absolute_bins,
    bin_accuracy,
    bin_order,
    confusion_matrix,
    efficiency_gain,
    frontier,
    pareto_frontier,
    performance_gain,
    quantile_bins,
    selection_subset_scores,
    subsample_curve,
    subsample_curves,
)
from testtime.search.selection import MAJORITY, SELECTIONS, Pool, all_selections

BON_KEYS = [k for k, s in SELECTIONS.items() if not s.uses_confidence]  # a scored pool without confidences


def bon_subset_scores(answers, correct, rewards, equivalent=None):
    return selection_subset_scores(Pool.from_answers(answers, rewards, equivalent), correct)


def bon_subset_correct(answers, correct, rewards, key, equivalent=None):
    scores = selection_subset_scores(Pool.from_answers(answers, rewards, equivalent), correct, [SELECTIONS[key]])
    return lambda subset: scores(subset)[key]

# --- subsample_curve -----------------------------------------------------------------------------

KEYS = ["a", "b", "a", None, "c", "b", "a", "b", "c", "b", "a", "d"]
OK = [k == "a" for k in KEYS]


def majority_of(keys, ok):
    ids = {k: i for i, k in enumerate(dict.fromkeys(k for k in keys if k is not None))}
    scores = selection_subset_scores(Pool.of([None if k is None else ids[k] for k in keys]), ok, [MAJORITY])
    return lambda idx: scores(idx)["majority"]


def exact_expectation(n, k, f):
    """Independent reference: the mean over every size-k subset."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(f(s) for s in subsets) / len(subsets)


def test_small_pool_is_exact_enumeration():
    keys, ok = KEYS[:6], OK[:6]
    f = majority_of(keys, ok)
    curve = subsample_curve(6, [1, 2, 3, 4, 5, 6], f, samples=1)  # samples unused: every C(6, k) <= 200
    assert curve.keys() == {1, 2, 3, 4, 5, 6}
    for k, acc in curve.items():
        assert acc == pytest.approx(exact_expectation(6, k, f)), k


def test_random_subsets_are_unbiased():
    n, k = len(KEYS), 4  # C(12, 4) = 495 > 200: sampled
    f = majority_of(KEYS, OK)
    exact = exact_expectation(n, k, f)
    estimates = [subsample_curve(n, [k], f, samples=32, seed=s)[k] for s in range(40)]
    assert len(set(estimates)) > 1  # really sampled, not enumerated
    assert sum(estimates) / len(estimates) == pytest.approx(exact, abs=0.03)


def test_sampling_is_deterministic_and_independent_of_other_ks():
    f = majority_of(KEYS, OK)
    a = subsample_curve(12, [4], f, seed=3)
    b = subsample_curve(12, [1, 2, 4, 8, 12], f, seed=3)
    assert a[4] == b[4]
    assert subsample_curve(12, [4], f, seed=3) == a


def test_exact_below_zero_forces_sampling_with_given_count():
    seen = []
    subsample_curve(6, [3], lambda s: seen.append(s) or 0.0, samples=7, exact_below=0)
    assert len(seen) == 7 and all(len(s) == 3 and list(s) == sorted(s) for s in seen)


def test_k_equal_pool_uses_full_pool_once():
    seen = []
    curve = subsample_curve(30, [30], lambda s: seen.append(s) or 1.0, samples=5, exact_below=0)
    assert seen == [tuple(range(30))] and curve == {30: 1.0}


def test_ks_above_pool_are_left_out_and_below_one_raise():
    assert subsample_curve(4, [2, 8], lambda s: 1.0) == {2: 1.0}
    with pytest.raises(ValueError, match="k must be >= 1"):
        subsample_curve(4, [0, 2], lambda s: 1.0)


# --- Best-of-N selections on subsets -------------------------------------------------------------

# candidate: answer, step rewards, correct. Aggregated scores of the answered candidates (0, 1, 2, 4):
#   last 0.2 0.6 0.3 0.95 | min 0.2 0.5 0.3 0.3 | mean 0.55 0.55 0.35 0.625 | prod 0.18 0.30 0.12 0.285
POOL = [
    ("3", [0.9, 0.2], False),
    ("5", [0.5, 0.6], True),
    ("5.0", [0.4, 0.3], True),
    (None, [1.0, 1.0], False),  # best rewards, but no answer: never chosen
    ("7", [0.3, 0.95], False),
]
ANSWERS = [a for a, _, _ in POOL]
REWARDS = [r for _, r, _ in POOL]
CORRECT = [c for _, _, c in POOL]
FULL_POOL_EXPECTED = {
    "majority": 1.0,  # 5 twice
    "prm_last_max": 0.0,  # 7 (0.95)
    "prm_last_vote": 0.0,  # 3: 0.2, 5: 0.9, 7: 0.95
    "prm_min_max": 1.0,  # 5 (0.5)
    "prm_min_vote": 1.0,  # 3: 0.2, 5: 0.8, 7: 0.3
    "prm_mean_max": 0.0,  # 7 (0.625)
    "prm_mean_vote": 1.0,  # 3: 0.55, 5: 0.9, 7: 0.625
    "prm_prod_max": 1.0,  # 5 (0.30)
    "prm_prod_vote": 1.0,  # 3: 0.18, 5: 0.42, 7: 0.285
}


def test_subset_scores_cover_every_selection_of_the_pool():
    assert list(bon_subset_scores(ANSWERS, CORRECT, REWARDS)(range(5))) == BON_KEYS == list(FULL_POOL_EXPECTED)
    # an unscored pool (majority voting's) reports majority only
    assert list(selection_subset_scores(Pool.from_answers(ANSWERS), CORRECT)(range(5))) == ["majority"]


def test_bon_full_pool_every_key():
    assert bon_subset_scores(ANSWERS, CORRECT, REWARDS)(range(5)) == FULL_POOL_EXPECTED
    for key, want in FULL_POOL_EXPECTED.items():
        assert bon_subset_correct(ANSWERS, CORRECT, REWARDS, key)(range(5)) == want


def test_bon_subset_tie_breaks():
    scores = bon_subset_scores(ANSWERS, CORRECT, REWARDS)
    assert scores((0, 1, 2))["prm_mean_max"] == 0.0  # 3 and 5 tie at 0.55: earliest (3) wins
    assert scores((0, 3, 4))["majority"] == 0.0  # 3 and 7 once each: first seen (3) wins
    assert scores((1, 4))["majority"] == 1.0  # 5 and 7 once each: first seen (5) wins
    assert scores((3,)) == dict.fromkeys(BON_KEYS, 0.0)  # no answer at all


def test_bon_matches_all_selections_on_every_subset():
    grade = {"3": 0.0, "5": 1.0, "5.0": 1.0, "7": 0.0, None: 0.0}
    scores = bon_subset_scores(ANSWERS, CORRECT, REWARDS)
    for k in range(1, 6):
        for s in itertools.combinations(range(5), k):
            chosen = all_selections([ANSWERS[i] for i in s], [REWARDS[i] for i in s])
            want = {key: grade[a] for key, a in chosen.items()}
            assert scores(s) == want, s


def test_bon_equivalent_merges_groups_once():
    calls = []

    def sqrt4_is_2(a, b):
        calls.append((a, b))
        return {a, b} == {"\\sqrt{4}", "2"}

    answers = ["3", "\\sqrt{4}", "2", "3"]
    f = bon_subset_correct(answers, [False, True, True, False], [[0.1]] * 4, "majority", sqrt4_is_2)
    n_calls = len(calls)
    assert f((0, 1, 2)) == 1.0  # sqrt(4) and 2 count as one group of two
    assert f(range(4)) == 0.0  # 3 twice vs {sqrt4, 2}: tie, 3 seen first
    assert len(calls) == n_calls  # grouping happened once, on the pool


def test_bon_curves_share_subsets_and_match_single_key_curves():
    curves = subsample_curves(5, [1, 2, 3, 5], bon_subset_scores(ANSWERS, CORRECT, REWARDS))
    for key in ("majority", "prm_last_vote", "prm_prod_max"):
        single = subsample_curve(5, [1, 2, 3, 5], bon_subset_correct(ANSWERS, CORRECT, REWARDS, key))
        assert curves[key] == pytest.approx(single)
    assert curves["majority"][1] == pytest.approx(2 / 5)  # pass@1 = share of correct candidates


def test_bon_rejects_unknown_key_and_mismatched_lengths():
    with pytest.raises(KeyError):
        bon_subset_correct(ANSWERS, CORRECT, REWARDS, "prm_max_min")
    with pytest.raises(ValueError, match="5 candidates but 4 grades"):
        bon_subset_scores(ANSWERS, CORRECT[:4], REWARDS)


# --- difficulty bins -----------------------------------------------------------------------------


def test_absolute_bins_boundaries():
    pass1 = {"a": 0.5, "b": 0.4999, "c": 0.1, "d": 0.0999, "e": 1.0, "f": 0.0}
    assert absolute_bins(pass1, *PAPER_THRESHOLDS) == {
        "a": "easy", "b": "medium", "c": "medium", "d": "hard", "e": "easy", "f": "hard",
    }
    assert absolute_bins({"x": 0.0}, easy=0.3, hard=0.0) == {"x": "medium"}


@pytest.mark.parametrize(("easy", "hard", "name"), [(0.1, 0.5, "hard"), (0.5, 0.5, "hard"), (1.5, 0.1, "easy"),
                                                    (0.5, -0.1, "hard"), (0.0, 0.0, "easy")])
def test_absolute_bins_bad_thresholds(easy, hard, name):
    with pytest.raises(ValueError, match=name):
        absolute_bins({"x": 0.2}, easy=easy, hard=hard)


def test_bins_reject_bad_pass1():
    with pytest.raises(ValueError, match="'x'"):
        absolute_bins({"x": math.nan})
    with pytest.raises(ValueError, match="'y'"):
        quantile_bins({"y": 1.2})


def test_quantile_bins_sizes_and_ties():
    pass1 = {"p6": 0.9, "p5": 0.5, "p1": 0.5, "p3": 0.5, "p0": 0.0, "p2": 0.2, "p4": 1.0}
    bins = quantile_bins(pass1, 3)
    # order: p0, p2, p1, p3, p5 (ties at 0.5 by id), p6, p4; sizes 3, 2, 2 (the hardest bin takes the extra)
    assert bins == {"p0": "q1", "p2": "q1", "p1": "q1", "p3": "q2", "p5": "q2", "p6": "q3", "p4": "q3"}
    sizes = sorted(list(quantile_bins({str(i): i / 23 for i in range(23)}, 5).values()).count(f"q{b}")
                   for b in range(1, 6))
    assert sizes == [4, 4, 5, 5, 5]
    assert quantile_bins({"a": 0.3, "b": 0.1}, 5) == {"b": "q1", "a": "q2"}  # n < K: easiest bins empty
    with pytest.raises(ValueError, match="n_bins"):
        quantile_bins({"a": 0.3}, 0)


def test_bin_order():
    assert bin_order(["hard", "q10", "q2", "easy", "medium", "q1", "zz", "hard"]) == [
        "easy", "medium", "hard", "q1", "q2", "q10", "zz",
    ]


def test_confusion_matrix_and_accuracy():
    true = {"a": "easy", "b": "hard", "c": "medium", "d": "easy", "x": "hard"}
    pred = {"a": "easy", "b": "medium", "c": "medium", "d": "hard", "y": "easy"}
    m = confusion_matrix(true, pred, ["easy", "medium", "hard"])
    assert m == [[1, 0, 1], [0, 1, 0], [0, 1, 0]]  # x and y are not in both: left out
    assert bin_accuracy(m) == 0.5
    with pytest.raises(ValueError, match="'q1'"):
        confusion_matrix({"a": "q1"}, {"a": "easy"}, ["easy"])
    with pytest.raises(ValueError, match="empty"):
        bin_accuracy(confusion_matrix({"a": "easy"}, {"b": "easy"}, ["easy"]))


# --- gains ---------------------------------------------------------------------------------------


def test_performance_gain():
    assert performance_gain(0.6, 0.4) == pytest.approx(0.5)
    assert performance_gain(0.3, 0.4) == pytest.approx(-0.25)
    assert performance_gain(0.5, 0.0) is None


MAJ = [(1, 0.3), (4, 0.5), (16, 0.55), (64, 0.6)]


def test_efficiency_gain_interpolates_linearly_in_budget():
    g = efficiency_gain(MAJ, [(4, 0.5), (8, 0.7)])
    assert g.optimal_budget == pytest.approx(6.0) and g.majority_budget == 64
    assert g.value == pytest.approx(64 / 6) and not g.lower_bound and g.target_accuracy == 0.6
    assert str(g) == "10.7"


def test_efficiency_gain_lower_bound_when_first_point_already_reaches():
    g = efficiency_gain(MAJ, [(4, 0.65), (8, 0.7)])
    assert g == EfficiencyGain(16.0, True, 0.6, 64, 4)
    assert str(g) == "> 16.0"
    # float noise: 0.1 + 0.2 is a hair above 0.3, still counts as reached
    assert efficiency_gain([(2, 0.1 + 0.2)], [(1, 0.3)]).lower_bound


def test_efficiency_gain_never_reached():
    g = efficiency_gain(MAJ, [(4, 0.3), (256, 0.55)])
    assert g.value is None and g.optimal_budget is None and str(g) == "n/a"


def test_efficiency_gain_uses_first_budget_where_majority_peaks():
    maj = [(1, 0.3), (8, 0.6), (32, 0.6), (64, 0.58)]
    g = efficiency_gain(maj, [(1, 0.4), (2, 0.6), (4, 0.7)])
    assert (g.majority_budget, g.optimal_budget, g.value) == (8, 2, 4.0)


def test_efficiency_gain_validates_curves():
    with pytest.raises(ValueError, match="optimal curve must be sorted"):
        efficiency_gain(MAJ, [(8, 0.5), (4, 0.7)])
    with pytest.raises(ValueError, match="majority curve is empty"):
        efficiency_gain([], MAJ)


# --- frontiers -----------------------------------------------------------------------------------


def test_frontier_best_per_budget_ties_to_first_label():
    curves = {"b": [(1, 0.5), (2, 0.6)], "a": [(1, 0.5), (4, 0.7)], "c": [(2, 0.65)]}
    assert frontier(curves) == [(1, 0.5, "a"), (2, 0.65, "c"), (4, 0.7, "a")]
    assert frontier({}) == []


def test_pareto_frontier_upper_left_envelope():
    pts = [(3, 0.55, "z"), (2, 0.6, "b"), (1, 0.5, "x"), (2, 0.5, "y"), (2, 0.6, "a"), (4, 0.8, "w"), (5, 0.8, "v")]
    assert pareto_frontier(pts) == [(1, 0.5, "x"), (2, 0.6, "a"), (4, 0.8, "w")]
    assert pareto_frontier([]) == []
