"""The data model shared by every layer: problems, completions, traces and compute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "eos", "length"]

# A solution is a list of steps; a step is text that ends at a blank line ("\n\n").
Steps = list[str]


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer.

    `kind` selects how answers are compared (math, aime, amc, gsm8k, arith, number);
    `meta` holds level, subject, source and any other dataset fields kept for reports.
    """

    id: str
    question: str
    answer: str
    kind: str = "math"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def level(self) -> Any | None:
        return self.meta.get("level")


@dataclass
class Completion:
    """One sampled continuation of a prompt, with exact token accounting."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int  # tokens of the prompt, as the backend saw them
    cached_prompt_tokens: int  # of those, served from the KV / prefix cache
    generated_tokens: int
    stop: str | None = None  # the stop string that ended it, if any
    from_store: bool = False  # True when replayed from the store, not generated now


@dataclass
class Compute:
    """Compute spent, split by who spent it. FLOPs = 2 x params x tokens (forward pass)."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    prm_tokens: int = 0
    policy_flops: float = 0.0
    prm_flops: float = 0.0
    new_generations: int = 0
    cached_generations: int = 0

    @property
    def flops(self) -> float:
        return self.policy_flops + self.prm_flops

    def add(self, other: Compute) -> Compute:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["flops"] = self.flops
        return d


@dataclass
class Candidate:
    """A finished (or abandoned) solution a strategy produced."""

    steps: Steps
    answer: str | None  # extracted final answer, None when none was found
    finish_reason: FinishReason
    generated_tokens: int
    correct: bool | None = None  # graded against the reference when known

    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass
class Trace:
    """What a strategy returns for one problem: every candidate, the choice, the compute."""

    problem_id: str
    strategy: str
    budget: int
    candidates: list[Candidate]
    answer: str | None
    correct: bool | None = None
    compute: Compute = field(default_factory=Compute)
    meta: dict[str, Any] = field(default_factory=dict)
