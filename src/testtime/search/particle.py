"""Particle filtering over steps (Puri et al. 2025, arXiv 2502.01618), on the shared tree step loop.

N particles are N partial solutions. Each depth, every live particle gets one next step (the tree loop's
one batched policy call, then one scorer call for all new steps); particles whose path ended (EOS, an
answer, max depth, the token cap) leave for the finished pool; the live ones are then *resampled*: the
remaining width (N minus the paths finished so far) is drawn with replacement in proportion to
softmax(reward / T) of the surviving particles' rank scores. A particle drawn k times gets k children at
the next depth. Unlike beam search's deterministic top-k (and REBASE's deterministic proportional split),
the draw keeps a chance for a low-scored path, which is what the paper credits for better scaling with
an imperfect PRM.

The draw is seeded by the problem's seed and the depth, so a rerun makes the same tree and replays it
from the store. Budget N is the particle count (any N >= 1; ``m`` plays no part).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from testtime.errors import ConfigError
from testtime.search.beam import TreeSearch, softmax
from testtime.search.tree import Tree, TreeOptions, rank_score
from testtime.types import Node


@dataclass(frozen=True)
class ParticleOptions(TreeOptions):
    softmax_temperature: float = 0.1  # over rewards in [0, 1]: lower = greedier (REBASE's default)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.softmax_temperature > 0:
            raise ConfigError("softmax_temperature", self.softmax_temperature, "must be > 0")


def resample(weights: Sequence[float], k: int, rng: random.Random) -> list[int]:
    """How many of `k` draws (with replacement, probability proportional to `weights`) each index got."""
    if k <= 0 or not weights:
        return [0] * len(weights)
    drawn = Counter(rng.choices(range(len(weights)), weights=weights, k=k))
    return [drawn.get(i, 0) for i in range(len(weights))]


@dataclass
class ParticleFilter(TreeSearch):
    name = "particle_filter"
    Options = ParticleOptions

    @classmethod
    def check_budget(cls, n: int, options: ParticleOptions) -> None:
        if n < 1:
            raise ConfigError("n", n, "must be >= 1")

    @classmethod
    def sweep_budgets(cls, budgets: Sequence[int], options: ParticleOptions) -> list[int]:
        return sorted({b for b in budgets if b >= 1})

    @classmethod
    def label(cls, options: ParticleOptions) -> str:
        return cls.name

    @property
    def width(self) -> int:  # every particle is its own path: no beam width
        return 1

    def start(self, tree: Tree) -> tuple[dict, list[tuple[Tree, Node, int]]]:
        return {"width": self.budget}, [(tree, tree.root, self.budget)]

    def choose(self, tree, state, children, done):
        viable = [c for c in children if c.pruned is None]
        finished = [c for c in viable if c.terminal]
        done.extend(finished)
        state["width"] -= len(finished)
        active = [c for c in viable if not c.terminal]
        if state["width"] <= 0 or not active:
            for c in active:
                c.pruned = "rank"
            return []
        weights = softmax([rank_score(c, self.options) for c in active], self.options.softmax_temperature)
        rng = random.Random(f"{tree.seed}:{active[0].depth}")  # a str seed: stable across runs and processes
        work = []
        for c, k in zip(active, resample(weights, state["width"], rng), strict=True):
            c.kept = k > 0
            if k > 0:
                work.append((tree, c, k))
            else:
                c.pruned = "rank"
        return work
