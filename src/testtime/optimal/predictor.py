"""Difficulty from the question, and the success curves the allocator spends over.

A ``DifficultyModel`` predicts a problem's pass@1 from features that need no sample drawn (or, for the
``probe`` kind, from a few): blocks of features, each one cheap to get --

* ``level``: the dataset's level where a problem has one (one-hot over the levels seen in training);
* ``text``: counts read off the question (length, numbers, operators, ...);
* ``hidden``: the policy's final-norm hidden state at the end of the zero-shot prompt (one forward pass of
  the prompt, ``probe.features``), charged to the problem it routes;
* ``probe``: answer agreement and mean min step reward of the first ``probe_n`` samples (the older
  sample-based probe; its samples are charged too).

The model is a logistic regression on the standardised features with fractional targets (each training
problem's pass@1 over its pool), L2 strength and feature blocks chosen by K-fold cross-validation on the
Brier score, with the one-standard-error rule toward the cheaper blocks.

On top of its score ``z`` (the logit of predicted pass@1), every config of the allocation menu (CoT,
majority@N, Best-of-N@N with one selection) gets a success curve ``P(correct | z) = sigmoid(a + b z)`` and a
cost curve ``log FLOPs = c + d z``, fitted on the calibration problems with *out-of-fold* ``z`` (so the
curves see predictions as noisy as the ones they will meet). Curves of one family are made monotone in N
(isotonic, per problem): accuracy of sample-and-select does not fall with more samples in expectation, and
the fit should not pretend it does. ``AllocationModel`` bundles one difficulty model per kind with its
curves; it is stored with the calibrated table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from testtime.errors import ConfigError
from testtime.optimal.allocate import Option
from testtime.optimal.calibrate import isotonic
from testtime.optimal.shift import FORM_FEATURES, calibration_languages, feature_ranges, form_features
from testtime.search import BestOfN, CoT, Majority
from testtime.types import Problem

BLOCKS = ("level", "text", "hidden", "probe")
KINDS = ("question", "probe", "both")
# candidate block sets per predictor kind, cheapest first (the one-SE rule prefers the earlier)
CANDIDATES: dict[str, tuple[tuple[str, ...], ...]] = {
    "question": (("level",), ("text",), ("level", "text"), ("level", "text", "hidden")),
    "probe": (("probe",),),
    "both": (("level", "text", "probe"), ("level", "text", "hidden", "probe")),
}
L2_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
EPS = 1e-4

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_SYMBOL_OPS = re.compile(r"[+\-*/×÷^]|\\(?:frac|sqrt|times|div|cdot|sum|int|binom)")
_WORD_OPS = re.compile(
    r"\b(plus|minus|times|multipl\w*|divid\w*|sum|difference|product|quotient|more|less|fewer|gives?|gets?|"
    r"loses?|buys?|sells?|eats?|finds?|left|each|twice|half|percent|total|remain\w*)\b", re.IGNORECASE)
TEXT_FEATURES = ("log_chars", "log_words", "numbers", "log_max_digits", "digits", "symbol_ops", "word_ops",
                 "parentheses", "sentences", "latex")


def text_features(question: str) -> list[float]:
    """Cheap counts read off the question (names in ``TEXT_FEATURES``): how long, how many numbers and how
    big, how many operations in symbols and in words."""
    numbers = _NUMBER.findall(question)
    digits = [len(re.sub(r"\D", "", n)) for n in numbers]
    return [
        math.log1p(len(question)), math.log1p(len(question.split())), float(len(numbers)),
        math.log1p(max(digits, default=0)), float(sum(digits)), float(len(_SYMBOL_OPS.findall(question))),
        float(len(_WORD_OPS.findall(question))), float(question.count("(")),
        float(len(re.findall(r"[.?!](?:\s|$)", question))), float(question.count("\\")),
    ]


@dataclass
class ProblemFeatures:
    """Everything a difficulty model may read of one problem (None: not available for it)."""

    id: str
    question: str
    level: Any = None
    hidden: np.ndarray | None = None
    agreement: float | None = None  # probe: largest answer group / probe_n
    probe_score: float | None = None  # probe: mean min step reward (None: no PRM)

    @classmethod
    def of(cls, problem: Problem, hidden: np.ndarray | None = None, agreement: float | None = None,
           probe_score: float | None = None) -> ProblemFeatures:
        return cls(problem.id, problem.question, problem.level, hidden, agreement, probe_score)


def _level_key(level: Any) -> str:
    return "" if level is None else str(level)


def design(feats: Sequence[ProblemFeatures], blocks: Sequence[str], levels: Sequence[str]) -> np.ndarray:
    """The feature matrix of `blocks` (unstandardised; an unknown level is all zeros in its one-hot)."""
    rows = []
    for f in feats:
        row: list[float] = []
        for b in blocks:
            if b == "level":
                row.extend(1.0 if _level_key(f.level) == lv else 0.0 for lv in levels)
            elif b == "text":
                row.extend(text_features(f.question))
            elif b == "hidden":
                if f.hidden is None:
                    raise ConfigError("predictor", "hidden", f"problem {f.id!r} has no hidden-state features")
                row.extend(float(x) for x in f.hidden)
            elif b == "probe":
                if f.agreement is None:
                    raise ConfigError("predictor", "probe", f"problem {f.id!r} has no probe features")
                row.extend([f.agreement, f.probe_score or 0.0])
            else:
                raise ConfigError("predictor", b, f"unknown feature block (valid: {', '.join(BLOCKS)})")
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(len(feats), -1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, float]:
    """Weighted logistic regression with fractional targets in [0, 1] and an L2 penalty ``l2/2 |w|^2`` (the
    intercept is not penalised), by L-BFGS. Returns (coef, intercept)."""
    n, d = x.shape
    w8 = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
    total = w8.sum()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, b = theta[:d], theta[d]
        s = x @ coef + b
        # log(1 + e^s) - y s, stably
        nll = np.logaddexp(0.0, s) - y * s
        p = _sigmoid(s)
        g = w8 * (p - y)
        value = float((w8 * nll).sum() / total + 0.5 * l2 * coef @ coef / total)
        grad = np.concatenate([x.T @ g / total + l2 * coef / total, [g.sum() / total]])
        return value, grad

    start = np.zeros(d + 1)
    mean_y = float(np.clip((w8 * y).sum() / total, EPS, 1 - EPS))
    start[d] = math.log(mean_y / (1 - mean_y))
    res = minimize(loss, start, jac=True, method="L-BFGS-B")
    return res.x[:d].copy(), float(res.x[d])


@dataclass
class DifficultyModel:
    """pass@1 = sigmoid(coef . (x - mean) / scale + intercept) over the named feature blocks."""

    kind: str
    blocks: list[str]
    levels: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    l2: float
    cv_brier: dict[str, float] = field(default_factory=dict)  # "+".join(blocks) -> cross-validated Brier
    n_train: int = 0

    def score(self, feats: Sequence[ProblemFeatures]) -> np.ndarray:
        """z: the logit of predicted pass@1, per problem."""
        if not feats:
            return np.zeros(0)
        x = (design(feats, self.blocks, self.levels) - np.asarray(self.mean)) / np.asarray(self.scale)
        return x @ np.asarray(self.coef) + self.intercept

    def predict(self, feats: Sequence[ProblemFeatures]) -> np.ndarray:
        return _sigmoid(self.score(feats))

    @property
    def needs(self) -> set[str]:
        return set(self.blocks) - {"level", "text"}


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    return mean, np.where(scale > 1e-9, scale, 1.0)


def _fit_model(kind: str, feats: Sequence[ProblemFeatures], y: np.ndarray, blocks: Sequence[str],
               levels: Sequence[str], l2: float) -> DifficultyModel:
    x = design(feats, blocks, levels)
    mean, scale = _standardise(x)
    coef, b = fit_logistic((x - mean) / scale, y, l2)
    return DifficultyModel(kind, list(blocks), list(levels), mean.tolist(), scale.tolist(), coef.tolist(), b, l2,
                           n_train=len(feats))


def fold_of(ids: Sequence[str], k: int) -> list[int]:
    """Each id's fold, stable whatever the order (a hash of the id)."""
    import hashlib

    return [int.from_bytes(hashlib.sha256(f"predictor-fold\x00{i}".encode()).digest()[:4], "little") % k
            for i in ids]


