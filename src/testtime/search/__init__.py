"""Search strategies over two batched calls per depth (policy.generate, scorer.score_batch) and selection."""

from testtime.search.base import NoOptions, ScoredOptions, SearchContext, Strategy, split_steps
from testtime.search.beam import DVTS, BeamOptions, BeamSearch, Rebase, TreeSearch
from testtime.search.best_of_n import BestOfN
from testtime.search.registry import STRATEGIES, make_strategy, strategy_class
from testtime.search.sampling import CoT, Majority
from testtime.search.selection import SELECTIONS, Pool, Selection, group_answers, majority_vote
from testtime.search.tree import TreeOptions

__all__ = [
    "DVTS", "SELECTIONS", "STRATEGIES", "BeamOptions", "BeamSearch", "BestOfN", "CoT", "Majority", "NoOptions",
    "Pool", "Rebase", "ScoredOptions", "SearchContext", "Selection", "Strategy", "TreeOptions", "TreeSearch",
    "group_answers",
    "majority_vote", "make_strategy", "split_steps", "strategy_class",
]
