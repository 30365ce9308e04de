"""How sure a reported figure is: bootstrap intervals over problems, paired comparisons, small-sample warnings.

Every figure testtime reports is a mean over problems (accuracy) or a function of such means (a gain, an
AUROC). Its uncertainty comes from which problems happened to be drawn, so intervals are bootstrap intervals
over problems, computed by ``scipy.stats.bootstrap`` (percentile method, seeded):

* stratified by difficulty bin where bins exist: each bin is resampled on its own, keeping its size, so a
  resample never has a different mix of easy and hard problems than the data (scipy resamples each of
  several samples independently, which is exactly a stratified bootstrap);
* paired where two configs ran on the same problems: the per-problem differences are resampled, and
  McNemar's exact test (``scipy.stats.binomtest`` on the discordant problems) says whether the
  difference is more than chance;
* a sample with no variation at all (8 of 8 right) tells a bootstrap nothing: 0/1 data then gets the exact
  (Clopper-Pearson) binomial interval instead, so "100%" on 8 problems still reads [63%, 100%].

The warnings' thresholds are constants here, so the report, the calibrated table and the selector agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from testtime.errors import ConfigError

DEFAULT_CONFIDENCE = 0.95
N_RESAMPLES = 2000  # accuracy intervals: cheap (vectorized), so enough for stable 2.5% tails
N_RESAMPLES_SLOW = 1000  # statistics recomputed per resample in Python (gains, AUROC)
MIN_HELDOUT = 30  # fewer held-out problems than this: one problem moves a figure by > 3 points
MIN_BIN_CALIBRATION = 10  # a bin chosen on fewer calibration problems than this is unreliable
MIN_STRATUM = 10  # a bin this small says little about its own spread (none when all agree): no strata then
UNBOUNDED = 1e12  # stands for "no upper limit" (a ratio over a resample whose denominator is 0)

BOOTSTRAP = "bootstrap"
EXACT = "exact binomial"
NONE = "none"


@dataclass(frozen=True)
class Interval:
    """A point estimate and its (two-sided) confidence interval; ``method`` says how it was computed."""

    estimate: float
    low: float
    high: float
    confidence: float = DEFAULT_CONFIDENCE
    method: str = BOOTSTRAP

    def as_list(self) -> list[float]:
        return [self.low, self.high]

    def contains(self, x: float) -> bool:
        return self.low - 1e-12 <= x <= self.high + 1e-12

    def pct(self, digits: int = 0) -> str:
        """A fraction as percent with its interval: ``62% [41, 80]``."""
        return f"{100 * self.estimate:.{digits}f}% [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"


def check_confidence(confidence: float) -> float:
    """The confidence level, refused outside (0, 1) as the field ``ci`` (the CLI's ``--ci``)."""
    if not 0.0 < confidence < 1.0:  # also rejects NaN
        raise ConfigError("ci", confidence, "the confidence level must be in (0, 1), e.g. 0.95")
    return confidence


def _groups(n: int, strata: Sequence[str] | None) -> list[np.ndarray]:
    """Index arrays, one per stratum in first-seen order; one array when there are no strata or when a stratum
    holds fewer than ``MIN_STRATUM`` problems (6 problems all wrong would be resampled as certainly 0%)."""
    if strata is None:
        return [np.arange(n)]
    if len(strata) != n:
        raise ValueError(f"{n} values but {len(strata)} strata")
    by: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        by.setdefault(s, []).append(i)
    if min(len(v) for v in by.values()) < MIN_STRATUM:
        return [np.arange(n)]
    return [np.asarray(v) for v in by.values()]


def exact_binomial(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """The Clopper-Pearson interval of a proportion (``scipy.stats.binomtest``)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    ci = sps.binomtest(successes, n).proportion_ci(confidence_level=check_confidence(confidence), method="exact")
    return Interval(successes / n, float(ci.low), float(ci.high), confidence, EXACT)


def mean_ci(values: Sequence[float] | np.ndarray, strata: Sequence[str] | None = None, *,
            confidence: float = DEFAULT_CONFIDENCE, seed: int = 0, n_resamples: int = N_RESAMPLES) -> Interval:
    """The mean of per-problem values (accuracies in [0, 1], or differences) with a bootstrap interval.

    `strata` (one label per value, e.g. the difficulty bin): resampled within each stratum, when every stratum
    holds at least ``MIN_STRATUM`` problems and some stratum varies (else the strata are dropped). No
    variation at all: the exact binomial interval for 0/1 values, else the point itself (method "none")."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("mean_ci needs a non-empty 1-D sequence of values")
    check_confidence(confidence)
    est = float(x.mean())
    if np.all(x == x[0]):
        if x[0] in (0.0, 1.0):
            return exact_binomial(int(x.sum()), len(x), confidence)
        return Interval(est, est, est, confidence, NONE)
    groups = _groups(len(x), strata)
    samples = tuple(x[g] for g in groups if len(g) >= 2)
    fixed = float(sum(x[g].sum() for g in groups if len(g) < 2))
    if not samples or all(np.all(s == s[0]) for s in samples):
        # every stratum constant (all easy right, all hard wrong): a stratified resample could never differ
        # from the data, which says more about the bins' size than about the accuracy; drop the strata
        return mean_ci(x, None, confidence=confidence, seed=seed, n_resamples=n_resamples)
    n = len(x)

    def total_mean(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return (sum(s.sum(axis=axis) for s in resampled) + fixed) / n

    res = sps.bootstrap(samples, total_mean, vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                        method="percentile", rng=np.random.default_rng(seed))
    return _around(est, float(res.confidence_interval.low), float(res.confidence_interval.high), confidence)


def _around(est: float, low: float, high: float, confidence: float) -> Interval:
    """A percentile interval widened, where it must be, to hold its own estimate: with a skewed or non-smooth
    statistic (a gain that jumps between budgets) the estimate can fall just outside, which reads as a bug."""
    return Interval(est, min(low, est), max(high, est), confidence)


def statistic_ci(statistic: Callable[[np.ndarray], float], n: int, strata: Sequence[str] | None = None, *,
                 confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                 n_resamples: int = N_RESAMPLES_SLOW) -> Interval | None:
    """Any statistic of a set of problems (a gain, an AUROC) with a bootstrap interval over problems.

    `statistic` gets an array of problem indices (0..n-1, with repeats in a resample) and returns a float;
    it must return a finite number for every resample (cap an unbounded ratio at ``UNBOUNDED``). Stratified
    as ``mean_ci``. None when the statistic of the data itself is not finite or the interval is undefined."""
    check_confidence(confidence)
    if n < 1:
        raise ValueError("statistic_ci needs at least one problem")
    est = statistic(np.arange(n))
    if not math.isfinite(est):
        return None
    groups = _groups(n, strata)
    samples = tuple(g for g in groups if len(g) >= 2)
    fixed = np.concatenate([g for g in groups if len(g) < 2] or [np.array([], dtype=int)])
    if not samples:
        return Interval(est, est, est, confidence, NONE)

    def of_indices(*resampled: np.ndarray) -> float:
        return statistic(np.concatenate([*resampled, fixed]).astype(int))

    res = sps.bootstrap(samples, of_indices, vectorized=False, n_resamples=n_resamples, confidence_level=confidence,
                        method="percentile", rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    if low == high and len(groups) > 1:  # no stratum varies: as in mean_ci, drop the strata
        return statistic_ci(statistic, n, None, confidence=confidence, seed=seed, n_resamples=n_resamples)
    return _around(est, low, high, confidence)


# --- sampling seeds --------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedSpread:
    """How much a figure moves when only the sampling seed changes (same problems): the per-seed accuracies'
    standard deviation and range. It sits beside the bootstrap interval, which is over problems: a rerun on a
    new seed moves a figure by about ``sd`` even with the problems held fixed."""

    per_seed: tuple[float, ...]
    sd: float  # sample standard deviation (ddof=1) of the per-seed means
    low: float
    high: float

    def text(self) -> str:
        """``seeds: sd 3.1 pts, 58-64% over 3``."""
        return (f"seeds: sd {100 * self.sd:.1f} pts, {100 * self.low:.0f}-{100 * self.high:.0f}% "
                f"over {len(self.per_seed)}")

    def as_dict(self) -> dict[str, float | list[float]]:
        return {"sd": self.sd, "min": self.low, "max": self.high, "per_seed": list(self.per_seed)}


def seed_spread(per_problem: Sequence[Sequence[float]]) -> SeedSpread | None:
    """The seed-to-seed spread of a mean over problems, from each problem's accuracy under every seed (one row
    per problem, one column per seed). None with fewer than two seeds or rows of unequal length."""
    if not per_problem or len({len(r) for r in per_problem}) != 1 or len(per_problem[0]) < 2:
        return None
    means = np.asarray(per_problem, dtype=np.float64).mean(axis=0)  # one mean over the problems per seed
    return SeedSpread(tuple(float(m) for m in means), float(np.std(means, ddof=1)), float(means.min()),
                      float(means.max()))


# --- paired comparisons --------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test: of the problems where the two configs differ, how many went each way."""

    better: int  # problems where the first config did better
    worse: int
    p_value: float


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """McNemar's exact test of a vs b on the same problems (two-sided binomial test on the discordant pairs).

    With fractional per-problem accuracies (a subsampled pool's expected accuracy) a problem counts for
    whichever config scored higher on it: the exact sign test, which is McNemar's test on 0/1 data."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired test: {len(x)} vs {len(y)} problems")
    better, worse = int(np.sum(x > y + 1e-12)), int(np.sum(y > x + 1e-12))
    if better + worse == 0:
        return PairedTest(0, 0, 1.0)
    return PairedTest(better, worse, float(sps.binomtest(better, better + worse, 0.5).pvalue))


@dataclass(frozen=True)
class PairedComparison:
    difference: Interval  # mean of a - b over the problems, with its paired bootstrap interval
    test: PairedTest

    @property
    def significant(self) -> bool:
        """The test rejects "no difference" at the interval's level."""
        return self.test.p_value < 1.0 - self.difference.confidence

    def describe(self) -> str:
        d = self.difference
        mark = "significant" if self.significant else "not significant"
        return (f"{100 * d.estimate:+.1f} pts [{100 * d.low:+.1f}, {100 * d.high:+.1f}], "
                f"McNemar p={self.test.p_value:.2g} ({self.test.better} better, {self.test.worse} worse: {mark})")


def compare_paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                   strata: Sequence[str] | None = None, *, confidence: float = DEFAULT_CONFIDENCE,
                   seed: int = 0) -> PairedComparison:
    """a vs b on the same problems: the paired difference's bootstrap interval and McNemar's exact test."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired comparison: {len(x)} vs {len(y)} problems")
    diff = x - y
    if np.all(diff == diff[0]):  # no variation in the difference: a bootstrap would say [d, d]; so does the data
        d = float(diff[0]) if len(diff) else 0.0
        iv = Interval(d, d, d, confidence, NONE)
    else:
        iv = mean_ci(diff, strata, confidence=confidence, seed=seed)
    return PairedComparison(iv, mcnemar_exact(x, y))


def wins_headline(comparisons: Sequence[PairedComparison | None]) -> str:
    """"better at 3 of 5 budgets, significant at 1" from one paired comparison per budget (None: not measured)."""
    done = [c for c in comparisons if c is not None]
    better = [c for c in done if c.difference.estimate > 1e-12]
    sig = [c for c in better if c.significant]
    worse_sig = [c for c in done if c.difference.estimate < -1e-12 and c.significant]
    text = f"better at {len(better)} of {len(comparisons)} budgets, significant at {len(sig)}"
    if worse_sig:
        text += f"; significantly worse at {len(worse_sig)}"
    return text


# --- warnings --------------------------------------------------------------------------


def small_sample_warnings(n_heldout: int | None = None, bin_support: Mapping[str, int] | None = None,
                          efficiency: Mapping[str, Interval | None] | None = None) -> list[str]:
    """One line per claim the data cannot carry: too few held-out problems, a bin chosen on too few
    calibration problems, an efficiency gain whose interval includes 1."""
    out = []
    if n_heldout is not None and n_heldout < MIN_HELDOUT:
        out.append(f"only {n_heldout} held-out problems (< {MIN_HELDOUT}): one problem more or less moves every "
                   f"held-out accuracy by {100 / max(n_heldout, 1):.0f} points")
    for label, n in (bin_support or {}).items():
        if n < MIN_BIN_CALIBRATION:
            out.append(f"bin {label!r}: {n} calibration problems (< {MIN_BIN_CALIBRATION}): its choices are "
                       "unreliable; the selector uses the robust choice there")
    for name, iv in (efficiency or {}).items():
        if iv is not None and iv.low <= 1.0:
            out.append(f"{name}: its interval [{fmt_ratio(iv.low)}, {fmt_ratio(iv.high)}] includes 1x, so it may "
                       "be no gain at all")
    return out


def accuracy_intervals(correct: Sequence[float], strata: Sequence[str] | None = None, *,
                       confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> tuple[Interval, dict[str, Interval]]:
    """A run's accuracy interval (stratified by `strata`, e.g. the problems' levels) and one per stratum."""
    overall = mean_ci(correct, strata, confidence=confidence, seed=seed)
    per: dict[str, list[float]] = {}
    for i, s in enumerate(strata or []):
        per.setdefault(s, []).append(float(correct[i]))
    return overall, {s: mean_ci(v, confidence=confidence, seed=seed) for s, v in per.items()}


def fmt_ratio(x: float) -> str:
    return "unbounded" if x >= UNBOUNDED / 10 else f"{x:.1f}x"
