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
import re
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
    moved = prompt_moved(profile, prompt)
    if moved:
        notes.append(f"prompt settings differ from calibration: {', '.join(moved)}")
    score = max(components.values(), default=0.0)
    return Shift(score, components, raw, notes, len(agreement))


def prompt_moved(profile: Profile, prompt: dict[str, Any] | None) -> list[str]:
    """The prompt settings (fewshot, system, instruction, ...) that differ from the calibration's."""
    if prompt is None or not profile.prompt:
        return []
    return sorted(k for k in profile.prompt if k in prompt and prompt[k] != profile.prompt[k])


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


# -- one request at a time (the server: a batch is often one question) ----------------------------------------
#
# A KS test cannot flag one question (its critical value at n = 1 is above any distance), so a served request
# is checked on its own: is each of its question's features within the range the calibration questions
# spanned, is it in a language they were asked in, and was it asked the way they were (the prompt settings)?
# Each reason is said in words; a request with none is in distribution.

RANGE_MARGIN = 0.05  # a feature may overshoot the calibration range by this share of the range's width
# Short questions get low language probabilities whatever their language ("Evaluate 24 - 19." is 'ro' at 0.065,
# 'en' at 0.061), so the rule is a likelihood ratio: another language is named only when it is this many
# times as likely as the calibration's. Over 500 arith and GSM8K questions the ratio never passed 2.8; short
# questions in German, French, Spanish, Italian, Dutch, Chinese and Russian score 24 to 660.
LANGUAGE_RATIO = 10.0
MAIN_LANGUAGE_SHARE = 0.2  # a calibration language holds at least this share of its questions' probability


def non_ascii_letters(question: str) -> float:
    """The share of the question's letters outside ASCII (Cyrillic, CJK, accented Latin...)."""
    letters = [ch for ch in question if ch.isalpha()]
    return sum(not ch.isascii() for ch in letters) / len(letters) if letters else 0.0


_QUANTITY = re.compile(r"\d+(?:[.,]\d+)?|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                       r"fifteen|twenty|thirty|forty|fifty|hundred|thousand|million|half|twice|double|triple|dozen|"
                       r"quarter)\b", re.IGNORECASE)


def quantities(question: str) -> float:
    """Numbers in digits or in words: a maths question states some (a few GSM8K questions use words only)."""
    return float(len(_QUANTITY.findall(question)))


FORM_FEATURES = ("non_ascii_letters", "quantities")


def form_features(question: str) -> list[float]:
    """What the shift check reads of a question beyond the predictor's text features (``FORM_FEATURES``)."""
    return [non_ascii_letters(question), quantities(question)]


def feature_ranges(rows: Sequence[Sequence[float]], names: Sequence[str]) -> dict[str, list[float]]:
    """Per feature, [min, max] over the calibration questions."""
    if not rows:
        return {}
    return {name: [min(r[j] for r in rows), max(r[j] for r in rows)] for j, name in enumerate(names)}


def out_of_range(values: Sequence[float], names: Sequence[str], ranges: dict[str, list[float]],
                 margin: float = RANGE_MARGIN) -> list[str]:
    """The features whose value lies outside its calibration range (widened by `margin` of its width), in words."""
    out = []
    for name, v in zip(names, values, strict=True):
        if name not in ranges:
            continue
        lo, hi = ranges[name]
        pad = margin * (hi - lo)
        if v < lo - pad - 1e-9 or v > hi + pad + 1e-9:
            out.append(f"{name} {v:.3g} outside the calibration questions' [{lo:.3g}, {hi:.3g}]")
    return out


_IDENTIFIER: Any = None


def language_ranks(question: str) -> dict[str, float]:
    """Language (ISO 639-1) -> probability, from py3langid's bundled model."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import _load_identifier

        _IDENTIFIER = _load_identifier(norm_probs=True)
    return {str(lang): float(p) for lang, p in _IDENTIFIER.rank(question)}


def calibration_languages(questions: Sequence[str]) -> list[str]:
    """The languages the calibration questions were asked in: those holding at least ``MAIN_LANGUAGE_SHARE`` of
    the identifier's probability mass summed over the questions (a count of top guesses would let a short
    question's weak guess in: "Calculate 9 + 7." is 'ro' at 0.07)."""
    mass: Counter[str] = Counter()
    for q in questions:
        mass.update(language_ranks(q))
    total = sum(mass.values())
    return sorted(lang for lang, m in mass.items() if total and m >= MAIN_LANGUAGE_SHARE * total)


def other_language(question: str, languages: Sequence[str]) -> str | None:
    """The language `question` is asked in when it is clearly not one of `languages` (None otherwise)."""
    ranks = language_ranks(question)
    top = max(ranks, key=ranks.get)
    ours = max((ranks.get(lang, 0.0) for lang in languages), default=0.0)
    if top in languages or ranks[top] < LANGUAGE_RATIO * max(ours, 1e-12):
        return None
    ratio = ranks[top] / max(ours, 1e-12)
    return f"asked in language {top!r} ({f'{ratio:.0f}' if ratio < 1000 else 'over 1000'}x as likely as " \
           f"{'/'.join(languages)})"


def request_shift(question: str, prompt: dict[str, Any], ranges: dict[str, list[float]],
                  languages: Sequence[str], profile: Profile | None, feature_names: Sequence[str],
                  features: Sequence[float]) -> list[str]:
    """Why one request looks unlike the calibration problems (empty: it does not). `features` are its values
    of `feature_names` (the predictor's text features, then ``FORM_FEATURES``); `prompt` the settings it was
    asked with (fewshot, system, instruction), compared with the calibration's."""
    reasons = out_of_range(features, feature_names, ranges)
    other = other_language(question, languages) if languages else None
    if other is not None:
        reasons.append(other)
    moved = prompt_moved(profile, prompt) if profile is not None else []
    if moved:
        reasons.append(f"asked with other prompt settings than calibration: {', '.join(moved)}")
    return reasons
