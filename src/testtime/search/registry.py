"""Strategy names -> classes; a new strategy is one entry here plus its module."""

from __future__ import annotations

from typing import Any

from testtime.search.beam import DVTS, BeamSearch, Rebase
from testtime.search.best_of_n import BestOfN
from testtime.search.sampling import CoT, Majority
from testtime.search.tree import TreeSettings

STRATEGIES: dict[str, type] = {
    "cot": CoT, "majority": Majority, "best_of_n": BestOfN, "beam": BeamSearch, "dvts": DVTS, "rebase": Rebase,
}
# Strategies that search over steps (take --m, --max-depth, --step-max-tokens, --rank-by).
TREE = frozenset({"beam", "dvts", "rebase"})
# Strategies that need a step scorer (--prm).
SCORED = frozenset({"best_of_n"}) | TREE


def make_strategy(name: str, n: int, **options: Any):
    """Build a strategy with budget n; options (aggregation, selection, ...) go to those that take them."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy {name}: unknown (available: {', '.join(STRATEGIES)})")
    if name == "cot":
        return CoT()
    if name == "majority":
        return Majority(budget=n)
    if name in TREE:
        tree_keys = ("step_max_tokens", "max_depth", "rank_by")
        settings = TreeSettings(**{k: options.pop(k) for k in tree_keys if k in options})
        return STRATEGIES[name](budget=n, settings=settings, **options)
    return STRATEGIES[name](budget=n, **options)
