"""The oracle: an outcome reward from the reference answer.

It answers "would picking this candidate be right?", so Best-of-N with the oracle is pass@N: an upper
bound for experiments, never a scorer to deploy. It is never a default, ``outcome_only`` marks it, and
reports flag any result that used it.
"""

from __future__ import annotations

from collections.abc import Sequence

from testtime.extraction import extract_answer
from testtime.grading import grade_many
from testtime.reward.base import BatchScorer, RewardError, Scored, ScoreRequest


class Oracle(BatchScorer):
    name = "oracle"
    n_params = 0
    outcome_only = True

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        by_kind: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            if r.reference is None:
                raise RewardError("scorer oracle needs the reference answer (it is an upper bound, not a PRM)")
            by_kind.setdefault(r.kind, []).append(i)
        verdict = [False] * len(requests)
        for kind, idx in by_kind.items():  # one grading batch per answer kind
            pairs = [(extract_answer("\n\n".join(requests[i].steps)), requests[i].reference or "") for i in idx]
            for i, ok in zip(idx, grade_many(pairs, kind), strict=True):
                verdict[i] = ok
        # Every step carries the outcome, so every aggregation of it is the outcome itself.
        return [Scored([1.0 if ok else 0.0] * len(r.steps)) for r, ok in zip(requests, verdict, strict=True)]
