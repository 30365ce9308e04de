"""The FastAPI app: OpenAI-compatible endpoints that answer with test-time scaling.

Handlers only translate: a request becomes a ``Plan`` (``serve.plan``), its choices become jobs for the
``Batcher`` (which solves them with others of the same settings in the worker thread, ``serve.solver``), and
the answers become an OpenAI-shaped response, or server-sent events when ``stream`` is set. Errors are
OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``) with the usual status codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from testtime.errors import ConfigError, one_line
from testtime.serve.batcher import Batcher, QueueFull
from testtime.serve.metrics import CONTENT_TYPE, Metrics
from testtime.serve.plan import REQUEST_FIELDS, Plan, PlanError, plan_request
from testtime.serve.schemas import ChatRequest, CompletionRequest
from testtime.serve.settings import AUTO, ServeConfig
from testtime.serve.solver import Answer, Cancelled, Job, Solver

log = logging.getLogger("testtime.serve")
KEEPALIVE_S = 5.0  # a comment line at least this often while a streamed answer is being searched
PUBLIC = ("/health",)


class Timeout(RuntimeError):
    """The request ran past its deadline."""


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before the app reads it (declared length or not)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body, more = b"", True
        messages: list[Message] = []
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                messages.append(msg)
                break
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        messages.insert(0, {"type": "http.request", "body": body, "more_body": False})

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = error(413, f"request body over this server's limit of {self.limit} bytes", param="body",
                     code="body_too_large")
        await resp(scope, receive, send)


def _chunks(text: str, words: int = 4) -> list[str]:
    """The reply in small pieces for content deltas (joined they are exactly the text)."""
    pieces = re.findall(r"\s*\S+|\s+$", text)
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)] or [""]


def usage(answers: list[Answer]) -> dict[str, Any]:
    """The request's prompt once; every token generated for it (all choices, samples and steps)."""
    prompt = answers[0].prompt_tokens
    # generated now: a sample replayed from the store (an earlier identical request, or auto's probe reused by
    # the chosen config) cost nothing and is not counted again; tts.policy_tokens counts every sample used
    completion = sum(a.generated_now for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": answers[0].cached_prompt_tokens}}


def tts_object(plan: Plan, answers: list[Answer]) -> dict[str, Any]:
    def one(a: Answer) -> dict[str, Any]:
        c = a.compute
        d: dict[str, Any] = {
            "strategy": a.strategy, "budget": a.budget, "candidates": a.candidates, "selection_rule": a.rule,
            "answer": a.answer, "policy_tokens": c.generated_tokens, "policy_tokens_generated": a.generated_now,
            "policy_prompt_tokens_evaluated": c.prompt_tokens - c.cached_prompt_tokens,
            "prm_tokens": c.prm_tokens, "policy_flops": c.policy_flops, "prm_flops": c.prm_flops,
            "wall_s": round(a.wall_s, 4), "trace_id": a.trace_id, "replayed": a.replayed,
        }
        if a.note:
            d["note"] = a.note
        if plan.strategy == AUTO:
            d.update(requested="auto", predicted_bin=a.predicted_bin, predicted_pass1=a.predicted_pass1,
                     decided_by=a.decided_by)
            if a.why:
                d["why"] = a.why
        if a.votes:
            d["votes"] = a.votes
        return d

    out = one(answers[0])
    if len(answers) > 1:
        out["per_choice"] = [one(a) for a in answers]
        for key in ("policy_tokens", "policy_tokens_generated", "prm_tokens", "policy_flops", "prm_flops"):
            out[key] = sum(x[key] for x in out["per_choice"])
    return out


# --- the search's progress as reasoning (--stream-reasoning) ---------------------------------------------
# Short lines, each ending in a newline, streamed as ``delta.reasoning_content`` (the field vLLM's reasoning
# parsers and DeepSeek's API use), so chat UIs show them apart from the answer. Pure functions of what the
# request said and what the worker reported, so each is tested alone.


def _flat(text: str) -> str:
    """One line: a reasoning line never carries a newline of its own."""
    return " ".join(text.split())


def settings_sources(body: ChatRequest | CompletionRequest) -> tuple[str, str]:
    """Where the request's strategy and budget came from, in words (the precedence of ``plan_request``)."""
    tts = body.tts
    strategy_from = "tts.strategy" if tts is not None and tts.strategy else "the server's default"
    if tts is not None and tts.budget is not None:
        budget_from = "tts.budget"
    elif body.reasoning_effort is not None:
        budget_from = f"reasoning_effort {body.reasoning_effort}"
    else:
        budget_from = "the server's default"
    return strategy_from, budget_from


def reasoning_opening(strategy: str, budget: int, strategy_from: str, budget_from: str) -> str:
    """The first line: the strategy and budget the request got, said before any sample is drawn."""
    if strategy == AUTO:
        return (f"Strategy auto ({strategy_from}), budget {budget} ({budget_from}): first predicting how hard "
                "the question is, to choose the search for it.\n")
    return f"Strategy {strategy} ({strategy_from}), budget {budget} ({budget_from}).\n"


def _decision(strategy: str, budget: int, predicted_bin: str | None, predicted_pass1: float | None,
              decided_by: str | None, why: str | None) -> list[str]:
    lines: list[str] = []
    if predicted_bin is not None or predicted_pass1 is not None:
        p1 = "" if predicted_pass1 is None else f" (predicted pass@1 {predicted_pass1:.2f})"
        lines.append(f"Predicted difficulty: {predicted_bin or 'unknown'}{p1}.\n")
    lines.append(f"Searching with {strategy} at budget {budget}"
                 + (f", decided by {_flat(decided_by)}" if decided_by else "") + ".\n")
    if why:
        lines.append(f"Why: {_flat(why)}\n")
    return lines


def reasoning_progress(event: dict[str, Any]) -> list[str]:
    """The lines for one progress event from the worker: ``{"depth": backend calls, "samples": samples}``
    after each backend call (``request_samples``, when given, counts this request's own), and ``{"decided":
    {strategy, budget, predicted_bin, predicted_pass1, decided_by, why}}`` when ``auto`` has decided."""
    lines: list[str] = []
    d = event.get("decided")
    if isinstance(d, dict) and "strategy" in d and "budget" in d:
        lines += _decision(str(d["strategy"]), int(d["budget"]), d.get("predicted_bin"),
                           d.get("predicted_pass1"), d.get("decided_by"), d.get("why"))
    if "depth" in event and "samples" in event:
        if "request_samples" in event:
            drawn = f"{event['request_samples']} samples drawn for this request"
        else:  # the worker's count: every request solved in the same batch (they share backend calls)
            drawn = f"{event['samples']} samples drawn in this batch"
        lines.append(f"Step {event['depth']}: {drawn} so far.\n")
    return lines


def reasoning_closing(a: Answer, auto: bool, decision_said: bool) -> list[str]:
    """The lines once the answer is known: auto's decision (unless a progress event said it), the candidates
    kept, the vote, and which answer was chosen by which rule."""
    lines: list[str] = []
    if auto and not decision_said:
        lines += _decision(a.strategy, a.budget, a.predicted_bin, a.predicted_pass1, a.decided_by, a.why)
    if a.replayed:
        lines.append("Answered from the store (an identical earlier request): nothing generated now.\n")
    lines.append(f"Kept {a.candidates} candidate{'s' if a.candidates != 1 else ''}; "
                 f"{a.generated_now} tokens generated now.\n")
    if a.votes:
        tally = ", ".join(f"{_flat(ans)} ({n} sample{'s' if n != 1 else ''})" for ans, n in a.votes.items())
        lines.append(f"Votes: {tally}.\n")
    if a.answer is not None:
        lines.append(f"Chose {_flat(a.answer)} by {a.rule}.\n")
    else:
        note = a.note or "no candidate stated a final answer"
        fallback = "the best-scored candidate" if a.rule == "no_answer_best_score" else "the first sample"
        lines.append(f"{note[:1].upper()}{note[1:]}: replying with {fallback} ({a.rule}).\n")
    return lines


def _failure(err: BaseException) -> tuple[int, dict[str, Any]]:
    """An error from the worker as an HTTP status and an OpenAI error body."""
    if isinstance(err, Timeout):
        return 504, error_body(str(err), "timeout_error", code="deadline_exceeded")
    if isinstance(err, ConfigError):
        spell = REQUEST_FIELDS.get
        return 400, error_body(err.render(lambda f: spell(f, f)), param=spell(err.field, err.field))
    if isinstance(err, Cancelled):
        return 499, error_body(str(err), "cancelled", code="client_closed_request")
    if isinstance(err, RuntimeError):
        return 502, error_body(one_line(err), "server_error", code="backend_failed")
    log.exception("serve: request failed", exc_info=err)
    return 500, error_body(f"internal error: {type(err).__name__}: {one_line(err)}", "server_error")


def create_app(solver: Solver, cfg: ServeConfig | None = None, metrics: Metrics | None = None) -> FastAPI:
    """The app over a ``Solver`` (a policy, its scorers, the store); ``cfg``: the solver's own by default."""
    cfg = cfg or solver.cfg
    metrics = metrics or Metrics()
    batcher = Batcher(solver.solve, window_s=cfg.batch_window_ms / 1000.0, max_batch=cfg.max_batch,
                      queue_size=cfg.queue_size, on_depth=metrics.queue.set, on_batch=metrics.batch.observe)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="testtime", summary="OpenAI-compatible endpoint answering with test-time scaling",
                  lifespan=lifespan)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.solver = solver

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        path = request.url.path
        endpoint = path if path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
                                    "/metrics") else "other"
        if cfg.api_key is not None and path not in PUBLIC:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), cfg.api_key.encode()):
                resp: Response = error(401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                       code="invalid_api_key")
                metrics.requests.labels(endpoint, "401").inc()
                return resp
        try:
            resp = await call_next(request)
        except Exception as e:  # an error no handler turned into a response: never a traceback to the client
            status, body = _failure(e)
            resp = JSONResponse(body, status_code=status)
        metrics.requests.labels(endpoint, str(resp.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        # pydantic names a union's branch in the path (messages.0.content.str): keep the request's fields
        param = ".".join(x for x in loc if not re.fullmatch(r"[a-z_]+\[.*\]|str|int|float|bool|list", x)) or None
        if first.get("type") == "json_invalid":
            return error(400, "the body is not valid JSON", code="invalid_json")
        msg = first.get("msg", "invalid request")
        return error(400, f"{param}: {msg}" if param else msg, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error(exc.status_code, str(exc.detail), type_, headers=getattr(exc, "headers", None))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": cfg.model_name, "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "testtime", "backend_model": solver.model_id}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        return await _answer(body, request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _answer(body, request, chat=False)

    async def _answer(body: ChatRequest | CompletionRequest, request: Request, chat: bool) -> Response:
        try:
            plan = plan_request(body, cfg)
        except PlanError as e:
            return error(400, e.message, param=e.param, code="invalid_value")
        loop = asyncio.get_running_loop()
        progress: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def reporter(index: int) -> Callable[[dict[str, Any]], None]:
            def on_progress(event: dict[str, Any]) -> None:  # from the worker thread; tagged with its choice
                loop.call_soon_threadsafe(progress.put_nowait, {**event, "index": index})
            return on_progress

        jobs = [Job(plan, p, i, reporter(i) if plan.stream else None) for i, p in enumerate(plan.problems)]
        try:
            futures = batcher.submit(plan.group_key, jobs)
        except QueueFull as e:
            return error(429, f"server busy: {e}; retry later", "rate_limit_error", code="queue_full",
                         headers={"Retry-After": str(cfg.retry_after_s)})
        deadline = loop.time() + cfg.deadline_s
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if plan.stream:
            # reasoning is a chat concept (a message's reasoning_content): text completions have no field for
            # it in any API we know of, so their streams stay as without --stream-reasoning
            opening = reasoning_opening(plan.strategy, plan.budget, *settings_sources(body)) \
                if cfg.stream_reasoning and chat else None
            return StreamingResponse(_stream(plan, jobs, futures, progress, deadline, rid, created, chat, opening),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            answers = await _wait(jobs, futures, deadline, request)
        except BaseException as e:
            for j in jobs:
                j.cancelled.set()
            if isinstance(e, asyncio.CancelledError):
                raise
            status, err = _failure(e)
            return JSONResponse(err, status_code=status)
        _count(answers)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.finish_reason,
             "logprobs": None} if chat else
            {"index": i, "text": a.text, "finish_reason": a.finish_reason, "logprobs": None}
            for i, a in enumerate(answers)
        ]
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": created, "model": cfg.model_name, "system_fingerprint": solver.model_id,
                             "choices": choices, "usage": usage(answers), "tts": tts_object(plan, answers)})

    def _count(answers: list[Answer]) -> None:
        metrics.generated.inc(sum(a.generated_now for a in answers))
        metrics.prompt.inc(answers[0].prompt_tokens)
        metrics.prm.inc(sum(a.compute.prm_tokens for a in answers))

    async def _wait(jobs: list[Job], futures: list[asyncio.Future], deadline: float, request: Request
                    ) -> list[Answer]:
        """The answers, watching for the client going away and for the deadline."""
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future] = set(futures)
        # the request's body is read: the next message from the server is the client leaving
        watcher = asyncio.ensure_future(request.receive())
        try:
            while pending:
                left = deadline - loop.time()
                if left <= 0:
                    raise Timeout(f"no answer within this server's deadline of {cfg.deadline_s:g} s")
                done, _ = await asyncio.wait(pending | {watcher}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    if watcher.result().get("type") == "http.disconnect":
                        raise Cancelled("the client went away")
                    watcher = asyncio.ensure_future(request.receive())
                pending -= done
        finally:
            watcher.cancel()
        return [f.result() for f in futures]

    async def _stream(plan: Plan, jobs: list[Job], futures: list[asyncio.Future], progress: asyncio.Queue,
                      deadline: float, rid: str, created: int, chat: bool, opening: str | None
                      ) -> AsyncIterator[str]:
        """The SSE stream; ``opening``: the first reasoning line (None: progress as comment lines, as before
        --stream-reasoning)."""
        loop = asyncio.get_running_loop()
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            body = {"id": rid, "object": obj, "created": created, "model": cfg.model_name,
                    "system_fingerprint": solver.model_id, "choices": choices, **extra}
            return f"data: {json.dumps(body)}\n\n"

        def delta(i: int, text: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
            if chat:
                d: dict[str, Any] = {"role": "assistant"} if role else {}
                if text is not None:
                    d["content"] = text
                return {"index": i, "delta": d, "finish_reason": finish, "logprobs": None}
            return {"index": i, "text": text or "", "finish_reason": finish, "logprobs": None}

        def reasoning(i: int, lines: list[str], role: bool = False) -> str:
            d: dict[str, Any] = {"role": "assistant"} if role else {}
            return chunk([{"index": i, "delta": {**d, "reasoning_content": "".join(lines)}, "finish_reason": None,
                           "logprobs": None}])

        decided: set[int] = set()  # choices whose auto decision a progress event has said

        def said(ev: dict[str, Any]) -> str | None:
            lines = reasoning_progress(ev)
            if "decided" in ev:
                decided.add(ev["index"])
            return reasoning(ev["index"], lines) if lines else None

        finished = False
        gathered: asyncio.Future | None = None
        try:
            # the first chunk goes out at once: the client sees the answer has started
            if opening is None:
                yield chunk([delta(i, "", role=True) for i in range(len(jobs))])
            else:
                for i in range(len(jobs)):
                    yield reasoning(i, [opening], role=True)
            gathered = asyncio.gather(*futures)
            while not gathered.done():
                left = deadline - loop.time()
                if left <= 0:
                    gathered.cancel()
                    raise Timeout(f"no answer within this server's deadline of {cfg.deadline_s:g} s")
                getter = asyncio.ensure_future(progress.get())
                done, _ = await asyncio.wait({gathered, getter}, timeout=min(KEEPALIVE_S, left),
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    ev = getter.result()
                    if opening is not None:
                        text = said(ev)
                        if text is not None:
                            yield text
                    elif "depth" in ev:
                        yield f": progress depth={ev['depth']} samples={ev['samples']}\n\n"
                else:
                    getter.cancel()
                    if not done:
                        yield ": keep-alive\n\n"
            answers: list[Answer] = gathered.result()
            _count(answers)
            while opening is not None and not progress.empty():  # the last calls' events, reported meanwhile
                text = said(progress.get_nowait())
                if text is not None:
                    yield text
            for i, a in enumerate(answers):
                if opening is not None:
                    yield reasoning(i, reasoning_closing(a, plan.strategy == AUTO, i in decided))
                for piece in _chunks(a.text):
                    yield chunk([delta(i, piece)])
            tts = tts_object(plan, answers)
            yield chunk([delta(i, None if chat else "", a.finish_reason) for i, a in enumerate(answers)], tts=tts)
            if plan.include_usage:
                yield chunk([], usage=usage(answers))
            yield "data: [DONE]\n\n"
            finished = True
        except Exception as e:
            status, body = _failure(e)
            body["error"]["status"] = status
            yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:  # the client went away mid-stream: its jobs stop
                for j in jobs:
                    j.cancelled.set()
            if gathered is not None:
                gathered.cancel()
                gathered.add_done_callback(lambda f: f.cancelled() or f.exception())

    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)  # outermost: before auth reads anything
    return app
