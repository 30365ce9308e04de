"""Allocation across a batch: give each problem one option (a config with a predicted success and cost) so
that the expected number of problems solved is largest while the batch's total cost stays within its budget.

This is a multiple-choice knapsack. Its linear relaxation is solved exactly by a greedy over each problem's
upper concave hull of (cost, success) points: every problem starts at its cheapest option, then the hull
step with the largest marginal success per unit of cost is taken, again and again, while it fits. The
integral answer loses at most the one step that did not fit; after it, smaller steps of other problems that
still fit are taken in the same order. So problems whose success curve is flat (solved by the cheapest
option already, or solved by nothing) stay at the minimum and the budget goes where the curve is steep.

Pure functions over plain numbers: the predicted curves come from ``optimal.predictor``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from testtime.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One way to spend on one problem: a config's predicted success probability and predicted cost."""

    key: str
    success: float
    cost: float


@dataclass
class Decision:
    """What the allocator gave one problem, and why."""

    pick: int  # index into the problem's options
    steps: int  # hull steps taken above the cheapest option
    last_rate: float | None  # success per unit cost of the last step taken (None: none taken)
    next_rate: float | None  # the same for the next step on its hull (None: it is at the top)
    below_min: bool = False  # the next step was refused as buying less than the minimum rate, not for budget

    def why(self, cutoff: float | None, unit: str = "TFLOP", scale: float = 1e12) -> str:
        """One line: the marginal gains that decided, in points of accuracy per `unit` of cost."""
        def pts(r: float | None) -> str:
            return "-" if r is None else f"{100 * r * scale:.3g} pts/{unit}"

        if self.steps == 0 and self.next_rate is None:
            return "cheapest: nothing more costly is predicted to help"
        if self.below_min:
            return (f"{'kept at the cheapest' if self.steps == 0 else f'raised {self.steps} step(s)'}: the next "
                    f"step would buy {pts(self.next_rate)}, less than the minimum gain asked for")
        if self.steps == 0:
            return f"kept at the cheapest: one more step buys {pts(self.next_rate)}, below the batch's cutoff " \
                   f"{pts(cutoff)}"
        if self.next_rate is None:
            return f"raised to its best: the last step bought {pts(self.last_rate)}"
        return f"raised {self.steps} step(s): the last bought {pts(self.last_rate)}; the next would buy " \
               f"{pts(self.next_rate)}, below the cutoff {pts(cutoff)}"


@dataclass
class Allocation:
    decisions: list[Decision]
    total_cost: float
    expected_solved: float
    budget: float
    cutoff_rate: float | None  # the marginal rate of the first step refused for lack of budget (None: none)
    over_budget: bool = False  # even the cheapest option of every problem does not fit
    picks: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.picks = [d.pick for d in self.decisions]


def upper_hull(options: Sequence[Option]) -> list[int]:
    """Indices of the options on the upper concave hull of (cost, success), by increasing cost: success
    strictly increasing, marginal success per cost strictly decreasing. Dominated options are dropped."""
    order = sorted(range(len(options)), key=lambda i: (options[i].cost, -options[i].success, i))
    hull: list[int] = []
    for i in order:
        o = options[i]
        if hull and o.success <= options[hull[-1]].success:
            continue  # costs at least as much, buys no more
        while len(hull) >= 2 and _rate(options[hull[-2]], options[hull[-1]]) <= _rate(options[hull[-1]], o):
            hull.pop()  # the middle point lies under the chord: never worth stopping at
        hull.append(i)
    return hull


def _rate(a: Option, b: Option) -> float:
    dc = b.cost - a.cost
    return math.inf if dc <= 0 else (b.success - a.success) / dc


def _check(problems: Sequence[Sequence[Option]], budget: float) -> None:
    if not budget >= 0 or math.isinf(budget):
        raise ConfigError("budget", budget, "must be a finite number >= 0")
    for i, opts in enumerate(problems):
        if not opts:
            raise ConfigError("options", i, "a problem needs at least one option")
        for o in opts:
            if not (0.0 <= o.success <= 1.0) or not (o.cost >= 0) or math.isinf(o.cost):
                raise ConfigError("options", o.key, f"success must be in [0, 1] and cost finite >= 0, got {o}")


def allocate(problems: Sequence[Sequence[Option]], budget: float,
             min_rate: float | Sequence[float] = 0.0) -> Allocation:
    """Each problem's option maximising the expected number solved with total cost <= `budget` (see the
    module docstring). When even the cheapest options exceed the budget, every problem gets its cheapest
    and the allocation says ``over_budget``. ``min_rate`` (one for all, or one per problem): a step that buys
    less success per unit cost than this is not taken even when the budget has room (0: spend while any
    gain is predicted)."""
    _check(problems, budget)
    floor = [float(min_rate)] * len(problems) if isinstance(min_rate, int | float) else [float(r) for r in min_rate]
    if len(floor) != len(problems) or any(not r >= 0 for r in floor):
        raise ConfigError("min_rate", min_rate, "one rate >= 0, or one per problem")
    hulls = [upper_hull(opts) for opts in problems]
    pos = [0] * len(problems)
    spent = sum(opts[h[0]].cost for opts, h in zip(problems, hulls, strict=True))
    over = spent > budget * (1 + 1e-12)
    heap: list[tuple[float, int]] = []
    for i, h in enumerate(hulls):
        if len(h) > 1:
            heap.append((-_rate(problems[i][h[0]], problems[i][h[1]]), i))
    heapq.heapify(heap)
    last: list[float | None] = [None] * len(problems)
    refused = [False] * len(problems)
    cutoff: float | None = None
    while heap and not over:
        neg, i = heapq.heappop(heap)
        if -neg < floor[i]:
            refused[i] = True
            continue  # not worth its cost; its later steps buy even less per unit (a concave hull)
        h, k = hulls[i], pos[i]
        step = problems[i][h[k + 1]].cost - problems[i][h[k]].cost
        if spent + step > budget * (1 + 1e-12):
            if cutoff is None:
                cutoff = -neg  # the LP's marginal price: steps cheaper per point than this were all taken
            continue  # this problem stays where it is; smaller steps of others may still fit
        spent += step
        pos[i] = k + 1
        last[i] = -neg
        if k + 2 < len(h):
            heapq.heappush(heap, (-_rate(problems[i][h[k + 1]], problems[i][h[k + 2]]), i))
    decisions = []
    for i, h in enumerate(hulls):
        k = pos[i]
        nxt = _rate(problems[i][h[k]], problems[i][h[k + 1]]) if k + 1 < len(h) else None
        decisions.append(Decision(h[k], k, last[i], nxt, refused[i]))
    solved = sum(problems[i][d.pick].success for i, d in enumerate(decisions))
    return Allocation(decisions, spent, solved, budget, cutoff, over)
