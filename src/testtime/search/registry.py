"""Strategy names -> classes. A new strategy is its module plus one entry in ``STRATEGIES``.

Everything else asks the class (``strategy_class(name).needs_scorer``, ``.is_tree``, ``.pooled``, its
``Options``), never compares the name.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from testtime.errors import ConfigError
from testtime.search.adaptive import AdaptiveMajority
from testtime.search.base import Strategy, options_from
from testtime.search.beam import DVTS, BeamSearch, Rebase
from testtime.search.best_of_n import BestOfN
from testtime.search.deepconf import DeepConfOnline
from testtime.search.particle import ParticleFilter
from testtime.search.sampling import CoT, Majority

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (CoT, Majority, BestOfN, BeamSearch, DVTS, Rebase, AdaptiveMajority, ParticleFilter,
                              DeepConfOnline)
}

# Every field some strategy's Options has: a run's identity keeps only its own strategy's.
OPTION_FIELDS: frozenset[str] = frozenset(f.name for cls in STRATEGIES.values() for f in fields(cls.Options))


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ConfigError("strategy", name, f"unknown (available: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


def make_strategy(name: str, n: int, source: Any = None, **options: Any) -> Strategy:
    """The strategy with budget n; its options from ``source``'s fields of the same names (a RunConfig)
    and/or keyword options (``make_strategy("beam", 16, m=4)``); errors name the field."""
    cls = strategy_class(name)
    return cls(budget=n, options=options_from(cls.Options, source, **options))
