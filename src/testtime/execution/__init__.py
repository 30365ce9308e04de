"""Where the engine runs: in this process (``local``) or sharded over Ray actors (``ray``).

An executor only answers "solve these problems" (``solve``: graded results, batch by batch); the run's
life -- run id, store, resume, recording, summary -- is ``lifecycle.execute``'s, the same for every executor
(this package imports the lifecycle and the config, never ``testtime.engine``, which imports it).
Both executors take a *policy spec* -- the backend, the model and the backend's options -- rather than a
loaded policy, because Ray actors build their own backends; the local executor can also wrap a policy
that is already open. Scorers are named by the run config's ``prm`` spec and built next to the policy
(once per spec, cached: the only place a scorer is built from a spec). Either way the results land in
the run's one SQLite store, and a rerun replays what it holds::

    spec = PolicySpec(model=None, backend="llamacpp")
    with open_executor("ray", spec, actors=2) as ex:
        result = ex.run(RunConfig(strategy="majority", n=8, limit=30))

``engine.run(config, policy, problems)`` stays the plain local call for code that holds a policy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from testtime.config import RunConfig
from testtime.errors import ConfigError
from testtime.lifecycle import ProblemResult, ProgressFn, RunResult, execute, solve_batches
from testtime.policy.base import Policy
from testtime.reward.base import AGGREGATIONS, DEFAULT_SELECTION, RewardModel
from testtime.store import StoreLike
from testtime.types import Problem

EXECUTORS = ("local", "ray")
RAY_MISSING = "executor ray needs Ray: pip install 'testtime[ray]'"


@dataclass(frozen=True)
class PolicySpec:
    """How to open a policy anywhere: ``policy.load_policy(model, backend, **options)``.

    ``factory`` (a picklable callable taking the options as keywords) replaces ``load_policy`` for custom
    backends and tests; it must be importable where the executor runs it.
    """

    model: str | None = None
    backend: str = "llamacpp"
    options: dict[str, Any] = field(default_factory=dict)
    factory: Callable[..., Policy] | None = None

    def load(self, **overrides: Any) -> Policy:
        opts = {**self.options, **overrides}
        if self.factory is not None:
            return self.factory(**opts)
        import testtime.policy  # looked up at call time, so tests can stand a fake in for load_policy

        return testtime.policy.load_policy(self.model, backend=self.backend, **opts)


@dataclass(frozen=True)
class ScorerInfo:
    """What the driver needs to know about a scorer it may never load itself (run ids, reports)."""

    name: str
    outcome_only: bool = False
    n_params: int = 0
    # what the scorer declares (reward.base.RewardModel): the aggregations its rewards support and the
    # selection a run reports when it leaves aggregation / selection unset (RunConfig.for_scorer)
    aggregations: tuple[str, ...] = AGGREGATIONS
    default_selection: str = DEFAULT_SELECTION

    @classmethod
    def of(cls, scorer: Any) -> ScorerInfo:
        return cls(scorer.name, bool(getattr(scorer, "outcome_only", False)), int(getattr(scorer, "n_params", 0) or 0),
                   tuple(getattr(scorer, "aggregations", None) or AGGREGATIONS),
                   str(getattr(scorer, "default_selection", None) or DEFAULT_SELECTION))


def scorer_for(cache: dict[str, Any], prm: str, policy: Any) -> Any:
    """One scorer per spec next to a policy, built on first use (the one place a spec becomes a scorer)."""
    if prm not in cache:
        from testtime.reward import load_scorer

        cache[prm] = load_scorer(prm, policy)
    return cache[prm]


def close_all(objects: Any) -> None:
    """Close scorers (or anything) that have a ``close``."""
    for obj in objects:
        close = getattr(obj, "close", None)
        if close is not None:
            close()


def require_prm(prm: str | None) -> str:
    if not prm:
        raise ConfigError("prm", message="a PRM-guided strategy needs a step scorer (e.g. arith-check)")
    return prm


class Executor(ABC):
    """Solves batches of problems for ``lifecycle.execute``; results land in ``config.out``'s store. Close it."""

    kind: str = ""
    model_id: str = ""

    @abstractmethod
    def scorer_info(self, prm: str | None) -> ScorerInfo:
        """Build (or fetch) the scorer a ``prm`` spec names; its errors are the loader's, raised here."""

    @abstractmethod
    def solve(self, config: RunConfig, problems: list[Problem], store: StoreLike) -> Iterator[list[ProblemResult]]:
        """Graded results for the problems, batch by batch as they finish, generations and scores written to
        ``store`` before a batch is yielded (the engine then records the batch's results)."""

    def run(self, config: RunConfig, problems: list[Problem] | None = None,
            on_progress: ProgressFn | None = None) -> RunResult:
        """One run (``lifecycle.execute`` on this executor)."""
        return execute(self, config, problems, on_progress)

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release what the executor holds (backends, actors)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Batches in this process, with one policy (opened from a spec, or given and not closed here).

    A given ``scorer`` serves every scored config (whatever its ``prm`` says, as sweeps pass it); otherwise
    each ``prm`` spec is loaded once, over this policy, and closed with the executor.
    """

    kind = "local"

    def __init__(self, policy: Policy | PolicySpec, scorer: RewardModel | None = None):
        if isinstance(policy, PolicySpec):
            self.policy = policy.load()
            self._own_policy = True
        else:
            self.policy = policy
            self._own_policy = False
        self.model_id = self.policy.model_id
        self._given_scorer = scorer
        self._scorers: dict[str, RewardModel] = {}

    def scorer(self, prm: str | None) -> RewardModel:
        if self._given_scorer is not None:
            return self._given_scorer
        return scorer_for(self._scorers, require_prm(prm), self.policy)

    def scorer_info(self, prm: str | None) -> ScorerInfo:
        return ScorerInfo.of(self.scorer(prm))

    def solve(self, config: RunConfig, problems: list[Problem], store: StoreLike) -> Iterator[list[ProblemResult]]:
        scorer = self.scorer(config.prm) if config.strategy_class.needs_scorer else None
        return solve_batches(config, self.policy, scorer, store, problems)

    def close(self) -> None:
        scorers, self._scorers = self._scorers, {}
        close_all(scorers.values())
        if self._own_policy:
            self._own_policy = False
            self.policy.close()


def as_executor(policy: Policy | Executor, scorer: RewardModel | None = None) -> Executor:
    """An executor as it is, or a policy wrapped in a LocalExecutor that leaves it open on close."""
    return policy if isinstance(policy, Executor) else LocalExecutor(policy, scorer)


def open_executor(kind: str, policy: PolicySpec, *, address: str | None = None, actors: int | None = None,
                  **options: Any) -> Executor:
    """``local`` or ``ray`` (``address``: an existing Ray cluster; ``actors``: how many; ``options``: the
    RayExecutor's). Errors name the field."""
    if kind not in EXECUTORS:
        raise ConfigError("executor", kind, f"unknown (available: {', '.join(EXECUTORS)})")
    if kind == "local":
        if address is not None:
            raise ConfigError("address", address, "only applies to executor ray")
        if actors is not None:
            raise ConfigError("actors", actors, "only applies to executor ray")
        return LocalExecutor(policy)
    from testtime.execution.ray import RayExecutor  # raises ImportError(RAY_MISSING) without Ray; checks actors

    return RayExecutor(policy, address=address, actors=actors, **options)


__all__ = ["EXECUTORS", "RAY_MISSING", "Executor", "LocalExecutor", "PolicySpec", "ScorerInfo", "as_executor",
           "open_executor"]
