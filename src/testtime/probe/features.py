"""A policy's hidden state at the end of every step: the input of a probe PRM.

What is read, and why:
- The context is the policy's own chat template with the instruction and the question (zero-shot),
  followed by the solution's steps. A scorer only ever sees (question, steps), so the same context is
  rebuilt at training and at scoring time; dropping the few-shot turns makes a forward pass about 4x
  shorter on CPU.
- One forward pass per solution; the hidden state is read at the last non-whitespace token of each
  step. The model is causal, so the state at step k does not depend on later steps: this equals one
  pass per step prefix (checked in the tests) at a fraction of the cost.
- llama.cpp: the embedding output with pooling "none" is the final hidden state after the output norm
  (the LM head's input). xllamacpp's in-process call only serves pooled (OpenAI-style) embeddings, so
  the per-token ones come from the same in-process server's native ``/embedding`` route on loopback.
- transformers: ``hidden_states[layer]`` (default -1, the last layer after the final norm).

Features are cached in the store (``features`` table) under the extractor's name, which carries the
model fingerprint, the layer and the context rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from testtime.policy.prompts import PromptConfig, build_messages
from testtime.reward.base import ScoreRequest
from testtime.store import Store
from testtime.types import Problem

CONTEXT_RULE = "chat-zero-shot"  # instruction + question as one user turn, steps as the assistant's text


class FeatureExtractor(Protocol):
    name: str  # identity: model fingerprint + layer + context rule (part of the cache key)
    n_params: int  # the forward pass costs 2 x params x tokens

    def features(self, requests: Sequence[ScoreRequest]) -> list[tuple[np.ndarray, int]]:
        """Per request: a float32 array (steps, dim) and the number of tokens run."""
        ...

    def close(self) -> None: ...


def feature_context(render_chat: Callable[[list[dict[str, str]]], str], question: str) -> str:
    """The text before the first step: the policy's chat template around the question (zero-shot)."""
    messages = build_messages(Problem("", question, ""), [], PromptConfig(fewshot=0))
    return render_chat(messages)


