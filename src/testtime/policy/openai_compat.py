"""A policy served over HTTP by any OpenAI-compatible ``/v1/completions`` endpoint (vLLM serve, SGLang,
llama.cpp's server, ...). Raw completions, not chat: the prompt is rendered here, so the text the store
keys on is exactly the text the server continues.

What the model needs is read from the server when the backend opens (``server_info``): the chat template
(llama.cpp's ``/props``; vLLM: the tokenizer of the checkpoint it serves, or its ``/tokenize`` rendering),
the end-of-generation token, the parameter count for FLOPs (llama.cpp's ``/v1/models`` ``meta.n_params``;
vLLM: estimated from the checkpoint's ``config.json``) and the server's ``n`` limit. Options override each:
``chat_template`` (+ ``bos_text``, ``eos_text``), ``tokenizer`` (an HF folder or id whose chat template to
use), ``n_params``, ``max_n_per_request``. With no template anywhere the prompt is plain
``Question:/Answer:`` text, and every request also stops at the next ``Question:`` turn (``turns``).
A reachable server that reports no parameter count, with no ``n_params`` given, is a one-line error: FLOPs
are never counted as 0.

Decisions that differ between servers, and the rule used here:

- Seeds. A request for samples [first, first + n) is sent with ``seed = seed + first``. vLLM (V1) and
  llama.cpp's server seed child i of an n>1 request with ``seed + i``, so sample i always gets seed + i,
  as with the in-process llama.cpp backend and regardless of how a request is split. Other servers may
  seed the n children differently (e.g. one generator drawn n times); for them pass
  ``max_n_per_request=1`` so every sample is its own request with its own seed.
- Token counts: each request asks for ``logprobs=5`` (``exact_token_counts``), whose per-choice token list
  (OpenAI / vLLM ``logprobs.tokens``, llama.cpp ``logprobs.content``) counts each sample's generated
  tokens exactly, and whose per-token top-5 (``logprobs.top_logprobs``, llama.cpp ``content[].top_logprobs``)
  gives the sample's confidence (``testtime.confidence``); llama.cpp's ``usage`` counts only the first of n
  choices. Prompt counts come from ``usage``:
  ``prompt_tokens`` (the prompt, counted once per request),
  ``prompt_tokens_details.cached_tokens`` when the server reports it (vLLM needs
  ``--enable-prompt-tokens-details``), else 0. The first sample of a request is charged the uncached
  part of the prompt; its siblings share the prompt's KV, so they count it as fully cached. A server that
  returns no per-choice tokens gets ``usage.completion_tokens`` split evenly over the choices (the
  remainder going to the first ones).
- Finish reasons. ``length`` -> "length". For ``stop`` servers do not distinguish end-of-generation from
  a stop string; we read vLLM's ``stop_reason`` or SGLang's ``matched_stop``: a string is the stop string
  that matched ("stop"; a turn marker: "eos"), ``None`` or a token id is end-of-generation ("eos"). Without
  either field (llama.cpp): "eos" when the last token is the server's end-of-generation token or no stop
  strings were asked for, else "stop" with ``stop`` set only when exactly one stop string was asked for
  (the same rule as the llama.cpp backend when it cannot tell).
- Failures. Each request is retried by ``netretry.post_json`` (429, 5xx, connection errors, timeouts).
  A request whose retries run out, or whose reply is malformed, does not abort the others: every other
  request still finishes and is reported through ``on_chunk`` (so the store keeps it), and only then is
  ``GenerationFailed`` raised, listing each failed piece.
"""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from testtime.confidence import TOP_K, summarize, token_confidence
from testtime.errors import ConfigError, ProblemFailure
from testtime.netretry import Circuits, post_json
from testtime.policy.base import ChunkCallback, GenerationRequest
from testtime.policy.prompts import plain_chat, render_jinja_chat, tokenizer_chat
from testtime.policy.server_info import ServerInfo, Unreachable, discover_with_retries, local_params
from testtime.policy.turns import PLAIN_TURN_STOPS, classify_stop, request_stops
from testtime.types import Completion, Confidence

log = logging.getLogger(__name__)


class GenerationFailed(ProblemFailure):
    """Some pieces of a ``generate`` call failed after retries; all other pieces were completed and
    reported through ``on_chunk`` before this was raised."""

    def __init__(self, failures: list[tuple[int, int, int, BaseException]]):
        # (request index, first sample index, sample count, error) per failed piece
        self.failures = failures
        ri, first, n, err = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(
            f"{len(failures)} generation request(s) failed; first: request {ri} samples "
            f"[{first}, {first + n}): {err}{more}"
        )


