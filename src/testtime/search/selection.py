"""Choosing one answer from a pool of candidates: one vocabulary, one implementation.

Following OpenR, a PRM scores each step of a candidate once; turning step rewards into an answer is two
pure, cheap choices made afterwards:

* aggregation (step rewards -> one candidate score): ``last``, ``min``, ``mean``, ``prod``;
* rule (candidate answers + scores -> one answer): ``majority`` (ignores scores), ``prm_max`` (the
  best-scored candidate), ``prm_vote`` (scores summed per group of equivalent answers);
* PRM-free rules over the policy's own confidence in each sample (DeepConf, arXiv 2508.15260; its
  lowest-group confidence, ``testtime.confidence``): ``confidence_vote`` (confidence summed per group)
  and ``confidence_top`` (the same vote over the most confident ``CONFIDENCE_TOP`` share of the samples).

A ``Selection`` is one (rule, aggregation) pair. Its ``name`` ("majority", "prm_min_vote", ...) is both
the report name and the key of ``SELECTIONS`` (OpenR's ``AGG_FN_MAP`` style): nothing is composed from
parts and parsed back. ``Pool`` groups a pool's answers once and aggregates its rewards once; its
``choose`` picks a candidate from the whole pool (live strategies) or from any subset of it (the
subsampled curves of sweeps), with the same rule and the same tie-breaks either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from testtime.errors import ConfigError
from testtime.grading import is_equivalent, normalize_str, parse_number
from testtime.reward.base import AGGREGATIONS, DEFAULT_SELECTION

Equivalent = Callable[[str, str], bool]

RULES: tuple[str, ...] = ("majority", "prm_max", "prm_vote", "confidence_vote", "confidence_top")
CONFIDENCE_RULES: tuple[str, ...] = ("confidence_vote", "confidence_top")
# Liu et al. 2025's answer rules (majority vote, PRM-Max, PRM-Vote): the paper's config space
PAPER_RULES: tuple[str, ...] = ("majority", "prm_max", "prm_vote")
# confidence_top keeps this share of a pool's answered samples, the most confident first (DeepConf's eta;
# its paper keeps 10% of 512 traces; with 4-16 samples half is the smallest share that still votes)
CONFIDENCE_TOP = 0.5


@dataclass(frozen=True)
class Selection:
    """One way of choosing an answer; ``name`` is its report name and its ``SELECTIONS`` key."""

    rule: str
    aggregation: str | None = None  # None for majority (scores unused)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError("selection", self.rule, f"unknown (valid: {', '.join(RULES)})")
        if self.rule == "majority" or self.rule in CONFIDENCE_RULES:
            object.__setattr__(self, "aggregation", None)
            object.__setattr__(self, "name", self.rule)
            return
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError("aggregation", self.aggregation, f"unknown (valid: {', '.join(AGGREGATIONS)})")
        object.__setattr__(self, "name", f"prm_{self.aggregation}_{self.rule.removeprefix('prm_')}")

    @property
    def uses_scores(self) -> bool:
        return self.aggregation is not None

    @property
    def uses_confidence(self) -> bool:
        return self.rule in CONFIDENCE_RULES

    @property
    def from_paper(self) -> bool:
        """One of the paper's selections (its rule is one of ``PAPER_RULES``); the confidence votes are not."""
        return self.rule in PAPER_RULES


MAJORITY = Selection("majority")
# Every selection, majority first, then (prm_max, prm_vote) per aggregation, then the confidence ones:
# the order reports use.
SELECTIONS: dict[str, Selection] = {
    s.name: s
    for s in [MAJORITY, *(Selection(rule, agg) for agg in AGGREGATIONS for rule in ("prm_max", "prm_vote")),
              *(Selection(rule) for rule in CONFIDENCE_RULES)]
}
CONFIDENCE_SELECTIONS: tuple[str, ...] = tuple(k for k, s in SELECTIONS.items() if s.uses_confidence)
SCORED_SELECTIONS: tuple[str, ...] = tuple(k for k, s in SELECTIONS.items() if s.uses_scores)


