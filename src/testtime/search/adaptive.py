"""Adaptive self-consistency: majority voting that stops drawing for a problem once its vote is settled.

ESC (early-stopping self-consistency, arXiv 2401.10480): samples come in windows of ``window``; after a
window, a problem whose window samples all state the same answer stops (a unanimous window is strong
evidence the vote will not move); the others draw the next window, until N samples. The answer is the
majority over every sample drawn, as in ``majority``.

Sample i of a problem is majority voting's sample i (same prompt, seed, sampling params, store key), so
run after a majority pool this costs nothing new, and ``samples_used`` is what it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from testtime.policy.base import GenerationRequest
from testtime.search.base import SearchContext, Strategy, changed_options, labelled
from testtime.search.sampling import majority_trace
from testtime.search.selection import answer_key
from testtime.settings import UNLESS_DEFAULT, check_declared, option
from testtime.types import Completion, Problem, Trace


@dataclass(frozen=True)
class AdaptiveOptions:
    window: int = option(4, "adaptive_majority: samples drawn per round", ge=1, identity=UNLESS_DEFAULT)

    def __post_init__(self) -> None:
        check_declared(self)


def settled(answers: list[str | None]) -> bool:
    """ESC's stopping rule on one window: every sample states an answer, and the same one."""
    return bool(answers) and None not in answers and len({answer_key(a) for a in answers}) == 1  # type: ignore[arg-type]


@dataclass
class AdaptiveMajority(Strategy):
    budget: int = 16
    name = "adaptive_majority"
    from_paper = False  # not in Liu et al. 2025
    Options = AdaptiveOptions

    @classmethod
    def label(cls, options: AdaptiveOptions) -> str:
        return labelled(cls.name, changed_options(options, ["window"]))

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        params = ctx.sampling()
        drawn: list[list[Completion]] = [[] for _ in problems]
        answers: list[list[str | None]] = [[] for _ in problems]
        live = list(range(len(problems)))
        while live:  # one batched call per window, for every problem still voting
            requests = [
                GenerationRequest(ctx.prompt_for(problems[i]), min(self.options.window, self.budget - len(drawn[i])),
                                  ctx.problem_seed(problems[i]), params, first_index=len(drawn[i]))
                for i in live
            ]
            new = ctx.generator.generate(requests)
            window = iter(ctx.answers([c.text for comps in new for c in comps]))  # the window's answers, one batch
            for i, comps in zip(live, new, strict=True):
                drawn[i].extend(comps)
                answers[i].extend(next(window) for _ in comps)
            live = [i for i, req in zip(live, requests, strict=True) if len(drawn[i]) < self.budget
                    and not settled(answers[i][-req.n :])]
        return [majority_trace(self, p, comps, ans, ctx, samples_used=len(comps))
                for p, comps, ans in zip(problems, drawn, answers, strict=True)]