def out_of_fold(kind: str, feats: Sequence[ProblemFeatures], y: np.ndarray, blocks: Sequence[str],
                levels: Sequence[str], l2: float, k: int = 5) -> np.ndarray:
    """z of every problem from a model fitted on the other folds."""
    folds = np.asarray(fold_of([f.id for f in feats], k))
    z = np.zeros(len(feats))
    for j in range(k):
        test = folds == j
        if not test.any() or test.all():
            continue
        train = [f for f, t in zip(feats, test, strict=True) if not t]
        m = _fit_model(kind, train, y[~test], blocks, levels, l2)
        z[test] = m.score([f for f, t in zip(feats, test, strict=True) if t])
    return z


def train_difficulty(kind: str, feats: Sequence[ProblemFeatures], pass1: Sequence[float], k: int = 5
                     ) -> tuple[DifficultyModel, np.ndarray]:
    """The `kind` model: its feature blocks and L2 chosen by K-fold CV on the Brier score (one-SE rule toward
    the cheaper blocks and the stronger penalty), refitted on all problems. Also returns the chosen model's
    out-of-fold z, for fitting the success curves."""
    if kind not in KINDS:
        raise ConfigError("predictor", kind, f"unknown predictor (valid: {', '.join(KINDS)})")
    y = np.asarray(pass1, dtype=np.float64)
    levels = sorted({_level_key(f.level) for f in feats if f.level is not None})
    available = [bs for bs in CANDIDATES[kind] if all(_has(feats, b) for b in bs)]
    if not available:
        raise ConfigError("predictor", kind, "the training problems lack the features this predictor needs")
    results: list[tuple[tuple[str, ...], float, float, float, np.ndarray]] = []  # blocks, l2, brier, se, z
    for bs in available:
        for l2 in L2_GRID:
            z = out_of_fold(kind, feats, y, bs, levels, l2, k)
            err = (_sigmoid(z) - y) ** 2
            results.append((bs, l2, float(err.mean()), float(err.std(ddof=1) / math.sqrt(len(err))) if len(err) > 1
                            else 0.0, z))
    best = min(results, key=lambda r: r[2])
    # one-SE rule: the cheapest block set (then the strongest penalty) within one SE of the best
    ok = [r for r in results if r[2] <= best[2] + best[3]]
    chosen = min(ok, key=lambda r: (available.index(r[0]), -r[1]))
    model = _fit_model(kind, feats, y, chosen[0], levels, chosen[1])
    model.cv_brier = {"+".join(bs): min(r[2] for r in results if r[0] == bs) for bs in available}
    return model, chosen[4]


