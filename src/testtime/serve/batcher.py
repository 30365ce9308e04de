"""Cross-request batching: requests with the same settings that arrive within a short window are solved as
one batch, in a worker thread (never in the event loop).

``Batcher.submit(key, jobs)`` puts a request's jobs in its key's open batch (opening one, whose window starts
now), and returns one future per job. A batch is sent to the worker when its window ends or it reaches
``max_batch`` jobs; the worker runs batches one after another (the policy already batches everything in one
call, so running two at once would only split the CPU). The queue is bounded: ``submit`` raises ``QueueFull``
when the jobs waiting or running would exceed ``queue_size`` (the server answers 429). A job cancelled while
it waits is dropped from its batch; a batch whose jobs are all cancelled stops before its next backend call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from testtime.serve.solver import Answer, Job

SolveFn = Callable[[list[Job]], list[Any]]


class QueueFull(RuntimeError):
    """The bounded queue has no room for this request."""


class Batcher:
    def __init__(self, solve: SolveFn, *, window_s: float, max_batch: int, queue_size: int,
                 on_depth: Callable[[int], None] | None = None, on_batch: Callable[[int], None] | None = None):
        self.solve = solve
        self.window_s = window_s
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.on_depth = on_depth
        self.on_batch = on_batch
        self.depth = 0  # jobs waiting or running
        self._open: dict[str, list[tuple[Job, asyncio.Future]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="testtime-serve")
        self._closed = False

    def _set_depth(self, delta: int) -> None:
        self.depth += delta
        if self.on_depth is not None:
            self.on_depth(self.depth)

    def submit(self, key: str, jobs: list[Job]) -> list[asyncio.Future]:
        """Queue a request's jobs (in the event loop's thread); ``QueueFull`` when there is no room."""
        if self._closed:
            raise QueueFull("the server is shutting down")
        if self.depth + len(jobs) > self.queue_size:
            raise QueueFull(f"{self.depth} answers queued (limit {self.queue_size})")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in jobs]
        self._set_depth(len(jobs))
        batch = self._open.setdefault(key, [])
        for job, fut in zip(jobs, futures, strict=True):
            batch.append((job, fut))
            if len(batch) >= self.max_batch:
                self._dispatch(key)
                batch = self._open.setdefault(key, [])
        if batch and key not in self._timers:
            self._timers[key] = loop.call_later(self.window_s, self._dispatch, key)
        elif not batch:
            self._open.pop(key, None)
        return futures

    def _dispatch(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._open.pop(key, [])
        live = [(j, f) for j, f in batch if not j.cancelled.is_set() and not f.done()]
        dropped = len(batch) - len(live)
        if dropped:
            self._set_depth(-dropped)
            for _j, f in batch:
                if not f.done() and all(f is not g for _k, g in live):
                    f.cancel()
        if live:
            asyncio.get_running_loop().create_task(self._run(live))

    async def _run(self, batch: list[tuple[Job, asyncio.Future]]) -> None:
        jobs = [j for j, _ in batch]
        loop = asyncio.get_running_loop()
        try:
            results: list[Any] = await loop.run_in_executor(self._pool, self._solve_live, jobs)
        except BaseException as e:  # the whole batch failed (a bug, or every client went away)
            results = [e] * len(jobs)
        finally:
            self._set_depth(-len(jobs))
        for (job, fut), res in zip(batch, results, strict=True):
            if fut.done():
                continue
            if job.cancelled.is_set():  # nobody waits for it any more
                fut.cancel()
            elif isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    def _solve_live(self, jobs: list[Job]) -> list[Answer | BaseException]:
        """In the worker: jobs cancelled while the batch waited for the worker are left out."""
        live = [j for j in jobs if not j.cancelled.is_set()]
        from testtime.serve.solver import Cancelled

        if not live:
            return [Cancelled("the client went away")] * len(jobs)
        if self.on_batch is not None:
            self.on_batch(len(live))
        answers = {id(j): a for j, a in zip(live, self.solve(live), strict=True)}
        return [answers.get(id(j), Cancelled("the client went away")) for j in jobs]

    def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
