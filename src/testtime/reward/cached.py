"""Scoring through the store, like generation: replay stored step rewards, score only what is missing."""

from __future__ import annotations

from collections.abc import Sequence

from testtime.reward.base import BatchScorer, RewardModel, Scored, ScoreRequest, check_scored
from testtime.store import Store, reward_key


class CachedScorer(BatchScorer):
    """Wraps a RewardModel; one backend call per batch for the solutions the store lacks.

    Rewards are committed before they are returned, so a killed run re-scores nothing it finished.
    Identical solutions in one batch are scored once.
    """

    def __init__(self, scorer: RewardModel, store: Store | None) -> None:
        self.scorer = scorer
        self.store = store
        self.name = scorer.name
        self.n_params = scorer.n_params
        self.outcome_only = scorer.outcome_only

    def _key(self, r: ScoreRequest) -> str:
        # Only outcome scorers read the reference, so only their keys depend on it.
        return reward_key(self.name, r.question, r.steps, r.reference if self.outcome_only else None)

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        if self.store is None:
            return check_scored(self.name, requests, self.scorer.score_batch(requests))
        keys = [self._key(r) for r in requests]
        found = self.store.get_rewards(keys)
        todo: dict[str, ScoreRequest] = {}
        for k, r in zip(keys, requests, strict=True):
            if k not in found and k not in todo:
                todo[k] = r
        if todo:
            fresh = check_scored(self.name, list(todo.values()), self.scorer.score_batch(list(todo.values())))
            pairs = zip(todo.items(), fresh, strict=True)
            self.store.put_rewards([(k, self.name, r.question, r.steps, s.rewards, s.tokens) for (k, r), s in pairs])
            fresh_by_key = {k: s for k, s in zip(todo, fresh, strict=True)}
        else:
            fresh_by_key = {}
        out = []
        for k in keys:
            if k in fresh_by_key:
                s = fresh_by_key[k]
                out.append(Scored(list(s.rewards), s.tokens, False, dict(s.meta)))
            else:
                rewards, tokens = found[k]
                out.append(Scored(list(rewards), tokens, True))
        return out

    def close(self) -> None:
        close = getattr(self.scorer, "close", None)
        if close is not None:
            close()
