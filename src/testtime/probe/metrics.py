"""Small pure functions for PRM evaluation: AUROC with ties, Brier score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float | None:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties count
    one half (the Mann-Whitney statistic from average ranks). None when a class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"auroc: {s.shape[0]} scores for {y.shape[0]} labels")
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def brier(probs: Sequence[float] | np.ndarray, targets: Sequence[float] | np.ndarray) -> float:
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    return float(np.mean((p - t) ** 2)) if len(p) else 0.0


def grouped_auroc(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, groups: Sequence[str]
) -> float | None:
    """AUROC over positive-negative pairs from the same group only (ties one half).

    With groups = problems this is what Best-of-N needs: ranking a problem's good steps above its bad
    ones. A plain AUROC over many problems also rewards telling easy problems from hard ones, which
    picks nothing among one problem's candidates.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    wins = pairs = 0.0
    for idx in by.values():
        a = auroc(s[idx], y[idx])
        if a is not None:
            n_pos = int(y[idx].sum())
            w = n_pos * (len(idx) - n_pos)
            wins += a * w
            pairs += w
    return wins / pairs if pairs else None
