"""The reward-model contract: one batched call that scores every step of many solutions.

A strategy hands a scorer *all* the solutions it wants scored in one call (many problems, many
candidates each): ``score_batch(requests) -> [Scored]``. Neural scorers sort them by length and
pack bounded batches; rule-based scorers just loop. ``score(question, solutions)`` is the
one-question convenience the issue's protocol names.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# How a candidate's step rewards become one score (search.selection.aggregate): the last step's, the lowest,
# the mean, the product. Defined here because a scorer declares which of them its rewards support.
AGGREGATIONS: tuple[str, ...] = ("last", "min", "mean", "prod")
# The selection a scorer that declares nothing reports by default (a search.selection.SELECTIONS key).
DEFAULT_SELECTION = "prm_last_max"


class RewardError(ValueError):
    """A scorer returned something unusable (wrong length, NaN): never silently selected from."""


@dataclass(frozen=True)
class ScoreRequest:
    """One solution to score: its question and its steps (step order = reward order)."""

    question: str
    steps: tuple[str, ...]
    # Only outcome scorers (the oracle) read these; PRMs must not look at the reference.
    reference: str | None = None
    kind: str = "math"


@dataclass
class Scored:
    """The step rewards of one solution, and the tokens the scorer ran over to get them (for FLOPs)."""

    rewards: list[float]
    tokens: int = 0
    from_store: bool = False
    meta: dict = field(default_factory=dict)


@runtime_checkable
class RewardModel(Protocol):
    """A step-level scorer (a PRM, or a rule-based stand-in such as ArithCheck).

    ``score_batch`` returns one ``Scored`` per request, with one reward per step
    (``len(out[i].rewards) == len(requests[i].steps)``). Rewards are floats, nominally in [0, 1],
    higher = more likely correct so far.
    """

    name: str  # stable identity, used in reports and store keys
    n_params: int  # for FLOPs = 2 x params x tokens; 0 for non-neural scorers
    # True marks oracle-like scorers (they look at the reference answer or only judge the final
    # outcome): useful as upper bounds in experiments, never to be picked as a default.
    outcome_only: bool
    # Which aggregations of its step rewards carry signal (default: all of AGGREGATIONS), and the selection
    # (a SELECTIONS key, e.g. "prm_last_max") a run reports when neither aggregation nor selection is given:
    # a scorer whose last step is always neutral (ArithCheck) declares no "last" and another default.
    aggregations: tuple[str, ...]
    default_selection: str

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]: ...

    def score(self, question: str, solutions: list[list[str]]) -> list[list[float]]: ...


class BatchScorer(ABC):
    """Base for scorers: subclasses implement ``score_batch``; ``score`` comes for free."""

    name: str = "scorer"
    n_params: int = 0
    outcome_only: bool = False
    aggregations: tuple[str, ...] = AGGREGATIONS
    default_selection: str = DEFAULT_SELECTION

    @abstractmethod
    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        """One Scored per request, one reward per step (see RewardModel)."""

    def score(self, question: str, solutions: list[list[str]]) -> list[list[float]]:
        scored = self.score_batch([ScoreRequest(question, tuple(s)) for s in solutions])
        return [s.rewards for s in scored]

    def close(self) -> None:  # noqa: B027 - an optional hook; rule-based scorers hold nothing
        """Release backend resources (models, servers); a no-op for rule-based scorers."""


def check_scored(name: str, requests: Sequence[ScoreRequest], scored: Sequence[Scored]) -> list[Scored]:
    """Reject a scorer's output that would silently corrupt selection: wrong counts or NaN rewards."""
    if len(scored) != len(requests):
        raise RewardError(f"scorer {name}: {len(scored)} results for {len(requests)} solutions")
    for i, (req, s) in enumerate(zip(requests, scored, strict=True)):
        if len(s.rewards) != len(req.steps):
            raise RewardError(
                f"scorer {name}: solution {i} has {len(req.steps)} steps but got {len(s.rewards)} rewards"
            )
        for j, r in enumerate(s.rewards):
            if not isinstance(r, (int, float)) or math.isnan(r):
                raise RewardError(f"scorer {name}: solution {i} step {j} reward is {r!r} (not a number)")
    return list(scored)
