"""Choices that survive small calibration sets (issue 26): pooled families fitted monotone in N (PAV), and the
one-standard-error rule that prefers the cheaper config within noise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testtime.optimal.calibrate import (
    ALL,
    calibrate,
    isotonic,
    mean_accuracy,
    monotone_in_budget,
)
from testtime.optimal.sweep import Cell, ProblemInfo, SweepResult

# --- isotonic regression (pool-adjacent-violators) ----------------------------------------------------

values_and_weights = st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n),
    st.lists(st.integers(1, 50), min_size=n, max_size=n)))


@settings(max_examples=200)
@given(values_and_weights)
def test_isotonic_is_monotone_and_keeps_the_weighted_mean(vw):
    ys, ws = vw
    fit = isotonic(ys, ws)
    assert len(fit) == len(ys)
    assert all(a <= b + 1e-12 for a, b in zip(fit, fit[1:], strict=False))
    total = sum(ws)
    assert sum(w * f for w, f in zip(ws, fit, strict=True)) / total == pytest.approx(
        sum(w * y for w, y in zip(ws, ys, strict=True)) / total)
    assert min(ys) - 1e-12 <= min(fit) and max(fit) <= max(ys) + 1e-12  # never outside the data


@settings(max_examples=100)
@given(values_and_weights)
def test_isotonic_is_the_identity_on_monotone_input(vw):
    ys, ws = vw
    ys = sorted(ys)
    assert isotonic(ys, ws) == ys


@settings(max_examples=200)
@given(values_and_weights, st.lists(st.floats(0.0, 1.0), min_size=12, max_size=12))
def test_isotonic_fits_better_than_any_other_monotone_sequence(vw, other):
    ys, ws = vw
    fit = isotonic(ys, ws)
    rival = sorted(other[:len(ys)])  # some other non-decreasing sequence

    def sse(f):
        return sum(w * (y - x) ** 2 for w, y, x in zip(ws, ys, f, strict=True))

    assert sse(fit) <= sse(rival) + 1e-9


def test_isotonic_pools_violators_by_weight():
    assert isotonic([0.5, 0.7, 0.5, 0.8], [1, 1, 1, 1]) == pytest.approx([0.5, 0.6, 0.6, 0.8])
    assert isotonic([0.9, 0.0], [3, 1]) == pytest.approx([0.675, 0.675])  # (3 * 0.9 + 0) / 4
    # a late drop pools back through the block before it: 0.7 and 0.1 pool to 0.4, which then pools 0.6
    assert isotonic([0.2, 0.6, 0.7, 0.1], [1, 1, 1, 1]) == pytest.approx([0.2, 0.4666666, 0.4666666, 0.4666666])
    assert isotonic([], []) == []
    with pytest.raises(ValueError, match="weights"):
        isotonic([0.1, 0.2], [1, 0])
    with pytest.raises(ValueError, match="2 values but 1 weights"):
        isotonic([0.1, 0.2], [1])


# --- synthetic sweeps --------------------------------------------------------------------------------


def cell(pid, config, budget, acc, strategy=None, selection=None, flops_per_n=100.0, m=None):
    strategy = strategy or config.split("/")[0].split("(")[0]
    return Cell(pid, config, strategy, m, selection, budget, acc, tokens=10.0 * budget, flops=flops_per_n * budget)


def sweep_of(cells, ids, holdout=0.0, pass1=0.3):
    infos = [ProblemInfo(p, 1, pass1, 0.5, 0.5) for p in ids]
    recipe = {"name": "choice", "dataset": "arith", "holdout": holdout, "seed": 0,
              "difficulty": {"easy": 0.5, "hard": 0.1, "probe_n": 4}}
    return SweepResult(recipe, "policy-x", "prm-y", False, infos, cells, [], 0.0)


def solved(ids, k, value=1.0):
    """Per problem: `value` for the first k, 0 for the rest."""
    return {pid: (value if i < k else 0.0) for i, pid in enumerate(ids)}


def dip_sweep():
    """20 problems. majority: 10, 14, 10, 16 solved at N = 1, 2, 4, 8 (a dip at 4: majority@2 is high by luck).
    best_of_n/prm_min_max: 11, 13, 15, 16. A beam config dips 12, 8 at N = 2, 4 (a tree: left as measured)."""
    ids = [f"p{i:02d}" for i in range(20)]
    maj = dict(zip((1, 2, 4, 8), (10, 14, 10, 16), strict=True))
    bon = dict(zip((1, 2, 4, 8), (11, 13, 15, 16), strict=True))
    cells = []
    for b in (1, 2, 4, 8):
        cells += [cell(p, "majority", b, a) for p, a in solved(ids, maj[b]).items()]
        cells += [cell(p, "best_of_n/prm_min_max", b, a, selection="prm_min_max", flops_per_n=120.0)
                  for p, a in solved(ids, bon[b]).items()]
    for b, k in ((2, 12), (4, 8)):
        cells += [cell(p, "beam(m=2)/prm_last_max", b, a, "beam", "prm_last_max", 300.0, m=2)
                  for p, a in solved(ids, k).items()]
    cells += [cell(p, "cot", 1, a) for p, a in solved(ids, 6).items()]
    return sweep_of(cells, ids), ids


def test_monotone_fit_pools_a_pooled_familys_dip_and_leaves_trees_alone():
    sw, ids = dip_sweep()
    raw = mean_accuracy(sw.cells, set(ids))
    fit = monotone_in_budget(raw)
    assert raw[("majority", 4)].accuracy < raw[("majority", 2)].accuracy  # the dip as measured
    assert [fit[("majority", b)].accuracy for b in (1, 2, 4, 8)] == pytest.approx([0.5, 0.6, 0.6, 0.8])
    assert fit[("beam(m=2)/prm_last_max", 4)].accuracy == raw[("beam(m=2)/prm_last_max", 4)].accuracy == 0.4
    assert all(fit[k] == raw[k] for k in raw if k[0] in ("best_of_n/prm_min_max", "cot"))  # already monotone
    assert all(fit[k].n == raw[k].n and fit[k].cell == raw[k].cell for k in raw)


def test_the_dip_is_removed_before_choosing():
    """Measured, majority@2 (14/20) beats best_of_n@2 (13/20); fitted, majority@2 is 0.6 (its luck shared
    with the dip at 4) and best_of_n@2 wins. The argmax rule alone, so only the fit decides."""
    sw, _ids = dip_sweep()
    table = calibrate(sw, shrinkage=0.0)
    for row in (table.fixed, table.table[ALL], table.table["medium"], table.robust):
        assert (row[2].config, row[2].budget, row[2].accuracy) == ("best_of_n/prm_min_max", 2, 0.65)
        # at 4: majority@4 is fitted to 0.6, not the 0.5 measured; best_of_n@4 (0.75) wins either way
        assert (row[4].config, row[4].accuracy) == ("best_of_n/prm_min_max", 0.75)
    assert (table.prm_free[4].config, table.prm_free[4].budget, table.prm_free[4].accuracy) == ("majority", 2, 0.6)