def selection_of(aggregation: str, rule: str) -> Selection:
    """The selection a strategy's ``aggregation`` / ``selection`` options name (majority ignores aggregation)."""
    sel = Selection(rule, aggregation)
    return SELECTIONS[sel.name]


def scorer_aggregations(scorer: Any) -> tuple[str, ...]:
    """The aggregations a scorer (a RewardModel or a ScorerInfo) says its rewards support (default: all)."""
    return tuple(getattr(scorer, "aggregations", None) or AGGREGATIONS)


def follow_scorer(aggregation: str | None, rule: str | None, scorer: Any = None) -> tuple[str, str]:
    """The (aggregation, rule) a run reports: each one given is kept as it is; each one left None is the
    scorer's ``default_selection``'s (None scorer, or one that declares nothing: ``prm_last_max``).

    A rule that reads no scores (majority) leaves an unset aggregation at "last", the value such runs
    have always carried in their run identity; a scorer whose default is majority gives a prm_* rule its
    first supported aggregation."""
    default = SELECTIONS.get(getattr(scorer, "default_selection", None) or DEFAULT_SELECTION)
    if default is None:
        raise ConfigError("default_selection", getattr(scorer, "default_selection", None),
                          f"scorer {getattr(scorer, 'name', '?')}: unknown (valid: {', '.join(SELECTIONS)})")
    rule = rule if rule is not None else default.rule
    if aggregation is None:
        if rule == "majority" or rule in CONFIDENCE_RULES:
            aggregation = "last"
        else:
            aggregation = default.aggregation or scorer_aggregations(scorer)[0]
    return aggregation, rule


# --- answers and groups ---------------------------------------------------------------------------


def math_equivalent(kind: str) -> Equivalent:
    """Answer equivalence for a problem kind (bounded math-verify for symbolic kinds), for grouping answers."""
    return lambda a, b: is_equivalent(a, b, kind)


def answer_key(answer: str) -> str:
    """A cheap canonical form: equal keys are certainly equivalent answers ("19", "19.0", "$19$")."""
    num = parse_number(answer, lenient=False)
    if num is not None:
        return f"#{num.numerator}/{num.denominator}"
    return normalize_str(answer)


def group_answers(answers: Sequence[str | None], equivalent: Equivalent | None = None) -> list[list[int]]:
    """Indices of the candidates, grouped by equivalent answer (None and blank answers are left out).

    Groups are first formed by `answer_key`; with `equivalent` (e.g. math-verify), groups whose
    representatives are equivalent are merged. Group order = order of first appearance, which makes
    every tie-break deterministic.
    """
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        if a is None or not a.strip():
            continue
        groups.setdefault(answer_key(a), []).append(i)
    merged: list[list[int]] = []
    for members in groups.values():
        rep = answers[members[0]]
        for g in merged:
            if equivalent is not None and equivalent(answers[g[0]], rep):  # type: ignore[arg-type]
                g.extend(members)
                break
        else:
            merged.append(list(members))
    for g in merged:
        g.sort()
    merged.sort(key=lambda g: g[0])
    return merged


# How a pool's answers form groups for votes: ``math`` (testtime's): equivalent answers (``answer_key``, then
# math-verify) share a group and candidates without an answer never win; ``string`` (the authors' OpenR vote):
# normalized answer strings (``answer_key``) only, and the candidates without an answer form one more group,
# which can win a vote (and is graded wrong).
GROUPINGS: tuple[str, ...] = ("math", "string")


def answer_groups(answers: Sequence[str | None], kind: str, grouping: str = "math") -> list[list[int]]:
    """Indices of the candidates grouped as ``grouping`` says (see GROUPINGS), in order of first appearance."""
    if grouping == "math":
        return group_answers(answers, math_equivalent(kind))
    if grouping != "string":
        raise ConfigError("answer_grouping", grouping, f"unknown (valid: {', '.join(GROUPINGS)})")
    groups: dict[str | None, list[int]] = {}
    for i, a in enumerate(answers):
        groups.setdefault(answer_key(a) if a is not None and a.strip() else None, []).append(i)
    return list(groups.values())  # dicts keep insertion order: groups by first member


