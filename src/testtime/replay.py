"""Generation and scoring through the store: replay what is stored, compute only what is missing, commit first.

* ``CachedGenerator``: each sample is keyed by (model, prompt, sampling params, seed, sample index). A
  request for n samples looks all n up, asks the backend only for the missing index ranges, and commits
  each finished chunk in its own transaction before anything downstream sees it, so a killed run loses
  no finished sample.
* ``CachedScorer``: the same for step rewards, keyed by (scorer, question, steps).

Both take any ``StoreLike`` (the SQLite store, a Ray chunk's view of it, the engine's ledger).
"""

from __future__ import annotations

from collections.abc import Sequence

from testtime.policy.base import GenerationRequest, Policy
from testtime.reward.base import (
    AGGREGATIONS,
    DEFAULT_SELECTION,
    BatchScorer,
    RewardModel,
    Scored,
    ScoreRequest,
    check_scored,
)
from testtime.store import StoreLike, generation_key, reward_key
from testtime.types import Completion


def missing_runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices -> contiguous (first, count) runs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


class CachedGenerator:
    """Wraps a Policy; one backend call per batch for the samples the store lacks."""

    def __init__(self, policy: Policy, store: StoreLike | None):
        self.policy = policy
        self.store = store

    def _keys(self, req: GenerationRequest) -> list[str]:
        params = req.params.to_dict()
        return [
            generation_key(self.policy.model_id, req.prompt, params, req.seed, i)
            for i in range(req.first_index, req.first_index + req.n)
        ]

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """One batched backend call for everything not already stored; results in request order."""
        if self.store is None:
            return self.policy.generate(requests)
        keys = [self._keys(r) for r in requests]
        found = self.store.get_generations(k for ks in keys for k in ks)
        todo: list[GenerationRequest] = []
        owner: list[int] = []  # todo index -> request index
        planned: set[str] = set()  # identical requests in one batch are generated once
        for ri, (req, ks) in enumerate(zip(requests, keys, strict=True)):
            missing = [req.first_index + j for j, k in enumerate(ks) if k not in found and k not in planned]
            planned.update(ks)
            for first, count in missing_runs(missing):
                todo.append(GenerationRequest(req.prompt, count, req.seed, req.params, first_index=first))
                owner.append(ri)

        def commit(ti: int, first: int, done: list[Completion]) -> None:
            req = requests[owner[ti]]
            params = req.params.to_dict()
            rows = []
            for j, c in enumerate(done):
                idx = first + j
                key = keys[owner[ti]][idx - req.first_index]
                if key in found:
                    continue
                found[key] = c
                rows.append((key, self.policy.model_id, req.prompt, params, req.seed, idx, c))
            if rows:
                self.store.put_generations(rows)  # type: ignore[union-attr]

        if todo:
            outputs = self.policy.generate(todo, on_chunk=commit)
            # a backend that ignores on_chunk still gets everything committed before it is used
            for ti, done in enumerate(outputs):
                commit(ti, todo[ti].first_index, done)
        return [[found[k] for k in ks] for ks in keys]


class CachedScorer(BatchScorer):
    """Wraps a RewardModel; one backend call per batch for the solutions the store lacks.

    Rewards are committed before they are returned, so a killed run re-scores nothing it finished.
    Identical solutions in one batch are scored once.
    """

    def __init__(self, scorer: RewardModel, store: StoreLike | None) -> None:
        self.scorer = scorer
        self.store = store
        self.name = scorer.name
        self.n_params = scorer.n_params
        self.outcome_only = scorer.outcome_only
        # what the scorer declares (reward.base.RewardModel), for the selection that follows it
        self.aggregations = tuple(getattr(scorer, "aggregations", None) or AGGREGATIONS)
        self.default_selection = str(getattr(scorer, "default_selection", None) or DEFAULT_SELECTION)

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
