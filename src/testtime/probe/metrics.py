"""Small pure functions for PRM evaluation: AUROC with ties (and its interval over problems), Brier score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from testtime import stats


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
    ranks = rankdata(s, method="average")  # ties share their average rank: they count one half
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


def auroc_ci(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, groups: Sequence[str], *,
             within_group: bool = False, confidence: float = stats.DEFAULT_CONFIDENCE,
             seed: int = 0) -> stats.Interval | None:
    """AUROC (or, ``within_group``, the grouped AUROC) with a bootstrap interval over groups (problems).

    A problem's steps are correlated (one solution's steps share its prefix), so problems, not steps, are
    resampled; a resample where a class is absent counts as chance (0.5). None when the AUROC is undefined."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    names = list(dict.fromkeys(groups))
    rows: dict[str, list[int]] = {g: [] for g in names}
    for i, g in enumerate(groups):
        rows[g].append(i)
    members = [np.asarray(rows[g]) for g in names]
    if within_group:
        # the grouped AUROC is a pair-weighted mean of per-group AUROCs: compute those once, resample them
        per = [auroc(s[m], y[m]) for m in members]
        a = np.array([0.0 if v is None else v for v in per])
        w = np.array([0.0 if v is None else float(y[m].sum() * (len(m) - y[m].sum())) for v, m in zip(per, members,
                                                                                                      strict=True)])
        if w.sum() == 0:
            return None

        def stat(idx: np.ndarray) -> float:
            total = w[idx].sum()
            return float((a[idx] * w[idx]).sum() / total) if total else 0.5
    else:
        if auroc(s, y) is None:
            return None

        def stat(idx: np.ndarray) -> float:
            take = np.concatenate([members[i] for i in idx])
            v = auroc(s[take], y[take])
            return 0.5 if v is None else v  # a resample with one class only: chance

    return stats.statistic_ci(stat, len(names), confidence=confidence, seed=seed)
