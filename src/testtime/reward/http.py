"""Remote PRMs over HTTP: a scorer on another machine (or several), and a tiny server to put one there.

Two protocols:

* ``testtime``: ``POST {base}/score`` with ``{"model": name, "items": [{"question": q, "steps": [...]}]}``
  answered by ``{"rewards": [[...], ...], "tokens": [...]}`` (``tokens`` optional). ``serve_scorer``
  exposes any RewardModel this way; ``HTTPScorer`` is the client.
* ``vllm-pooling``: vLLM's own server (``vllm serve <prm> --runner pooling``) and its ``POST
  {base}/pooling`` endpoint. The PRM format and tokenizer run here, so the request carries token ids
  (``{"model": m, "input": [[ids], ...], "task": "token_classify", "encoding_format": "float",
  "use_activation": false}``) and the response (``{"data": [{"index": i, "data": [[...], ...]}, ...]}``)
  is read at our own positions by ``HTTPPoolingForward``, a Forward for ``TokenPRM``. Serve the model
  with ALL pooling (``--pooler-config '{"pooling_type": "ALL", "task": "token_classify"}'``) so every
  position is available; STEP-pooled rows are also understood when the read positions are the step tags.

Solutions are split into requests of at most ``batch_size``, sent round robin over the base URLs (load
spreading; a URL whose retries run out hands its request to the next one) from a pool of at most
``max_concurrency`` threads, and the results are put back in the caller's order. Responses are validated
(counts, numbers) and a bad one raises a RewardError naming the URL.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import numpy as np

from testtime.backends.vllm import import_transformers
from testtime.netretry import Circuits, RequestFailed, post_json
from testtime.reward.base import BatchScorer, RewardError, RewardModel, Scored, ScoreRequest, check_scored
from testtime.reward.neural import Encoded, PRMFormat, Readout, TokenPRM
from testtime.reward.vllm import Outputs, read_rows, resolve_format, to_log_space, to_numpy

T = TypeVar("T")
PROTOCOLS = ("testtime", "vllm-pooling")


class UnusableResponse(RequestFailed, RewardError):
    """A scoring server answered with something unusable (wrong counts, NaN, another model): a RewardError
    that says what, and a failed request (a ProblemFailure), so the engine records that problem as failed
    and the run goes on, as for any other remote failure."""


def split_urls(url_or_urls: str | Sequence[str]) -> list[str]:
    """Base URLs from a comma/space separated string or a list; trailing slashes dropped."""
    parts = url_or_urls.replace(",", " ").split() if isinstance(url_or_urls, str) else list(url_or_urls)
    urls = [u.strip().rstrip("/") for u in parts if u.strip()]
    if not urls:
        raise ValueError("no URL given")
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {u!r}")
    return urls


@dataclass(frozen=True)
class RetryPolicy:
    """How each request is retried (see ``testtime.netretry.post_json``), and the circuit breaker the
    scorer's requests share: a scoring server that is gone fails the rest fast (``circuit open``)."""

    timeout_s: float = 120.0
    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    headers: dict[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    circuits: Circuits = field(default_factory=Circuits, compare=False, repr=False)

    def post(self, url: str, payload: Any) -> dict:
        return post_json(
            url,
            payload,
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            headers=self.headers,
            sleep=self.sleep,
            circuits=self.circuits,
        )


class Spreader:
    """Runs jobs (one request each) round robin over base URLs on a bounded thread pool.

    The rotation continues across calls, so a stream of small batches still spreads over all servers.
    A job whose URL fails transiently (retries exhausted) is retried once on each other URL.
    """

    def __init__(self, urls: Sequence[str], max_concurrency: int) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.urls = list(urls)
        self.max_concurrency = max_concurrency
        self._next = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:  # one pool for the scorer's life: the bound holds across calls too
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="testtime-http")
            return self._pool

    def run(self, jobs: Sequence[Callable[[str], T]]) -> list[T]:
        if not jobs:
            return []
        with self._lock:
            start = self._next
            self._next = (self._next + len(jobs)) % len(self.urls)
        if len(jobs) == 1:  # no thread hop for the common single-request case
            return [self._with_failover(jobs[0], start)]
        pool = self._executor()
        futures = [pool.submit(self._with_failover, job, start + k) for k, job in enumerate(jobs)]
        return [f.result() for f in futures]

    def _with_failover(self, job: Callable[[str], T], first: int) -> T:
        n = len(self.urls)
        for k in range(n):
            url = self.urls[(first + k) % n]
            try:
                return job(url)
            except RequestFailed as exc:
                if not exc.retryable or k == n - 1:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    if size < 1:
        raise ValueError("batch_size must be >= 1")
    return [list(items[k : k + size]) for k in range(0, len(items), size)]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class HTTPScorer(BatchScorer):
    """A RewardModel served by a remote ``testtime`` scoring service (see ``serve_scorer``)."""

    outcome_only = False

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        name: str | None = None,
        model: str | None = None,
        batch_size: int = 16,
        max_concurrency: int = 4,
        n_params: int = 0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.urls = split_urls(urls)
        self.name = name or f"http:{self.urls[0]}"
        self.model = model  # sent with each request; the server refuses a model it does not serve
        self.batch_size = batch_size
        self.n_params = n_params
        self.retry = retry or RetryPolicy()
        self.spreader = Spreader(self.urls, max_concurrency)
        self.requests_sent = 0  # for tests and benchmarks
        self._count_lock = threading.Lock()

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        out: list[Scored | None] = [None] * len(requests)
        todo = []
        for i, req in enumerate(requests):
            if req.steps:
                todo.append(i)
            else:
                out[i] = Scored([], 0)
        chunks = _chunks(todo, self.batch_size)
        jobs = [self._job([requests[i] for i in chunk]) for chunk in chunks]
        for chunk, scored in zip(chunks, self.spreader.run(jobs), strict=True):
            for i, s in zip(chunk, scored, strict=True):
                out[i] = s
        return check_scored(self.name, requests, [s for s in out if s is not None])

    def _job(self, reqs: list[ScoreRequest]) -> Callable[[str], list[Scored]]:
        def call(base: str) -> list[Scored]:
            url = f"{base}/score"
            payload = {"model": self.model, "items": [{"question": r.question, "steps": list(r.steps)} for r in reqs]}
            resp = self.retry.post(url, payload)
            with self._count_lock:
                self.requests_sent += 1
            try:
                return parse_score_response(url, resp, reqs, expect_model=self.model)
            except RewardError as e:
                raise UnusableResponse(url, str(e), 1, status=200) from None

        return call

    def close(self) -> None:
        self.spreader.close()


