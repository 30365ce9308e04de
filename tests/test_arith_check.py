"""ArithCheck: a rule-based process verifier for arithmetic steps."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from testtime.datasets import load_arith
from testtime.reward import ArithCheck, RewardModel, check_step, evaluate, extract_statements

CHECK = ArithCheck()


def reward(step: str) -> float:
    return CHECK.step_reward(step)


def test_protocol_and_identity():
    assert isinstance(CHECK, RewardModel)
    # v2: every statement is read and word forms are checked; v1 rewards must not be reused.
    assert CHECK.name == "arith-check@v2"
    assert ArithCheck(neutral=0.25).name == "arith-check@v2(neutral=0.25,exact=False)"
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
        "two thirds of 9 = 6",  # "of" binds the 9 to words we do not read
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


# --------------------------------------------------------------------------------------------
# v2: every statement in a step is read; word forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    [
        # A false statement after a true one, separated by "so" / "then" / "and" / a sentence.
        ("2 + 8 = 10, so 10 = 18.", 0.0),
        ("2 + 8 = 10, so 10 = 10.", 1.0),
        ("2 + 8 = 10 so 10 = 18", 0.0),
        ("2 + 8 = 10. Then 10 = 18.", 0.0),
        ("2 + 8 = 10. Then 10 = 10.", 1.0),
        ("2 + 8 = 10 and 10 = 18.", 0.0),
        ("2 + 8 = 10 and 10 * 2 = 20.", 1.0),
        ("So 10 = 18.", 0.0),
        ("2 + 2 = 4, 4 + 4 = 8, 8 + 8 = 17.", 0.0),
        ("2 + 2 = 4, 4 + 4 = 8, 8 + 8 = 16.", 1.0),
        ("3 + 4 = 7 = 8", 0.0),
        ("We have 2 + 3 = 5 apples. Then 5 * 2 = 11 apples in total.", 0.0),
        ("We have 2 + 3 = 5 apples. Then 5 * 2 = 10 apples in total.", 1.0),
    ],
)
def test_every_statement_is_read(step, expected):
    assert reward(step) == expected


def test_bare_number_after_connective_is_a_statement():
    assert extract_statements("2 + 8 = 10, so 10 = 18.") == [("2 + 8", "10"), ("10", "18")]
    # ... but not after a word that is no connective, nor after "and" joining plain prose.
    assert extract_statements("Page 12 = 4") == []
    assert extract_statements("between 5 and 8 = 3") == []


@pytest.mark.parametrize(
    "true_step, false_step",
    [
        ("the sum of 2 and 8 is 10", "the sum of 2 and 8 is 16"),
        ("The sum of 2, 3, and 4 is 9.", "The sum of 2, 3, and 4 is 10."),
        ("2 plus 8 equals 10", "2 plus 8 equals 16"),
        ("2 plus 8 is equal to 10.", "2 plus 8 is equal to 11."),
        ("4 + 5 is 9", "4 + 5 is 10"),
        ("4 + 5 makes 9", "4 + 5 makes 8"),
        ("4 + 5 gives 9", "4 + 5 gives 10"),
        ("9 minus 4 is 5", "9 minus 4 is 6"),
        ("3 times 4 is 12", "3 times 4 is 13"),
        ("3 multiplied by 4 is 12", "3 multiplied by 4 is 13"),
        ("12 divided by 4 is 3", "12 divided by 4 is 4"),
        ("the difference between 9 and 4 is 5", "the difference between 9 and 4 is 6"),
        ("the difference between 4 and 9 is 5", "the difference between 4 and 9 is -5"),
        ("the product of 3 and 4 is 12", "the product of 3 and 4 is 7"),
        ("the quotient of 12 and 4 is 3", "the quotient of 12 and 4 is 48"),
        ("twice 6 is 12", "twice 6 is 8"),
        ("double 6 is 12", "double 6 is 36"),
        ("half of 10 is 5", "half of 10 is 20"),
        ("a quarter of 20 is 5", "a quarter of 20 is 4"),
        ("20% of 50 is 10", "20% of 50 is 12"),
        ("20 percent of $50 is $10.", "20 percent of $50 is $11."),
        ("3 times the sum of 2 and 8 is 30", "3 times the sum of 2 and 8 is 31"),
        ("6 is 2 times 3", "6 is 2 times 4"),
        ("half of 20 = 10", "half of 20 = 12"),  # word forms with symbols
        ("3 times 4 = 12", "3 times 4 = 11"),
        ("12 = 3 times 4", "13 = 3 times 4"),
        # numbers: decimals, negatives, thousands commas, currency, units after the result
        ("2.5 times 4 is 10.0", "2.5 times 4 is 10.5"),
        ("-3 plus 5 is 2", "-3 plus 5 is -2"),
        ("5 minus 8 is -3", "5 minus 8 is 3"),
        ("1,000 plus 500 is 1,500", "1,000 plus 500 is 1,600"),
        ("$12 plus $3 is $15", "$12 plus $3 is $16"),
        ("2 plus 8 equals 10 apples.", "2 plus 8 equals 11 apples."),
        ("2 plus 8 is 10 apples in total.", "2 plus 8 is 12 apples in total."),
        ("7 minus 2 is 5 left, so she has 5.", "7 minus 2 is 4 left, so she has 4."),
    ],
)
def test_word_forms(true_step, false_step):
    assert reward(true_step) == 1.0
    assert reward(false_step) == 0.0


def test_word_form_statements():
    assert extract_statements("the sum of 2 and 8 is 16") == [("(2 + 8)", "16")]
    assert extract_statements("20% of 50 is 10") == [("(20 / 100 * 50)", "10")]
    # the difference is stated either way round: larger minus smaller
    assert extract_statements("the difference between 4 and 9 is 5") == [("(9 - 4)", "5")]


@pytest.mark.parametrize(
    "step, expected",
    [
        # one false statement among several, in words and symbols
        ("The sum of 2 and 8 is 10 and the product of 3 and 4 is 13.", 0.0),
        ("The sum of 2 and 8 is 10 and the product of 3 and 4 is 12.", 1.0),
        ("She buys 3 + 4 = 7 pens, then 7 times 2 is 15.", 0.0),
        ("She buys 3 + 4 = 7 pens, then 7 times 2 is 14.", 1.0),
        ("First 9 minus 4 is 5; then 5 * 3 = 16.", 0.0),
        ("First 9 minus 4 is 5; then 5 * 3 = 15.", 1.0),
        ("It takes 3 hours, 3 * 60 = 180 minutes.", 1.0),
        ("It takes 3 hours, 3 * 60 = 190 minutes.", 0.0),
    ],
)
def test_mixed_steps(step, expected):
    assert reward(step) == expected


@pytest.mark.parametrize(
    "step",
    [
        # statements, not claims: no arithmetic is stated
        "Maria has 4 apples and 5 pears.",
        "Tom is 12 and Anna is 9.",
        "In 2020 there were 5 people.",
        "He was 5 years old 3 years ago.",
        "The answer is 56.",
        "The answer is $1,200.",
        # units that may differ between the sides
        "1 hour is 60 minutes.",
        "2 hours is 120 minutes.",
        "So 120 = 2 hours.",
        "So 120 is 2 hours.",
        "the sum of 2 hours and 30 minutes is 150 minutes",
        # "is" that is no equality
        "5 is 2 more than 3.",
        "7 is 2 less than 9.",
        "12 is 3 dozen.",
        "4 * 9 = 3 dozen.",  # a multiplier after the result, with symbols too
        "4 * 9 is 3 dozen.",
        "3 + 4 is 2 more than 5.",  # "=" would be read as a claim that 7 = 2; "is" is not
        "3 + 4 is 2 more.",
        "10 - 4 is 2 fewer, so",
        "10 is 2 times as many as 5.",
        "14 divided by 4 is 3 remainder 2.",
        "14 / 4 = 3 remainder 2",
        "8 is 2 away from 10.",
        "The ratio 3:4 is 0.75.",
        "At 10:30 = 2 hours later",
        # "and" as "plus", "of" as "times", modifiers: ambiguous, so unchecked
        "5 and 3 makes 8",
        "3 boxes of 4 apples is 12 apples",
        "There are 3 boxes of 4 apples, which is 12 apples.",
        "Twice the sum of 2 and 8 is 20.",
        "one and a half of 10 is 15",
        "Page 12 is 4 pages after page 8.",
        "The 3 is 5 steps away.",
        "= 2 million",
        "2,000,000 = 2 million",
    ],
)
def test_neutral_word_forms(step):
    assert extract_statements(step) == []
    assert ArithCheck(neutral=0.25).step_reward(step) == 0.25


def test_private_marker_in_input_is_not_a_copula():
    # The copula marker is an internal private-use character; input text never supplies one.
    assert extract_statements("3 \ue000 4") == []


def _random_sums(n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(-50, 999), rng.randint(0, 999)) for _ in range(n)]


@pytest.mark.parametrize("a, b", _random_sums(40, seed=13))
def test_property_sums_anywhere_in_a_step(a, b):
    # A property test without hypothesis (not installed): seeded random operands.
    true, false = f"{a} + {b} = {a + b}", f"{a} + {b} = {a + b + 1}"
    assert reward(true) == 1.0
    assert reward(false) == 0.0
    lead = "First 3 * 4 = 12, then"  # a true statement before
    assert reward(f"{lead} {true}.") == 1.0
    assert reward(f"{lead} {false}.") == 0.0
    assert reward(f"{true}, so {a + b} = {a + b}.") == 1.0
    assert reward(f"{true}, so {a + b} = {a + b + 1}.") == 0.0
    assert reward(f"{a} plus {b} is {a + b} coins.") == 1.0
    assert reward(f"{a} plus {b} is {a + b + 1} coins.") == 0.0
    if a >= 0:
        assert reward(f"The sum of {a} and {b} is {a + b}.") == 1.0
        assert reward(f"The sum of {a} and {b} is {a + b - 1}.") == 0.0
