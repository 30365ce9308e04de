"""The one-request shift check (``optimal.shift.request_shift``): a served question is flagged when it is not
maths, is in another language, or was asked with another prompt than calibration; ordinary maths questions
asked the calibrated way are not."""

from __future__ import annotations

import pytest

from testtime.datasets import load_dataset
from testtime.optimal.predictor import TEXT_FEATURES, text_features
from testtime.optimal.shift import (
    FORM_FEATURES,
    Profile,
    calibration_languages,
    feature_ranges,
    form_features,
    other_language,
    out_of_range,
    quantities,
    request_shift,
)
from testtime.policy.prompts import CHAT_PROMPT

NAMES = TEXT_FEATURES + FORM_FEATURES


def feats(q: str) -> list[float]:
    return text_features(q) + form_features(q)


@pytest.fixture(scope="module")
def calibration() -> tuple[dict[str, list[float]], list[str], Profile]:
    qs = [p.question for p in load_dataset("arith", limit=100)] + [p.question for p in load_dataset("gsm8k", limit=100)]
    profile = Profile([], [], [], [], prompt=dict(CHAT_PROMPT))
    return feature_ranges([feats(q) for q in qs], NAMES), calibration_languages(qs), profile


def reasons(calibration, question: str, prompt: dict | None = None) -> list[str]:
    ranges, langs, profile = calibration
    return request_shift(question, prompt or dict(CHAT_PROMPT), ranges, langs, profile, NAMES, feats(question))


def test_ordinary_maths_questions_asked_as_calibrated_are_not_flagged(calibration) -> None:
    assert calibration[1] == ["en"]
    for q in ("What is 17 * 3?", "Calculate 45 + 38 - 12.",
              "Ben has 32 coins. He gives away 22 coins. How many coins does Ben have now?",
              "A baker makes 48 muffins and sells them in boxes of 6. Each box costs $4. How much money does "
              "the baker make if he sells every box?"):
        assert reasons(calibration, q) == [], q
    # and every calibration question itself lies inside the ranges it made
    for p in load_dataset("gsm8k", limit=100):
        assert out_of_range(feats(p.question), NAMES, calibration[0]) == []


def test_a_question_that_is_not_maths_is_flagged(calibration) -> None:
    got = reasons(calibration, "Write a haiku about the autumn sea.")
    assert any(r.startswith("quantities 0 outside") for r in got), got
    assert quantities("Tom has twenty apples and eats half.") == 2.0  # numbers in words count


@pytest.mark.parametrize("question,lang", [("Wie viel ist 17 mal 3?", "de"), ("Combien font 17 fois 3 ?", "fr"),
                                           ("17 乘以 3 等于多少？", "zh"), ("Сколько будет 17 умножить на 3?", "ru")])
def test_a_question_in_another_language_is_flagged(calibration, question, lang) -> None:
    got = reasons(calibration, question)
    assert any(r.startswith(f"asked in language {lang!r}") for r in got), got


def test_a_short_english_question_is_not_taken_for_another_language() -> None:
    # the identifier's top guess for these is not English ('ro'), but not by the likelihood ratio the rule asks
    for q in ("Evaluate 24 - 19.", "Calculate 9 + 7."):
        assert other_language(q, ["en"]) is None


def test_a_system_prompt_or_earlier_turns_that_change_the_format_are_flagged(calibration) -> None:
    pirate = {**CHAT_PROMPT, "system": "You are a pirate. Answer in rhymes."}
    assert reasons(calibration, "What is 17 * 3?", pirate) == [
        "asked with other prompt settings than calibration: system"]
    history = {**CHAT_PROMPT, "fewshot": 2}
    assert reasons(calibration, "What is 17 * 3?", history) == [
        "asked with other prompt settings than calibration: fewshot"]


def test_out_of_range_widens_by_the_margin_and_names_the_feature() -> None:
    ranges = {"a": [0.0, 10.0]}
    assert out_of_range([10.4], ["a"], ranges) == []  # within 5% of the width
    assert out_of_range([10.6], ["a"], ranges) == ["a 10.6 outside the calibration questions' [0, 10]"]
    assert out_of_range([-0.6], ["a"], ranges) != []
