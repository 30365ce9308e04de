"""Generation through the store: replay what is stored, generate only what is missing, commit first.

Each sample is keyed by (model, prompt, sampling params, seed, sample index). A request for n samples
looks all n up, asks the backend only for the missing index ranges, and commits each finished chunk
in its own transaction before anything downstream sees it, so a killed run loses no finished sample.
"""

from __future__ import annotations

from testtime.policy.base import GenerationRequest, Policy
from testtime.store import Store, generation_key
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
    def __init__(self, policy: Policy, store: Store | None):
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
