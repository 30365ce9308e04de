"""ArithCheck: a rule-based process verifier for arithmetic steps."""

from __future__ import annotations

from fractions import Fraction

import pytest

from testtime.datasets import load_arith
from testtime.reward import ArithCheck, RewardModel, check_step, evaluate, extract_statements

CHECK = ArithCheck()


def reward(step: str) -> float:
    return CHECK.step_reward(step)


def test_protocol_and_identity():
    assert isinstance(CHECK, RewardModel)
    assert CHECK.name == "arith-check"
    assert CHECK.n_params == 0
    assert CHECK.outcome_only is False


@pytest.mark.parametrize(
    "step, expected",
    [
        ("Step 1: 23 + 48 = 71.", 1.0),
        ("Step 1: 23 + 48 = 72.", 0.0),
        ("12 - 5 = 7", 1.0),
        ("12 - 5 = 8", 0.0),
        ("2 + 3 * 4 = 14", 1.0),  # precedence
        ("2 + 3 * 4 = 20", 0.0),
        ("(2 + 3) * 4 = 20", 1.0),  # parentheses
        ("(2 + 3) * 4 = 14", 0.0),
        ("20 - 6 / 3 = 18", 1.0),
        ("((1 + 2) * (3 + 4)) / 7 = 3", 1.0),
        ("10 - 2 - 3 = 5", 1.0),  # left associative
        ("10 - 2 - 3 = 11", 0.0),
        ("24 / 4 / 2 = 3", 1.0),
        ("5 - 8 = -3", 1.0),
        ("-3 + 5 = 2", 1.0),
        ("2^3 = 8", 1.0),
        ("3(4) = 12", 1.0),  # implicit multiplication before "("
    ],
)
def test_statements(step, expected):
    assert reward(step) == expected


@pytest.mark.parametrize(
    "step, expected",
    [
        ("12 − 5 = 7", 1.0),  # unicode minus
        ("12 − 5 = 17", 0.0),
        ("6 × 7 = 42", 1.0),
        ("6 × 7 = 43", 0.0),
        ("6 x 7 = 42", 1.0),
        ("6x7 = 41", 0.0),
        ("42 ÷ 6 = 7", 1.0),
        ("42 ÷ 6 = 6", 0.0),
        ("6 * 7 = 42", 1.0),
        ("6 · 7 = 42", 1.0),
        (r"$6 \times 7 = 42$", 1.0),
        (r"\(84 \div 2 = 41\)", 0.0),
    ],
)
def test_operators(step, expected):
    assert reward(step) == expected


def test_commas_decimals_dollars_and_periods():
    assert reward("1,234 + 766 = 2,000.") == 1.0
    assert reward("1,234 + 766 = 2,001.") == 0.0
    assert extract_statements("1,234 × 2 = 2,468") == [("1234 * 2", "2468")]
    assert reward("0.1 + 0.2 = 0.3") == 1.0  # exact, unlike floats
    assert reward("0.1 + 0.2 = 0.4") == 0.0
    assert reward("He pays $3.50 + $1.25 = $4.75 in total.") == 1.0
    assert reward("He pays $3.50 + $1.25 = $4.85 in total.") == 0.0
    assert reward("7 ÷ 2 = 3.5") == 1.0
    # A comma that separates list items is not a thousands separator.
    assert extract_statements("values 1,2 and 3 + 4 = 7") == [("3 + 4", "7")]


def test_rounded_decimals():
    assert reward("10 / 3 = 3.33") == 1.0
    assert reward("2 / 3 = 0.67") == 1.0
    assert reward("2 / 3 = 0.66") == 0.0  # truncated, not rounded
    assert reward("1.5 = 1.50") == 1.0
    assert reward("1.5 = 1.59") == 0.0  # two literals: exact
    assert ArithCheck(exact=True).step_reward("10 / 3 = 3.33") == 0.0


