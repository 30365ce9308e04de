"""The engine: run a strategy over a dataset, in this process or on Ray, with one lifecycle.

``run(config, policy)`` runs ``config`` in this process with a policy you hold; ``execute(executor, config)``
runs it on any executor (``testtime.execution``: local or Ray actors). The lifecycle itself -- run id, store,
resume, failure isolation, recording, summary -- is ``testtime.lifecycle``'s, and the settings are
``testtime.config.RunConfig``'s; both are re-exported here, the names code that runs things imports.

Layers, bottom up (no module imports one above it): ``config`` <- ``lifecycle`` <- ``execution`` <- ``engine``.
"""

from __future__ import annotations

from testtime.config import MAX_SEED, RunConfig, run_id_for
from testtime.execution import LocalExecutor
from testtime.lifecycle import (
    ProblemResult,
    ProgressFn,
    RunResult,
    execute,
    failed_trace,
    finish,
    grade_trace,
    solve,
    solve_batches,
)
from testtime.policy.base import Policy
from testtime.reward.base import RewardModel
from testtime.types import Problem


def run(
    config: RunConfig,
    policy: Policy,
    problems: list[Problem] | None = None,
    on_progress: ProgressFn | None = None,
    scorer: RewardModel | None = None,
) -> RunResult:
    """``execute`` in this process with a policy you hold (left open); PRM-guided strategies score with
    `scorer`, or with the one ``config.prm`` names (built over the policy, closed at the end)."""
    with LocalExecutor(policy, scorer) as executor:
        return execute(executor, config, problems, on_progress)


__all__ = ["MAX_SEED", "ProblemResult", "ProgressFn", "RunConfig", "RunResult", "execute", "failed_trace", "finish",
           "grade_trace", "run", "run_id_for", "solve", "solve_batches"]
