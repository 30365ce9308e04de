"""``ServeConfig``: everything ``testtime serve`` is told on its command line, validated once.

Per-request settings (strategy, budget, sampling) are never stored here: a request's own values live in its
``Plan`` (``serve.plan``) and die with it, so one request can never change what another one gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testtime import settings as S
from testtime.config import OPTIONS
from testtime.errors import ConfigError
from testtime.extraction import check_extraction
from testtime.policy.prompts import CHAT_PROMPT
from testtime.search.registry import STRATEGIES

AUTO = "auto"
EFFORTS = ("low", "medium", "high")
# budgets ``reasoning_effort`` maps to unless the command line says otherwise
DEFAULT_EFFORTS = {"low": 2, "medium": 4, "high": 16}


def strategy_names() -> tuple[str, ...]:
    return (AUTO, *STRATEGIES)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    api_key: str | None = None  # clients must send it; never forwarded upstream
    model_name: str = "testtime"  # the id /v1/models lists
    out: str = "runs/serve"  # the store: every generation and every answer's trace
    strategy: str = AUTO  # a request's strategy unless it names one (tts.strategy)
    budget: int = 4  # a request's budget N unless reasoning_effort or tts.budget says otherwise
    efforts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EFFORTS))
    prm: str = "arith-check"  # the step scorer of PRM-guided strategies (and of auto)
    # other scorer specs a request may name in tts.prm (a client never makes the server load anything else)
    allowed_prms: tuple[str, ...] = ()
    table: str | None = None  # a calibrated table for auto (None: the one shipped for the embedded default)
    # the system turn added to a chat request that brings none: the answer instruction the shipped chat table
    # was calibrated with (policy.prompts.CHAT_PROMPT), so answers state a final answer that votes can count.
    # "" adds none. A request's own system turn is kept (and auto's shift check reports it as a prompt change).
    system: str = CHAT_PROMPT["system"]
    # auto: no request gets a config of more than this many times the batch's average budget (nor more than
    # max_budget), so one hard-looking request cannot take a whole batch's budget
    request_cap: float = 4.0
    m: int = OPTIONS["m"].default  # tree searches: beam width
    # a request's sampling settings when it does not say (defaults and ranges: testtime.settings)
    max_tokens: int = S.MAX_TOKENS.default  # per solution
    temperature: float = S.TEMPERATURE.default
    top_p: float = S.TOP_P.default
    answer_kind: str = "number"  # how answers are grouped for voting (testtime.grading kinds)
    # strict by default: a chat reply without an answer marker (a poem, an explanation) must not have a
    # number from its prose taken for its final answer, which math-verify's fallback would do
    extraction: str = "strict"
    # limits: a request over one is refused with 400 naming the field
    max_tokens_cap: int = 2048
    max_budget: int = 64
    max_n: int = 8
    max_body_bytes: int = 1_000_000
    # the queue and the cross-request batches
    queue_size: int = 256  # answers waiting or running; more are refused with 429
    batch_window_ms: float = 20.0  # how long the first request of a batch waits for others
    max_batch: int = 16  # answers solved together at most
    deadline_s: float = 600.0  # per request, from arrival to the answer
    retry_after_s: int = 1
    # streamed chats get the search's progress as reasoning_content deltas before the answer (app.reasoning_*)
    stream_reasoning: bool = False

    def __post_init__(self) -> None:
        if not self.prm.strip():
            raise ConfigError("prm", self.prm, "must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", self.port, "must be in [0, 65535]")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key", message="must not be empty")
        if self.strategy not in strategy_names():
            raise ConfigError("strategy", self.strategy, f"unknown (available: {', '.join(strategy_names())})")
        for name in ("budget", "max_tokens_cap", "max_budget", "max_n", "max_body_bytes",
                     "queue_size", "max_batch", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")
        if set(self.efforts) != set(EFFORTS):
            raise ConfigError("efforts", self.efforts, f"needs exactly {', '.join(EFFORTS)}")
        for effort, b in self.efforts.items():
            if not 1 <= b <= self.max_budget:
                raise ConfigError(f"efforts.{effort}", b, f"must be in [1, max_budget={self.max_budget}]")
        if self.budget > self.max_budget:
            raise ConfigError("budget", self.budget, f"must be <= max_budget={self.max_budget}")
        if self.max_tokens > self.max_tokens_cap:
            raise ConfigError("max_tokens", self.max_tokens, f"must be <= max_tokens_cap={self.max_tokens_cap}")
        for setting in S.SAMPLING:
            setting.check(getattr(self, setting.name))
        OPTIONS["m"].check(self.m)
        if not self.request_cap >= 1:
            raise ConfigError("request_cap", self.request_cap, "must be >= 1")
        if self.batch_window_ms < 0:
            raise ConfigError("batch_window_ms", self.batch_window_ms, "must be >= 0")
        if self.deadline_s <= 0:
            raise ConfigError("deadline_s", self.deadline_s, "must be > 0")
        from testtime.grading import KINDS

        check_extraction(self.extraction)
        if self.answer_kind not in KINDS:
            raise ConfigError("answer_kind", self.answer_kind, f"unknown (available: {', '.join(sorted(KINDS))})")
