"""Where the engine runs: in this process (``local``) or sharded over Ray actors (``ray``).

Both executors take a *policy spec* -- the backend, the model and the backend's options -- rather than a
loaded policy, because Ray actors build their own backends; the local executor can also wrap a policy
that is already open. Scorers are named by the run config's ``prm`` spec and built next to the policy
(once per spec, cached). Either way the results land in the run's one SQLite store, and a rerun replays
what it holds::

    spec = PolicySpec(model=None, backend="llamacpp")
    with open_executor("ray", spec, actors=2) as ex:
        result = ex.run(RunConfig(strategy="majority", n=8, limit=30))

``engine.run(config, policy, problems)`` stays the plain local call for code that holds a policy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testtime.engine import RunConfig, RunResult
from testtime.policy.base import Policy
from testtime.reward.base import RewardModel
from testtime.search.registry import SCORED
from testtime.types import Problem

EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs Ray: pip install 'testtime[ray]'"

ProgressFn = Callable[[int, int], None]


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

    @classmethod
    def of(cls, scorer: Any) -> ScorerInfo:
        return cls(scorer.name, bool(getattr(scorer, "outcome_only", False)), int(getattr(scorer, "n_params", 0) or 0))


def scorer_for(cache: dict[str, Any], prm: str, policy: Any) -> Any:
    """One scorer per spec next to a policy, built on first use."""
    if prm not in cache:
        from testtime.reward import load_scorer

        cache[prm] = load_scorer(prm, policy)
    return cache[prm]


class Executor(ABC):
    """Runs engine configs over problems; results land in ``config.out``'s store. Close it when done."""

    kind: str = ""
    model_id: str = ""

    @abstractmethod
    def scorer_info(self, prm: str) -> ScorerInfo:
        """Build (or fetch) the scorer a ``--prm`` spec names; its errors are the loader's, raised here."""

    @abstractmethod
    def run(self, config: RunConfig, problems: list[Problem] | None = None,
            on_progress: ProgressFn | None = None) -> RunResult:
        """Run one engine config over the problems (or the config's dataset)."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release what the executor holds (backends, actors)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """``engine.run`` in this process, with one policy (opened from a spec, or given and not closed here).

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

    def scorer(self, prm: str) -> RewardModel:
        if self._given_scorer is not None:
            return self._given_scorer
        return scorer_for(self._scorers, prm, self.policy)

    def scorer_info(self, prm: str) -> ScorerInfo:
        return ScorerInfo.of(self.scorer(prm))

    def run(self, config: RunConfig, problems: list[Problem] | None = None,
            on_progress: ProgressFn | None = None) -> RunResult:
        from testtime import engine

        scorer = None
        if config.strategy in SCORED:
            if not config.prm and self._given_scorer is None:
                raise ValueError(f"--strategy {config.strategy} needs --prm (e.g. --prm arith-check)")
            scorer = self.scorer(config.prm or "")
        return engine.run(config, self.policy, problems, on_progress=on_progress, scorer=scorer)

    def close(self) -> None:
        scorers, self._scorers = self._scorers, {}
        for s in scorers.values():
            close = getattr(s, "close", None)
            if close is not None:
                close()
        if self._own_policy:
            self._own_policy = False
            self.policy.close()


def as_executor(policy: Policy | Executor, scorer: RewardModel | None = None) -> Executor:
    """An executor as it is, or a policy wrapped in a LocalExecutor that leaves it open on close."""
    return policy if isinstance(policy, Executor) else LocalExecutor(policy, scorer)


def open_executor(kind: str, policy: PolicySpec, *, address: str | None = None, actors: int | None = None,
                  **options: Any) -> Executor:
    """``local`` or ``ray`` (``address``: an existing Ray cluster; ``actors``: how many; ``options``: the
    RayExecutor's). Errors are one line naming the option."""
    if kind not in EXECUTORS:
        raise ValueError(f"--executor {kind}: unknown (available: {', '.join(EXECUTORS)})")
    if kind == "local":
        if address is not None:
            raise ValueError("--address only applies to --executor ray")
        if actors is not None:
            raise ValueError("--actors only applies to --executor ray")
        return LocalExecutor(policy)
    if actors is not None and actors < 1:
        raise ValueError(f"--actors {actors}: must be >= 1")
    from testtime.execution.ray import RayExecutor  # raises ImportError(RAY_MISSING) without Ray

    return RayExecutor(policy, address=address, actors=actors, **options)


__all__ = ["EXECUTORS", "RAY_MISSING", "Executor", "LocalExecutor", "PolicySpec", "ScorerInfo", "as_executor",
           "open_executor"]
