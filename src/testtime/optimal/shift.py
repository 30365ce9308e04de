"""Does a calibrated table apply to these problems? A label-free shift check against the calibration record.

A table is only as good as the match between the problems it was calibrated on and the ones it is applied
to. Calibration records what it saw (``Profile``): the probe's features of every calibration problem (answer
agreement among the probe's samples, their mean min step reward) with its oracle bin, how often the PRM's pick
agreed with the majority answer, the answer kinds and the prompt settings. At selection time the same cheap
probe has already run on the new problems, so comparing costs nothing:

* ``agreement`` / ``probe_score``: two-sample Kolmogorov-Smirnov statistic between the calibration problems'
  feature values and the batch's;
* ``prm_agreement``: the difference between the two rates at which the PRM's pick states the majority answer
  (a PRM whose agreement pattern moved no longer ranks these solutions the way it did in calibration);
* ``kind`` and ``prompt``: different answer kinds or prompt settings are reported as such.

Each statistic is divided by its critical value at ``alpha`` for the two sample sizes (KS: c(alpha) *
sqrt((n+m)/(n*m)); rates: a two-proportion z bound), so a component above 1.0 is a shift that chance alone
would rarely produce, and small batches (a few requests) are never flagged on noise. The shift score is the
largest component.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ALPHA = 0.01
_KS_C = {0.1: 1.224, 0.05: 1.358, 0.01: 1.628, 0.001: 1.949}  # c(alpha) of the two-sample KS test
_Z = {0.1: 1.645, 0.05: 1.960, 0.01: 2.576, 0.001: 3.291}  # two-sided normal quantiles


@dataclass
class Profile:
    """What a table was calibrated on (the calibration problems only)."""

    agreement: list[float]
    probe_score: list[float]  # empty without a PRM
    prm_agrees: list[float]  # empty without a PRM
    bins: list[str]  # each calibration problem's oracle bin, aligned with agreement
    kinds: dict[str, int] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)  # fewshot, system, instruction of the sweep

    @property
    def prm_agreement(self) -> float | None:
        return sum(self.prm_agrees) / len(self.prm_agrees) if self.prm_agrees else None


@dataclass
class Shift:
    """The shift check's verdict: ``score`` > 1 means the table was calibrated on different problems."""

    score: float
    components: dict[str, float]  # each statistic / its critical value
    raw: dict[str, float]  # the statistics themselves (KS distance, rate difference)
    notes: list[str]  # kind / prompt mismatches, said in words
    n_batch: int

    @property
    def shifted(self) -> bool:
        return self.score > 1.0 or bool(self.notes)

    @property
    def prm_moved(self) -> bool:
        return self.components.get("prm_agreement", 0.0) > 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "shifted": self.shifted, "prm_moved": self.prm_moved,
                "components": self.components, "raw": self.raw, "notes": self.notes, "n_batch": self.n_batch}


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov distance: the largest gap between the two empirical CDFs."""
    if not a or not b:
        raise ValueError("ks_statistic needs two non-empty samples")
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    for v in sorted(set(xs) | set(ys)):
        while i < len(xs) and xs[i] <= v:
            i += 1
        while j < len(ys) and ys[j] <= v:
            j += 1
        d = max(d, abs(i / len(xs) - j / len(ys)))
    return d


def ks_critical(n: int, m: int, alpha: float = ALPHA) -> float:
    return _KS_C[alpha] * math.sqrt((n + m) / (n * m))


def rate_critical(p: float, n: int, m: int, alpha: float = ALPHA) -> float:
    """The difference of two rates that a two-proportion z-test would call significant at alpha (pooled p)."""
    p = min(max(p, 1.0 / (n + m)), 1.0 - 1.0 / (n + m))  # a rate of exactly 0 or 1 still has sampling noise
    return _Z[alpha] * math.sqrt(p * (1 - p) * (1 / n + 1 / m))


def check_shift(profile: Profile, agreement: Sequence[float], probe_score: Sequence[float],
                prm_agrees: Sequence[float], kinds: Sequence[str] = (), prompt: dict[str, Any] | None = None,
                alpha: float = ALPHA) -> Shift:
    """Compare a batch's probe features (and kinds, prompt) with the calibration record."""
    components: dict[str, float] = {}
    raw: dict[str, float] = {}
    for name, cal, new in (("agreement", profile.agreement, agreement), ("probe_score", profile.probe_score,
                                                                           probe_score)):
        if cal and new:
            raw[name] = ks_statistic(cal, new)
            components[name] = raw[name] / ks_critical(len(cal), len(new), alpha)
    if profile.prm_agrees and prm_agrees:
        a, b = profile.prm_agreement or 0.0, sum(prm_agrees) / len(prm_agrees)
        pooled = (sum(profile.prm_agrees) + sum(prm_agrees)) / (len(profile.prm_agrees) + len(prm_agrees))
        raw["prm_agreement"] = b - a
        components["prm_agreement"] = abs(b - a) / rate_critical(pooled, len(profile.prm_agrees), len(prm_agrees),
                                                                  alpha)
    notes = []
    new_kinds = sorted(set(kinds) - set(profile.kinds))
    if new_kinds and profile.kinds:
        notes.append(f"answer kinds {new_kinds} were not in calibration ({sorted(profile.kinds)})")
    if prompt is not None and profile.prompt:
        moved = sorted(k for k in profile.prompt if k in prompt and prompt[k] != profile.prompt[k])
        if moved:
            notes.append(f"prompt settings differ from calibration: {', '.join(moved)}")
    score = max(components.values(), default=0.0)
    return Shift(score, components, raw, notes, len(agreement))


def kinds_of(kinds: Sequence[str]) -> dict[str, int]:
    return dict(Counter(kinds))


def check_question_shift(calibration: Sequence[Sequence[float]], batch: Sequence[Sequence[float]],
                         names: Sequence[str], profile: Profile | None = None, kinds: Sequence[str] = (),
                         prompt: dict[str, Any] | None = None, alpha: float = ALPHA) -> Shift:
    """The shift check for question-only prediction, where no sample has been drawn: a KS statistic per
    question feature (``predictor.text_features``) between the calibration problems and the batch, each over
    its critical value at alpha / (number of features) (Bonferroni: the score is the largest of several), plus
    the profile's answer-kind and prompt notes."""
    per = alpha / max(1, len(names))
    level = min(_KS_C, key=lambda a: abs(math.log(a) - math.log(per)))  # the nearest tabulated alpha
    components: dict[str, float] = {}
    raw: dict[str, float] = {}
    for j, name in enumerate(names):
        cal = [row[j] for row in calibration]
        new = [row[j] for row in batch]
        if cal and new:
            raw[f"text:{name}"] = ks_statistic(cal, new)
            components[f"text:{name}"] = raw[f"text:{name}"] / ks_critical(len(cal), len(new), level)
    base = check_shift(profile, [], [], [], kinds, prompt) if profile is not None else None
    notes = base.notes if base is not None else []
    return Shift(max(components.values(), default=0.0), components, raw, notes, len(batch))
