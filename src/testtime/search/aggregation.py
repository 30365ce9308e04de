"""Scoring candidates with step rewards: aggregation, then selection, every pair in one pass.

Following OpenR, a PRM scores each step of a candidate once; turning those step rewards into an
answer is two pure, cheap choices made afterwards:

* aggregation (step rewards -> one candidate score): ``last``, ``min``, ``mean``, ``prod``;
* selection (candidate answers + scores -> one answer): ``majority`` (ignores scores),
  ``prm_max`` (the best-scored candidate), ``prm_vote`` (scores summed per equivalent answer).

``all_selections`` evaluates every (aggregation, selection) pair from one set of step rewards, so
comparing them never costs another PRM call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from testtime.search.selection import Equivalent, group_answers, largest_group, majority_vote

AGGREGATIONS: tuple[str, ...] = ("last", "min", "mean", "prod")
SELECTIONS: tuple[str, ...] = ("majority", "prm_max", "prm_vote")
# all_selections reports score-free majority voting once, under this aggregation name.
NO_AGGREGATION = "-"


def aggregate(step_rewards: Sequence[float], how: str) -> float:
    """One score for a candidate from its step rewards; 0.0 for a candidate with no steps."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")
    if not step_rewards:
        return 0.0
    if any(math.isnan(r) for r in step_rewards):
        # max() over NaN is order-dependent garbage; refuse instead of selecting silently
        raise ValueError(f"NaN step reward in {list(step_rewards)}: the scorer is broken, not selecting")
    if how == "last":
        return float(step_rewards[-1])
    if how == "min":
        return float(min(step_rewards))
    if how == "mean":
        return float(sum(step_rewards)) / len(step_rewards)
    return float(math.prod(step_rewards))


def _check_lengths(answers: Sequence[object], scores: Sequence[object]) -> None:
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")


def _prm_max(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
    best: int | None = None
    for i, a in enumerate(answers):
        if a is None or not a.strip():
            continue
        if best is None or scores[i] > scores[best]:  # strict: ties keep the earliest
            best = i
    return None if best is None else answers[best]


def _prm_vote(answers: Sequence[str | None], scores: Sequence[float], groups: list[list[int]]) -> str | None:
    best: list[int] | None = None
    best_sum = -math.inf
    for g in groups:  # groups come in order of first appearance
        total = sum(scores[i] for i in g)
        if best is None or total > best_sum:  # strict: ties keep the group seen first
            best, best_sum = g, total
    return None if best is None else answers[best[0]]


def select(
    answers: Sequence[str | None],
    scores: Sequence[float],
    how: str,
    equivalent: Equivalent | None = None,
) -> str | None:
    """The chosen answer (None when no candidate has one).

    majority: selection.majority_vote (scores unused); prm_max: the answer of the highest-scored
    candidate that has an answer (ties: the earliest); prm_vote: scores summed per group of
    equivalent answers (selection.group_answers, with `equivalent` merging math-equal groups),
    the highest sum wins (ties: the group that appeared first).
    """
    if how not in SELECTIONS:
        raise ValueError(f"unknown selection {how!r}; valid: {', '.join(SELECTIONS)}")
    _check_lengths(answers, scores)
    if how == "majority":
        return majority_vote(answers, equivalent)[0]
    if how == "prm_max":
        return _prm_max(answers, scores)
    return _prm_vote(answers, scores, group_answers(answers, equivalent))


def all_selections(
    answers: Sequence[str | None],
    step_rewards_per_candidate: Sequence[Sequence[float]],
    equivalent: Equivalent | None = None,
    groups: list[list[int]] | None = None,
) -> dict[tuple[str, str], str | None]:
    """Every (aggregation, selection) pair from one set of step rewards, without rescoring.

    `groups` (from selection.group_answers) skips the grouping when the caller already has it.

    Keys: ``("-", "majority")`` once (majority voting ignores scores), then
    ``(agg, "prm_max")`` and ``(agg, "prm_vote")`` for every agg in AGGREGATIONS. Answers are
    grouped once (so `equivalent` is called once per pair of groups, not once per aggregation).
    """
    _check_lengths(answers, step_rewards_per_candidate)
    if groups is None:
        groups = group_answers(answers, equivalent)
    out: dict[tuple[str, str], str | None] = {}
    best = largest_group(groups)
    out[(NO_AGGREGATION, "majority")] = answers[best[0]] if best else None
    for agg in AGGREGATIONS:
        scores = [aggregate(r, agg) for r in step_rewards_per_candidate]
        out[(agg, "prm_max")] = _prm_max(answers, scores)
        out[(agg, "prm_vote")] = _prm_vote(answers, scores, groups)
    return out


def selection_name(key: tuple[str, str]) -> str:
    """Report name of an all_selections key: ('-', 'majority') -> 'majority', ('min', 'prm_vote') -> 'prm_min_vote'."""
    agg, sel = key
    if sel == "majority":
        return "majority"
    return f"prm_{agg}_{sel.removeprefix('prm_')}"
