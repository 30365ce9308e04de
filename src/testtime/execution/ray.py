"""The engine on Ray: problems sharded in chunks over actors that each hold their own policy and scorers.

- **Actors.** ``actors`` of them (default: one per GPU, else 2), each with ``num_gpus=1`` when the cluster
  has GPUs and an equal share of the CPUs otherwise; a llama.cpp policy gets that share as its thread
  count. Each actor opens the policy from the spec (``PolicySpec.load``) and builds a scorer per ``prm``
  spec, once.
- **Chunks.** The problems the engine hands over (those without a finished result) are cut into chunks
  (at most the local engine's batch, and small enough that every actor gets a few) and handed out as
  actors free up, two in flight per actor. An actor runs a chunk exactly as the local executor runs its
  problems (``lifecycle.solve_batches``: strategy, failure isolation, grading) and returns its traces with
  every generation and reward it produced.
- **One store.** The driver writes each finished chunk's generations and rewards into the run's SQLite
  store as it arrives (``ray.wait``) and yields its results, which the engine records, so a killed driver
  loses no finished chunk. Actors read the store through a small reader actor on the driver's node, so
  whatever is stored (this run's, or another run's with the same requests) is replayed, not regenerated.
- **Dead actors.** A chunk whose actor died (``RayActorError``: killed, crashed, node lost) goes back to
  the queue for a live actor and a replacement actor is started; after ``max_chunk_retries`` losses of the
  same chunk the run stops with an error.
- **Ray itself.** ``address`` connects to a running cluster (the driver must run on one of its nodes: the
  reader actor opens the store file there); otherwise a local Ray is started without the dashboard and
  bound to the loopback interface only. What this executor started it shuts down on ``close``; a Ray
  that was already initialised is used as it is and left running.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testtime.execution import RAY_MISSING, Executor, PolicySpec, ScorerInfo, close_all, require_prm, scorer_for

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(RAY_MISSING) from e

from testtime import lifecycle
from testtime.config import RunConfig
from testtime.errors import ConfigError, one_line
from testtime.lifecycle import ProblemResult
from testtime.store import Store, StoreLike
from testtime.types import Completion, Problem

log = logging.getLogger(__name__)

PIPELINE = 2  # chunks in flight per actor: the next one is queued while the driver writes the last


def init_ray(address: str | None = None, **init_options: Any) -> bool:
    """Connect to ``address`` or start a local Ray (no dashboard, loopback only). True when this call
    initialised Ray (and so its caller should shut it down); False when Ray was already initialised."""
    if ray.is_initialized():
        return False
    opts: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, **init_options}
    if address:
        ray.init(address=address, **opts)
        return True
    opts.setdefault("include_dashboard", False)
    # A local Ray advertises (and binds its gRPC servers to) the machine's network address unless it
    # believes it cannot form a cluster; then it uses the loopback address. Ask for that while starting.
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if saved is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[union-attr]
    try:
        ray.init(**opts)
    finally:
        if saved is not None:
            constants.ENABLE_RAY_CLUSTER = saved  # type: ignore[union-attr]
    return True


# -- the actor side ----------------------------------------------------------------------------------


class _StoreReader:
    """Runs on the driver's node and reads the run's SQLite store for the actors (WAL: reads never wait
    for the driver's writes)."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: the run's store is not visible on the Ray node of the driver")
        self.store = Store(path)

    def get_generations(self, keys: list[str]) -> dict[str, Completion]:
        return self.store.get_generations(keys)

    def get_rewards(self, keys: list[str]) -> dict[str, tuple[list[float], int]]:
        return self.store.get_rewards(keys)


class ChunkStore:
    """The store as a chunk on an actor sees it: the run's store through the reader, plus what this chunk
    made (kept for the driver to write). Implements what CachedGenerator and CachedScorer use."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.generation_rows: list[tuple] = []
        self.reward_rows: list[tuple] = []
        self._generations: dict[str, Completion] = {}
        self._rewards: dict[str, tuple[list[float], int]] = {}

    def get_generations(self, keys: Iterable[str]) -> dict[str, Completion]:
        keys = list(keys)
        # read back as the SQLite store would return it: marked as replayed
        out = {k: dataclasses.replace(self._generations[k], from_store=True) for k in keys if k in self._generations}
        missing = [k for k in keys if k not in out]
        if missing:
            out.update(ray.get(self.reader.get_generations.remote(missing)))
        return out

    def put_generations(self, rows: list[tuple]) -> None:
        for row in rows:
            self._generations.setdefault(row[0], row[-1])
        self.generation_rows.extend(rows)

    def get_rewards(self, keys: Iterable[str]) -> dict[str, tuple[list[float], int]]:
        keys = list(keys)
        out = {k: self._rewards[k] for k in keys if k in self._rewards}
        missing = [k for k in keys if k not in out]
        if missing:
            out.update(ray.get(self.reader.get_rewards.remote(missing)))
        return out

    def put_rewards(self, rows: list[tuple]) -> None:
        for key, _scorer, _q, _steps, rewards, tokens in rows:
            self._rewards.setdefault(key, (list(rewards), tokens))
        self.reward_rows.extend(rows)


@dataclass
class ChunkResult:
    results: list[ProblemResult]
    generation_rows: list[tuple] = field(default_factory=list)
    reward_rows: list[tuple] = field(default_factory=list)
    pid: int = 0  # the actor process that ran it (tests and logs)


class Worker:
    """One actor: a policy, its scorers, and chunks of problems run through the engine's batch code."""

    def __init__(self, spec: PolicySpec, overrides: dict[str, Any]):
        self.spec = spec
        self.overrides = overrides
        self.policy: Any = None
        self.scorers: dict[str, Any] = {}

    def setup(self) -> tuple[str, int, int]:
        """Open the policy (in a method, not __init__, so its errors come back as they are)."""
        if self.policy is None:
            self.policy = self.spec.load(**self.overrides)
        return self.policy.model_id, int(self.policy.n_params), os.getpid()

    def _scorer(self, prm: str) -> Any:
        return scorer_for(self.scorers, prm, self.policy)

    def scorer_info(self, prm: str) -> ScorerInfo:
        return ScorerInfo.of(self._scorer(prm))

    def run_chunk(self, config: RunConfig, problems: list[Problem], reader: Any) -> ChunkResult:
        self.setup()
        scorer = self._scorer(config.prm) if config.strategy_class.needs_scorer else None
        store = ChunkStore(reader)
        results = [r for batch in lifecycle.solve_batches(config, self.policy, scorer, store, problems) for r in batch]
        return ChunkResult(results, store.generation_rows, store.reward_rows, os.getpid())

    def close(self) -> None:
        close_all(self.scorers.values())
        self.scorers = {}
        if self.policy is not None:
            self.policy.close()
            self.policy = None


# -- the driver side ---------------------------------------------------------------------------------


@dataclass
class _Chunk:
    problems: list[Problem]
    losses: int = 0  # times its actor died under it


class RayExecutor(Executor):
    """Runs engine configs sharded over Ray actors; see the module docstring. Use as a context manager."""

    kind = "ray"

    def __init__(
        self,
        policy: PolicySpec,
        *,
        address: str | None = None,
        actors: int | None = None,
        chunk_problems: int | None = None,
        max_chunk_retries: int = 3,
        threads: int | None = None,
        setup_timeout_s: float = 1800.0,
        init_options: dict[str, Any] | None = None,
    ):
        if actors is not None and actors < 1:
            raise ConfigError("actors", actors, "must be >= 1")
        if chunk_problems is not None and chunk_problems < 1:
            raise ConfigError("chunk_problems", chunk_problems, "must be >= 1")
        self.spec = policy
        self.chunk_problems = chunk_problems
        self.max_chunk_retries = max_chunk_retries
        self.setup_timeout_s = setup_timeout_s
        self.actors: list[Any] = []  # live actor handles (tests may kill one)
        self.pids: dict[Any, int] = {}
        self.actors_started = 0
        self.chunks_submitted = 0  # over the executor's life, resubmissions included
        self.problems_submitted = 0
        self._readers: dict[str, Any] = {}
        self._scorer_infos: dict[str, ScorerInfo] = {}
        self._started_ray = init_ray(address, **(init_options or {}))
        try:
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            cpus = float(resources.get("CPU", 1.0))
            self.n_actors = actors or (gpus if gpus else 2)
            # Ray takes whole numbers above 1 and at most 4 decimals below: round down, so all actors fit
            share = float(int(cpus / self.n_actors)) if cpus >= self.n_actors else (
                math.floor(cpus / self.n_actors * 1e4) / 1e4)
            if gpus:
                if self.n_actors > gpus:
                    raise ConfigError("actors", self.n_actors, f"the Ray cluster has {gpus} GPU(s), one per actor")
                self._actor_options: dict[str, Any] = {"num_gpus": 1, "num_cpus": min(1.0, share)}
            else:
                self._actor_options = {"num_cpus": share}
            self._overrides: dict[str, Any] = {}
            if policy.factory is None and policy.backend == "llamacpp" and "threads" not in policy.options:
                self._overrides["threads"] = threads or max(1, int(share))
            self._actor_cls = ray.remote(max_restarts=0)(Worker)
            self._max_replacements = max(1, self.max_chunk_retries) * self.n_actors
            self._replacements = 0
            for _ in range(self.n_actors):
                self._start_actor(wait=False)
            infos = self._get([a.setup.remote() for a in self.actors], self.setup_timeout_s)
            ids = {info[0] for info in infos}
            if len(ids) != 1:
                raise RuntimeError(f"Ray actors opened different policies: {sorted(ids)}")
            self.model_id, self.n_params = infos[0][0], infos[0][1]
            self.pids = {a: info[2] for a, info in zip(self.actors, infos, strict=True)}
        except BaseException:
            self.close()
            raise

    # -- actors --------------------------------------------------------------------------------------

    @staticmethod
    def _get(refs: Any, timeout: float | None = None) -> Any:
        """ray.get, with an actor method's own exception re-raised as it is (one line for the CLI)."""
        try:
            return ray.get(refs, timeout=timeout)
        except RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def _start_actor(self, wait: bool = True) -> Any:
        actor = self._actor_cls.options(**self._actor_options).remote(self.spec, self._overrides)
        self.actors.append(actor)
        self.actors_started += 1
        if wait:
            self.pids[actor] = self._get(actor.setup.remote(), self.setup_timeout_s)[2]
        return actor

    def _lost(self, actor: Any, err: BaseException) -> None:
        """An actor died: forget it and start a replacement (a bounded number of times in all)."""
        if actor not in self.actors:
            return  # already replaced (its other chunks fail the same way)
        self.actors.remove(actor)
        self.pids.pop(actor, None)
        ray.kill(actor)  # unreachable is not always dead: make sure it does no more work
        log.warning("Ray actor lost (%s); its chunks go to other actors", one_line(err, 200))
        if self._replacements < self._max_replacements:
            self._replacements += 1
            self._start_actor(wait=True)
        if not self.actors:
            raise RuntimeError(f"every Ray actor died; last error: {one_line(err)}")

    def _reader(self, path: Path) -> Any:
        key = str(path)
        if key not in self._readers:
            here = ray.get_runtime_context().get_node_id()
            cls = ray.remote(num_cpus=0, max_concurrency=8)(_StoreReader)
            reader = cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(key)
            self._get(reader.__ray_ready__.remote(), self.setup_timeout_s)
            self._readers[key] = reader
        return self._readers[key]

    def scorer_info(self, prm: str | None) -> ScorerInfo:
        prm = require_prm(prm)
        if prm not in self._scorer_infos:
            # every actor builds it now (errors surface here, once), and all must agree on its name
            infos = self._get([a.scorer_info.remote(prm) for a in self.actors], self.setup_timeout_s)
            names = sorted({i.name for i in infos})
            if len(names) != 1:
                raise RuntimeError(f"prm {prm}: Ray actors built different scorers: {names}")
            self._scorer_infos[prm] = infos[0]
        return self._scorer_infos[prm]

    # -- runs ----------------------------------------------------------------------------------------

    def solve(self, config: RunConfig, problems: list[Problem], store: StoreLike) -> Iterator[list[ProblemResult]]:
        if not isinstance(store, Store):
            raise TypeError("RayExecutor.solve needs the run's SQLite Store (its actors read it through a reader)")
        by_id = {p.id: p for p in problems}
        reader = self._reader(store.path)
        size = self.chunk_problems or max(1, min(config.problems_per_call,
                                                 math.ceil(len(problems) / (2 * len(self.actors)))))
        queue = deque(_Chunk(problems[i : i + size]) for i in range(0, len(problems), size))
        for done in self._stream(config, queue, reader):
            store.put_generations(done.generation_rows)
            store.put_rewards(done.reward_rows)
            # the driver's own Problem objects (meta included), not the actor's copies
            yield [ProblemResult(by_id[r.problem.id], r.trace, r.sample_correct) for r in done.results]

    def _stream(self, config: RunConfig, queue: deque[_Chunk], reader: Any) -> Iterable[ChunkResult]:
        """Hand chunks to actors as they free up; yield each finished chunk as it arrives."""
        pending: dict[Any, tuple[Any, _Chunk]] = {}

        def fill() -> None:
            load = {a: 0 for a in self.actors}
            for actor, _ in pending.values():
                if actor in load:
                    load[actor] += 1
            while queue:
                actor = min(load, key=load.__getitem__)
                if load[actor] >= PIPELINE:
                    return
                chunk = queue.popleft()
                pending[actor.run_chunk.remote(config, chunk.problems, reader)] = (actor, chunk)
                load[actor] += 1
                self.chunks_submitted += 1
                self.problems_submitted += len(chunk.problems)

        try:
            fill()
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                actor, chunk = pending.pop(ref)
                try:
                    done = self._get(ref)
                except RayActorError as err:
                    chunk.losses += 1
                    if chunk.losses > self.max_chunk_retries:
                        ids = ", ".join(p.id for p in chunk.problems)
                        raise RuntimeError(f"problems {ids}: their Ray actor died {chunk.losses} times; last error: "
                                           f"{one_line(err)}") from None
                    self._lost(actor, err)
                    queue.appendleft(chunk)
                    fill()
                    continue
                yield done
                fill()
        finally:
            for ref in pending:  # an error (or a closed generator) leaves nothing running for nobody
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - its actor may be gone already
                    pass

    def close(self) -> None:
        actors, self.actors = self.actors, []
        if actors:
            try:
                ray.get([a.close.remote() for a in actors], timeout=60)
            except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
                pass
        for a in actors:
            ray.kill(a)
        readers, self._readers = self._readers, {}
        for r in readers.values():
            ray.kill(r)
        if self._started_ray:
            self._started_ray = False
            ray.shutdown()


__all__ = ["ChunkResult", "ChunkStore", "RayExecutor", "Worker", "init_ray"]