def choice_confidence(logprobs: dict[str, Any]) -> Confidence | None:
    """A choice's confidence from its per-token top-k (OpenAI / vLLM: ``top_logprobs``, a token -> logprob
    dict per token; llama.cpp: ``content[].top_logprobs``, a list of entries); None when a token has none."""
    if isinstance(logprobs.get("top_logprobs"), list):
        tops = [list((t or {}).values()) for t in logprobs["top_logprobs"]]
    elif isinstance(logprobs.get("content"), list):
        tops = [[e["logprob"] for e in tok.get("top_logprobs") or []] for tok in logprobs["content"]]
    else:
        return None
    if not tops or not all(tops):
        return None
    return summarize([token_confidence(t) for t in tops])


class OpenAICompatPolicy:
    """Samples from a model behind one or more OpenAI-compatible servers (requests spread round-robin).

    All pieces of one ``generate`` call are in flight together, at most ``max_concurrency`` at once, so a
    server with continuous batching batches every prompt and sample of the call.
    """

    def __init__(
        self,
        base_urls: str | list[str],
        model: str,
        *,
        n_params: int | None = None,
        chat_template: str | None = None,
        tokenizer: str | None = None,
        max_concurrency: int = 16,
        timeout_s: float = 600,
        retries: int = 5,
        api_key: str | None = None,
        model_id: str | None = None,
        max_n_per_request: int | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        bos_text: str = "",
        eos_text: str = "",
        exact_token_counts: bool = True,
    ):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        if not urls:
            raise ValueError("OpenAICompatPolicy needs at least one base URL")
        for name, value, ok, rule in (
            ("max_concurrency", max_concurrency, max_concurrency >= 1, ">= 1"),
            ("max_n_per_request", max_n_per_request, max_n_per_request is None or max_n_per_request >= 1, ">= 1"),
            ("n_params", n_params, n_params is None or n_params >= 1, ">= 1"),
            ("timeout_s", timeout_s, timeout_s > 0, "> 0"),
            ("retries", retries, retries >= 0, ">= 0"),
            ("backoff_s", backoff_s, backoff_s >= 0, ">= 0"),
            ("max_backoff_s", max_backoff_s, max_backoff_s >= 0, ">= 0"),
        ):
            if not ok:  # a backend option: the front ends spell it as --policy-option / policy_options
                raise ConfigError("policy_option", f"{name}={value}", f"{name} must be {rule}")
        # accept both "http://host:8000" and "http://host:8000/v1"
        self.urls = [u if u.endswith("/v1") else u + "/v1" for u in urls]
        self.model = model
        self.model_id = model_id or f"openai:{model}"  # the store key namespace of this backend
        # ask for the sampled tokens' log-probabilities: the only per-sample token count every server gives
        # (llama.cpp's `usage` counts only the first of n choices)
        self.exact_token_counts = exact_token_counts
        self._post_opts = dict(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.circuits = Circuits()  # one breaker per server, shared by every request of this policy
        try:
            self.server = discover_with_retries(
                self.urls, model, self._headers, min(timeout_s, 30.0), retries, backoff_s, max_backoff_s
            )
        except Unreachable as e:  # the run goes on: each request's failure is recorded per problem
            log.warning("no OpenAI-compatible server answered (%s): plain prompts, FLOPs unknown", e)
            self.server = ServerInfo("unreachable")
        self._chat, self.prompt_format = self._renderer(chat_template, bos_text, eos_text, tokenizer)
        # a plain-text prompt has no end-of-turn token: stop where the next turn would start
        self.turn_stops = PLAIN_TURN_STOPS if self.prompt_format == "plain" else ()
        self.n_params = n_params or self.server.n_params or local_params(tokenizer)
        if not self.n_params and self.server.kind != "unreachable":
            raise ConfigError(
                "policy_option",
                "n_params",
                f"{self.urls[0]} does not report the model's parameter count; pass n_params=N "
                "(FLOPs = 2 x params x tokens)",
            )
        # llama.cpp refuses n above its slot count
        self.max_n_per_request = max_n_per_request or min(16, self.server.slots or 16)
        self._next_url = itertools.cycle(self.urls)
        self._url_lock = threading.Lock()  # the rotation continues across calls and threads
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="testtime-openai")

    def _renderer(self, template: str | None, bos: str, eos: str, tokenizer: str | None) -> tuple[Any, str]:
        """(renderer, where its format came from): the options first, then what the server exposes."""
        if template:
            return render_jinja_chat(template, bos, eos), "chat_template option"
        srv = self.server
        if tokenizer is None and srv.chat_template:
            return render_jinja_chat(srv.chat_template, srv.bos_text, srv.eos_text), f"{srv.kind} /props template"
        if tokenizer is None and srv.server_chat is not None:
            return srv.server_chat, f"{srv.kind} /tokenize rendering"
        # vLLM on this machine: the tokenizer of the checkpoint folder it serves
        path = tokenizer or (srv.root if srv.kind == "vllm" and srv.root and Path(srv.root).is_dir() else None)
        if path:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path)
            if getattr(tok, "chat_template", None) is not None:
                return tokenizer_chat(tok), f"tokenizer {path}"
        return plain_chat, "plain"

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self._chat(messages)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- generation ---------------------------------------------------------------------------------

    def _body(self, req: GenerationRequest, first: int, n: int) -> dict[str, Any]:
        sp = req.params
        return {
            "model": self.model,
            "prompt": req.prompt,
            "n": n,
            "seed": (req.seed + first) % (2**31),  # child i samples with seed + i (vLLM, llama.cpp)
            "max_tokens": sp.max_tokens,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            # -1 is "off" for vLLM, SGLang and llama.cpp alike (SGLang rejects 0; llama.cpp defaults to 40)
            "top_k": sp.top_k if sp.top_k > 0 else -1,
            "min_p": 0.0,  # llama.cpp's server defaults to 0.05, which would change the distribution
            "stop": request_stops(sp.stop, self.turn_stops),
            **({"logprobs": TOP_K} if self.exact_token_counts else {}),
        }

    def _call(self, req: GenerationRequest, first: int, n: int) -> list[Completion]:
        with self._url_lock:
            url = next(self._next_url) + "/completions"
        resp = post_json(
            url, self._body(req, first, n), headers=self._headers, circuits=self.circuits, **self._post_opts
        )
        return self._parse(url, req, n, resp)

    def _parse(self, url: str, req: GenerationRequest, n: int, resp: dict) -> list[Completion]:
        choices = resp.get("choices")
        if not isinstance(choices, list) or len(choices) != n:
            got = len(choices) if isinstance(choices, list) else "no"
            raise ValueError(f"{url}: {got} choices for n={n}")
        usage = resp.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        even, extra = divmod(completion_tokens, n)
        out: list[Completion] = []
        for k, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0))):
            logprobs = choice.get("logprobs") or {}
            # OpenAI / vLLM: logprobs.tokens; llama.cpp: logprobs.content (one entry per token)
            tokens = logprobs.get("tokens", logprobs.get("content"))
            generated = len(tokens) if isinstance(tokens, list) else even + (1 if k < extra else 0)
            finish, stop = self._finish(choice, req.params.stop, tokens)
            out.append(
                Completion(
                    text=choice.get("text") or "",
                    finish_reason=finish,
                    prompt_tokens=prompt_tokens,
                    # the first sample evaluates the prompt; its siblings share that KV
                    cached_prompt_tokens=cached if k == 0 else prompt_tokens,
                    generated_tokens=generated,
                    stop=stop,
                    confidence=choice_confidence(logprobs),
                )
            )
        return out

    def _finish(self, choice: dict, stops: tuple[str, ...], tokens: Any) -> tuple[Any, str | None]:
        if choice.get("finish_reason") == "length":
            return "length", None
        for field in ("stop_reason", "matched_stop"):  # vLLM, SGLang
            if field in choice:
                return classify_stop(stops, self.turn_stops, choice[field])
        # llama.cpp: its per-token entries carry ids, the last one the end-of-generation token if it ended so
        if isinstance(tokens, list) and tokens and isinstance(tokens[-1], dict):
            if tokens[-1].get("id") in self.server.eog_ids:
                return "eos", None
        return classify_stop(stops, self.turn_stops)

    def generate(
        self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None = None
    ) -> list[list[Completion]]:
        """Submit every piece (at most ``max_n_per_request`` samples each) at once; ``on_chunk`` runs in
        the caller's thread as each piece finishes. Raises ``GenerationFailed`` after all pieces are done
        if any failed."""
        jobs: list[tuple[int, int, int, Future]] = []
        for ri, req in enumerate(requests):
            start, end = req.first_index, req.first_index + req.n
            while start < end:
                n = min(self.max_n_per_request, end - start)
                jobs.append((ri, start, n, self._pool.submit(self._call, req, start, n)))
                start += n
        where = {fut: (ri, first, n) for ri, first, n, fut in jobs}
        failures: list[tuple[int, int, int, BaseException]] = []
        for fut in as_completed(where):
            ri, first, n = where[fut]
            err = fut.exception()
            if err is not None:
                failures.append((ri, first, n, err))
            elif on_chunk is not None:
                on_chunk(ri, first, fut.result())
        if failures:
            failures.sort(key=lambda f: (f[0], f[1]))
            raise GenerationFailed(failures)
        results: list[list[Completion]] = [[] for _ in requests]
        for ri, _first, _n, fut in jobs:  # submission order keeps sample order within a request
            results[ri].extend(fut.result())
        return results
