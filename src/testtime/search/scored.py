"""The end of every PRM-guided strategy: candidates + step rewards -> every selection, one trace."""

from __future__ import annotations

from typing import Any

from testtime.reward.base import RewardModel
from testtime.search.aggregation import AGGREGATIONS, SELECTIONS, all_selections, selection_name
from testtime.search.selection import group_answers, group_index, math_equivalent
from testtime.types import Candidate, Compute, Problem, Trace


def check_choice(aggregation: str, selection: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"--aggregation {aggregation}: unknown (valid: {', '.join(AGGREGATIONS)})")
    if selection not in SELECTIONS:
        raise ValueError(f"--selection {selection}: unknown (valid: {', '.join(SELECTIONS)})")


def chosen_key(aggregation: str, selection: str) -> tuple[str, str]:
    return ("-", "majority") if selection == "majority" else (aggregation, selection)


def scored_trace(
    problem: Problem,
    strategy: str,
    budget: int,
    candidates: list[Candidate],
    rewards: list[list[float]],
    scorer: RewardModel,
    choice: tuple[str, str],
    compute: Compute,
    meta: dict[str, Any] | None = None,
) -> Trace:
    """Every aggregation x selection over the candidates (answers grouped by math equivalence); the
    trace's answer is ``choice``'s, the others are in ``meta["selections"]`` for the engine to grade."""
    answers = [c.answer for c in candidates]
    groups = group_answers(answers, math_equivalent(problem.kind))
    picks = all_selections(answers, rewards, groups=groups)
    return Trace(
        problem.id, strategy, budget, candidates, picks[choice], compute=compute,
        meta={
            "scorer": scorer.name,
            "oracle": scorer.outcome_only,
            "rewards": rewards,
            "selection": selection_name(choice),
            "selections": {selection_name(k): v for k, v in picks.items()},
            "answer_groups": group_index(groups, len(answers)),  # what sweeps subsample, as for majority
            **(meta or {}),
        },
    )