def encode_steps(
    tokenize: Callable[[str], list[int]], context_ids: Sequence[int], steps: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Token ids of context + steps and, per step, the position of its last non-whitespace token.

    Each step is tokenized on its own (its trailing blank line separately), so a read position never
    falls inside the next step. A whitespace-only step reads where the previous one ended.
    """
    ids = list(context_ids)
    positions: list[int] = []
    for step in steps:
        body = step.rstrip()
        if body:
            ids.extend(tokenize(body))
        positions.append(max(len(ids) - 1, 0))
        tail = step[len(body):]
        if tail:
            ids.extend(tokenize(tail))
    return ids, positions


class LlamaCppFeatures:
    """Final-norm hidden states of a GGUF model from an in-process llama.cpp embedding server."""

    def __init__(
        self,
        model_path: str | Path,
        slots: int = 4,
        ctx_per_slot: int = 4096,
        threads: int | None = None,
        batch_sequences: int = 8,
        verbose: bool = False,
    ) -> None:
        import httpx
        import xllamacpp

        from testtime.backends.llamacpp import quiet_stderr, server_params
        from testtime.policy.gguf_meta import read_gguf_info
        from testtime.policy.llamacpp import gguf_chat

        self.info = read_gguf_info(model_path)
        self.model_id = self.info.model_id
        self.n_params = self.info.n_params
        self.name = f"llamacpp-final-norm|{CONTEXT_RULE}|{self.model_id}"
        self._chat = gguf_chat(self.info)
        self.max_len = ctx_per_slot
        self.batch_sequences = batch_sequences
        p = server_params(model_path, slots, ctx_per_slot, threads, verbose)
        p.embedding = True
        p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_NONE
        p.n_batch = p.n_ubatch = ctx_per_slot
        p.port = 0  # any free loopback port; the server is this process's own
        with quiet_stderr(not verbose):
            self._server = xllamacpp.Server(p)
        self._http = httpx.Client(base_url=self._server.listening_address, timeout=600.0)
        self._token_cache: dict[tuple[str, bool], list[int]] = {}

    def _tokenize(self, text: str, special: bool = False) -> list[int]:
        key = (text, special)
        if key not in self._token_cache:
            r = self._http.post("/tokenize", json={"content": text, "add_special": False, "parse_special": special})
            r.raise_for_status()
            self._token_cache[key] = list(r.json()["tokens"])
        return self._token_cache[key]

    def encode(self, request: ScoreRequest) -> tuple[list[int], list[int]]:
        context = self._tokenize(feature_context(self._chat, request.question), special=True)
        ids, positions = encode_steps(self._tokenize, context, request.steps)
        if len(ids) > self.max_len:
            raise ValueError(
                f"probe features: a solution of {len(ids)} tokens exceeds the {self.max_len}-token context")
        return ids, positions

    def features(self, requests: Sequence[ScoreRequest]) -> list[tuple[np.ndarray, int]]:
        encoded = [self.encode(r) for r in requests]
        out: list[tuple[np.ndarray, int]] = []
        for start in range(0, len(encoded), self.batch_sequences):
            chunk = encoded[start : start + self.batch_sequences]
            r = self._http.post("/embedding", json={"content": [ids for ids, _ in chunk]})
            if r.status_code != 200:
                raise RuntimeError(f"llama.cpp embedding failed ({r.status_code}): {r.text[:300]}")
            rows = sorted(r.json(), key=lambda x: x["index"])
            for (ids, positions), row in zip(chunk, rows, strict=True):
                emb = np.asarray(row["embedding"], dtype=np.float32)
                out.append((emb[positions], len(ids)))
        return out

    def close(self) -> None:
        self._http.close()
        server, self._server = getattr(self, "_server", None), None
        del server


class HFFeatures:
    """``hidden_states[layer]`` of a transformers causal LM at the step ends, padded batches."""

    def __init__(self, model: str | Path, layer: int = -1, device: str | None = None,
                 max_batch_tokens: int = 8192, max_batch_rows: int = 16) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise ImportError("probe features from a transformers model need: pip install 'testtime[hf]'") from None
        from testtime.backends.hf import fingerprint
        from testtime.policy.prompts import tokenizer_chat

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.model = AutoModelForCausalLM.from_pretrained(str(model), torch_dtype=dtype).to(self.device).eval()
        self.layer = layer
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.name = f"hf-layer{layer}|{CONTEXT_RULE}|{Path(model).name}@{fingerprint(Path(model))}"
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self._chat = tokenizer_chat(self.tokenizer)

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def features(self, requests: Sequence[ScoreRequest]) -> list[tuple[np.ndarray, int]]:
        torch = self._torch
        encoded = [encode_steps(self._tokenize, self._tokenize(feature_context(self._chat, r.question)), r.steps)
                   for r in requests]
        out: list[tuple[np.ndarray, int] | None] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch: list[int] = []

        def flush() -> None:
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = encoded[i][0]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with torch.no_grad():
                hs = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                output_hidden_states=True).hidden_states[self.layer]
            for row, i in enumerate(batch):
                pos = torch.tensor(encoded[i][1], dtype=torch.long, device=hs.device)
                out[i] = (hs[row].index_select(0, pos).float().cpu().numpy(), len(encoded[i][0]))
            batch.clear()

        for i in order:
            n = len(encoded[i][0])
            if batch and ((len(batch) + 1) * max(n, 1) > self.max_batch_tokens or len(batch) >= self.max_batch_rows):
                flush()
            batch.append(i)
        if batch:
            flush()
        return [x for x in out if x is not None]

    def close(self) -> None:
        self.model = None


def feature_key(extractor: str, question: str, steps: Sequence[str]) -> str:
    payload = json.dumps({"extractor": extractor, "question": question, "steps": list(steps)},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CachedFeatures:
    """Features through the store: compute only what is missing, commit before returning."""

    def __init__(self, extractor: FeatureExtractor, store: Store | None) -> None:
        self.extractor = extractor
        self.store = store
        self.name = extractor.name
        self.n_params = extractor.n_params

    def features(self, requests: Sequence[ScoreRequest]) -> list[tuple[np.ndarray, int]]:
        if self.store is None:
            return self.extractor.features(requests)
        keys = [feature_key(self.name, r.question, r.steps) for r in requests]
        found: dict[str, tuple[np.ndarray, int]] = self.store.get_features(keys)
        todo: dict[str, ScoreRequest] = {}
        for k, r in zip(keys, requests, strict=True):
            if k not in found and k not in todo:
                todo[k] = r
        if todo:
            fresh = self.extractor.features(list(todo.values()))
            self.store.put_features([(k, self.name, a, tok) for k, (a, tok) in zip(todo, fresh, strict=True)])
            found.update(zip(todo, fresh, strict=True))
        return [found[k] for k in keys]

    def close(self) -> None:
        self.extractor.close()


def extractor_for(backend: str, model: str | Path, **options: Any) -> FeatureExtractor:
    """The feature extractor a probe artifact names: llamacpp (a GGUF) or hf (a transformers model)."""
    if backend == "llamacpp":
        from testtime.policy.models import resolve_model

        return LlamaCppFeatures(resolve_model(str(model)), **options)
    if backend == "hf":
        return HFFeatures(model, **options)
    raise ValueError(f"probe features: unknown backend {backend!r} (available: llamacpp, hf)")
