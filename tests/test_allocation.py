"""The batch allocator (optimal.allocate) and the difficulty model / curves (optimal.predictor)."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testtime.errors import ConfigError
from testtime.optimal.allocate import Option, allocate, upper_hull
from testtime.optimal.predictor import (
    AllocationModel,
    ProblemFeatures,
    fit_curve,
    fit_logistic,
    text_features,
    train_allocation,
    train_difficulty,
)


def brute_force(problems: list[list[Option]], budget: float) -> float:
    """The exact optimum by enumeration (tiny instances)."""
    best = -1.0
    for combo in product(*(range(len(o)) for o in problems)):
        if sum(problems[i][j].cost for i, j in enumerate(combo)) <= budget:
            best = max(best, sum(problems[i][j].success for i, j in enumerate(combo)))
    return best


def curve(key: str, points: list[tuple[float, float]]) -> list[Option]:
    return [Option(f"{key}{i}", s, c) for i, (c, s) in enumerate(points)]


def test_hull_drops_dominated_and_non_concave_points() -> None:
    opts = curve("x", [(1, 0.2), (2, 0.25), (3, 0.6), (3, 0.5), (5, 0.6), (8, 0.7)])
    # (2, 0.25) lies under the chord from (1, .2) to (3, .6); (3, .5) and (5, .6) are dominated
    assert [opts[i].cost for i in upper_hull(opts)] == [1, 3, 8]


def test_easy_gets_the_minimum_hopeless_the_minimum_the_middle_the_rest() -> None:
    costs = [1, 2, 4, 8, 16]
    easy = curve("easy", [(c, 0.95) for c in costs])  # solved by the cheapest already
    hopeless = curve("hard", [(c, 0.0) for c in costs])  # solved by nothing
    middle = curve("mid", [(c, s) for c, s in zip(costs, [0.2, 0.35, 0.5, 0.6, 0.65], strict=True)])
    plan = allocate([easy, hopeless, middle], budget=3 * 8)  # the average budget of "8 each"
    assert plan.picks[0] == 0 and plan.picks[1] == 0
    assert middle[plan.picks[2]].cost == 16  # everything left goes where it buys accuracy
    assert plan.total_cost == 1 + 1 + 16 <= 24
    assert plan.expected_solved == pytest.approx(0.95 + 0.0 + 0.65)


def test_known_optimum_at_a_hull_breakpoint() -> None:
    # two identical concave curves; the budget buys exactly the two steps with the best rates
    a = curve("a", [(1, 0.1), (2, 0.5), (4, 0.7), (8, 0.75)])
    b = curve("b", [(1, 0.3), (2, 0.4), (4, 0.9), (8, 0.95)])
    plan = allocate([a, b], budget=2 + 4)
    assert plan.picks == [1, 2]  # a: 0.4 per unit at its first step; b: its 1 -> 4 chord buys 0.2 per unit
    assert plan.expected_solved == pytest.approx(brute_force([a, b], 6)) == pytest.approx(1.4)


def test_over_budget_gives_everyone_the_cheapest() -> None:
    plan = allocate([curve("a", [(5, 0.5), (9, 0.9)]), curve("b", [(5, 0.1)])], budget=4)
    assert plan.over_budget and plan.picks == [0, 0]


def test_bad_options_name_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        allocate([[Option("x", 1.5, 1.0)]], 1.0)
    assert e.value.fields == ("options",) and "success must be in [0, 1]" in str(e.value)
    with pytest.raises(ConfigError) as e:
        allocate([[Option("x", 0.5, 1.0)]], math.nan)
    assert e.value.fields == ("budget",) and "budget nan" in str(e.value)


problem_options = st.lists(
    st.tuples(st.floats(0.0, 10.0, allow_nan=False), st.floats(0.0, 1.0, allow_nan=False)), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(problem_options, min_size=1, max_size=4), st.floats(0.0, 30.0, allow_nan=False))
def test_never_exceeds_the_budget_and_is_near_the_optimum(raw: list, budget: float) -> None:
    problems = [[Option(f"{i}-{j}", s, c) for j, (c, s) in enumerate(opts)] for i, opts in enumerate(raw)]
    plan = allocate(problems, budget)
    cheapest = sum(min(o.cost for o in opts) for opts in problems)
    assert plan.over_budget == (cheapest > budget * (1 + 1e-12))
    if plan.over_budget:
        assert plan.picks == [min(range(len(o)), key=lambda j, o=o: (o[j].cost, -o[j].success)) for o in problems]
        return
    chosen = [problems[i][j] for i, j in enumerate(plan.picks)]
    assert sum(o.cost for o in chosen) == pytest.approx(plan.total_cost)
    assert plan.total_cost <= budget * (1 + 1e-9)
    best = brute_force(problems, budget * (1 + 1e-12))
    # the greedy over hulls is LP-optimal up to the one step that did not fit: at most one option's gain short
    max_gain = max(max(o.success for o in opts) - min(o.success for o in opts) for opts in problems)
    assert plan.expected_solved >= best - max_gain - 1e-9
    assert plan.expected_solved <= best + 1e-9


def test_text_features_count_operations_and_numbers() -> None:
    names = ["chars", "words", "numbers", "maxd", "digits", "ops", "wops"]
    one = dict(zip(names, text_features("What is 3 + 4?")[:7], strict=True))
    two = dict(zip(names, text_features("Compute (12 + 7) * 3 - 45.")[:7], strict=True))
    assert one["numbers"] == 2 and one["ops"] == 1 and two["numbers"] == 4 and two["ops"] == 3
    assert two["digits"] == 6


def test_fit_logistic_recovers_a_known_slope() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 1))
    p = 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0])))
    y = (rng.random(4000) < p).astype(float)
    coef, b = fit_logistic(x, y, l2=1e-6)
    assert coef[0] == pytest.approx(2.0, abs=0.15) and b == pytest.approx(0.5, abs=0.1)


def _synthetic(n: int = 120, seed: int = 0) -> tuple[list[ProblemFeatures], dict[str, float], list]:
    """Levels 1-4: pass@1 falls with the level; Best-of-N helps the middle levels only."""
    from testtime.optimal.sweep import Cell

    rng = np.random.default_rng(seed)
    feats, pass1, cells = [], {}, []
    base = {1: 0.95, 2: 0.35, 3: 0.15, 4: 0.0}
    for i in range(n):
        level = 1 + i % 4
        pid = f"p{i}"
        p = float(np.clip(base[level] + rng.normal(0, 0.05), 0, 1))
        feats.append(ProblemFeatures(pid, "What is " + " + ".join(["3"] * (level + 1)) + "?", level))
        pass1[pid] = p
        cells.append(Cell(pid, "cot", "cot", None, None, 1, float(rng.random() < p), 60.0, 1e10))
        for k in (1, 2, 4, 8):
            maj = 1 - (1 - p) ** max(1, k // 2) if p > 0.5 else p
            bon = 1 - (1 - p) ** k if level in (2, 3) else p
            cells.append(Cell(pid, "majority", "majority", None, None, k, maj, 60.0 * k, 1e10 * k))
            cells.append(Cell(pid, "best_of_n/prm_min_vote", "best_of_n", None, "prm_min_vote", k, bon, 60.0 * k,
                              1.2e10 * k))
            cells.append(Cell(pid, "best_of_n/prm_last_max", "best_of_n", None, "prm_last_max", k, p, 60.0 * k,
                              1.2e10 * k))
    return feats, pass1, cells


def test_difficulty_model_learns_levels_and_is_calibrated() -> None:
    feats, pass1, _ = _synthetic()
    model, z = train_difficulty("question", feats, [pass1[f.id] for f in feats])
    p = model.predict(feats)
    y = np.asarray([pass1[f.id] for f in feats])
    assert ((p - y) ** 2).mean() < 0.2 * ((y.mean() - y) ** 2).mean()  # far better than a constant
    assert model.blocks[0] in ("level", "text") and "hidden" not in model.blocks
    assert len(z) == len(feats)


def test_allocation_model_round_trips_and_spends_on_the_middle() -> None:
    feats, pass1, cells = _synthetic()
    fmap = {f.id: f for f in feats}
    am = train_allocation(cells, pass1, fmap, [f.id for f in feats], probe_n=4, kinds=("question",))
    assert am.reference == "best_of_n/prm_min_vote"  # the selection that helps, not the flat one
    again = AllocationModel.from_dict(am.to_dict())
    test, _, _ = _synthetic(40, seed=1)
    z = again.models["question"].score(test)
    assert np.allclose(z, am.models["question"].score(test))
    options = again.options("question", z)
    # a tight batch (3 samples' worth on average): it must choose where to spend
    total = float(again.reference_cost("question", z, 3).sum())
    plan = allocate(options, total)
    assert plan.total_cost <= total * (1 + 1e-9) and not plan.over_budget
    given = {}
    for f, d in zip(test, plan.decisions, strict=True):
        given.setdefault(f.level, []).append(options[0][d.pick].cost)
    mean = {lv: sum(v) / len(v) for lv, v in given.items()}
    # levels 2-3 (where Best-of-N pays) get more than the easy level 1 and the hopeless level 4
    assert min(mean[2], mean[3]) > max(mean[1], mean[4])


def test_curve_fit_is_monotone_in_z() -> None:
    z = np.linspace(-3, 3, 50)
    acc = 1 / (1 + np.exp(-(z - 0.5)))
    c = fit_curve("cot", "cot", 1, None, z, acc, np.full(50, 1e10))
    assert c.b > 0 and c.success(np.array([0.5]))[0] == pytest.approx(0.5, abs=0.05)
    assert c.cost(np.array([0.0]))[0] == pytest.approx(1e10, rel=1e-6)


def test_question_shift_flags_reworded_problems_not_fresh_ones() -> None:
    from testtime.datasets import load_dataset
    from testtime.optimal.predictor import TEXT_FEATURES
    from testtime.optimal.shift import check_question_shift

    cal = [text_features(p.question) for p in load_dataset("arith", limit=150, seed=0)]
    fresh = load_dataset("arith", limit=100, seed=9)
    assert not check_question_shift(cal, [text_features(p.question) for p in fresh], TEXT_FEATURES).shifted
    words = {"+": "add", "-": "take away", "*": "multiply it by", "/": "divide it by"}
    reworded = []
    for p in fresh:  # the same chains, operators in words
        parts = p.meta["expression"].replace("(", "").replace(")", "").split()
        steps = ", then ".join(f"{words[op]} {x}" for op, x in zip(parts[1::2], parts[2::2], strict=True))
        reworded.append(f"Start with {parts[0]}. {steps.capitalize()}. What number do you end with?")
    shift = check_question_shift(cal, [text_features(q) for q in reworded], TEXT_FEATURES)
    assert shift.shifted and shift.components["text:symbol_ops"] > 1.0
    # a handful of questions is never flagged on noise alone
    assert not check_question_shift(cal, [text_features(q) for q in reworded[:3]], TEXT_FEATURES).shifted


def test_min_rate_keeps_flat_curves_at_the_minimum_even_with_budget_to_spare() -> None:
    costs = [1, 2, 4, 8]
    hopeless = curve("h", [(c, s) for c, s in zip(costs, [0.01, 0.012, 0.015, 0.02], strict=True)])
    middle = curve("m", [(c, s) for c, s in zip(costs, [0.2, 0.35, 0.5, 0.6], strict=True)])
    spend_all = allocate([hopeless, middle], budget=16)
    assert spend_all.picks == [3, 3]  # room for everything: every predicted gain is bought
    frugal = allocate([hopeless, middle], budget=16, min_rate=0.01)  # a step must buy 1 point per unit
    assert frugal.picks == [0, 3] and frugal.total_cost == 9
    assert frugal.decisions[0].below_min and "minimum gain" in frugal.decisions[0].why(frugal.cutoff_rate)
    assert allocate([hopeless, middle], budget=16, min_rate=[0.0, 1.0]).picks == [3, 0]  # per problem
    with pytest.raises(ConfigError):
        allocate([hopeless], budget=4, min_rate=[0.1, 0.1])


def test_first_reaching_interpolates_and_the_study_ratios_follow() -> None:
    from testtime.optimal.study import ALLOCATED, MAJORITY, UNIFORM, Point, Study, first_reaching
    from testtime.types import Problem

    ids = [f"p{i}" for i in range(4)]

    def pt(series: str, budget: int, solved: int, flops: float) -> Point:
        return Point(series, budget, {i: float(k < solved) for k, i in enumerate(ids)}, {i: flops for i in ids})

    alloc = [pt(ALLOCATED, 1, 1, 10.0), pt(ALLOCATED, 2, 3, 20.0), pt(ALLOCATED, 4, 3, 40.0)]
    # 50% lies halfway between 25% at 10 FLOPs and 75% at 20: 15
    assert first_reaching(alloc, ids, 0.5) == pytest.approx(15.0)
    assert first_reaching(alloc, ids, 0.25) == 10.0 and first_reaching(alloc, ids, 1.0) is None
    problems = [Problem(i, "q", "1", meta={"level": 1}) for i in ids]
    study = Study(problems, [*alloc, pt(UNIFORM, 4, 2, 40.0), pt(MAJORITY, 2, 1, 20.0), pt(MAJORITY, 4, 2, 40.0)],
                  headline=4, reference="best_of_n/prm_min_vote", predictor="question", wall_s=0.0)
    assert study.flops_to_match() == pytest.approx(15.0 / 40.0)
    assert study.efficiency_gain() == pytest.approx(40.0 / 15.0)  # majority's best (50%) at 40, allocation's at 15
    boot = study.bootstrap(study.flops_to_match, rounds=50)
    assert boot["estimate"] == pytest.approx(0.375) and boot["rounds"] == 50