def _has(feats: Sequence[ProblemFeatures], block: str) -> bool:
    if block == "hidden":
        return bool(feats) and all(f.hidden is not None for f in feats)
    if block == "probe":
        return bool(feats) and all(f.agreement is not None for f in feats)
    return True


# -- success and cost curves -----------------------------------------------------------------------------


@dataclass
class Curve:
    """One menu config: P(correct | z) = sigmoid(a + b z); FLOPs = exp(c + d z)."""

    config: str  # the sweep's config name ("cot", "majority", "best_of_n/prm_min_vote")
    strategy: str
    budget: int
    selection: str | None
    a: float
    b: float
    c: float
    d: float

    @property
    def key(self) -> str:
        return f"{self.config}@{self.budget}"

    def success(self, z: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a + self.b * np.asarray(z))

    def cost(self, z: np.ndarray) -> np.ndarray:
        return np.exp(self.c + self.d * np.asarray(z))


def fit_curve(config: str, strategy: str, budget: int, selection: str | None, z: np.ndarray,
              accuracy: np.ndarray, flops: np.ndarray) -> Curve:
    """The success curve by a (lightly penalised) logistic fit of the cells' accuracies on z, the cost
    curve by least squares of log FLOPs on z."""
    coef, a = fit_logistic(np.asarray(z, dtype=np.float64).reshape(-1, 1), accuracy, l2=1e-3)
    logc = np.log(np.maximum(np.asarray(flops, dtype=np.float64), 1.0))
    x = np.column_stack([np.ones(len(z)), z])
    (c, d), *_ = np.linalg.lstsq(x, logc, rcond=None)
    return Curve(config, strategy, budget, selection, a, float(coef[0]), float(c), float(d))


