"""Fake remote parts behind a fault-injecting HTTP front, for the reliability tests.

* ``completions(body)``: an OpenAI-compatible ``/v1/completions`` answer computed from the request alone
  (sample k of a request seeded s is the text ``tests/fakes.py`` writes for seed s + k), cut at the first
  stop string the way vLLM cuts (``stop_reason`` says which), with one token per word.
* ``scores(body)``: a ``testtime`` scoring-service answer (``/score``): one reward in (0, 1) per step, a hash
  of the question and the steps so far.
* ``FaultServer``: serves one of those on 127.0.0.1 and, for each request, asks ``plan(k, path, body)``
  (k: the request's arrival number) whether to answer it or to fail it with one of ``FAULTS``. It can also
  go away for a while and come back on the same port (``down``). Every request, fault and answer is counted.

The servers are real sockets and real HTTP, so the clients' own transports, timeouts and retries run.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fakes import solution_text

# drop: the connection closes with no answer; 500 / 429 (with Retry-After): an error status; slow: the
# answer comes after the client's timeout; truncated: the body stops short of its Content-Length;
# malformed: 200 with a body that is not JSON; wrong_shape: 200 with JSON that misses what was asked.
FAULTS = ("drop", "500", "429", "slow", "truncated", "malformed", "wrong_shape")

Plan = Callable[[int, str, dict], "str | None"]


def sample_answer(prompt: str, seed: int) -> str:
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    return str(digest[0] % 12)


def completions(body: dict) -> dict:
    prompt, n, seed = body["prompt"], int(body.get("n", 1)), int(body.get("seed", 0))
    stops = list(body.get("stop") or [])
    max_tokens = int(body.get("max_tokens", 256))
    choices, total = [], 0
    for k in range(n):
        text = solution_text(sample_answer(prompt, seed + k), tag=f" (sample {seed + k})")
        finish, stop_reason = "stop", None
        cuts = [(text.find(s), s) for s in stops if s in text]
        if cuts:
            at, stop_reason = min(cuts)
            text = text[:at]
        words = text.split()
        if len(words) > max_tokens:
            words = words[:max_tokens]
            text, finish, stop_reason = " ".join(words), "length", None
        total += len(words)
        choices.append({"index": k, "text": text, "finish_reason": finish, "stop_reason": stop_reason,
                        "logprobs": {"tokens": words}})
    return {"choices": choices, "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": total}}


def step_reward(question: str, steps: list[str]) -> float:
    digest = hashlib.sha256(json.dumps([question, steps]).encode()).digest()
    return (1 + digest[0]) / 258


def scores(body: dict) -> dict:
    items = body["items"]
    rewards = [[step_reward(it["question"], it["steps"][: i + 1]) for i in range(len(it["steps"]))] for it in items]
    return {"rewards": rewards, "tokens": [sum(len(s.split()) for s in it["steps"]) for it in items]}


def wrong_shape(body: dict) -> dict:
    """Valid JSON that is not the answer: one choice too few, or one rewards row too few."""
    if "items" in body:
        return {"rewards": scores(body)["rewards"][:-1]}
    return {"choices": completions(body)["choices"][:-1]}


class FaultServer:
    """``handler(path, body) -> dict`` on 127.0.0.1, with the faults ``plan`` asks for (see the module doc)."""

    def __init__(self, handler: Callable[[str, dict], dict], plan: Plan | None = None, *,
                 slow_s: float = 1.0, retry_after: str = "0.05") -> None:
        self.handler = handler
        self.plan: Plan = plan or (lambda k, path, body: None)
        self.slow_s = slow_s  # how late a "slow" answer comes (set above the client's timeout)
        self.retry_after = retry_after
        self.requests: list[tuple[str, dict]] = []
        self.faults: Counter[str] = Counter()
        self.answered = 0
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self._start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a dropped or restarted server breaks pooled connections

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    k = len(outer.requests)
                    outer.requests.append((self.path, body))
                fault = outer.plan(k, self.path, body)
                if fault is not None:
                    with outer.lock:
                        outer.faults[fault] += 1
                    self.fail(fault, body)
                    return
                self.send(200, json.dumps(outer.handler(self.path, body)).encode())
                with outer.lock:
                    outer.answered += 1

            def send(self, status: int, data: bytes, headers: dict[str, str] | None = None,
                     length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data) if length is None else length))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def fail(self, fault: str, body: dict) -> None:
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault == "500":
                    self.send(500, b'{"error": "injected"}')
                elif fault == "429":
                    self.send(429, b'{"error": "slow down"}', {"Retry-After": outer.retry_after})
                elif fault == "slow":
                    time.sleep(outer.slow_s)
                    try:
                        self.send(200, json.dumps(outer.handler(self.path, body)).encode())
                    except OSError:
                        pass  # the client gave up, as it should
                elif fault == "truncated":
                    data = json.dumps(outer.handler(self.path, body)).encode()
                    self.send(200, data[: len(data) // 2], length=len(data))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault == "malformed":
                    self.send(200, b'{"choices": [{"text": "unfinished')
                elif fault == "wrong_shape":
                    self.send(200, json.dumps(wrong_shape(body)).encode())
                else:
                    raise ValueError(f"unknown fault {fault}")

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            open_sockets: set = set()  # kept-alive connections too: a server that dies closes them all

            def process_request(self, request: socket.socket, client_address: object) -> None:
                self.open_sockets.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: socket.socket) -> None:
                self.open_sockets.discard(request)
                super().shutdown_request(request)

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that gave up on a slow answer

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def down(self, seconds: float) -> None:
        """Stop listening (new connections are refused) and come back on the same port after ``seconds``,
        in the background."""
        self.stop()
        with self.lock:
            self.faults["down"] += 1

        def back() -> None:
            time.sleep(seconds)
            self._start()

        threading.Thread(target=back, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            for sock in list(self.server.open_sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.server = None


def openai_handler(path: str, body: dict) -> dict:
    assert path.endswith("/completions"), path
    return completions(body)


def score_handler(path: str, body: dict) -> dict:
    assert path.endswith("/score"), path
    return scores(body)


class Clock:
    """A circuit breaker's cooldown clock, moved by hand (no test waits on wall time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
