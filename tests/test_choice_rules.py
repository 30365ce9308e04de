"""Choices that survive small calibration sets (issue 26): pooled families fitted monotone in N (PAV), and the
one-standard-error rule that prefers the cheaper config within noise."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testtime.optimal import calibrate as calibration
from testtime.optimal.calibrate import (
    ALL,
    FIXED,
    Measured,
    Table,
    best_within,
    calibrate,
    evaluate,
    isotonic,
    mean_accuracy,
    monotone_in_budget,
    shrink,
    split_problems,
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
    monotone = [k for k in raw if k[0] in ("best_of_n/prm_min_max", "cot")]
    assert len(monotone) == 5 and all(fit[k] == raw[k] for k in monotone)  # already monotone: 4 BoN budgets, cot
    assert all(fit[k].n == raw[k].n and fit[k].cell == raw[k].cell for k in raw)


def test_the_dip_is_removed_before_choosing():
    """Measured, majority@2 (14/20) beats best_of_n@2 (13/20); fitted, majority@2 is 0.6 (its luck shared
    with the dip at 4) and best_of_n@2 wins. The argmax rule alone, so only the fit decides."""
    sw, _ids = dip_sweep()
    table = calibrate(sw, shrinkage=0.0, one_se=False)
    for row in (table.fixed, table.table[ALL], table.table["medium"], table.robust):
        assert (row[2].config, row[2].budget, row[2].accuracy) == ("best_of_n/prm_min_max", 2, 0.65)
        # at 4: majority@4 is fitted to 0.6, not the 0.5 measured; best_of_n@4 (0.75) wins either way
        assert (row[4].config, row[4].accuracy) == ("best_of_n/prm_min_max", 0.75)
    assert (table.prm_free[4].config, table.prm_free[4].budget, table.prm_free[4].accuracy) == ("majority", 2, 0.6)


# --- the one-standard-error rule ----------------------------------------------------------------------


def test_mean_accuracy_carries_the_standard_error_and_the_cost():
    cells = [cell(p, "majority", 2, a) for p, a in zip("abcd", (1.0, 0.0, 1.0, 0.0), strict=True)]
    cells[0].flops = 600.0  # mean FLOPs per problem: (600 + 3 * 200) / 4
    m = mean_accuracy(cells, set("abcd"))[("majority", 2)]
    assert (m.accuracy, m.n, m.flops) == (0.5, 4, 300.0)
    assert m.se == pytest.approx((1 / 3) ** 0.5 / 2)  # sample SD sqrt(1/3), over sqrt(4)
    assert mean_accuracy(cells[:1], {"a"})[("majority", 2)].se == 0.0  # one problem: no spread seen
    assert m[0] == m.accuracy and m[1] == m.n and m[2] is m.cell  # still reads as the old triple


def _m(acc, se, flops, strategy="majority"):
    return Measured(acc, 20, cell("x", strategy, 1, acc, strategy=strategy), se, flops)


def test_best_within_one_se_takes_the_cheapest_config_within_one_se_of_the_best():
    acc = {("beam(m=2)/prm_last_max", 8): _m(0.80, 0.05, 3200.0, "beam"), ("majority", 4): _m(0.76, 0.05, 400.0),
           ("majority", 2): _m(0.749, 0.05, 200.0), ("cot", 1): _m(0.30, 0.10, 100.0, "cot")}
    assert best_within(acc, 8).config == "beam(m=2)/prm_last_max"  # the plain best (the default: in-sample)
    ch = best_within(acc, 8, one_se=True)
    assert (ch.config, ch.budget, ch.accuracy) == ("majority", 4, 0.76)  # 0.749 < 0.80 - 0.05: outside
    assert best_within(acc, 3, one_se=True).budget == 2  # within the budget only
    # no spread seen: only ties with the best qualify, the cheaper of them wins
    exact = {("majority", 4): _m(0.8, 0.0, 400.0), ("best_of_n/prm_min_max", 4): _m(0.8, 0.0, 480.0, "best_of_n"),
             ("majority", 2): _m(0.79, 0.0, 200.0)}
    assert best_within(exact, 4, one_se=True).config == "majority" and best_within(exact, 4, True).budget == 4
    # equal cost: the more accurate (best_of_n selections share a pool and its cost)
    same = {("best_of_n/prm_last_max", 4): _m(0.70, 0.1, 480.0, "best_of_n"),
            ("best_of_n/prm_min_max", 4): _m(0.75, 0.1, 480.0, "best_of_n")}
    assert best_within(same, 4, one_se=True).config == "best_of_n/prm_min_max"


def test_shrink_mixes_standard_errors_with_the_accuracies_weights():
    k = ("majority", 2)
    got = shrink({k: _m(0.4, 0.10, 200.0)}, {k: _m(0.8, 0.02, 300.0)}, 20.0)[k]  # n = lambda = 20: halfway
    assert (got.accuracy, got.se, got.flops) == (pytest.approx(0.6), pytest.approx(0.06), 200.0)
    assert shrink({k: _m(0.4, 0.10, 200.0)}, {k: _m(0.8, 0.02, 300.0)}, float("inf"))[k].se == 0.02


def fluke_sweep():
    """Issue 17 in small: 20 calibration problems; majority@8 solves 70% of them, a beam config at 8 (4x the
    FLOPs: the PRM) one problem more by luck. Held out, majority@8 still solves 70%, beam@8 10 points less
    (issue 17's fluke lost 12)."""
    calib, held = [], []  # exactly 20 of each: ids taken as the split puts them, until both are full
    for i in range(200):
        c, h = split_problems([f"q{i:03d}"], 0.5, 0)
        for part, got in ((calib, c), (held, h)):
            if got and len(part) < 20:
                part.extend(got)
    ids = calib + held
    share = {("cot", 1): 0.25, ("majority", 1): 0.3, ("majority", 2): 0.4, ("majority", 4): 0.5,
             ("majority", 8): 0.7, ("beam(m=2)/prm_last_max", 4): 0.5, ("beam(m=2)/prm_last_max", 8): 0.6}
    counts = {group: {k: round(f * len(ids_)) for k, f in share.items()} for group, ids_ in
              (("calib", calib), ("held", held))}
    counts["calib"][("beam(m=2)/prm_last_max", 8)] = counts["calib"][("majority", 8)] + 1  # the fluke
    cells = []
    for (config, b) in share:
        tree = config.startswith("beam")
        for group, members in (("calib", calib), ("held", held)):
            for pid, a in solved(members, counts[group][(config, b)]).items():
                cells.append(cell(pid, config, b, a, "beam" if tree else None, "prm_last_max" if tree else None,
                                  400.0 if tree else 100.0, m=2 if tree else None))
    return sweep_of(cells, ids, holdout=0.5), calib, held


def test_one_se_rule_prefers_the_cheap_consistent_config_over_a_calibration_fluke():
    sw, calib, held = fluke_sweep()
    assert len(calib) == len(held) == 20
    on, off = calibrate(sw), calibrate(sw, one_se=False)
    assert on.one_se and not off.one_se
    for table, want in ((on, "majority"), (off, "beam(m=2)/prm_last_max")):
        for row in (table.fixed, table.table[ALL], table.table["medium"], table.robust):
            assert (row[8].config, row[8].budget) == (want, 8), (table.one_se, row[8])
    # one problem more of ~20 is well inside one SE (~0.1): the rule pays a quarter of the FLOPs for it
    fluke = mean_accuracy(sw.cells, set(calib))[("beam(m=2)/prm_last_max", 8)]
    assert fluke.accuracy - on.fixed[8].accuracy == pytest.approx(1 / len(calib)) and fluke.se > 1 / len(calib)
    # and held out the fluke loses: the rule's fixed config is 10 points better at N=8
    acc = {t.one_se: {p.budget: p.accuracy for p in evaluate(sw, t).curve(FIXED)} for t in (on, off)}
    assert (acc[True][8], acc[False][8]) == (pytest.approx(0.7), pytest.approx(0.6))


def test_the_rule_reaches_every_row_and_cross_validations_inner_choices(monkeypatch):
    seen: list[bool] = []
    real = calibration.best_within

    def spy(acc, budget, one_se=False):
        seen.append(one_se)
        return real(acc, budget, one_se)

    monkeypatch.setattr(calibration, "best_within", spy)
    sw, _calib, _held = fluke_sweep()
    for flag in (True, False):
        seen.clear()
        calibrate(sw, one_se=flag)  # lambda by cross-validation: choose_rows on every fold too
        assert seen and set(seen) == {flag}
        assert len(seen) > 5 * 4 * 6  # folds x budgets x lambdas at least: cross-validation went through it


def test_the_rule_is_recorded_and_tables_saved_before_it_load(tmp_path):
    from testtime.optimal.tables import shipped_table

    sw, _calib, _held = fluke_sweep()
    back = Table.load(calibrate(sw).save(tmp_path / "t.json"))
    assert back.one_se is True and Table.load(calibrate(sw, one_se=False).save(tmp_path / "u.json")).one_se is False
    # a table saved before the rule (no one_se, no allocation field): it chose by the plain best
    d = json.loads(shipped_table(None, None).read_text())
    for key in ("one_se", "allocation"):
        d.pop(key, None)
    (tmp_path / "old.json").write_text(json.dumps(d))
    old = Table.load(tmp_path / "old.json")
    assert old.one_se is False and old.allocation is None and old.fixed
    assert Table.load(shipped_table(None, None)).one_se is True  # the shipped one is calibrated with it
