"""DeepConf online (arXiv 2508.15260): confidence-weighted voting that stops low-confidence samples early.

Per problem, ``warmup`` full samples come first (majority voting's samples 0..warmup-1: same prompt, seed
and store key, so a majority pool serves them). Their lowest-group confidences set the problem's stopping
threshold: the confidence above which the most confident ``keep`` share of the warm-up lies (DeepConf's
percentile; keep=0.9 is its conservative setting). The other N - warmup samples are written one step at a
time (a step ends at a blank line), every live sample of every problem in ONE policy call per step; a
sample whose newest step has a lowest-group confidence below the threshold is stopped there and does not
vote. The answer is the confidence-weighted vote (``confidence_vote``) over the warm-up and the samples
that finished; every other selection is reported too.

What it saves is the tokens the stopped samples would have written; what it costs is what they wrote
before stopping, charged in full. Checking per step, not per token, means a weak stretch is caught at the
end of its step (the paper checks every token), and a window never spans two steps. A backend without
log-probabilities gives no threshold: nothing stops, and the vote is plain majority.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from testtime.extraction import extract_answer
from testtime.policy.base import STEP_STOP, GenerationRequest, SamplingParams
from testtime.search.base import (
    SearchContext,
    Strategy,
    candidate_of,
    changed_options,
    compute_of,
    confidences_of,
    labelled,
    split_steps,
)
from testtime.search.selection import SELECTIONS, Pool, all_selections, answer_groups, group_index
from testtime.settings import UNLESS_DEFAULT, check_declared, option
from testtime.types import Candidate, Completion, Confidence, Problem, Trace

VOTE = SELECTIONS["confidence_vote"]
MAX_STEPS = 40  # a sample that reaches this many steps ends there (the tree searches' max depth)


@dataclass(frozen=True)
class DeepConfOptions:
    warmup: int = option(4, "deepconf_online: full samples per problem that set its stopping threshold", ge=1,
                         identity=UNLESS_DEFAULT)
    keep: float = option(0.9, "deepconf_online: share of the warm-up whose confidence lies above the threshold",
                         gt=0.0, le=1.0, identity=UNLESS_DEFAULT)

    def __post_init__(self) -> None:
        check_declared(self)


def threshold(confidences: list[float | None], keep: float) -> float | None:
    """The lowest confidence among the most confident `keep` share of the warm-up (None: one has none)."""
    if not confidences or any(c is None for c in confidences):
        return None
    ranked = sorted((c for c in confidences if c is not None), reverse=True)
    return ranked[max(1, math.ceil(keep * len(ranked))) - 1]


@dataclass
class _Sample:
    """An online sample being written step by step."""

    index: int
    steps: list[Completion] = field(default_factory=list)
    done: bool = False
    stopped: bool = False

    @property
    def text(self) -> str:
        return "".join(c.text + (STEP_STOP if c.stop == STEP_STOP else "") for c in self.steps)

    @property
    def tokens(self) -> int:
        return sum(c.generated_tokens for c in self.steps)

    def confidence(self) -> Confidence | None:
        """The sample's summaries from its steps': token-weighted mean, the lowest window, the last tail."""
        confs = [c.confidence for c in self.steps]
        if not confs or any(c is None for c in confs):
            return None
        n = sum(c.tokens for c in confs)  # type: ignore[union-attr]
        return Confidence(mean=sum(c.mean * c.tokens for c in confs) / max(1, n),  # type: ignore[union-attr]
                          lowest_group=min(c.lowest_group for c in confs),  # type: ignore[union-attr]
                          tail=confs[-1].tail, tokens=n)  # type: ignore[union-attr]


@dataclass
class DeepConfOnline(Strategy):
    budget: int = 16
    name = "deepconf_online"
    from_paper = False  # not in Liu et al. 2025 (DeepConf, arXiv 2508.15260)
    Options = DeepConfOptions

    @classmethod
    def label(cls, options: DeepConfOptions) -> str:
        return labelled(cls.name, changed_options(options, ["warmup", "keep"]))

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        w = min(self.options.warmup, self.budget)
        prompts = [ctx.prompt_for(p) for p in problems]
        seeds = [ctx.problem_seed(p) for p in problems]
        warm = ctx.generator.generate([GenerationRequest(pr, w, s, ctx.sampling()) for pr, s in zip(
            prompts, seeds, strict=True)])  # one call: majority's first w samples of every problem
        cuts = [threshold([c.confidence.lowest_group if c.confidence else None for c in comps], self.options.keep)
                for comps in warm]
        online = [[_Sample(i) for i in range(w, self.budget)] for _ in problems]
        while True:  # one policy call per step for every live sample of every problem
            live = [(pi, s) for pi, samples in enumerate(online) for s in samples if not s.done]
            if not live:
                break
            requests = [self._step_request(prompts[pi], seeds[pi], s, ctx) for pi, s in live]
            for (pi, s), (c,) in zip(live, ctx.generator.generate(requests), strict=True):
                s.steps.append(c)
                cut = cuts[pi]
                if cut is not None and c.confidence is not None and c.confidence.lowest_group < cut:
                    s.done = s.stopped = True
                elif (c.finish_reason != "stop" or extract_answer(c.text) is not None
                      or s.tokens >= ctx.max_tokens or len(s.steps) >= MAX_STEPS):
                    s.done = True
        # final answers under the run's extraction policy, every problem's samples in one batch
        texts = [[c.text for c in comps] + [s.text for s in samples if not s.stopped]
                 for comps, samples in zip(warm, online, strict=True)]
        flat = iter(ctx.answers([t for ts in texts for t in ts]))
        answers = [[next(flat) for _ in ts] for ts in texts]
        return [self._trace(p, comps, samples, cut, ans, ctx)
                for p, comps, samples, cut, ans in zip(problems, warm, online, cuts, answers, strict=True)]

    def _step_request(self, prompt: str, seed: int, s: _Sample, ctx: SearchContext) -> GenerationRequest:
        text = s.text
        # the same partial sample always gets the same next step: reruns replay from the store
        h = hashlib.sha256(f"{seed}\x00{s.index}\x00{text}".encode()).digest()
        params = SamplingParams(max_tokens=max(1, ctx.max_tokens - s.tokens), temperature=ctx.temperature,
                                top_p=ctx.top_p, stop=(STEP_STOP,))
        return GenerationRequest(prompt + text, 1, int.from_bytes(h[:4], "little") & 0x3FFFFFFF, params)

    def _trace(self, problem: Problem, warm: list[Completion], online: list[_Sample], cut: float | None,
               answers: list[str | None], ctx: SearchContext) -> Trace:
        cands = [candidate_of(c, a) for c, a in zip(warm, answers, strict=False)]
        kept = [s for s in online if not s.stopped]
        for s, answer in zip(kept, answers[len(warm):], strict=True):
            cands.append(Candidate(steps=split_steps(s.text), answer=answer, finish_reason=s.steps[-1].finish_reason,
                                   generated_tokens=s.tokens, confidence=s.confidence()))
        groups = answer_groups(answers, problem.kind, ctx.answer_grouping)
        pool = Pool.of(group_index(groups, len(answers)), None, confidences_of(cands))
        picks = all_selections(answers, None, pool=pool)
        chosen = picks.get(VOTE.name, picks["majority"])  # no confidences: plain majority
        spent = list(warm) + [c for s in online for c in s.steps]
        return Trace(problem.id, self.name, self.budget, cands, chosen, compute=compute_of(spent, ctx.n_params),
                     answer_groups=list(pool.group_of), selections=picks,
                     meta={"threshold": cut, "stopped": sum(s.stopped for s in online),
                           "stopped_tokens": sum(s.tokens for s in online if s.stopped)})
