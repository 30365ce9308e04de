"""Strategies that sample whole solutions: CoT (greedy) and majority voting (self-consistency)."""

from __future__ import annotations

from dataclasses import dataclass

from testtime.policy.base import GenerationRequest
from testtime.search.base import SearchContext, Strategy, candidate_of, compute_of, confidences_of
from testtime.search.selection import MAJORITY, Pool, all_selections, answer_groups, group_index
from testtime.types import Completion, Problem, Trace


def sample_solutions(problems: list[Problem], ctx: SearchContext, n: int, temperature: float) -> list[list[Completion]]:
    """n full solutions per problem, one batched (store-backed) call for all problems."""
    params = ctx.sampling(temperature=temperature)
    requests = [GenerationRequest(ctx.prompt_for(p), n, ctx.problem_seed(p), params) for p in problems]
    return ctx.generator.generate(requests)  # one batched call for every problem


@dataclass
class CoT(Strategy):
    """One greedy chain of thought per problem (whatever N is asked for, its budget is 1)."""

    name = "cot"
    from_paper = True  # one of Liu et al. 2025's strategies

    @classmethod
    def effective_n(cls, n: int) -> int:
        return 1

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        traces = []
        samples = sample_solutions(problems, ctx, 1, 0.0)
        answers = ctx.answers([comps[0].text for comps in samples])
        for problem, comps, answer in zip(problems, samples, answers, strict=True):
            traces.append(
                Trace(problem.id, self.name, 1, [candidate_of(comps[0], answer)], answer,
                      compute=compute_of(comps, ctx.n_params))
            )
        return traces


@dataclass
class Majority(Strategy):
    """N sampled solutions per problem; the most frequent final answer wins (math-equivalence groups)."""

    budget: int = 8
    name = "majority"
    from_paper = True  # one of Liu et al. 2025's strategies
    pooled = True

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        samples = sample_solutions(problems, ctx, self.budget, ctx.temperature)
        answers = ctx.answers([c.text for comps in samples for c in comps])  # one batch for every problem
        out, pos = [], 0
        for p, comps in zip(problems, samples, strict=True):
            out.append(majority_trace(self, p, comps, answers[pos : pos + len(comps)], ctx))
            pos += len(comps)
        return out


def majority_trace(strategy: Strategy, problem: Problem, comps: list[Completion], answers: list[str | None],
                   ctx: SearchContext, **meta: object) -> Trace:
    """A voting strategy's trace: the completions' answers (``ctx.answers``, the run's extraction policy)
    grouped once (``ctx.answer_grouping``), the largest group's answer."""
    groups = answer_groups(answers, problem.kind, ctx.answer_grouping)
    cands = [candidate_of(c, a) for c, a in zip(comps, answers, strict=True)]
    pool = Pool.of(group_index(groups, len(answers)), confidence=confidences_of(cands))
    chosen = pool.choose(MAJORITY)
    # with per-sample confidences, the PRM-free confidence selections are reported next to majority
    picks = all_selections(answers, None, pool=pool) if pool.confidence is not None else {}
    return Trace(
        problem.id, strategy.name, strategy.budget, cands,
        None if chosen is None else answers[chosen], compute=compute_of(comps, ctx.n_params),
        answer_groups=list(pool.group_of), selections=picks,
        meta={"votes": sorted((len(g) for g in groups), reverse=True), **meta},
    )
