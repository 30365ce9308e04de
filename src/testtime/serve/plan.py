"""One request -> its ``Plan``: the strategy, budget and sampling settings it gets, and one ``Problem`` per
choice (``n``). Pure functions of the request and the server's config; nothing here is shared state.

Precedence: the ``tts`` extension, then ``reasoning_effort`` (a budget from the command line), then the
server's defaults. Caps are checked here and refused as ``PlanError`` naming the request's field.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field

from testtime.config import RunConfig
from testtime.errors import ConfigError
from testtime.serve.schemas import ChatRequest, CompletionRequest
from testtime.serve.settings import AUTO, ServeConfig
from testtime.types import Problem


class PlanError(ValueError):
    """A request the server refuses (HTTP 400): ``param`` is the request field, as OpenAI errors name it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
        self.message = message


# RunConfig fields as the request (or its tts object) spells them
REQUEST_FIELDS = {"n": "tts.budget", "m": "tts.m", "prm": "tts.prm", "strategy": "tts.strategy",
                  "max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
                  "step_max_tokens": "max_tokens", "budget": "tts.budget"}


@dataclass
class Plan:
    kind: str  # "chat" | "text"
    strategy: str  # a registry name or "auto"
    budget: int
    config: RunConfig  # auto: the template every run of the selector starts from
    problems: list[Problem]  # one per choice
    stops: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    seeded: bool = False
    prm: str | None = None  # auto: the scorer spec the selector scores with

    @property
    def group_key(self) -> str:
        """Requests with equal keys are solved together (one engine run, shared backend calls)."""
        d = {k: v for k, v in self.config.__dict__.items() if not k.startswith("_")}
        d.pop("batch_sequences")
        key = {"auto": self.strategy == AUTO, "budget": self.budget, "auto_prm": self.prm, **d}
        return json.dumps(key, sort_keys=True, default=str)


def _question(messages: list[dict[str, str]]) -> str:
    """What the PRM reads as the question: the last user turn."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else messages[-1]["content"]


def plan_request(req: ChatRequest | CompletionRequest, cfg: ServeConfig, nonce: int | None = None) -> Plan:
    """The request's plan; ``PlanError`` names the field a cap or the library refuses."""
    tts = req.tts
    strategy = (tts.strategy if tts and tts.strategy else None) or cfg.strategy
    budget = cfg.budget
    if req.reasoning_effort is not None:
        budget = cfg.efforts[req.reasoning_effort]
    if tts is not None and tts.budget is not None:
        budget = tts.budget
    where = "tts.budget" if tts is not None and tts.budget is not None else "reasoning_effort"
    if budget > cfg.max_budget:
        raise PlanError(where, f"budget {budget} is over this server's limit {cfg.max_budget}")
    if req.n > cfg.max_n:
        raise PlanError("n", f"n {req.n} is over this server's limit {cfg.max_n}")
    max_tokens = cfg.max_tokens
    tokens_field = "max_tokens"
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        max_tokens, tokens_field = req.max_completion_tokens, "max_completion_tokens"
    if req.max_tokens is not None:
        max_tokens, tokens_field = req.max_tokens, "max_tokens"
    if max_tokens > cfg.max_tokens_cap:
        raise PlanError(tokens_field, f"{tokens_field} {max_tokens} is over this server's limit {cfg.max_tokens_cap}")
    temperature = cfg.temperature if req.temperature is None else req.temperature
    top_p = cfg.top_p if req.top_p is None else req.top_p
    prm = (tts.prm if tts and tts.prm else None) or cfg.prm
    if prm != cfg.prm and prm not in cfg.allowed_prms:
        allowed = ", ".join((cfg.prm, *cfg.allowed_prms))
        raise PlanError("tts.prm", f"this server scores with {allowed} only (not {prm!r})")
    m = (tts.m if tts and tts.m else None) or cfg.m
    if isinstance(req, ChatRequest):
        messages = [{"role": "system" if m_.role == "developer" else m_.role, "content": m_.text()}
                    for m_ in req.messages]
        if cfg.system and not any(m_["role"] == "system" for m_ in messages):
            # the answer instruction: what makes a reply state an answer that votes can count
            messages.insert(0, {"role": "system", "content": cfg.system})
        kind, meta, question = "chat", {"request_messages": messages}, _question(messages)
    else:
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise PlanError("prompt", "one prompt per request (send n for several answers)")
        kind, meta, question = "text", {"request_prompt": prompts[0]}, prompts[0]
    common = dict(dataset="serve", seed=0, out=cfg.out, max_tokens=max_tokens, temperature=temperature,
                  top_p=top_p, fewshot=0, extraction=cfg.extraction, max_depth=40, step_max_tokens=min(256, max_tokens))
    try:
        if strategy == AUTO:
            config = RunConfig(strategy="majority", n=1, **common)
        else:
            config = RunConfig(strategy=strategy, n=budget, prm=prm, m=m, **common)
    except ConfigError as e:
        raise PlanError(REQUEST_FIELDS.get(e.field, e.field), e.render(lambda f: REQUEST_FIELDS.get(f, f))) from None
    # sequences per backend call: a whole batch of requests in one call
    config.batch_sequences = cfg.max_batch * max(1, config.strategy_class.effective_n(budget) * req.n)
    seeded = req.seed is not None
    seed = req.seed if seeded else (nonce if nonce is not None else secrets.randbits(62))
    problems = []
    for i in range(req.n):
        # the id decides the samples' seeds (engine: per run seed and problem id): an identical seeded
        # request is the same problem of the same run, so the store replays it
        digest = hashlib.sha256(json.dumps([kind, meta, seed, i, cfg.answer_kind], sort_keys=True).encode())
        problems.append(Problem(f"req-{digest.hexdigest()[:20]}", question, "", kind=cfg.answer_kind, meta=meta))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Plan(kind, strategy, budget, config, problems, req.stops(), req.stream, include_usage, seeded,
                prm if strategy == AUTO else None)
