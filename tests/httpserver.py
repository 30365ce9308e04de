"""One reusable local HTTP test server: a stdlib ThreadingHTTPServer on 127.0.0.1 (port 0) in a thread.

Request k (0-based, in arrival order) is answered by ``script(k, path, body)`` -> ``Reply``, or by the
k-th entry of a list of replies (the last one repeats). Every request's path, JSON body and headers are
recorded, and so is the largest number of requests in flight at once (to check concurrency bounds).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=dict)  # JSON-encodable, or raw bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering
    hang: bool = False  # after the delay, close without answering (a client timeout test)


Script = Callable[[int, str, dict], Reply]


class TestServer:
    """A scripted JSON server; ``url`` is ``http://127.0.0.1:PORT`` plus the optional ``url_path``."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, script: Script | Sequence[Reply], *, delay_s: float = 0.0, url_path: str = "") -> None:
        if not callable(script):
            replies = list(script)
            script = lambda k, path, body: replies[min(k, len(replies) - 1)]  # noqa: E731
        self.script: Script = script
        self.delay_s = delay_s  # added to every reply's own delay
        self.paths: list[str] = []
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.inflight = self.max_inflight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    k = len(outer.bodies)
                    outer.paths.append(self.path)
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers.items()))
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                try:
                    reply = outer.script(k, self.path, body)
                    time.sleep(outer.delay_s + reply.delay_s)
                finally:
                    with outer._lock:
                        outer.inflight -= 1
                if reply.hang:
                    return
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that gave up on a slow or hanging reply is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base_url + url_path
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def count(self) -> int:
        return len(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

