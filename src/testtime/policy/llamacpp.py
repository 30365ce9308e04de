"""llama.cpp policy backend (CPU default), through xllamacpp's in-process server engine.

Why xllamacpp and not llama-cpp-python (measured on a 2-core x86_64 box, SmolLM2-135M Q4_1, README
design notes): it installs as a prebuilt wheel in seconds where llama-cpp-python compiles for 4.7-6.5
minutes (with -march=native, so a built wheel fits one CPU type); its C++ loop samples n=16 children of
one prompt at 330 tok/s vs 284 tok/s for a Python loop over llama-cpp-python's batch API (129 vs 155
tok/s single stream); concurrent requests from Python threads release the GIL and are batched together
by the server's continuous batching (4 prompts x 4 samples: 316 tok/s, vs 182 tok/s one after another);
each slot keeps its KV cache and reuses the longest common prefix, and the response reports how many
prompt tokens came from that cache.

Two things the server does not give directly, recovered here:
- per-sample token counts (its `usage` covers only the first child): we ask for `n_probs`, whose
  per-token entries count the generated tokens exactly and give each token's top-k log-probabilities,
  summarised into the sample's confidence (``testtime.confidence``; what k=5 costs against k=1:
  ``bench/backend_overhead.py --logprobs``);
- whether a sample ended at end-of-generation or at a stop string (both say "stop"): the last token's
  id is checked against the model's end-of-generation ids read from the GGUF.

Settings chosen from the model's GGUF metadata:
- sliding-window attention (Gemma 3: ``attention.sliding_window`` 512): llama.cpp keeps only the last
  window of such layers' KV by default, so no earlier prefix can be reused and every prompt is evaluated
  from scratch (measured: Gemma 3 270M served 245 of 20,708 prompt tokens from the cache over 60 arith CoT
  problems). ``swa_full`` keeps the full-size cache, and the shared few-shot prefix is reused again;
  the ``swa_full`` option overrides the choice.
- a model without a chat template gets plain ``Question:/Answer:`` prompts, and its requests also stop at
  the next ``Question:`` turn (``turns``), which it would otherwise invent until ``max_tokens``.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testtime.backends.llamacpp import in_slot, plan_lanes, quiet_stderr, server_params
from testtime.confidence import TOP_K, summarize, token_confidence
from testtime.errors import ConfigError
from testtime.policy.base import ChunkCallback, GenerationRequest, NextTokenLogprobs
from testtime.policy.gguf_meta import GGUFInfo, read_gguf_info
from testtime.policy.prompts import plain_chat, render_jinja_chat
from testtime.policy.turns import PLAIN_TURN_STOPS, classify_stop, request_stops
from testtime.types import Completion, Confidence


def gguf_chat(info: GGUFInfo):
    """The model's own chat template from the GGUF, or plain text blocks for a base model."""
    if info.chat_template:
        return render_jinja_chat(info.chat_template, info.bos_text, info.eos_text)
    return plain_chat


def content_confidence(content: list[dict[str, Any]]) -> Confidence | None:
    """A sample's confidence from the server's per-token entries (None when they carry no top-k)."""
    tops = [[t["logprob"] for t in tok.get("top_logprobs") or []] for tok in content]
    if not tops or not all(tops):
        return None
    return summarize([token_confidence(t) for t in tops])


