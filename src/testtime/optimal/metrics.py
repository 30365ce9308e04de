"""The paper's numbers as small pure functions: subsampled curves, difficulty bins, gains, frontiers.

Scaling curves come from subsampling one pool of N_max candidates per problem (as in Liu et al.
2025 and Snell et al. 2024), never from reruns: accuracy at budget k is the expectation, over
size-k subsets of the pool, of whether the strategy's selection on that subset is correct.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from testtime.search.selection import Pool, Selection

# --- subsampled scaling curves -------------------------------------------------------------------

Subset = tuple[int, ...]


def _subsets(pool_size: int, k: int, samples: int, seed: int, exact_below: int) -> list[Subset]:
    """The size-k subsets whose mean gives the expected accuracy at k (indices sorted ascending).

    Sorted indices keep the pool's order, so "first seen" tie-breaks mean the same as on the pool.
    """
    if k == pool_size:
        return [tuple(range(pool_size))]
    if math.comb(pool_size, k) <= exact_below:
        return list(itertools.combinations(range(pool_size), k))
    # One generator per (seed, k): a k's estimate does not depend on which other ks were asked for.
    # A str seed is hashed with sha512 by `random`, so it is stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"subsample:{seed}:{k}")
    return [tuple(sorted(rng.sample(range(pool_size), k))) for _ in range(samples)]


def _check_curve_args(pool_size: int, ks: Sequence[int], samples: int) -> list[int]:
    if pool_size < 0:
        raise ValueError(f"pool_size must be >= 0, got {pool_size}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    bad = [k for k in ks if k < 1]
    if bad:
        raise ValueError(f"budgets k must be >= 1, got {bad}")
    # k > pool_size cannot be estimated from this pool: left out
    return sorted({k for k in ks if k <= pool_size})


def subsample_curves(
    pool_size: int,
    ks: Sequence[int],
    scores_of_subset: Callable[[Subset], Mapping[str, float]],
    *,
    samples: int = 32,
    seed: int = 0,
    exact_below: int = 200,
) -> dict[str, dict[int, float]]:
    """Several curves from one set of subsets: {key: {k: mean of scores_of_subset(s)[key]}}.

    Sharing the subsets across keys (e.g. every aggregation x selection) is what keeps a sweep cheap:
    the callback can compute all selections of one subset in one pass. Subsets as in `subsample_curve`;
    a key missing from some subset's result counts as 0 there.
    """
    out: dict[str, dict[int, float]] = {}
    for k in _check_curve_args(pool_size, ks, samples):
        subsets = _subsets(pool_size, k, samples, seed, exact_below)
        totals: dict[str, float] = {}
        for s in subsets:
            for key, v in scores_of_subset(s).items():
                totals[key] = totals.get(key, 0.0) + float(v)
        for key, total in totals.items():
            out.setdefault(key, {})[k] = total / len(subsets)
    return out


def subsample_curve(
    pool_size: int,
    ks: Sequence[int],
    correct_of_subset: Callable[[Subset], float],
    *,
    samples: int = 32,
    seed: int = 0,
    exact_below: int = 200,
) -> dict[int, float]:
    """Expected accuracy at each k when k candidates are drawn without replacement from the pool.

    Exact (mean over all C(N, k) subsets) when C(N, k) <= exact_below, else the mean over `samples`
    uniform random subsets, seeded per (seed, k) so results are deterministic; k == N is the whole
    pool once. ks above pool_size are left out; ks below 1 raise. `correct_of_subset` gets sorted
    indices and returns 0/1 or a fraction.
    """
    curves = subsample_curves(
        pool_size, ks, lambda s: {"": correct_of_subset(s)}, samples=samples, seed=seed, exact_below=exact_below
    )
    return curves.get("", {})


def selection_subset_scores(
    pool: Pool, correct: Sequence[bool], selections: Sequence[Selection] | None = None
) -> Callable[[Subset], dict[str, float]]:
    """A callback for `subsample_curves`: subset -> {selection name: 1.0 / 0.0}, whether the candidate that
    selection chooses on the subset (``Pool.choose``, the live strategies' own rule) is correct; no answer
    scores 0.0. Default: every selection the pool supports."""
    if len(correct) != len(pool):
        raise ValueError(f"{len(pool)} candidates but {len(correct)} grades")
    chosen = list(selections) if selections is not None else pool.selections()

    def scores(subset: Subset) -> dict[str, float]:
        ordered = sorted(subset)
        out = {}
        for sel in chosen:
            i = pool.choose(sel, ordered)
            out[sel.name] = 0.0 if i is None else float(bool(correct[i]))
        return out

    return scores


def powers_of_two(n_max: int) -> list[int]:
    """1, 2, 4, ... up to n_max, and n_max itself when it is not a power of two."""
    out, k = [], 1
    while k <= n_max:
        out.append(k)
        k *= 2
    if out[-1] != n_max:
        out.append(n_max)
    return out


# --- difficulty bins -----------------------------------------------------------------------------

# Liu et al. 2025, Sec. 4: easy pass@1 >= 50%, medium 10-50%, hard < 10% (absolute thresholds).
PAPER_THRESHOLDS: tuple[float, float] = (0.5, 0.1)
ABSOLUTE_LABELS: tuple[str, ...] = ("easy", "medium", "hard")


def _check_pass1(pass1: Mapping[str, float]) -> None:
    for pid, p in pass1.items():
        if not 0.0 <= p <= 1.0:  # also rejects NaN
            raise ValueError(f"pass@1 of problem {pid!r} is {p}, not in [0, 1]")


def absolute_bins(pass1: Mapping[str, float], easy: float = 0.5, hard: float = 0.1) -> dict[str, str]:
    """Problem id -> "easy" (pass@1 >= easy), "medium" (hard <= pass@1 < easy) or "hard" (< hard)."""
    if not 0.0 < easy <= 1.0:
        raise ValueError(f"easy threshold must be in (0, 1], got {easy}")
    if not 0.0 <= hard < easy:
        raise ValueError(f"hard threshold must be in [0, easy={easy}), got {hard}")
    _check_pass1(pass1)
    return {pid: "easy" if p >= easy else "medium" if p >= hard else "hard" for pid, p in pass1.items()}


def quantile_bins(pass1: Mapping[str, float], n_bins: int = 5) -> dict[str, str]:
    """Problem id -> "q1" (lowest pass@1, hardest) .. "qK" (easiest): K groups of equal size (Snell et al.).

    Problems are ordered by (pass@1, problem id), so ties split deterministically: the smaller id goes
    to the harder bin. When n is not a multiple of K the sizes differ by at most one and the first
    n mod K bins (the hardest) get the extra problem, as numpy.array_split does; with n < K the
    easiest bins are empty.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    _check_pass1(pass1)
    order = sorted(pass1, key=lambda pid: (pass1[pid], pid))
    size, extra = divmod(len(order), n_bins)
    out: dict[str, str] = {}
    start = 0
    for b in range(n_bins):
        end = start + size + (1 if b < extra else 0)
        for pid in order[start:end]:
            out[pid] = f"q{b + 1}"
        start = end
    return out


_Q_LABEL = re.compile(r"q(\d+)")


def bin_order(labels: Iterable[str]) -> list[str]:
    """Distinct labels in display order: easy, medium, hard; then q1, q2, .. by number; then others sorted."""

    def rank(label: str) -> tuple[int, int, str]:
        if label in ABSOLUTE_LABELS:
            return (0, ABSOLUTE_LABELS.index(label), "")
        m = _Q_LABEL.fullmatch(label)
        if m:
            return (1, int(m.group(1)), "")
        return (2, 0, label)

    return sorted(set(labels), key=rank)


def confusion_matrix(
    true_bins: Mapping[str, str], pred_bins: Mapping[str, str], labels: Sequence[str]
) -> list[list[int]]:
    """Counts over the problems in both mappings: row = true bin, column = predicted bin, in `labels` order."""
    index = {label: i for i, label in enumerate(labels)}
    out = [[0] * len(labels) for _ in labels]
    for pid in sorted(true_bins.keys() & pred_bins.keys()):
        t, p = true_bins[pid], pred_bins[pid]
        for label in (t, p):
            if label not in index:
                raise ValueError(f"bin {label!r} of problem {pid!r} is not among labels {list(labels)}")
        out[index[t]][index[p]] += 1
    return out


def bin_accuracy(confusion: Sequence[Sequence[int]]) -> float:
    """Fraction on the diagonal; raises on an empty matrix (no common problems is a caller bug, not 0%)."""
    total = sum(sum(row) for row in confusion)
    if total == 0:
        raise ValueError("empty confusion matrix: no problems to score")
    return sum(confusion[i][i] for i in range(len(confusion))) / total


# --- the paper's gains ---------------------------------------------------------------------------


def performance_gain(acc_tts: float, acc_cot: float) -> float | None:
    """Relative gain over CoT, (acc_tts - acc_cot) / acc_cot; None when acc_cot == 0 (the report shows "n/a")."""
    if acc_cot == 0:
        return None
    return (acc_tts - acc_cot) / acc_cot


# Accuracies from subsampling are ratios of small integers: 3/5 computed two ways may differ in the last bit.
_EPS = 1e-12


@dataclass(frozen=True)
class EfficiencyGain:
    """How many times less budget the compute-optimal curve needs to match majority voting's best accuracy.

    value None: the optimal curve never reaches the target (rendered "n/a"; below the target at every
    measured budget says nothing reliable about how far above 1x or below it the gain is).
    lower_bound True: already reached at the optimal curve's smallest budget, so the gain is at least
    value (rendered "> x.x").
    """

    value: float | None
    lower_bound: bool
    target_accuracy: float
    majority_budget: float
    optimal_budget: float | None

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        return f"> {self.value:.1f}" if self.lower_bound else f"{self.value:.1f}"


def _check_curve(name: str, curve: Sequence[tuple[float, float]]) -> None:
    if not curve:
        raise ValueError(f"{name} curve is empty")
    budgets = [b for b, _ in curve]
    if any(b <= 0 for b in budgets):
        raise ValueError(f"{name} curve budgets must be > 0, got {budgets}")
    if any(b2 <= b1 for b1, b2 in itertools.pairwise(budgets)):
        raise ValueError(f"{name} curve must be sorted by strictly increasing budget, got {budgets}")


def efficiency_gain(
    majority: Sequence[tuple[float, float]], optimal: Sequence[tuple[float, float]]
) -> EfficiencyGain:
    """b_maj / b_opt for (budget, accuracy) curves sorted by budget.

    Target = majority's best accuracy; b_maj = the smallest budget where majority first reaches it.
    b_opt = the budget where the optimal curve first reaches the target, linearly interpolated (in
    budget, not log budget) between the two measured budgets around the crossing.
    """
    _check_curve("majority", majority)
    _check_curve("optimal", optimal)
    target = max(a for _, a in majority)
    b_maj = next(b for b, a in majority if a >= target - _EPS)
    b0, a0 = optimal[0]
    if a0 >= target - _EPS:
        return EfficiencyGain(b_maj / b0, True, target, b_maj, b0)
    for (b1, a1), (b2, a2) in itertools.pairwise(optimal):
        if a2 >= target - _EPS:
            # a1 < target <= a2 here (a1 did not reach it), so a2 > a1 and the division is safe
            b_opt = b1 + (min(target, a2) - a1) * (b2 - b1) / (a2 - a1)
            return EfficiencyGain(b_maj / b_opt, False, target, b_maj, b_opt)
    return EfficiencyGain(None, False, target, b_maj, None)


# --- frontiers -----------------------------------------------------------------------------------


def frontier(curves: Mapping[str, Sequence[tuple[float, float]]]) -> list[tuple[float, float, str]]:
    """(budget, best accuracy, its strategy) at every budget any curve measured, sorted by budget.

    Only strategies measured at a budget compete there (no interpolation); ties go to the first
    label in sorted order. Not forced monotone: use `pareto_frontier` for the envelope.
    """
    best: dict[float, tuple[float, str]] = {}
    for label in sorted(curves):
        for budget, acc in curves[label]:
            if budget not in best or acc > best[budget][0]:  # strict: earlier (sorted) label keeps ties
                best[budget] = (acc, label)
    return [(b, acc, label) for b, (acc, label) in sorted(best.items())]


def pareto_frontier(points: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The upper-left envelope of (cost, accuracy, label) points: those no cheaper-or-equal point matches.

    Sorted by cost; both cost and accuracy strictly increase along it. At equal cost the most accurate
    point stands (ties: first label in sorted order); a costlier point with no higher accuracy is dropped.
    """
    out: list[tuple[float, float, str]] = []
    for cost, acc, label in sorted(points, key=lambda p: (p[0], -p[1], p[2])):
        # the sort puts the best point of each cost first, so a later equal-cost point never beats it
        if not out or acc > out[-1][1]:
            out.append((cost, acc, label))
    return out
