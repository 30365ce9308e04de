"""Strategy names -> classes; a new strategy is one entry here plus its module."""

from __future__ import annotations

from typing import Any

from testtime.search.best_of_n import BestOfN
from testtime.search.sampling import CoT, Majority

STRATEGIES: dict[str, type] = {"cot": CoT, "majority": Majority, "best_of_n": BestOfN}
# Strategies that need a step scorer (--prm).
SCORED = frozenset({"best_of_n"})


def make_strategy(name: str, n: int, **options: Any):
    """Build a strategy with budget n; options (aggregation, selection, ...) go to those that take them."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy {name}: unknown (available: {', '.join(STRATEGIES)})")
    if name == "cot":
        return CoT()
    if name == "majority":
        return Majority(budget=n)
    return STRATEGIES[name](budget=n, **options)
