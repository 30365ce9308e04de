"""Calibration: a sweep -> the best config per (difficulty bin, budget), a versioned artifact.

Problems are split (deterministically, by a hash of their id) into a calibration part and a held-out
part. On the calibration part, for every bin and budget B the best config is chosen among configs measured
at a budget <= B (spending less is allowed) by the one-standard-error rule: the cheapest (mean FLOPs per
problem) whose accuracy is within one standard error of the highest, so that a config ahead by a problem or
two of luck does not win over a cheaper one as good within noise (``one_se=False``: the highest accuracy;
ties go to the smaller budget, then PRM-free, then the config name). The best *fixed* config per budget (no
bins) is chosen the same way, so the held-out comparison is fair: both were picked on the same problems.

Choices that generalise. With a few calibration problems per bin and dozens of configs, the per-bin best
fits noise. So a bin's accuracy of a config is shrunk toward the config's accuracy on all calibration
problems, ``(n_bin * acc_bin + lambda * acc_all) / (n_bin + lambda)``, with lambda chosen by K-fold
cross-validation over the calibration problems (ties: the larger lambda, the more conservative table), and a
bin with fewer than ``min_support`` calibration problems takes the all-problems choice. The table also keeps
two fallbacks the selector uses when it should not trust a bin: ``robust`` (per budget, the config with the
best mean accuracy over the bins, each bin weighted equally: never one tuned to a single bin) and
``prm_free`` (the better of CoT and majority voting), and a ``Profile`` of what it was calibrated on (see
``optimal.shift``). Before any choice, each set of problems' sample-and-select families (pooled strategies:
majority, best_of_n/<selection>, confidence votes) are fitted monotone in N (`monotone_in_budget`): more
samples never hurt in expectation, so a dip between budgets is noise, and the fit shares strength across them.

The selector cannot see oracle bins, so the artifact also carries a difficulty predictor: a least-squares
line from the probe's features (answer agreement among probe_n samples, their mean min step reward) to
pass@1, fitted on the calibration part; its bins are compared with the oracle's on the held-out part.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from testtime.errors import ConfigError
from testtime.optimal.artifact import read_artifact
from testtime.optimal.metrics import absolute_bins, bin_order, confusion_matrix
from testtime.optimal.shift import Profile, Shift, check_shift, kinds_of
from testtime.optimal.sweep import Cell, ProblemInfo, SweepResult
from testtime.search import CoT, Majority, strategy_class
from testtime.stats import MIN_BIN_CALIBRATION

TABLE_KIND = "testtime-calibration"
TABLE_VERSION = 1
ALL = "all"


@dataclass
class Choice:
    config: str
    strategy: str
    budget: int
    m: int | None
    selection: str | None
    accuracy: float  # mean on the calibration problems it was chosen on
    n_problems: int


@dataclass
class Predictor:
    """pass@1 ~ intercept + w_agree * agreement + w_score * probe_score (clipped to [0, 1])."""

    probe_n: int
    coef: list[float]  # [intercept, agreement, probe_score]
    uses_score: bool

    def predict(self, agreement: float, probe_score: float | None) -> float:
        x = [1.0, agreement, (probe_score or 0.0) if self.uses_score else 0.0]
        return float(min(1.0, max(0.0, sum(a * b for a, b in zip(self.coef, x, strict=True)))))


@dataclass
class Table:
    policy: str
    prm: str | None
    oracle_prm: bool
    dataset: str
    recipe: str
    easy: float
    hard: float
    budgets: list[int]
    table: dict[str, dict[int, Choice]]  # bin -> budget -> choice (bin "all": no difficulty)
    fixed: dict[int, Choice]
    predictor: Predictor
    calibration_ids: list[str]
    holdout_ids: list[str]
    created: float = field(default_factory=time.time)
    kind: str = TABLE_KIND
    version: int = TABLE_VERSION
    robust: dict[int, Choice] = field(default_factory=dict)  # budget -> best mean accuracy over bins
    prm_free: dict[int, Choice] = field(default_factory=dict)  # budget -> better of CoT and majority
    profile: Profile | None = None  # what it was calibrated on (optimal.shift)
    shrinkage: float = 0.0  # lambda, chosen by cross-validation
    min_support: int = 1
    cv: dict[str, float] = field(default_factory=dict)  # lambda -> cross-validated accuracy
    predictor_source: str = "pass@1 of the calibration problems"  # or a label-free refit (optimal.recalibrate)
    support: dict[str, int] = field(default_factory=dict)  # bin -> calibration problems in it
    # the question-only difficulty model and the menu's success / cost curves (optimal.predictor), as JSON
    allocation: dict[str, Any] | None = None
    # choices within a budget by the one-standard-error rule (`best_within`); False: the plain best (and
    # every table saved before the rule, which chose that way)
    one_se: bool = False

    def bin_support(self) -> dict[str, int]:
        """Calibration problems per bin (tables made before ``support`` count their profile's bins)."""
        if self.support:
            return dict(self.support)
        return dict(Counter(self.profile.bins)) if self.profile is not None else {}

    def unreliable(self, bin_label: str) -> bool:
        """The bin's choices rest on fewer than ``MIN_BIN_CALIBRATION`` calibration problems (none counts as
        fewer); False when the table does not know its support."""
        support = self.bin_support()
        return bool(support) and support.get(bin_label, 0) < MIN_BIN_CALIBRATION

    def choice(self, bin_label: str, budget: int) -> Choice:
        """The best config for a bin within `budget` (the largest calibrated budget <= budget)."""
        usable = [b for b in self.budgets if b <= budget]
        if not usable:
            raise ConfigError("budget", budget, f"below the smallest calibrated budget {min(self.budgets)}")
        row = self.table.get(bin_label) or self.table[ALL]
        b = max(x for x in usable if x in row) if any(x in row for x in usable) else None
        if b is None:
            return self.table[ALL][max(usable)]
        return row[b]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = asdict(self)
        d["table"] = {k: {str(b): c for b, c in v.items()} for k, v in d["table"].items()}
        for key in ("fixed", "robust", "prm_free"):
            d[key] = {str(b): c for b, c in d[key].items()}
        path.write_text(json.dumps(d, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Table:
        try:
            d = read_artifact(path, str(path), TABLE_VERSION, "run `testtime calibrate` first", TABLE_KIND)
        except ValueError as e:  # the file is named by the field that names it (--table, table:)
            raise ConfigError("table", path, str(e).removeprefix(str(path)).lstrip(": ")) from None
        d["table"] = {k: {int(b): Choice(**c) for b, c in v.items()} for k, v in d["table"].items()}
        for key in ("fixed", "robust", "prm_free"):  # robust / prm_free: absent from tables made before them
            d[key] = {int(b): Choice(**c) for b, c in d.get(key, {}).items()}
        d["predictor"] = Predictor(**d["predictor"])
        if d.get("profile") is not None:
            d["profile"] = Profile(**d["profile"])
        return cls(**d)

    def fallback(self, rule: str, budget: int) -> Choice | None:
        """The ``robust`` or ``prm_free`` choice within `budget` (None: this table has none)."""
        row: dict[int, Choice] = getattr(self, rule)
        usable = [b for b in row if b <= budget]
        return row[max(usable)] if usable else None


def split_problems(ids: Iterable[str], holdout: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(calibration, held-out) by a hash of (seed, id): stable whatever the order or subset of problems."""
    calib, held = [], []
    for pid in ids:
        h = int.from_bytes(hashlib.sha256(f"{seed}\x00{pid}".encode()).digest()[:8], "little") / 2**64
        (held if h < holdout else calib).append(pid)
    return calib, held


class Measured(NamedTuple):
    """A config's measurement on a set of problems. A named tuple, so callers reading it as the
    ``(accuracy, n, cell)`` triple it used to be (``v[0]``, ``v[1]``, ``v[2]``) still work."""

    accuracy: float  # mean over the problems (or a fitted / shrunk / averaged estimate of it)
    n: int  # problems counted
    cell: Cell  # an example cell: the config's strategy, m, selection
    se: float = 0.0  # standard error of `accuracy` over the problems (0 with one problem: no spread seen)
    flops: float = 0.0  # mean FLOPs per problem (cache-aware, as the cells count them)


Accuracies = Mapping[tuple[str, int], Measured]  # (config, budget) -> its measurement


def mean_accuracy(cells: Iterable[Cell], ids: set[str]) -> dict[tuple[str, int], Measured]:
    """(config, budget) -> its mean accuracy over `ids`, problems counted, an example cell, the standard
    error of the mean over those problems and the mean FLOPs per problem."""
    acc: dict[tuple[str, int], list[float]] = defaultdict(list)
    flops: dict[tuple[str, int], float] = defaultdict(float)
    example: dict[tuple[str, int], Cell] = {}
    for c in cells:
        if c.problem_id in ids:
            acc[(c.config, c.budget)].append(c.accuracy)
            flops[(c.config, c.budget)] += c.flops
            example.setdefault((c.config, c.budget), c)
    return {k: Measured(sum(v) / len(v), len(v), example[k], _standard_error(v), flops[k] / len(v))
            for k, v in acc.items()}


def _standard_error(xs: Sequence[float]) -> float:
    """The standard error of the mean of `xs` (sample SD / sqrt(n)); 0 below two values."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean = sum(xs) / n
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n)


def isotonic(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The weighted least-squares non-decreasing fit of `values` (pool-adjacent-violators): each run of
    values that breaks the order is replaced by its weighted mean. Weights must be > 0."""
    if len(values) != len(weights):
        raise ValueError(f"{len(values)} values but {len(weights)} weights")
    if any(not w > 0 for w in weights):
        raise ValueError("weights must be > 0")
    blocks: list[tuple[float, float, int]] = []  # (weighted mean, total weight, values pooled)
    for y, w in zip(values, weights, strict=True):
        blocks.append((float(y), float(w), 1))
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:  # a violation: pool the last two
            m2, w2, k2 = blocks.pop()
            m1, w1, k1 = blocks.pop()
            blocks.append(((m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, k1 + k2))
    return [m for m, _w, k in blocks for _ in range(k)]


def monotone_in_budget(acc: Accuracies) -> dict[tuple[str, int], Measured]:
    """Each sample-and-select family's accuracies fitted non-decreasing in N (`isotonic`, weighted by the
    problems counted). A pooled config at N is N samples of one pool, and more samples never hurt in
    expectation (the cells are expected accuracies over subsets), so a dip is noise of the few problems
    measured; fitting shares strength across budgets instead of trusting each cell alone. Tree strategies
    (one run per budget, a different search at each) and CoT keep their cells as measured. Standard errors
    are kept as measured: the budgets of a family share their problems, so pooling them is no more data."""
    out = dict(acc)
    families: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, v in acc.items():
        if strategy_class(v.cell.strategy).pooled:
            families[key[0]].append(key)
    for keys in families.values():
        keys.sort(key=lambda k: k[1])
        fitted = isotonic([acc[k].accuracy for k in keys], [acc[k].n for k in keys])
        for k, a in zip(keys, fitted, strict=True):
            out[k] = acc[k]._replace(accuracy=a)
    return out


def best_within(acc: Accuracies, budget: int, one_se: bool = False) -> Choice | None:
    """The best config measured at a budget <= `budget` (ties: smaller budget, PRM-free, config name).

    With `one_se` (the one-standard-error rule), the cheapest config (mean FLOPs per problem) whose accuracy
    is within one standard error of the best's: on a few problems, the best of many configs is partly luck,
    and a cheaper config that is as good within noise generalises as well for less (ties in cost: the
    accuracy, then the rule above). Without it, the plain best (in-sample and hindsight choices)."""
    options = [(k, v) for k, v in acc.items() if k[1] <= budget]
    if not options:
        return None

    def tie(kv: tuple[tuple[str, int], Measured]) -> tuple[int, bool, str]:
        # the smaller budget, then a config that needs no PRM (as good, and cheaper to run), then the name
        return kv[0][1], strategy_class(kv[1].cell.strategy).needs_scorer, kv[0][0]

    (config, b), v = min(options, key=lambda kv: (-kv[1].accuracy, *tie(kv)))
    if one_se:
        floor = v.accuracy - v.se - 1e-12  # (float noise: a config exactly one SE below is within it)
        # Cost without the selector's probe: every config the selector runs pays the same probe_n samples
        # first (its bin is predicted from them: see `probe_cost`, which evaluate charges every problem),
        # and the fixed row's configs run with no probe at all, so within any one comparison the probe is a
        # constant and adding it cannot change the order. (In wall-clock a pooled config of N >= probe_n
        # replays the probe's samples from the store; the accounting charges them anyway, and so do we.)
        (config, b), v = min(((k, x) for k, x in options if x.accuracy >= floor),
                             key=lambda kv: (kv[1].flops, -kv[1].accuracy, *tie(kv)))
    return Choice(config, v.cell.strategy, b, v.cell.m, v.cell.selection, v.accuracy, v.n)


def fit_predictor(infos: Iterable[ProblemInfo], probe_n: int) -> Predictor:
    infos = list(infos)
    uses_score = any(p.probe_score is not None for p in infos)
    if not infos:
        return Predictor(probe_n, [0.5, 0.0, 0.0], uses_score)
    x = np.array([[1.0, p.agreement, (p.probe_score or 0.0) if uses_score else 0.0] for p in infos])
    y = np.array([p.pass1 for p in infos])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return Predictor(probe_n, [float(c) for c in coef], uses_score)


# the prompt settings a table records and the selector compares (a different prompt is a different task)
PROMPT_KEYS = ("fewshot", "fewshot_file", "system", "instruction")
# lambda grid for cross-validation: 0 = each bin on its own, inf = every bin takes the all-problems choice
SHRINKAGE_GRID: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0, math.inf)


def shrink(acc_bin: Accuracies, acc_all: Accuracies, lam: float) -> dict[tuple[str, int], Measured]:
    """A bin's accuracies shrunk toward the all-problems ones: (n * a_bin + lam * a_all) / (n + lam), their
    standard errors mixed with the same weights (the bin's problems are among all of them: the errors are
    positively correlated, and the weighted mean of the two is the fully correlated bound). FLOPs stay the
    bin's: what these problems cost."""
    out = {}
    for k, v in acc_bin.items():
        n = v.n
        a_all, se_all = (acc_all[k].accuracy, acc_all[k].se) if k in acc_all else (v.accuracy, v.se)
        if math.isinf(lam):
            out[k] = v._replace(accuracy=a_all, se=se_all)
        else:
            out[k] = v._replace(accuracy=(n * v.accuracy + lam * a_all) / (n + lam),
                                se=(n * v.se + lam * se_all) / (n + lam))
    return out


def choose_rows(cells: Sequence[Cell], calib: Iterable[str], bins: Mapping[str, str], budgets: Sequence[int],
                lam: float, min_support: int, *, one_se: bool = True) -> dict[str, dict[int, Choice]]:
    """bin (and ALL) -> budget -> choice, from the calibration problems, shrunk by `lam`; each set of
    problems' pooled families fitted monotone in N first (`monotone_in_budget`); `one_se`: see `best_within`."""
    calib = set(calib)
    acc_all = monotone_in_budget(mean_accuracy(cells, calib))
    table: dict[str, dict[int, Choice]] = {}
    all_row = {b: ch for b in budgets if (ch := best_within(acc_all, b, one_se)) is not None}
    for label in bin_order({bins[p] for p in calib}):
        members = {pid for pid in calib if bins[pid] == label}
        if len(members) < min_support:
            row = dict(all_row)  # too few problems to say anything about this bin on its own
        else:
            acc = shrink(monotone_in_budget(mean_accuracy(cells, members)), acc_all, lam)
            row = {b: ch for b in budgets if (ch := best_within(acc, b, one_se)) is not None}
        if row:
            table[label] = row
    if all_row:
        table[ALL] = all_row
    return table


def folds(ids: Sequence[str], k: int, strata: Mapping[str, str] | None = None, seed: int = 0) -> list[list[str]]:
    """K folds of the ids, stratified by `strata` (each bin spread evenly over the folds), in an order set by
    a hash of (seed, id): stable whatever the order the ids come in."""
    def h(pid: str) -> int:
        return int.from_bytes(hashlib.sha256(f"fold:{seed}\x00{pid}".encode()).digest()[:8], "little")

    out: list[list[str]] = [[] for _ in range(k)]
    ordered = sorted(ids, key=lambda pid: ((strata or {}).get(pid, ""), h(pid)))
    for i, pid in enumerate(ordered):
        out[i % k].append(pid)
    return out


def cross_validate(cells: Sequence[Cell], calib: Sequence[str], bins: Mapping[str, str], budgets: Sequence[int],
                   min_support: int, grid: Sequence[float] = SHRINKAGE_GRID, k: int = 5, seed: int = 0, *,
                   one_se: bool = True) -> dict[float, float]:
    """lambda -> the mean accuracy over held-out folds and budgets of tables chosen on the other folds (by
    the rule the table will choose by: `one_se`, so lambda is tuned for the choices it will make)."""
    k = max(2, min(k, len(calib)))
    by_cell = {(c.problem_id, c.config, c.budget): c.accuracy for c in cells}
    parts = folds(calib, k, bins, seed)
    # a training fold holds (k-1)/k of the problems: the support a bin needs scales with it
    min_support = max(1, math.floor(min_support * (k - 1) / k))
    out: dict[float, float] = {}
    for lam in grid:
        scores: list[float] = []
        for i, test in enumerate(parts):
            train = [p for j, part in enumerate(parts) if j != i for p in part]
            if not test or not train:
                continue
            rows = choose_rows(cells, train, bins, budgets, lam, min_support, one_se=one_se)
            for pid in test:
                row = rows.get(bins[pid]) or rows.get(ALL, {})
                for b in budgets:
                    ch = row.get(b) or rows.get(ALL, {}).get(b)
                    if ch is not None:
                        scores.append(by_cell.get((pid, ch.config, ch.budget), 0.0))
        out[lam] = sum(scores) / len(scores) if scores else 0.0
    return out


def robust_row(cells: Sequence[Cell], calib: Iterable[str], bins: Mapping[str, str],
               budgets: Sequence[int], *, one_se: bool = True) -> dict[int, Choice]:
    """Per budget, the config (measured in every bin) with the best mean of its per-bin accuracies (each
    bin's pooled families fitted monotone in N first; a mean of monotone curves is monotone). The bins hold
    disjoint problems, so the mean's standard error is sqrt(sum se_b^2) / bins; its cost the mean of the bins'."""
    calib = set(calib)
    labels = bin_order({bins[p] for p in calib})
    per_bin = {lab: monotone_in_budget(mean_accuracy(cells, {p for p in calib if bins[p] == lab}))
               for lab in labels}
    common = set.intersection(*(set(acc) for acc in per_bin.values())) if per_bin else set()
    acc = {k: Measured(sum(per_bin[lab][k].accuracy for lab in labels) / len(labels),
                       sum(per_bin[lab][k].n for lab in labels), per_bin[labels[0]][k].cell,
                       math.sqrt(sum(per_bin[lab][k].se ** 2 for lab in labels)) / len(labels),
                       sum(per_bin[lab][k].flops for lab in labels) / len(labels)) for k in common}
    return {b: ch for b in budgets if (ch := best_within(acc, b, one_se)) is not None}


def prm_free_row(cells: Sequence[Cell], calib: Iterable[str], budgets: Sequence[int], *,
                 one_se: bool = True) -> dict[int, Choice]:
    """Per budget, the best config of a strategy that needs no PRM (CoT, majority voting, ...)."""
    free = [c for c in cells if not strategy_class(c.strategy).needs_scorer]
    acc = monotone_in_budget(mean_accuracy(free, set(calib)))
    return {b: ch for b in budgets if (ch := best_within(acc, b, one_se)) is not None}


def profile_of(infos: Sequence[ProblemInfo], bins: Mapping[str, str], prompt: Mapping[str, Any]) -> Profile:
    """The record of what a table was calibrated on: these problems' probe features, bins and kinds, and the
    prompt settings. Step-reward features are kept only when every problem has them."""
    scores = [p.probe_score for p in infos if p.probe_score is not None]
    agrees = [p.prm_agrees for p in infos if p.prm_agrees is not None]
    return Profile(
        agreement=[p.agreement for p in infos],
        probe_score=scores if scores and len(scores) == len(infos) else [],
        prm_agrees=agrees if len(agrees) == len(infos) else [],
        bins=[bins[p.id] for p in infos],
        kinds=kinds_of([p.kind for p in infos if p.kind]),
        prompt={k: prompt[k] for k in PROMPT_KEYS if k in prompt},
    )


def calibrate(sweep: SweepResult, easy: float | None = None, hard: float | None = None,
              min_support: int = 5, shrinkage: float | None = None, one_se: bool = True) -> Table:
    """The table for a sweep: per-bin choices shrunk toward the all-problems choice (lambda by
    cross-validation unless `shrinkage` is given), the fallbacks, the predictor and the profile. `one_se`:
    every row (and cross-validation's inner choices) by the one-standard-error rule (`best_within`)."""
    recipe = sweep.recipe
    diff = recipe.get("difficulty", {})
    easy = diff.get("easy", 0.5) if easy is None else easy
    hard = diff.get("hard", 0.1) if hard is None else hard
    if min_support < 1:
        raise ConfigError("min_support", min_support, "must be >= 1")
    if shrinkage is not None and not shrinkage >= 0:
        raise ConfigError("shrinkage", shrinkage, "must be >= 0")
    ids = [p.id for p in sweep.problems]
    calib, held = split_problems(ids, recipe.get("holdout", 0.5), recipe.get("seed", 0))
    bins = absolute_bins({p.id: p.pass1 for p in sweep.problems}, easy=easy, hard=hard)
    budgets = sorted({c.budget for c in sweep.cells})
    cv: dict[float, float] = {}
    if shrinkage is None:
        cv = (cross_validate(sweep.cells, calib, bins, budgets, min_support, one_se=one_se) if len(calib) >= 2
              else {0.0: 0.0})
        best = max(cv.values())
        shrinkage = max(lam for lam, a in cv.items() if a >= best - 1e-12)  # ties: the more conservative
    table = choose_rows(sweep.cells, calib, bins, budgets, shrinkage, min_support, one_se=one_se)
    info = {p.id: p for p in sweep.problems}
    return Table(
        policy=sweep.policy, prm=sweep.prm, oracle_prm=sweep.oracle_prm, dataset=recipe.get("dataset", "?"),
        recipe=recipe.get("name", "?"), easy=easy, hard=hard, budgets=budgets, table=table,
        fixed=table.get(ALL, {}), predictor=fit_predictor([info[i] for i in calib], diff.get("probe_n", 4)),
        calibration_ids=calib, holdout_ids=held,
        robust=robust_row(sweep.cells, calib, bins, budgets, one_se=one_se),
        prm_free=prm_free_row(sweep.cells, calib, budgets, one_se=one_se),
        profile=profile_of([info[i] for i in calib], bins, recipe) if calib else None, shrinkage=shrinkage,
        min_support=min_support,
        cv={str(k): v for k, v in cv.items()},
        support=dict(Counter(bins[i] for i in calib)),
        one_se=one_se,
    )


TABLE_RULE = "table"
ROBUST_UNCERTAIN = "robust: uncertain bin"
ROBUST_SHIFT = "robust: shift"
ROBUST_UNRELIABLE = "robust: unreliable bin"
PRM_FREE = "prm-free: PRM agreement moved"


def decide(table: Table, budget: int, pass1: dict[str, float], shift: Shift | None,
           margin: float = 0.05, reliability: bool = True) -> dict[str, tuple[Choice, str]]:
    """Each problem's config within `budget` and the rule that chose it (see the module docstring).

    Fallbacks need the table's ``robust`` / ``prm_free`` rows (tables calibrated before them have none and
    always use their bins); ``margin`` 0 turns the uncertain-bin rule off, ``reliability`` False the
    unreliable-bin rule (a bin calibrated on fewer than ``MIN_BIN_CALIBRATION`` problems takes the robust
    choice)."""
    if margin < 0:
        raise ConfigError("margin", margin, "must be >= 0")
    bins = absolute_bins(pass1, easy=table.easy, hard=table.hard)
    robust, free = table.fallback("robust", budget), table.fallback("prm_free", budget)
    out: dict[str, tuple[Choice, str]] = {}
    for pid, p in pass1.items():
        if shift is not None and shift.prm_moved and free is not None:
            out[pid] = (free, PRM_FREE)
        elif shift is not None and shift.shifted and robust is not None:
            out[pid] = (robust, ROBUST_SHIFT)
        elif reliability and robust is not None and table.unreliable(bins[pid]):  # too few problems to trust
            out[pid] = (robust, ROBUST_UNRELIABLE)
        elif robust is not None and min(abs(p - table.easy), abs(p - table.hard)) < margin:
            out[pid] = (robust, ROBUST_UNCERTAIN)
        else:
            out[pid] = (table.choice(bins[pid], budget), TABLE_RULE)
    return out


OPT_ORACLE = "compute-optimal (oracle bins)"
OPT_PRED = "compute-optimal (predicted bins)"
FIXED = "best fixed"
HINDSIGHT = "best fixed in hindsight"


def heldout_shift(table: Table, infos: Iterable[ProblemInfo]) -> Shift | None:
    """The shift check on held-out problems, as the selector would run it on them."""
    ps = list(infos)
    if table.profile is None or not ps:
        return None
    return check_shift(table.profile, [p.agreement for p in ps], [p.probe_score for p in ps if p.probe_score
                                                                   is not None],
                       [p.prm_agrees for p in ps if p.prm_agrees is not None], [p.kind for p in ps if p.kind])


@dataclass(frozen=True)
class HeldoutPoint:
    """One series' held-out figures at one budget: means over the problems, and the per-problem values the
    report bootstraps and pairs on (same ids across series at a budget)."""

    budget: int
    accuracy: float
    tokens: float
    flops: float
    per_problem: dict[str, float]
    per_seed: dict[str, list[float]] | None = None  # per problem, its accuracy per sampling seed (several seeds)


Curve = list[HeldoutPoint]


@dataclass(frozen=True)
class Evaluation:
    """``evaluate``'s result: the held-out curves per bin label (and ``ALL``) and series name, and how the
    selector decided on the held-out problems."""

    curves: dict[str, dict[str, Curve]]
    labels: list[str]  # the bins, in display order
    confusion: list[list[int]]  # rows: oracle bin, columns: predicted bin, in ``labels`` order
    oracle_bins: dict[str, str]  # held-out problem -> bin by its measured pass@1
    predicted_bins: dict[str, str]  # held-out problem -> bin by the predictor
    fixed_configs: dict[int, dict[str, float]]  # budget -> "config@N" (N <= budget) -> held-out accuracy
    shift: Shift | None  # the held-out shift check
    decided_by: dict[int, dict[str, int]]  # budget -> the selector's rule -> how many problems it decided

    @property
    def n_holdout(self) -> int:
        return len(self.oracle_bins)

    def curve(self, name: str, label: str = ALL) -> Curve:
        """A series' curve in a bin (all problems by default); [] where it has none."""
        return self.curves.get(label, {}).get(name, [])


def evaluate(sweep: SweepResult, table: Table, margin: float = 0.05) -> Evaluation:
    """Held-out curves per budget: compute-optimal with oracle bins and as the selector runs it (predicted
    bins, its fallbacks, probe cost included), the best fixed config chosen on calibration, the best fixed
    config in hindsight (chosen on the held-out problems themselves: an upper bound for any fixed choice),
    majority, CoT; per bin; every fixed config's held-out accuracy; the confusion matrix of predicted vs
    oracle bins, and the held-out shift check."""
    held = set(table.holdout_ids)
    infos = {p.id: p for p in sweep.problems if p.id in held}
    oracle = absolute_bins({i: p.pass1 for i, p in infos.items()}, easy=table.easy, hard=table.hard)
    pred_pass1 = {p.id: table.predictor.predict(p.agreement, p.probe_score) for p in infos.values()}
    predicted = absolute_bins(pred_pass1, easy=table.easy, hard=table.hard)
    shift = heldout_shift(table, infos.values())
    selected = {b: decide(table, b, pred_pass1, shift, margin) for b in table.budgets} if infos else {}
    cell = {(c.problem_id, c.config, c.budget): c for c in sweep.cells if c.problem_id in held}
    probe_costs = probe_cost(sweep.cells, table.predictor.probe_n, held)
    labels = bin_order(set(oracle.values()) | set(predicted.values()))
    curves: dict[str, dict[str, Curve]] = {b: defaultdict(list) for b in [*labels, ALL]}

    def point(ids: list[str], pick, b: int, extra_cost: bool) -> HeldoutPoint | None:
        got = []
        for pid in ids:
            ch = pick(pid)
            c = cell.get((pid, ch.config, ch.budget)) if ch else None
            if c is None:
                return None
            got.append((c, probe_costs.get(pid, (0.0, 0.0)) if extra_cost else (0.0, 0.0)))
        if not got:
            return None
        n = len(got)
        return HeldoutPoint(budget=b, accuracy=sum(c.accuracy for c, _ in got) / n,
                            tokens=sum(c.tokens + pc[0] for c, pc in got) / n,
                            flops=sum(c.flops + pc[1] for c, pc in got) / n,
                            per_problem={c.problem_id: c.accuracy for c, _ in got},
                            per_seed=({c.problem_id: list(c.seed_accuracies) for c, _ in got}
                                      if all(c.seed_accuracies for c, _ in got) else None))

    for b in table.budgets:
        for label in [*labels, ALL]:
            ids = sorted(pid for pid in infos if label == ALL or oracle[pid] == label)
            series = {
                OPT_ORACLE: point(ids, lambda p, b=b: table.choice(oracle[p], b), b, False),
                OPT_PRED: point(ids, lambda p, b=b: selected[b][p][0], b, True),
                FIXED: point(ids, lambda p, b=b: table.fixed.get(max(x for x in table.budgets if x <= b)), b, False),
            }
            hindsight = _best_fixed(cell, ids, b)
            if hindsight is not None:
                series[HINDSIGHT] = point(ids, lambda p, h=hindsight: h, b, False)
            for cfg in (Majority.name, CoT.name):  # the baselines, at the budgets they can spend
                if strategy_class(cfg).effective_n(b) == b:
                    series[cfg] = point(ids, lambda p, b=b, cfg=cfg: _choice_of(cfg, b), b, False)
            for name, pt in series.items():
                if pt is not None:
                    curves[label][name].append(pt)
    ids = sorted(infos)
    fixed_configs = {b: {f"{k[0]}@{k[1]}": v.accuracy for k, v in mean_accuracy(cell.values(), held).items()
                         if k[1] <= b and v.n == len(ids)} for b in table.budgets}
    return Evaluation(curves={k: dict(v) for k, v in curves.items()}, labels=labels,
                      confusion=confusion_matrix(oracle, predicted, labels), oracle_bins=oracle,
                      predicted_bins=predicted, fixed_configs=fixed_configs, shift=shift,
                      decided_by={b: dict(Counter(rule for _c, rule in selected[b].values())) for b in selected})


def _best_fixed(cell: Mapping[tuple[str, str, int], Cell], ids: Sequence[str], budget: int) -> Choice | None:
    """The config at a budget <= `budget` with the best accuracy on exactly these problems (hindsight)."""
    wanted = set(ids)
    acc = {k: v for k, v in mean_accuracy((c for c in cell.values() if c.problem_id in wanted), wanted).items()
           if v.n == len(wanted)}
    return best_within(acc, budget)


def _choice_of(strategy: str, budget: int) -> Choice:
    """A baseline strategy's cell at a budget (its config is its name)."""
    return Choice(strategy, strategy, strategy_class(strategy).effective_n(budget), None, None, 0.0, 0)


def probe_cost(cells: Sequence[Cell], probe_n: int, ids: set[str]) -> dict[str, tuple[float, float]]:
    """(tokens, FLOPs) of the probe per problem: probe_n samples of the pool, scored when the pool was."""
    pooled_cells = [c for c in cells if strategy_class(c.strategy).pooled]
    scored = any(strategy_class(c.strategy).needs_scorer for c in pooled_cells)
    out: dict[str, tuple[float, float]] = {}
    for c in pooled_cells:
        # the probe's cost per sample is the pool's: PRM-scored cells when the pool was scored
        if c.problem_id in ids and strategy_class(c.strategy).needs_scorer == scored and c.problem_id not in out:
            out[c.problem_id] = (c.tokens / c.budget * probe_n, c.flops / c.budget * probe_n)
    return out