@dataclass
class AllocationModel:
    """Per predictor kind, a difficulty model and the menu's curves; what ``run --allocation batch`` reads."""

    models: dict[str, DifficultyModel]
    curves: dict[str, list[Curve]]  # kind -> menu curves
    reference: str  # the config whose B samples define "average budget B" (e.g. best_of_n/prm_min_vote)
    probe_n: int
    hidden_extractor: str | None = None  # the feature extractor's name (model fingerprint), when trained with it
    default: str = "question"  # the kind `--predictor` defaults to
    n_calibration: int = 0
    report: dict[str, Any] = field(default_factory=dict)  # held-out calibration of each kind (Brier, bins, ...)
    # the calibration problems' question features (TEXT_FEATURES): the question-only shift check's reference
    text_profile: list[list[float]] = field(default_factory=list)
    # the least a step must buy (points of accuracy per reference sample), chosen on the held-out problems
    min_gain: float = 0.0
    min_gain_report: dict[str, Any] = field(default_factory=dict)  # per G on the grid: held-out accuracy, FLOPs
    # the one-request shift check (``shift.request_shift``): per question feature (TEXT_FEATURES, then
    # shift.FORM_FEATURES) its calibration range, and the languages the calibration questions were asked in
    question_ranges: dict[str, list[float]] = field(default_factory=dict)
    languages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AllocationModel:
        d = dict(d)
        d["models"] = {k: DifficultyModel(**m) for k, m in d["models"].items()}
        d["curves"] = {k: [Curve(**c) for c in cs] for k, cs in d["curves"].items()}
        return cls(**d)

    def kind(self, name: str | None) -> str:
        name = name or self.default
        if name not in self.models:
            raise ConfigError("predictor", name, f"this table has predictors {sorted(self.models)}")
        return name

    def options(self, kind: str, z: np.ndarray) -> list[list[Option]]:
        """Each problem's menu: every curve's success and cost at its z, success made monotone in N within a
        family (isotonic over the family's budgets)."""
        curves = self.curves[kind]
        succ = np.stack([c.success(z) for c in curves], axis=1) if curves else np.zeros((len(z), 0))
        cost = np.stack([c.cost(z) for c in curves], axis=1) if curves else np.zeros((len(z), 0))
        families: dict[str, list[int]] = {}
        for j, c in enumerate(curves):
            families.setdefault(c.config, []).append(j)
        for idx in families.values():
            idx.sort(key=lambda j: curves[j].budget)
            for i in range(len(z)):
                succ[i, idx] = isotonic(succ[i, idx].tolist(), [1.0] * len(idx))
        return [[Option(c.key, float(succ[i, j]), float(cost[i, j])) for j, c in enumerate(curves)]
                for i in range(len(z))]

    def reference_cost(self, kind: str, z: np.ndarray, budget: float, floor: bool = True) -> np.ndarray:
        """Per problem, the predicted FLOPs of `budget` samples of the reference config: what a uniform
        Best-of-`budget` would spend (pooled costs are linear in N: the N = 1 curve times the budget), and
        never less than greedy CoT's cost. Budget 1 is the paper's N = 1, CoT: a pooled sample shares its
        prompt with its siblings, so it costs less than a CoT run of its own, and a batch of budget 1 could
        otherwise not afford CoT for every problem."""
        ones = [c for c in self.curves[kind] if c.config == self.reference]
        if not ones:
            raise ConfigError("predictor", kind, f"no curve for the reference config {self.reference!r}")
        c1 = min(ones, key=lambda c: c.budget)
        cost = c1.cost(z) * (budget / c1.budget)
        cot = [c for c in self.curves[kind] if c.strategy == CoT.name]
        return np.maximum(cost, cot[0].cost(z)) if cot and floor else cost


# -- training from a sweep ---------------------------------------------------------------------------------

MENU_FAMILIES = (CoT.name, Majority.name)  # plus the reference Best-of-N selection


def choose_reference(cells: Sequence[Any], ids: set[str], scored_strategy: str = BestOfN.name) -> str | None:
    """The Best-of-N config whose selection has the best mean accuracy over the sweep's budgets >= 2 on `ids`
    (N = 1 is the same sample whatever the selection). None: the sweep has no PRM-scored pool."""
    acc: dict[str, list[float]] = {}
    for c in cells:
        if c.strategy == scored_strategy and c.budget >= 2 and c.problem_id in ids:
            acc.setdefault(c.config, []).append(c.accuracy)
    if not acc:
        return None
    return max(sorted(acc), key=lambda k: sum(acc[k]) / len(acc[k]))


