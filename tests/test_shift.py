"""Shift detection against the calibration record, and the selector's fallback rules."""

from __future__ import annotations

import random

import pytest

from test_calibrate import synthetic_sweep
from testtime.errors import ConfigError
from testtime.optimal.calibrate import PRM_FREE, ROBUST_SHIFT, ROBUST_UNCERTAIN, TABLE_RULE, calibrate, decide
from testtime.optimal.shift import Profile, check_shift, ks_critical, ks_statistic


def test_ks_statistic_hand_computed():
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_statistic([0, 0, 0], [1, 1, 1]) == 1.0
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ks_statistic([], [1.0])
    assert ks_critical(100, 100) == pytest.approx(1.628 * (200 / 10000) ** 0.5)


def profile(n=80, seed=0):
    rng = random.Random(seed)
    agreement = [rng.choice([0.25, 0.5, 0.75, 1.0]) for _ in range(n)]
    return Profile(agreement=agreement, probe_score=[rng.uniform(0.2, 0.9) for _ in range(n)],
                   prm_agrees=[1.0 if rng.random() < 0.7 else 0.0 for _ in range(n)], bins=["medium"] * n,
                   kinds={"arith": n}, prompt={"fewshot": 3, "system": None, "instruction": None})


def test_same_distribution_is_not_a_shift():
    cal = profile()
    new = profile(60, seed=1)  # fresh draws from the same distributions
    shift = check_shift(cal, new.agreement, new.probe_score, new.prm_agrees, ["arith"] * 60,
                        {"fewshot": 3, "system": None, "instruction": None})
    assert not shift.shifted and shift.score < 1.0 and shift.notes == []
    assert set(shift.components) == {"agreement", "probe_score", "prm_agreement"}


def test_a_known_shift_is_flagged_and_its_component_named():
    cal = profile()
    rng = random.Random(2)
    # every new problem looks easy to the probe (all samples agree, high step rewards): the calibration had few
    shift = check_shift(cal, [1.0] * 60, [rng.uniform(0.9, 1.0) for _ in range(60)], [1.0 if rng.random() < 0.7
                                                                                      else 0.0 for _ in range(60)])
    assert shift.shifted and shift.components["agreement"] > 1.0 and shift.components["probe_score"] > 1.0
    assert not shift.prm_moved  # the PRM still agrees with the majority as often as in calibration
    moved = check_shift(cal, cal.agreement[:60], cal.probe_score[:60], [0.0] * 60)
    assert moved.prm_moved and moved.raw["prm_agreement"] == pytest.approx(-cal.prm_agreement)


def test_small_batches_are_not_flagged_on_noise():
    cal = profile()
    # one request: even a maximal KS distance of 1 is below the critical value for n = 1
    assert not check_shift(cal, [0.0], [0.0], [1.0]).shifted


def test_kind_and_prompt_changes_are_said():
    cal = profile()
    s = check_shift(cal, cal.agreement, cal.probe_score, cal.prm_agrees, ["number"], {"fewshot": 0})
    assert s.shifted and len(s.notes) == 2 and "number" in s.notes[0] and "fewshot" in s.notes[1]


def test_decide_follows_the_table_without_shift_and_falls_back_with_it():
    table = calibrate(synthetic_sweep())
    table.support = {"easy": 10, "hard": 10}  # bins big enough to be trusted (see test_stats for thin ones)
    pass1 = {"a": 0.9, "b": 0.0, "c": 0.52}  # c: within the margin of the easy threshold 0.5
    calm = check_shift(table.profile, table.profile.agreement, table.profile.probe_score, [])
    got = decide(table, 4, pass1, calm)
    assert got["a"] == (table.choice("easy", 4), TABLE_RULE) and got["b"] == (table.choice("hard", 4), TABLE_RULE)
    assert got["c"] == (table.robust[4], ROBUST_UNCERTAIN)
    assert decide(table, 4, pass1, calm, margin=0.0)["c"][1] == TABLE_RULE
    shifted = check_shift(table.profile, [0.0] * 40, [0.0] * 40, [])
    assert shifted.shifted and {rule for _c, rule in decide(table, 4, pass1, shifted).values()} == {ROBUST_SHIFT}
    # a PRM whose agreement with the majority moved: the PRM-free choice, whatever the features say
    prm_moved = check_shift(Profile([0.5] * 40, [], [1.0] * 40, ["easy"] * 40), [0.5] * 40, [], [0.0] * 40)
    assert prm_moved.prm_moved
    assert {(c.strategy, rule) for c, rule in decide(table, 4, pass1, prm_moved).values()} == {("majority", PRM_FREE)}
    with pytest.raises(ConfigError):
        decide(table, 4, pass1, None, margin=-1)


def test_tables_without_fallbacks_keep_their_bins():
    table = calibrate(synthetic_sweep())
    table.robust, table.prm_free = {}, {}
    shifted = check_shift(table.profile, [0.0] * 40, [0.0] * 40, [])
    assert {rule for _c, rule in decide(table, 4, {"a": 0.52}, shifted).values()} == {TABLE_RULE}