def group_index(groups: Sequence[list[int]], n: int) -> list[int | None]:
    """Candidate -> the index of its answer group (None for candidates without an answer)."""
    out: list[int | None] = [None] * n
    for gi, members in enumerate(groups):
        for i in members:
            out[i] = gi
    return out


# --- aggregation ----------------------------------------------------------------------------------


def aggregate(step_rewards: Sequence[float], how: str) -> float:
    """One score for a candidate from its step rewards; 0.0 for a candidate with no steps."""
    if how not in AGGREGATIONS:
        raise ConfigError("aggregation", how, f"unknown (valid: {', '.join(AGGREGATIONS)})")
    if not step_rewards:
        return 0.0
    if not all(math.isfinite(r) for r in step_rewards):
        # max() over NaN is order-dependent garbage, and an infinite reward always wins: refuse both
        raise ValueError(f"NaN or infinite step reward in {list(step_rewards)}: the scorer is broken, not selecting")
    if how == "last":
        return float(step_rewards[-1])
    if how == "min":
        return float(min(step_rewards))
    if how == "mean":
        return float(sum(step_rewards)) / len(step_rewards)
    return float(math.prod(step_rewards))


# --- the one implementation of every rule ---------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """A problem's candidates as selection sees them: answer groups and, when scored, aggregated scores.

    ``group_of[i]`` is candidate i's answer group (None: no answer); ``scores[agg][i]`` its score under
    each aggregation (empty without a PRM). Built once per pool, so math-verify runs once per pair of
    answers however many subsets and selections are evaluated.
    """

    group_of: tuple[int | None, ...]
    scores: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    # each candidate's confidence (its sample's lowest-group confidence); None: not every sample has one
    confidence: tuple[float, ...] | None = None

    @classmethod
    def of(cls, group_of: Sequence[int | None], rewards: Sequence[Sequence[float]] | None = None,
           confidence: Sequence[float | None] | None = None) -> Pool:
        if rewards is not None and len(rewards) != len(group_of):
            raise ValueError(f"{len(group_of)} candidates but {len(rewards)} step-reward lists")
        if confidence is not None and len(confidence) != len(group_of):
            raise ValueError(f"{len(group_of)} candidates but {len(confidence)} confidences")
        scores = {} if rewards is None else {a: tuple(aggregate(r, a) for r in rewards) for a in AGGREGATIONS}
        # confidence selections compare samples with each other: all of them need one, or none is used
        conf = None if confidence is None or any(c is None for c in confidence) else tuple(
            float(c) for c in confidence)  # type: ignore[arg-type]
        return cls(tuple(group_of), scores, conf)

    @classmethod
    def from_answers(cls, answers: Sequence[str | None], rewards: Sequence[Sequence[float]] | None = None,
                     equivalent: Equivalent | None = None, confidence: Sequence[float | None] | None = None) -> Pool:
        return cls.of(group_index(group_answers(answers, equivalent), len(answers)), rewards, confidence)

    def __len__(self) -> int:
        return len(self.group_of)

    @property
    def scored(self) -> bool:
        return bool(self.scores)

    def selections(self) -> list[Selection]:
        """The selections this pool supports: majority always, the PRM ones when it is scored, the
        confidence ones when every sample has a confidence."""
        return [s for s in SELECTIONS.values() if (self.scored or not s.uses_scores)
                and (self.confidence is not None or not s.uses_confidence)]

    def choose(self, selection: Selection, subset: Sequence[int] | None = None) -> int | None:
        """The chosen candidate among `subset` (ascending indices; default: the whole pool); None when no
        candidate there has an answer.

        majority: the largest group, ties to the group seen first; prm_max: the highest-scored candidate
        with an answer, ties to the earliest; prm_vote: scores summed per group, ties to the group seen
        first. The chosen candidate of a group is its first member in the subset.
        """
        members = range(len(self.group_of)) if subset is None else subset
        first: dict[int, int] = {}
        for i in members:
            g = self.group_of[i]
            if g is not None and g not in first:
                first[g] = i
        if not first:
            return None
        if selection.rule == "majority":
            counts = dict.fromkeys(first, 0)
            for i in members:
                g = self.group_of[i]
                if g is not None:
                    counts[g] += 1
            return first[max(first, key=lambda g: (counts[g], -first[g]))]
        if selection.uses_confidence:
            return self._confidence_choice(selection, members, first)
        if selection.aggregation not in self.scores:
            raise ValueError(f"selection {selection.name} needs step rewards; this pool was not scored")
        scores = self.scores[selection.aggregation]
        if selection.rule == "prm_max":
            best: int | None = None
            for i in members:  # strict >: ties keep the earliest
                if self.group_of[i] is not None and (best is None or scores[i] > scores[best]):
                    best = i
            return best
        sums = dict.fromkeys(first, 0.0)
        for i in members:
            g = self.group_of[i]
            if g is not None:
                sums[g] += scores[i]
        win: int | None = None
        for g in first:  # order of first appearance; strict >: ties keep the group seen first
            if win is None or sums[g] > sums[win]:
                win = g
        return first[win]  # type: ignore[index]

    def _confidence_choice(self, selection: Selection, members: Sequence[int], first: dict[int, int]) -> int:
        """confidence_vote: each answered sample votes with its confidence; confidence_top: the same vote
        among the most confident CONFIDENCE_TOP share (ties to the earlier sample). Ties between groups go
        to the group seen first; the chosen candidate is its group's first member among the voters."""
        if self.confidence is None:
            raise ValueError(f"selection {selection.name} needs per-sample confidences; this pool has none")
        conf = self.confidence
        voters = [i for i in members if self.group_of[i] is not None]
        if selection.rule == "confidence_top":
            keep = max(1, math.ceil(CONFIDENCE_TOP * len(voters)))
            voters = sorted(sorted(voters, key=lambda i: (-conf[i], i))[:keep])
        sums: dict[int, float] = {}
        lead: dict[int, int] = {}
        for i in voters:
            g = self.group_of[i]
            sums[g] = sums.get(g, 0.0) + conf[i]  # type: ignore[index]
            lead.setdefault(g, i)  # type: ignore[arg-type]
        win = min(sums, key=lambda g: (-sums[g], first[g]))
        return lead[win]

    def choices(self, subset: Sequence[int] | None = None) -> dict[str, int | None]:
        """Every supported selection's chosen candidate, one pass per selection over the same groups."""
        return {s.name: self.choose(s, subset) for s in self.selections()}


