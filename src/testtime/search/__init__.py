"""Search strategies over two batched calls (policy.generate, later prm.score) and answer selection."""

from testtime.search.base import SearchContext, Strategy, split_steps
from testtime.search.sampling import STRATEGIES, CoT, Majority, make_strategy
from testtime.search.selection import group_answers, majority_vote

__all__ = [
    "STRATEGIES", "CoT", "Majority", "SearchContext", "Strategy", "group_answers", "majority_vote",
    "make_strategy", "split_steps",
]
