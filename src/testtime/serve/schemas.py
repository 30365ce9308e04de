"""Request bodies of the OpenAI-compatible endpoints, as pydantic models (FastAPI validates them and they
make the OpenAPI schema the fuzzing tests generate requests from).

Fields testtime does not use (``frequency_penalty``, ``logit_bias``, ``user`` ...) are accepted and ignored, as
clients send them by default; the ones it honours are typed here and checked against the server's caps in
``serve.plan``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from testtime import settings as S
from testtime.config import OPTIONS
from testtime.serve.settings import strategy_names

# every registered strategy and auto (from the registry: a new strategy is servable without an edit here)
StrategyName = Literal[strategy_names()]  # type: ignore[valid-type]
# the sampling settings a request may give (None: the server's), with the declared ranges
MaxTokens = S.MAX_TOKENS.annotation(optional=True)
Temperature = S.TEMPERATURE.annotation(optional=True)
TopP = S.TOP_P.annotation(optional=True)
Width = OPTIONS["m"].annotation(optional=True)


class TTSOptions(BaseModel):
    """The ``tts`` extension (``extra_body={"tts": {...}}`` in the SDK): overrides the server's choice."""

    model_config = ConfigDict(extra="forbid")

    strategy: StrategyName | None = None
    budget: int | None = Field(default=None, ge=1)
    prm: str | None = Field(default=None, min_length=1, max_length=500)
    m: Width = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=500)
    max_tokens: MaxTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    tts: TTSOptions | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        items = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in items if s]


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: MaxTokens = None


class CompletionRequest(_Common):
    # one prompt per request (a list of one is accepted, as the SDK may send it)
    prompt: str | list[str]