def majority_vote(
    answers: Sequence[str | None], equivalent: Equivalent | None = None
) -> tuple[str | None, list[list[int]]]:
    """The most frequent answer (ties: the one that appeared first) and the groups it came from."""
    groups = group_answers(answers, equivalent)
    i = Pool.of(group_index(groups, len(answers))).choose(MAJORITY)
    return (None if i is None else answers[i]), groups


def select(answers: Sequence[str | None], rewards: Sequence[Sequence[float]] | None, selection: Selection,
           equivalent: Equivalent | None = None) -> str | None:
    """One selection's answer over a whole pool (None when no candidate has one)."""
    i = Pool.from_answers(answers, rewards, equivalent).choose(selection)
    return None if i is None else answers[i]


def all_selections(answers: Sequence[str | None], rewards: Sequence[Sequence[float]] | None,
                   equivalent: Equivalent | None = None, pool: Pool | None = None,
                   confidence: Sequence[float | None] | None = None) -> dict[str, str | None]:
    """Every selection's answer (name -> answer), from one grouping and one aggregation of the pool
    (``pool``: one already built from these answers, rewards and confidences)."""
    pool = pool or Pool.from_answers(answers, rewards, equivalent, confidence)
    return {name: None if i is None else answers[i] for name, i in pool.choices().items()}
