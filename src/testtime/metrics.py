"""Small pure functions for the numbers in tables and curves."""

from __future__ import annotations

import random
from collections.abc import Sequence

from testtime.search.selection import largest_group


def majority_correct(keys: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether majority voting over these candidates picks a correct answer.

    `keys[i]` is candidate i's answer group (equivalent answers share a key; None = no answer) and
    `correct[i]` its grade. Ties go to the group seen first, as in `selection.majority_vote`.
    """
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            groups.setdefault(k, []).append(i)
    best = largest_group(list(groups.values()))
    return bool(correct[best[0]]) if best else False


def majority_curve(
    keys: Sequence[str | None], correct: Sequence[bool], budgets: Sequence[int], n_subsamples: int = 32,
    seed: int = 0,
) -> dict[int, float]:
    """Expected majority@k accuracy for each k, from random size-k subsets of one N-sample pool.

    Curves come from subsampling one pool, not from reruns; k == N uses the whole pool once.
    """
    n = len(keys)
    rng = random.Random(seed)
    out: dict[int, float] = {}
    for k in budgets:
        if k > n or k < 1:
            continue
        if k == n:
            out[k] = float(majority_correct(keys, correct))
            continue
        hits = 0
        for _ in range(n_subsamples):
            idx = sorted(rng.sample(range(n), k))  # sorted: keep the pool's order for tie-breaks
            hits += majority_correct([keys[i] for i in idx], [correct[i] for i in idx])
        out[k] = hits / n_subsamples
    return out


def powers_of_two(n_max: int) -> list[int]:
    out, k = [], 1
    while k <= n_max:
        out.append(k)
        k *= 2
    if out[-1] != n_max:
        out.append(n_max)
    return out
