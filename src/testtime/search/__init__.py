"""Search strategies over two batched calls (policy.generate, later prm.score) and answer selection."""

from testtime.search.base import SearchContext, Strategy, split_steps
from testtime.search.best_of_n import BestOfN
from testtime.search.registry import SCORED, STRATEGIES, make_strategy
from testtime.search.sampling import CoT, Majority
from testtime.search.selection import group_answers, majority_vote

__all__ = [
    "SCORED", "STRATEGIES", "BestOfN", "CoT", "Majority", "SearchContext", "Strategy", "group_answers", "majority_vote",
    "make_strategy", "split_steps",
]
