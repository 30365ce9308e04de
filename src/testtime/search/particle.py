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
from testtime.search.base import changed_options, labelled
from testtime.search.beam import Rebase, RebaseOptions
from testtime.search.tree import Tree

# the same knobs as REBASE (softmax temperature over rank scores); a name of its own for docs and imports
ParticleOptions = RebaseOptions


def resample(weights: Sequence[float], k: int, rng: random.Random) -> list[int]:
    """How many of `k` draws (with replacement, probability proportional to `weights`) each index got."""
    if k <= 0 or not weights:
        return [0] * len(weights)
    drawn = Counter(rng.choices(range(len(weights)), weights=weights, k=k))
    return [drawn.get(i, 0) for i in range(len(weights))]


@dataclass
class ParticleFilter(Rebase):
    name = "particle_filter"
    from_paper = False  # not in Liu et al. 2025
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
        return labelled(cls.name, changed_options(options, ["softmax_temperature"]))

    @property
    def width(self) -> int:  # every particle is its own path: no beam width
        return 1

    def allocate(self, weights: list[float], width: int, tree: Tree, depth: int) -> list[int]:
        # a draw seeded by problem and depth (a str seed: stable across runs and processes), so reruns replay
        return resample(weights, width, random.Random(f"{tree.seed}:{depth}"))
