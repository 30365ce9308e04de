"""Answer selection: pure functions over the candidates' final answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from testtime.grading import is_equivalent, normalize_str, parse_number

Equivalent = Callable[[str, str], bool]


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
    """Indices of the candidates, grouped by equivalent answer (None answers are left out).

    Groups are first formed by `answer_key`; with `equivalent` (e.g. math-verify), groups whose
    representatives are equivalent are merged. Group order = order of first appearance, which makes
    every tie-break below deterministic.
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


def group_index(groups: Sequence[list[int]], n: int) -> list[int | None]:
    """Candidate -> the index of its answer group (None for candidates without an answer)."""
    out: list[int | None] = [None] * n
    for gi, members in enumerate(groups):
        for i in members:
            out[i] = gi
    return out


def largest_group(groups: Sequence[list[int]]) -> list[int] | None:
    """The majority rule: the group with most members; ties go to the group whose first member came first."""
    return max(groups, key=lambda g: (len(g), -g[0])) if groups else None


def majority_vote(
    answers: Sequence[str | None], equivalent: Equivalent | None = None
) -> tuple[str | None, list[list[int]]]:
    """The most frequent answer (ties: the one that appeared first) and the groups it came from."""
    groups = group_answers(answers, equivalent)
    best = largest_group(groups)
    return (answers[best[0]] if best else None), groups