def test_chains():
    assert extract_statements("3 + 4 = 7 + 2 = 9") == [("3 + 4", "7 + 2"), ("7 + 2", "9")]
    assert reward("3 + 4 = 7 = 14 / 2") == 1.0
    assert reward("(3 + 4) * 2 = 7 * 2 = 14.") == 1.0
    assert reward("(3 + 4) * 2 = 7 * 2 = 15.") == 0.0
    assert reward("(3 + 4) * 2 = 8 * 2 = 14.") == 0.0
    # A "running total" chain states 3 + 4 = 9, which is false: every side is evaluated.
    assert check_step("3 + 4 = 7 + 2 = 9") == [False, True]
    assert reward("3 + 4 = 7 + 2 = 9") == 0.0
    assert extract_statements("x = 3 + 4 = 7") == [("3 + 4", "7")]


def test_several_statements_in_a_step():
    assert reward("First 2 + 2 = 4, then 4 * 3 = 12.") == 1.0
    assert reward("First 2 + 2 = 4, then 4 * 3 = 13.") == 0.0
    assert check_step("First 2 + 2 = 5, then 4 * 3 = 12.") == [False, True]


def test_division_by_zero_fails():
    assert reward("5 / 0 = 0") == 0.0
    assert reward("0 = 5 / (3 - 3)") == 0.0
    assert reward("5 / (2 - 3) = -5") == 1.0


@pytest.mark.parametrize(
    "step",
    [
        "The answer is 56.",
        "Let us add the numbers.",
        "",
        "On 2023-10-05 the store opened.",
        "12 apples - 5 = 7",  # words between numbers: left unchecked, not wrong
        "half of 20 = 10",
        "3 times 4 = 12",
        "12 = 3 times 4",
        "f(2) = 5",
        "x = y",
        "2x + 3 = 5",
        "1/3 ≈ 0.33",
        "= = =",
        "((((",
        "9^9^9 = 1",  # too large to evaluate: unchecked
        "1" * 5000 + " = 1",  # beyond int's digit limit: unchecked
        "(" * 3000 + "1" + ")" * 3000 + " = 2",  # too deep to parse: unchecked
    ],
)
def test_neutral_steps(step):
    assert extract_statements(step) == []
    assert ArithCheck(neutral=0.25).step_reward(step) == 0.25


def test_parentheses_depth():
    assert reward("(" * 3000 + "1 = 1") == 1.0  # unmatched "(" are prose, stripped
    assert reward("(" * 50 + "1" + ")" * 50 + " = 1") == 1.0
    assert reward("(" * 50 + "1" + ")" * 50 + " = 2") == 0.0


def test_evaluate():
    assert evaluate("2 + 3 * 4") == 14
    assert evaluate("1,000 / 8") == Fraction(125)
    assert evaluate("1 / 3") == Fraction(1, 3)
    assert evaluate("−2^2") == -4
    assert evaluate("1 / 0") is None
    with pytest.raises(ValueError):
        evaluate("2 +")
    with pytest.raises(ValueError):
        evaluate("two")


def test_score_batch_on_arith_solutions():
    problems = load_arith(20)
    solutions = [p.meta["solution_steps"] for p in problems]
    scores = CHECK.score(problems[0].question, solutions)
    assert len(scores) == len(solutions)
    for steps, rewards in zip(solutions, scores, strict=True):
        assert len(rewards) == len(steps)
        assert rewards[:-1] == [1.0] * (len(steps) - 1)  # every "Step k: a op b = c." holds
        assert rewards[-1] == CHECK.neutral  # "The answer is N." states nothing checkable
        assert all(len(extract_statements(s)) == 1 for s in steps[:-1])


def test_corrupted_step_scores_zero():
    problems = load_arith(20)
    corrupted = 0
    for p in problems:
        steps = list(p.meta["solution_steps"])
        k = len(steps) - 2  # the last statement step
        head, result = steps[k].rstrip(".").rsplit("= ", 1)
        steps[k] = f"{head}= {int(result) + 1}."
        rewards = CHECK.score(p.question, [steps])[0]
        assert rewards[k] == 0.0
        assert rewards[:k] == [1.0] * k
        corrupted += 1
    assert corrupted == 20


def test_score_empty_batch_and_solution():
    assert CHECK.score("q", []) == []
    assert CHECK.score("q", [[]]) == [[]]
