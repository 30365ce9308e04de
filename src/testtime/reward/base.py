"""The reward-model protocol: one batched call that scores every step of many solutions."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RewardModel(Protocol):
    """A step-level scorer (a PRM, or a rule-based stand-in such as ArithCheck).

    `score` gets every solution a strategy wants scored for one question and must batch them;
    it returns one reward per step, in step order (``len(out[i]) == len(solutions[i])``).
    Rewards are floats, nominally in [0, 1], higher = more likely correct so far.
    """

    name: str  # stable identity, used in reports and store keys
    n_params: int  # for FLOPs = 2 x params x tokens; 0 for non-neural scorers
    # True marks oracle-like scorers (they look at the reference answer or only judge the final
    # outcome): useful as upper bounds in experiments, never to be picked as a default.
    outcome_only: bool

    def score(self, question: str, solutions: list[list[str]]) -> list[list[float]]: ...