def menu_cells(cells: Sequence[Any], reference: str | None) -> dict[tuple[str, int], dict[str, Any]]:
    """(config, budget) -> problem id -> cell, for the allocation menu: CoT, majority@N, the reference@N."""
    wanted = set(MENU_FAMILIES) | ({reference} if reference else set())
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for c in cells:
        if c.config in wanted:
            out.setdefault((c.config, c.budget), {})[c.problem_id] = c
    return out


def binned_reliability(p: np.ndarray, y: np.ndarray, bins: int = 5) -> list[dict[str, float]]:
    """Reliability curve: per equal-width bin of predicted pass@1, the mean prediction and the observed mean."""
    out = []
    edges = np.linspace(0.0, 1.0, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (p >= lo) & ((p < hi) if hi < 1.0 else (p <= hi))
        if sel.any():
            out.append({"lo": float(lo), "hi": float(hi), "n": int(sel.sum()), "predicted": float(p[sel].mean()),
                        "observed": float(y[sel].mean())})
    return out


def train_allocation(cells: Sequence[Any], pass1: Mapping[str, float], feats: Mapping[str, ProblemFeatures],
                     calibration_ids: Sequence[str], probe_n: int, kinds: Sequence[str] = KINDS,
                     hidden_extractor: str | None = None, k: int = 5) -> AllocationModel:
    """Fit, on the calibration problems, each predictor kind whose features every problem has, and every
    menu config's success and cost curves over that kind's out-of-fold z."""
    ids = [i for i in calibration_ids if i in feats and i in pass1]
    if len(ids) < 2 * k:
        raise ConfigError("calibration", len(ids), f"the predictor needs at least {2 * k} calibration problems")
    reference = choose_reference(cells, set(ids)) or "majority"
    menu = menu_cells(cells, reference)
    fs = [feats[i] for i in ids]
    y = np.asarray([pass1[i] for i in ids])
    models: dict[str, DifficultyModel] = {}
    curves: dict[str, list[Curve]] = {}
    for kind in kinds:
        if not any(all(_has(fs, b) for b in bs) for bs in CANDIDATES[kind]):
            continue  # e.g. no probe features: that kind is not offered
        model, z_oof = train_difficulty(kind, fs, y, k)
        models[kind] = model
        z_of = dict(zip(ids, z_oof, strict=True))
        kc: list[Curve] = []
        for (config, budget), by_id in sorted(menu.items()):
            got = [i for i in ids if i in by_id]
            if len(got) < len(ids) // 2:
                continue  # a config measured on too few problems gives no curve
            c0 = by_id[got[0]]
            kc.append(fit_curve(config, c0.strategy, budget, c0.selection, np.asarray([z_of[i] for i in got]),
                                np.asarray([by_id[i].accuracy for i in got]),
                                np.asarray([by_id[i].flops for i in got])))
        curves[kind] = kc
    profile = [text_features(f.question) for f in fs]
    ranges = feature_ranges([t + form_features(f.question) for t, f in zip(profile, fs, strict=True)],
                            TEXT_FEATURES + FORM_FEATURES)
    return AllocationModel(models, curves, reference, probe_n, hidden_extractor, n_calibration=len(ids),
                           text_profile=profile, question_ranges=ranges,
                           languages=calibration_languages([f.question for f in fs]))


def evaluate_difficulty(model: DifficultyModel, feats: Sequence[ProblemFeatures], pass1: Sequence[float],
                        easy: float, hard: float) -> dict[str, Any]:
    """Held-out calibration of a difficulty model: Brier score (with the constant-prediction baseline), the
    reliability curve, and how often its absolute bin equals the oracle's (exact binomial interval)."""
    from testtime.optimal.metrics import absolute_bins
    from testtime.stats import exact_binomial

    p = model.predict(feats)
    y = np.asarray(pass1, dtype=np.float64)
    ids = [f.id for f in feats]
    pred_bins = absolute_bins(dict(zip(ids, p.tolist(), strict=True)), easy=easy, hard=hard)
    oracle = absolute_bins(dict(zip(ids, y.tolist(), strict=True)), easy=easy, hard=hard)
    hits = sum(pred_bins[i] == oracle[i] for i in ids)
    ci = exact_binomial(hits, len(ids))
    return {"n": len(ids), "brier": float(((p - y) ** 2).mean()) if len(y) else None,
            "brier_constant": float(((y.mean() - y) ** 2).mean()) if len(y) else None,
            "bin_accuracy": hits / len(ids) if ids else None, "bin_accuracy_ci": [ci.low, ci.high],
            "reliability": binned_reliability(p, y)}