def parse_score_response(
    url: str, resp: dict, reqs: Sequence[ScoreRequest], expect_model: str | None = None
) -> list[Scored]:
    """Validate a ``testtime`` protocol response against the solutions it answers."""
    if expect_model is not None and resp.get("model") not in (None, expect_model):
        raise RewardError(f"{url}: served model {resp.get('model')!r}, asked for {expect_model!r}")
    rewards = resp.get("rewards")
    if not isinstance(rewards, list):
        raise RewardError(f"{url}: response has no 'rewards' list")
    if len(rewards) != len(reqs):
        raise RewardError(f"{url}: {len(rewards)} reward lists for {len(reqs)} solutions")
    tokens = resp.get("tokens")
    if tokens is not None and (
        not isinstance(tokens, list)
        or len(tokens) != len(reqs)
        or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens)
    ):
        raise RewardError(f"{url}: 'tokens' must be one non-negative integer per solution")
    out = []
    for i, (req, row) in enumerate(zip(reqs, rewards, strict=True)):
        if not isinstance(row, list) or len(row) != len(req.steps):
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise RewardError(f"{url}: solution {i} has {len(req.steps)} steps but got {got} rewards")
        bad = [x for x in row if not _is_number(x)]
        if bad:
            raise RewardError(f"{url}: solution {i} has a reward that is not a finite number: {bad[0]!r}")
        out.append(Scored([float(x) for x in row], tokens[i] if tokens is not None else 0))
    return out


