"""Answer selection: answer keys, grouping (with and without an equivalence check), majority voting."""

from __future__ import annotations

import pytest

from testtime.search.selection import answer_key, group_answers, majority_vote


def sqrt4_is_2(a: str, b: str) -> bool:
    """A stand-in for math-verify that knows one identity the cheap key does not."""
    return a == b or {a, b} == {"\\sqrt{4}", "2"}


# --- answer_key ---------------------------------------------------------------------------------


@pytest.mark.parametrize("same", ["19", "19.0", "$19$", " 19 ", "19.", "19.000", "+19", "\\$19", "38/2"])
def test_answer_key_equal_for_written_forms_of_19(same):
    assert answer_key(same) == answer_key("19")


@pytest.mark.parametrize("same", ["0.5", "1/2", "\\frac{1}{2}", "\\dfrac{1}{2}", "\\frac12", "$\\frac{1}{2}$"])
def test_answer_key_equal_for_written_forms_of_one_half(same):
    assert answer_key(same) == answer_key("0.5")


@pytest.mark.parametrize("other", ["190", "1.9", "-19", "18.99", "19/2", "x", "19x"])
def test_answer_key_differs_for_other_answers(other):
    assert answer_key(other) != answer_key("19")


def test_answer_key_for_non_numbers_is_spacing_insensitive_only():
    assert answer_key("x = 5") == answer_key("x=5")
    assert answer_key("\\left( 1, 2 \\right)") == answer_key("(1,2)")
    assert answer_key("x=5") != answer_key("5")  # no lenient unit/assignment stripping in keys
    assert answer_key("\\sqrt{4}") != answer_key("2")  # symbolic equality is math-verify's job
    assert answer_key("A") != answer_key("B")


# --- group_answers ------------------------------------------------------------------------------


def test_group_by_key_in_first_appearance_order():
    answers = ["7", "3", "7.0", "$3$", "\\frac{14}{2}", "5"]
    assert group_answers(answers) == [[0, 2, 4], [1, 3], [5]]


def test_group_ignores_none_and_blank_answers():
    answers = [None, "4", "", "  ", None, "4.0"]
    assert group_answers(answers) == [[1, 5]]
    assert group_answers([None, None]) == []
    assert group_answers([]) == []


def test_equivalent_merges_only_when_given():
    answers = ["3", "\\sqrt{4}", "2", "2"]
    assert group_answers(answers) == [[0], [1], [2, 3]]
    assert group_answers(answers, sqrt4_is_2) == [[0], [1, 2, 3]]


def test_frac_and_decimal_share_a_key_so_merge_without_equivalent():
    # the cheap key already knows \frac{1}{2} == 0.5; `equivalent` is not needed for this pair
    assert group_answers(["\\frac{1}{2}", "x", "0.5"]) == [[0, 2], [1]]
    assert group_answers(["\\frac{1}{2}", "x", "0.5"], lambda a, b: False) == [[0, 2], [1]]


def test_equivalent_is_never_asked_about_none_and_only_about_representatives():
    calls = []

    def eq(a, b):
        calls.append((a, b))
        assert a is not None and b is not None
        return sqrt4_is_2(a, b)

    groups = group_answers([None, "2", "2.0", None, "\\sqrt{4}", "2"], eq)
    assert groups == [[1, 2, 4, 5]]
    # one key group ("2", "2.0", "2") plus one ("\sqrt{4}"): a single comparison of representatives
    assert calls == [("2", "\\sqrt{4}")]


def test_merged_group_members_are_sorted_and_groups_ordered_by_first_member():
    answers = ["\\sqrt{4}", "9", "2", "9", "2"]
    assert group_answers(answers, sqrt4_is_2) == [[0, 2, 4], [1, 3]]


# --- majority_vote ------------------------------------------------------------------------------


def test_majority_picks_the_most_frequent():
    chosen, groups = majority_vote(["1", "2", "2", "3", "2.0"])
    assert chosen == "2"
    assert sorted(len(g) for g in groups) == [1, 1, 3]


@pytest.mark.parametrize(
    "answers, winner",
    [
        (["b", "a", "a", "b"], "b"),
        (["a", "b", "b", "a"], "a"),
        (["x", "y", "z"], "x"),
        ([None, "y", "x", "x", "y"], "y"),
        (["5", "6", "6.0", "5.0"], "5"),
    ],
)
def test_majority_tie_goes_to_the_earliest_first_occurrence(answers, winner):
    assert majority_vote(answers)[0] == winner


def test_majority_returns_the_representative_as_written():
    # the group of 0.5 is {0.5, 1/2, \frac{1}{2}}; its earliest member is returned verbatim
    assert majority_vote(["x", "1/2", "\\frac{1}{2}", "0.5", "x"])[0] == "1/2"


def test_majority_ignores_none_answers():
    chosen, groups = majority_vote([None, None, None, "4"])
    assert chosen == "4" and groups == [[3]]


def test_majority_all_none_is_none():
    assert majority_vote([None, None, None]) == (None, [])
    assert majority_vote([]) == (None, [])
    assert majority_vote(["", " "]) == (None, [])


def test_majority_with_equivalent_changes_the_winner():
    answers = ["3", "3", "2", "\\sqrt{4}", "2.0"]
    # without: "3" (2 votes) vs "2" (2 votes: "2", "2.0") -> tie -> earliest "3"
    assert majority_vote(answers)[0] == "3"
    # with: "2" group gains "\sqrt{4}" -> 3 votes
    chosen, groups = majority_vote(answers, sqrt4_is_2)
    assert chosen == "2" and groups == [[0, 1], [2, 3, 4]]


def test_majority_with_math_verify_equivalence():
    from testtime.grading import is_equivalent

    answers = ["\\sqrt{4}", "3", "2", "3", "2"]
    assert majority_vote(answers)[0] == "3"
    assert majority_vote(answers, lambda a, b: is_equivalent(a, b, "math"))[0] == "\\sqrt{4}"
