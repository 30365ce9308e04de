"""Best-of-N: N full solutions per problem, every step scored once, every aggregation x selection reported.

Sampling is exactly majority voting's (same prompts, seeds and store keys), so a Best-of-N run after
a majority run at the same N re-generates nothing, and the two differ only in how the answer is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from testtime.reward.base import ScoreRequest
from testtime.search.base import ScoredOptions, SearchContext, Strategy, candidate_of, compute_of, scored_trace
from testtime.search.sampling import sample_solutions
from testtime.types import Problem, Trace


@dataclass
class BestOfN(Strategy):
    budget: int = 8
    name = "best_of_n"
    from_paper = True  # one of Liu et al. 2025's strategies
    Options = ScoredOptions
    needs_scorer = True
    pooled = True

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        scorer = ctx.require_scorer(self.name)
        samples = sample_solutions(problems, ctx, self.budget, ctx.temperature)
        answers = iter(ctx.answers([c.text for comps in samples for c in comps]))  # one batch, in order
        cands = [[candidate_of(c, next(answers)) for c in comps] for comps in samples]
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
            compute = compute_of(comps, ctx.n_params)
            compute.prm_tokens = sum(s.tokens for s in mine)
            compute.prm_flops = 2.0 * scorer.n_params * compute.prm_tokens
            traces.append(scored_trace(problem, self, cs, [s.rewards for s in mine], scorer, compute,
                                       rewards_from_store=sum(s.from_store for s in mine),
                                       grouping=ctx.answer_grouping))
        return traces