class HTTPPoolingForward:
    """A ``Forward`` over vLLM's ``/pooling`` endpoint: token ids out, per-token rows back."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        model: str | None = None,
        task: str | None = "token_classify",
        use_activation: bool | None = False,
        outputs: Outputs | None = None,
        step_tag_id: int | None = None,
        batch_size: int = 32,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.urls = split_urls(urls)
        self.model = model
        self.task = task
        self.use_activation = use_activation
        # Asking for raw outputs means logits; "auto" still catches an older server that ignores the flag
        # and returns softmax probabilities (two-class rows only: single values can't be told apart).
        self.outputs: Outputs = outputs or ("auto" if use_activation is False else "probs")
        self.step_tag_id = step_tag_id
        self.batch_size = batch_size
        self.retry = retry or RetryPolicy()
        self.spreader = Spreader(self.urls, max_concurrency)
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def __call__(self, batch: Sequence[Encoded], readout: Readout) -> list[np.ndarray]:
        chunks = _chunks(list(batch), self.batch_size)
        results = self.spreader.run([self._job(chunk, readout) for chunk in chunks])
        return [rows for chunk_rows in results for rows in chunk_rows]

    def _job(self, items: list[Encoded], readout: Readout) -> Callable[[str], list[np.ndarray]]:
        def call(base: str) -> list[np.ndarray]:
            url = f"{base}/pooling"
            ids = [[int(t) for t in e.input_ids] for e in items]
            payload: dict[str, Any] = {"input": ids, "encoding_format": "float"}
            if self.model is not None:
                payload["model"] = self.model
            if self.task is not None:
                payload["task"] = self.task
            if self.use_activation is not None:
                payload["use_activation"] = self.use_activation
            resp = self.retry.post(url, payload)
            with self._count_lock:
                self.requests_sent += 1
            mats = parse_pooling_response(url, resp, len(items))
            outputs = self.outputs
            rows = []
            for enc, mat in zip(items, mats, strict=True):
                rows.append(read_rows(mat, enc, readout.width, step_tag_id=self.step_tag_id, source=url))
            if outputs == "auto" and readout.width == 1:
                outputs = "logits"
            return [to_log_space(r, outputs, source=url) for r in rows]

        return call

    def close(self) -> None:
        self.spreader.close()


def parse_pooling_response(url: str, resp: dict, n: int) -> list[np.ndarray]:
    """The per-item arrays of a vLLM ``/pooling`` response, in request order."""
    data = resp.get("data")
    if not isinstance(data, list) or len(data) != n:
        got = len(data) if isinstance(data, list) else "no"
        raise RewardError(f"{url}: {got} pooling results for {n} inputs")
    by_index: dict[int, Any] = {}
    for entry in data:
        idx = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(idx, int) or not 0 <= idx < n or idx in by_index:
            raise RewardError(f"{url}: pooling result with a missing, repeated or out-of-range index: {idx!r}")
        by_index[idx] = entry.get("data")
    out = []
    for i in range(n):
        raw = by_index[i]
        if isinstance(raw, str):
            raise RewardError(f"{url}: pooling result {i} is encoded ({raw[:16]}...); ask for encoding_format=float")
        try:
            arr = to_numpy(raw)
        except (TypeError, ValueError):
            raise RewardError(f"{url}: pooling result {i} is not a numeric array") from None
        if arr.ndim not in (1, 2) or arr.size == 0:
            raise RewardError(f"{url}: pooling result {i} has shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise RewardError(f"{url}: pooling result {i} contains NaN or infinite values")
        out.append(arr)
    return out


def load_http_prm(
    url_or_urls: str | Sequence[str],
    protocol: str = "testtime",
    name: str | None = None,
    *,
    model: str | None = None,
    tokenizer: Any = None,
    format: str | PRMFormat | None = None,
    format_options: dict[str, Any] | None = None,
    batch_size: int = 16,
    max_concurrency: int = 4,
    timeout_s: float = 120.0,
    retries: int = 3,
    backoff_s: float = 0.5,
    max_backoff_s: float = 8.0,
    headers: dict[str, str] | None = None,
    n_params: int = 0,
    max_batch_tokens: int = 262144,
    max_batch_size: int = 1024,
    **pooling_options: Any,
) -> BatchScorer:
    """A remote PRM. ``protocol="testtime"``: a ``serve_scorer`` service (or compatible).
    ``protocol="vllm-pooling"``: ``vllm serve``'s pooling endpoint; needs the PRM's ``tokenizer`` (a HF
    tokenizer or a name/path to load; defaults to ``model``) and ``format`` (detected when None).
    ``pooling_options`` go to ``HTTPPoolingForward`` (``task``, ``use_activation``, ``outputs``,
    ``step_tag_id``).
    """
    retry = RetryPolicy(
        timeout_s=timeout_s,
        retries=retries,
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
        headers=dict(headers or {}),
    )
    urls = split_urls(url_or_urls)
    if protocol == "testtime":
        if pooling_options:
            raise TypeError(f"unexpected options for the testtime protocol: {sorted(pooling_options)}")
        return HTTPScorer(
            urls,
            name=name,
            model=model or name,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            n_params=n_params,
            retry=retry,
        )
    if protocol != "vllm-pooling":
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    source = tokenizer if tokenizer is not None else model
    if source is None:
        raise ValueError("the vllm-pooling protocol needs tokenizer= (or model= naming a HF tokenizer)")
    if format is None and not isinstance(source, str):
        raise ValueError("cannot detect the PRM format from a tokenizer object; pass format=<name>")
    tok = import_transformers().AutoTokenizer.from_pretrained(source) if isinstance(source, str) else source

    def load_config() -> Any:
        return import_transformers().AutoConfig.from_pretrained(source)

    fmt = resolve_format(format, format_options, tok, load_config, str(source))
    forward = HTTPPoolingForward(
        urls, model=model, batch_size=batch_size, max_concurrency=max_concurrency, retry=retry, **pooling_options
    )
    return TokenPRM(
        name or model or f"vllm-pooling:{urls[0]}",
        fmt,
        tok,
        forward,
        n_params=n_params,
        max_batch_tokens=max_batch_tokens,
        max_batch_size=max_batch_size,
        close=forward.close,
    )


# -- the server side -----------------------------------------------------------------------------------


def serve_scorer(
    scorer: RewardModel, host: str = "127.0.0.1", port: int = 0, *, serialize: bool = True
) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``scorer`` over the ``testtime`` protocol from a background thread.

    Returns the server (stop it with ``server.shutdown(); server.server_close()``) and its base URL.
    ``serialize`` (default) lets one request score at a time: most model backends are not thread-safe.
    """
    lock = threading.Lock() if serialize else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for clients that pool connections

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: a scoring server logs nothing per request

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/health":
                self._reply(200, {"ok": True, "model": scorer.name})
            else:
                self._reply(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/score":
                self._reply(404, {"error": f"no such path {self.path}; POST /score"})
                return
            try:
                reqs = _parse_score_request(raw, scorer.name)
            except ValueError as exc:
                self._reply(400, {"error": str(exc)})
                return
            try:
                if lock is not None:
                    with lock:
                        scored = scorer.score_batch(reqs)
                else:
                    scored = scorer.score_batch(reqs)
            except Exception as exc:  # report, don't kill the server
                self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self._reply(
                200,
                {
                    "model": scorer.name,
                    "rewards": [[float(r) for r in s.rewards] for s in scored],
                    "tokens": [int(s.tokens) for s in scored],
                },
            )

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    # A short poll interval keeps shutdown() prompt.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="testtime-serve-scorer", daemon=True
    )
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    url_host = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    return server, f"http://{url_host}:{bound_port}"


def _parse_score_request(raw: bytes, served: str) -> list[ScoreRequest]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("request body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError('expected {"model": ..., "items": [{"question": ..., "steps": [...]}]}')
    model = body.get("model")
    if model is not None and model != served:
        raise ValueError(f"this server scores with {served!r}, not {model!r}")
    reqs = []
    for i, item in enumerate(body["items"]):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise ValueError(f"item {i}: needs a string 'question'")
        steps = item.get("steps")
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise ValueError(f"item {i}: 'steps' must be a list of strings")
        reqs.append(ScoreRequest(item["question"], tuple(steps)))
    return reqs
