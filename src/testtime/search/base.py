"""What every strategy gets: the batched generator, prompts, sampling settings and seeds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from testtime.datasets import fewshot_for
from testtime.generation import CachedGenerator
from testtime.policy.base import SamplingParams
from testtime.policy.prompts import PromptConfig, build_messages
from testtime.reward.base import RewardModel
from testtime.types import Candidate, Completion, Compute, Problem, Trace


@dataclass
class SearchContext:
    generator: CachedGenerator
    prompt: PromptConfig = field(default_factory=PromptConfig)
    max_tokens: int = 384  # per full solution
    temperature: float = 0.7  # sampling temperature (CoT is greedy regardless)
    top_p: float = 1.0
    seed: int = 0
    # The step scorer for PRM-guided strategies (a CachedScorer in runs); None for CoT / majority.
    scorer: RewardModel | None = None

    def require_scorer(self, strategy: str) -> RewardModel:
        if self.scorer is None:
            raise ValueError(f"--strategy {strategy} needs a step scorer: pass --prm (e.g. --prm arith-check)")
        return self.scorer

    def prompt_for(self, problem: Problem) -> str:
        examples = fewshot_for(problem, k=self.prompt.fewshot) if self.prompt.fewshot else []
        messages = build_messages(problem, examples, self.prompt)
        return self.generator.policy.render_chat(messages)

    def problem_seed(self, problem: Problem) -> int:
        """Stable per (run seed, problem): a problem's samples do not depend on batch composition."""
        h = hashlib.sha256(f"{self.seed}:{problem.id}".encode()).digest()
        return int.from_bytes(h[:4], "little") & 0x3FFFFFFF

    def sampling(self, temperature: float | None = None, stop: tuple[str, ...] = ()) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            stop=stop,
        )

    @property
    def n_params(self) -> int:
        return self.generator.policy.n_params


class Strategy(Protocol):
    """A search strategy advances all given problems together and returns one Trace per problem."""

    name: str
    budget: int

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]: ...


def split_steps(text: str) -> list[str]:
    """A solution's steps: each ends at a blank line, kept so that "".join(steps) == text.

    Whitespace-only pieces (extra blank lines) stay attached to a neighbouring step instead of
    being dropped, so a stored candidate is exactly what was generated.
    """
    parts = text.split("\n\n")
    pieces = [p + "\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    steps: list[str] = []
    lead = ""
    for piece in pieces:
        if not piece.strip():
            if steps:
                steps[-1] += piece
            else:
                lead += piece
            continue
        steps.append(lead + piece)
        lead = ""
    return steps or ([text] if text else [])


def compute_of(completions: list[Completion], n_params: int) -> Compute:
    """Token and FLOP accounting for one problem's completions (FLOPs = 2 x params x tokens)."""
    c = Compute()
    for x in completions:
        c.prompt_tokens += x.prompt_tokens
        c.cached_prompt_tokens += x.cached_prompt_tokens
        c.generated_tokens += x.generated_tokens
        c.new_generations += 0 if x.from_store else 1
        c.cached_generations += 1 if x.from_store else 0
    evaluated = c.prompt_tokens - c.cached_prompt_tokens + c.generated_tokens
    c.policy_flops = 2.0 * n_params * evaluated
    return c


def candidate_of(completion: Completion, answer: str | None) -> Candidate:
    return Candidate(
        steps=split_steps(completion.text),
        answer=answer,
        finish_reason=completion.finish_reason,
        generated_tokens=completion.generated_tokens,
    )