class LlamaCppPolicy:
    """A GGUF model served by llama.cpp in this process.

    `slots` parallel sequences share one unified KV cache of `slots * ctx_per_slot` tokens. Requests
    from one `generate` call are submitted together, so the server batches every prompt and sample.
    """

    def __init__(
        self,
        model_path: str | Path,
        slots: int = 16,
        ctx_per_slot: int = 4096,
        threads: int | None = None,
        verbose: bool = False,
        prefix_overhead: float = 0.2,
        cache_idle_slots: bool = False,
        pin_lanes: bool = False,
        swa_full: bool | None = None,
    ):
        import xllamacpp

        for name, value in (("slots", slots), ("ctx_per_slot", ctx_per_slot), ("threads", threads)):
            if value is not None and value < 1:  # a backend option: spelled --policy-option by front ends
                raise ConfigError("policy_option", f"{name}={value}", f"{name} must be >= 1")
        if not prefix_overhead >= 0:  # also refuses NaN
            raise ConfigError("policy_option", f"prefix_overhead={prefix_overhead}", "prefix_overhead must be >= 0")
        self.info: GGUFInfo = read_gguf_info(model_path)
        self.model_id = self.info.model_id
        self.n_params = self.info.n_params
        self.slots = slots
        # prompt text a call may evaluate twice to run more lanes in parallel, as a share of its distinct
        # prompt text (plan_lanes): 0 = one lane per group of prompts that share a prefix
        self.prefix_overhead = prefix_overhead
        # lanes pinned to slots 0..L-1 (id_slot), or left to the server's pick by cached-prefix similarity
        # (which follows a tree search's paths across calls; see the README's performance note)
        self.pin_lanes = pin_lanes
        self._chat = gguf_chat(self.info)
        self.turn_stops = () if self.info.chat_template else PLAIN_TURN_STOPS
        p = server_params(model_path, slots, ctx_per_slot, threads, verbose)
        # a sliding-window model reuses no prefix unless its SWA layers keep the full cache (module docstring)
        self.swa_full = self.info.sliding_window is not None if swa_full is None else bool(swa_full)
        p.swa_full = self.swa_full
        p.n_batch = 2048
        p.kv_unified = True  # n children of one prompt share its KV cells instead of copying per slot
        p.cache_prompt = True
        # llama.cpp's default (its cache_idle_slots, the same name here) saves every idle slot to its host
        # prompt cache and clears it whenever another task starts (unified KV), and a lane's next request then
        # found nothing cached (measured: 0 of 100 prompt tokens reused, vs 100 with this off): off by default,
        # each slot keeps its prompt where it is
        p.cache_idle_slots = cache_idle_slots
        with quiet_stderr(not verbose):
            self._server = xllamacpp.Server(p)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="testtime-llama")
        self._lock = threading.Lock()

    @property
    def has_chat_template(self) -> bool:
        return self.info.chat_template is not None

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self._chat(messages)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        server, self._server = getattr(self, "_server", None), None
        del server

    # -- generation ---------------------------------------------------------------------------------

    def _body(self, req: GenerationRequest, first: int, n: int) -> dict[str, Any]:
        sp = req.params
        return {
            "prompt": req.prompt,
            "n": n,
            "seed": (req.seed + first) % (2**31),  # child i samples with seed + i (server behaviour)
            "max_tokens": sp.max_tokens,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "top_k": sp.top_k,
            "min_p": 0.0,  # the server's defaults (top_k 40, min_p 0.05) would change the distribution
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "stop": request_stops(sp.stop, self.turn_stops),
            "n_probs": TOP_K,
            "cache_prompt": True,
        }

    def _call(self, req: GenerationRequest, first: int, n: int, slot: int | None = None) -> list[Completion]:
        resp = self._server.handle_completions(in_slot(self._body(req, first, n), slot))
        if not isinstance(resp, dict) or "choices" not in resp:
            raise RuntimeError(f"llama.cpp completion failed: {str(resp)[:300]}")
        timings = resp.get("timings") or {}
        evaluated = int(timings.get("prompt_n", 0))
        cached = int(timings.get("cache_n", 0))
        prompt_tokens = evaluated + cached
        out: list[Completion] = []
        for k, choice in enumerate(sorted(resp["choices"], key=lambda c: c["index"])):
            content = (choice.get("logprobs") or {}).get("content") or []
            reason = choice.get("finish_reason")
            if reason == "length":
                finish, stop = "length", None
            elif content and content[-1].get("id") in self.info.eog_ids:
                finish, stop = "eos", None
            else:
                finish, stop = classify_stop(req.params.stop, self.turn_stops)
            out.append(
                Completion(
                    text=choice["text"],
                    finish_reason=finish,
                    prompt_tokens=prompt_tokens,
                    # the first sample evaluates the prompt; its siblings share that KV
                    cached_prompt_tokens=cached if k == 0 else prompt_tokens,
                    generated_tokens=len(content),
                    stop=stop,
                    confidence=content_confidence(content),
                )
            )
        if len(out) != n:
            raise RuntimeError(f"llama.cpp returned {len(out)} samples, asked for {n}")
        return out

    def _next_token(self, prompt: str, top_k: int, slot: int | None = None) -> NextTokenLogprobs:
        body = {
            "prompt": prompt, "n": 1, "max_tokens": 1, "temperature": 0.0, "seed": 0,
            "n_probs": top_k, "cache_prompt": True,
        }
        resp = self._server.handle_completions(in_slot(body, slot))
        if not isinstance(resp, dict) or "choices" not in resp:
            raise RuntimeError(f"llama.cpp completion failed: {str(resp)[:300]}")
        content = (resp["choices"][0].get("logprobs") or {}).get("content") or []
        top = content[0].get("top_logprobs", []) if content else []
        timings = resp.get("timings") or {}
        cached = int(timings.get("cache_n", 0))
        return NextTokenLogprobs(
            {t["token"]: float(t["logprob"]) for t in top}, int(timings.get("prompt_n", 0)) + cached, cached
        )

    def next_token_logprobs(self, prompts: list[str], top_k: int = 20) -> list[NextTokenLogprobs]:
        """The top-k log-probabilities of the token after each prompt, in prefix-sharing lanes.

        A judge's prompts about steps 1..k of one solution extend each other; a lane runs them one
        after another in one slot, so each adds only its own step (see `plan_lanes`)."""
        plan = plan_lanes(prompts, self.slots, self.prefix_overhead)
        out: list[NextTokenLogprobs | None] = [None] * len(prompts)

        def run_lane(slot: int, lane: list[int]) -> None:
            for i in lane:
                out[i] = self._next_token(prompts[i], top_k, slot if self.pin_lanes else None)

        for fut in [self._pool.submit(run_lane, slot, lane) for slot, lane in enumerate(plan.lanes)]:
            fut.result()
        return [r for r in out if r is not None]

    def generate(
        self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None = None
    ) -> list[list[Completion]]:
        """Every request is sent in one call, in prefix-sharing lanes; a request with more samples than
        slots is split into pieces that follow each other in its lane.

        A lane (see `plan_lanes`) runs its requests one after another in one slot, in sorted prompt
        order, so a shared few-shot prefix or a shared partial solution is evaluated once per lane, not
        once per request. The n samples of one request share its prompt's KV cells, taking n - 1 more
        slots while it runs, so lanes are capped at slots // n.

        `on_chunk(request_index, first_index, completions)` runs in the caller's thread as each piece
        finishes, so the store can commit finished samples before the rest of the call is done.
        """
        if not requests:
            return []
        widest = max(min(self.slots, r.n) for r in requests)
        plan = plan_lanes([r.prompt for r in requests], max(1, self.slots // widest), self.prefix_overhead)
        done: queue.Queue[tuple[int, int, list[Completion] | BaseException]] = queue.Queue()

        def run_lane(slot: int, lane: list[int]) -> None:
            for ri in lane:
                req = requests[ri]
                start, end = req.first_index, req.first_index + req.n
                while start < end:
                    n = min(self.slots, end - start)
                    try:
                        done.put((ri, start, self._call(req, start, n, slot if self.pin_lanes else None)))
                    except BaseException as err:  # reported in the caller's thread, the lane stops
                        done.put((ri, start, err))
                        return
                    start += n

        futures = [self._pool.submit(run_lane, slot, lane) for slot, lane in enumerate(plan.lanes)]
        pieces: dict[int, dict[int, list[Completion]]] = {ri: {} for ri in range(len(requests))}
        expected = sum(-(-r.n // self.slots) for r in requests)
        received = 0
        while received < expected:
            ri, first, got = done.get()
            if isinstance(got, BaseException):
                for fut in futures:
                    fut.cancel()
                raise got
            received += 1
            pieces[ri][first] = got
            if on_chunk is not None:
                on_chunk(ri, first, got)
        for fut in futures:
            fut.result()
        # pieces in sample order within each request
        return [[c for first in sorted(pieces[ri]) for c in pieces[ri][first]] for ri in range(len(requests))]
