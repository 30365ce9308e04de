"""Search strategies over two batched calls per depth (policy.generate, scorer.score_batch) and selection."""

from testtime.search.base import SearchContext, Strategy, split_steps
from testtime.search.beam import DVTS, BeamSearch, Rebase
from testtime.search.best_of_n import BestOfN
from testtime.search.registry import SCORED, STRATEGIES, TREE, make_strategy
from testtime.search.sampling import CoT, Majority
from testtime.search.selection import group_answers, majority_vote

__all__ = [
    "DVTS", "SCORED", "STRATEGIES", "TREE", "BeamSearch", "BestOfN", "CoT", "Majority", "Rebase",
    "SearchContext", "Strategy", "group_answers", "majority_vote", "make_strategy", "split_steps",
]
