"""Best-of-N: N full solutions per problem, every step scored once, every aggregation x selection reported.

Sampling is exactly majority voting's (same prompts, seeds and store keys), so a Best-of-N run after
a majority run at the same N re-generates nothing, and the two differ only in how the answer is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from testtime.grading import extract_answer, is_equivalent
from testtime.reward.base import ScoreRequest
from testtime.search.aggregation import AGGREGATIONS, SELECTIONS, all_selections, selection_name
from testtime.search.base import SearchContext, candidate_of, compute_of
from testtime.search.sampling import sample_solutions
from testtime.types import Problem, Trace


@dataclass
class BestOfN:
    budget: int = 8
    aggregation: str = "last"  # the reported answer's; all pairs are in trace.meta["selections"]
    selection: str = "prm_max"
    name: str = "best_of_n"

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"--aggregation {self.aggregation}: unknown (valid: {', '.join(AGGREGATIONS)})")
        if self.selection not in SELECTIONS:
            raise ValueError(f"--selection {self.selection}: unknown (valid: {', '.join(SELECTIONS)})")

    @property
    def chosen_key(self) -> tuple[str, str]:
        return ("-", "majority") if self.selection == "majority" else (self.aggregation, self.selection)

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        scorer = ctx.require_scorer(self.name)
        samples = sample_solutions(problems, ctx, self.budget, ctx.temperature)
        cands = [[candidate_of(c, extract_answer(c.text)) for c in comps] for comps in samples]
        # one scoring call for every candidate of every problem in the batch
        requests = [
            ScoreRequest(p.question, tuple(s.strip() for s in cand.steps), p.answer, p.kind)
            for p, cs in zip(problems, cands, strict=True)
            for cand in cs
        ]
        scored = scorer.score_batch(requests)
        traces: list[Trace] = []
        pos = 0
        for problem, comps, cs in zip(problems, samples, cands, strict=True):
            mine = scored[pos : pos + len(cs)]
            pos += len(cs)
            rewards = [s.rewards for s in mine]
            answers = [c.answer for c in cs]

            def equivalent(a: str, b: str, kind: str = problem.kind) -> bool:
                return is_equivalent(a, b, kind)

            picks = all_selections(answers, rewards, equivalent)
            compute = compute_of(comps, ctx.n_params)
            compute.prm_tokens = sum(s.tokens for s in mine)
            compute.prm_flops = 2.0 * scorer.n_params * compute.prm_tokens
            traces.append(
                Trace(
                    problem.id, self.name, self.budget, cs, picks[self.chosen_key], compute=compute,
                    meta={
                        "scorer": scorer.name,
                        "oracle": scorer.outcome_only,
                        "rewards": rewards,
                        "rewards_from_store": sum(s.from_store for s in mine),
                        "selection": selection_name(self.chosen_key),
                        "selections": {selection_name(k): v for k, v in picks.items()},
                    },
                )
            )
        return traces
