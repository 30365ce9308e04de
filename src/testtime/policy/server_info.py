"""What an OpenAI-compatible server says about the model it serves: chat template, turn tokens, parameter
count, slots. Read once when the OpenAI backend opens, so a user passes none of it by hand.

Servers differ (measured here: llama.cpp's server from xllamacpp; vLLM 0.32's OpenAI server):

- llama.cpp: ``GET /props`` has ``chat_template``, ``bos_token``, ``eos_token`` and ``total_slots`` (its
  ``n`` limit); ``GET /v1/models`` has ``meta.n_params``. For a GGUF without a template (a base model)
  ``/props`` reports llama.cpp's fallback ChatML template, whose ``<|im_start|>`` the vocabulary lacks:
  a template whose control markers do not tokenize to one token each (``POST /tokenize``) is not the model's.
- vLLM: no ``/props``; ``GET /v1/models`` has ``root`` (the folder or hub id it loaded) and
  ``max_model_len``, no parameter count. The chat template is the tokenizer's: loaded from ``root`` when that
  folder is on this machine, else rendered by the server (``POST /tokenize`` with ``messages``, then
  ``POST /detokenize``); the parameter count is estimated from ``root``'s ``config.json``.

Every probe is a GET or POST that may fail (404, 501, a bare completions server): a failure means "not
exposed", never an error.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from testtime.netretry import backoff_delay

# control markers in a template's literal text: <|im_start|>, <start_of_turn>, <|eot_id|>, ...
_MARKER = re.compile(r"<\|[A-Za-z0-9_]+\|>|<(?:start|end)_of_turn>")

Renderer = Callable[[list[dict[str, str]]], str]


class Unreachable(Exception):
    """No server answered at all (refused connection, timeout)."""


@dataclass(frozen=True)
class ServerInfo:
    kind: str  # "llama.cpp", "vllm" or "unknown"
    chat_template: str | None = None
    bos_text: str = ""
    eos_text: str = ""
    eog_ids: frozenset[int] = frozenset()  # end-of-generation token ids (llama.cpp: the eos token's)
    n_params: int = 0
    slots: int | None = None  # the most samples one request may ask for (llama.cpp: its slot count)
    root: str | None = None  # vLLM: the checkpoint it serves
    server_chat: Renderer | None = None  # the server renders chat prompts itself (vLLM, no local tokenizer)


class _Client:
    def __init__(self, base: str, headers: dict[str, str], timeout_s: float):
        self.base, self.headers, self.timeout_s = base, headers, timeout_s

    def _json(self, method: str, url: str, body: Any = None) -> Any:
        try:
            r = httpx.request(method, url, json=body, headers=self.headers, timeout=self.timeout_s)
        except (httpx.TransportError, httpx.TimeoutException) as e:
            raise Unreachable(f"{url}: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            return None
        try:
            return r.json()
        except json.JSONDecodeError:
            return None

    def get(self, path: str) -> Any:
        return self._json("GET", self.base + path)

    def post(self, path: str, body: dict) -> Any:
        return self._json("POST", self.base + path, body)


def _root(url: str) -> str:
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _model_entry(models: Any, model: str) -> dict:
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list) or not data:
        return {}
    for entry in data:
        if isinstance(entry, dict) and (entry.get("id") == model or model in (entry.get("aliases") or [])):
            return entry
    return data[0] if len(data) == 1 and isinstance(data[0], dict) else {}  # llama.cpp serves any name


def _single_token_id(client: _Client, text: str) -> int | None:
    got = client.post("/tokenize", {"content": text, "add_special": False, "parse_special": True})
    tokens = got.get("tokens") if isinstance(got, dict) else None
    if isinstance(tokens, list) and len(tokens) == 1:
        tok = tokens[0]
        return int(tok["id"] if isinstance(tok, dict) else tok)
    return None


def template_is_the_models(client: _Client, template: str) -> bool:
    """False for a template whose control markers are not single tokens of the served vocabulary."""
    markers = sorted(set(_MARKER.findall(template)))
    return all(_single_token_id(client, m) is not None for m in markers)


def local_params(root: str | None) -> int:
    """A parameter estimate from ``root/config.json`` when ``root`` is a folder here; 0 otherwise."""
    if not root or not (Path(root) / "config.json").is_file():
        return 0
    from types import SimpleNamespace

    from testtime.policy.vllm import params_from_config

    config = json.loads((Path(root) / "config.json").read_text())
    config = config.get("text_config", config)  # multimodal wrappers keep the LM's sizes apart
    return params_from_config(SimpleNamespace(**config))


def _vllm_renderer(client: _Client, model: str) -> Renderer | None:
    """The server's own chat rendering (vLLM: tokenize the messages, detokenize the ids), if it offers it."""

    def render(messages: list[dict[str, str]]) -> str:
        got = client.post("/tokenize", {"model": model, "messages": messages, "add_generation_prompt": True})
        ids = got.get("tokens") if isinstance(got, dict) else None
        text = client.post("/detokenize", {"model": model, "tokens": ids}) if isinstance(ids, list) else None
        if not isinstance(text, dict) or not isinstance(text.get("prompt"), str):
            raise RuntimeError(f"{client.base}: the server did not render a chat prompt (/tokenize, /detokenize)")
        return text["prompt"]

    try:
        render([{"role": "user", "content": "x"}])
    except RuntimeError:
        return None
    return render


def discover(url: str, model: str, headers: dict[str, str], timeout_s: float) -> ServerInfo:
    """What the server at ``url`` (ending in /v1) exposes; raises ``Unreachable`` if it does not answer."""
    client = _Client(_root(url), headers, timeout_s)
    props = client.get("/props")
    entry = _model_entry(client.get("/v1/models"), model)
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    n_params = int(meta.get("n_params") or 0)
    if isinstance(props, dict) and ("total_slots" in props or "chat_template" in props):  # llama.cpp
        template = props.get("chat_template") or None
        if template is not None and not template_is_the_models(client, template):
            template = None
        eos = str(props.get("eos_token") or "")
        eos_id = _single_token_id(client, eos) if eos else None
        slots = props.get("total_slots")
        return ServerInfo("llama.cpp", template, str(props.get("bos_token") or ""), eos,
                          frozenset() if eos_id is None else frozenset({eos_id}), n_params,
                          int(slots) if isinstance(slots, int) and slots > 0 else None)
    root = entry.get("root") if isinstance(entry.get("root"), str) else None
    if entry.get("owned_by") == "vllm" or "max_model_len" in entry:
        local = root is not None and (Path(root) / "tokenizer_config.json").is_file()
        return ServerInfo("vllm", n_params=n_params or local_params(root), root=root,
                          server_chat=None if local else _vllm_renderer(client, entry.get("id") or model))
    return ServerInfo("unknown", n_params=n_params, root=root)


def discover_with_retries(urls: list[str], model: str, headers: dict[str, str], timeout_s: float, retries: int,
                          backoff_s: float, max_backoff_s: float) -> ServerInfo:
    """``discover`` on the first URL that answers, trying them all up to ``retries`` more times (a server
    still starting); raises ``Unreachable`` naming the last failure."""
    last: Unreachable | None = None
    rng = random.Random()
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_delay(attempt, backoff_s, max_backoff_s, 0.0, rng))
        for url in urls:
            try:
                return discover(url, model, headers, timeout_s)
            except Unreachable as e:
                last = e
    raise last or Unreachable("no URL")
