"""The policy protocol: one batched call that continues many prompts, n samples each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from testtime.errors import ConfigError
from testtime.settings import SAMPLING, TEMPERATURE, TOP_P
from testtime.types import Completion

STEP_STOP = "\n\n"  # a reasoning step ends at a blank line


@dataclass(frozen=True)
class SamplingParams:
    """Everything besides the prompt and seed that decides a sample; part of the store key."""

    # ranges and the sampling defaults are the run's (testtime.settings); max_tokens is one call's cap, a step's
    # as often as a solution's, so callers always pass it and its default stays the short one calls had
    max_tokens: int = 256
    temperature: float = TEMPERATURE.default
    top_p: float = TOP_P.default
    top_k: int = 0  # 0 = off
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for setting in SAMPLING:  # also refuses NaN
            setting.check(getattr(self, setting.name))
        if self.top_k < 0:
            raise ConfigError("top_k", self.top_k, "must be >= 0 (0: off)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class GenerationRequest:
    """n samples of one prompt. Sample i is drawn with sampler seed `seed + i`, so a request for
    samples [k, n) of the same prompt reproduces the tail of a request for [0, n)."""

    prompt: str
    n: int
    seed: int
    params: SamplingParams = field(default_factory=SamplingParams)
    first_index: int = 0  # index of the first sample asked for (resume a partly stored group)


@dataclass
class NextTokenLogprobs:
    """The top-k candidates for the token after a prompt (token text -> log-probability)."""

    top: dict[str, float]
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


# (request index, index of its first sample, the finished samples)
ChunkCallback = Callable[[int, int, list[Completion]], None]


@runtime_checkable
class Policy(Protocol):
    """A text generator. `generate` gets every request a strategy has at one depth, from every
    problem, and must batch them (never loop one problem per backend call)."""

    model_id: str  # stable identity of weights + quantisation, part of every store key
    n_params: int  # for FLOPs = 2 x params x tokens

    def generate(
        self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None = None
    ) -> list[list[Completion]]: ...

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for a conversation, ending where the assistant starts writing."""
        ...

    def close(self) -> None: ...
