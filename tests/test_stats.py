"""Intervals, paired tests and small-sample warnings (testtime.stats), and where they reach: the report, the
calibrated table and the selector, `run --json`, PRM AUROC."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest
from typer.testing import CliRunner

import testtime.policy
from fakes import ScriptedPolicy
from test_calibrate import synthetic_sweep
from testtime import stats
from testtime.cli import app
from testtime.datasets import load_dataset
from testtime.errors import ConfigError
from testtime.optimal.analysis import build_report, efficiency_interval
from testtime.optimal.calibrate import ROBUST_UNRELIABLE, TABLE_RULE, HeldoutPoint, calibrate, decide
from testtime.optimal.report import ReportDataError, from_dict, render_html
from testtime.probe.metrics import auroc, auroc_ci

# --- coverage on simulated data ----------------------------------------------------------------------


def _coverage(p: float | list[float], n: int, sims: int, strata: list[str] | None) -> float:
    rng = np.random.default_rng(2026)
    truth = float(np.mean(p)) if isinstance(p, list) else p
    probs = np.repeat(p, n // len(p)) if isinstance(p, list) else np.full(n, p)
    hits = 0
    for i in range(sims):
        x = (rng.random(n) < probs).astype(float)
        iv = stats.mean_ci(x, strata, seed=i, n_resamples=1000)
        hits += iv.low <= truth <= iv.high
    return hits / sims


def test_a_95_percent_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    # 1,000 seeded simulations of 100 problems with a known accuracy of 30%
    assert 0.93 <= _coverage(0.3, 100, 1000, None) <= 0.97


def test_stratified_interval_covers_the_true_accuracy_too():
    # two bins of 60 problems, 80% and 20% right: the truth is 50%, resampled within each bin
    strata = ["easy"] * 60 + ["hard"] * 60
    assert 0.93 <= _coverage([0.8, 0.2], 120, 1000, strata) <= 0.97


def test_an_interval_narrows_with_more_problems_and_widens_with_the_level():
    small = stats.mean_ci([1, 0] * 10)
    large = stats.mean_ci([1, 0] * 200)
    assert small.estimate == large.estimate == 0.5
    assert (large.high - large.low) < (small.high - small.low) / 3
    wide = stats.mean_ci([1, 0] * 10, confidence=0.99)
    assert wide.low < small.low and wide.high > small.high
    assert stats.mean_ci([1, 0] * 10, seed=3) == stats.mean_ci([1, 0] * 10, seed=3)  # seeded


def test_no_variation_gets_the_exact_binomial_interval_not_a_zero_width_one():
    iv = stats.mean_ci([1.0] * 8)
    assert iv.method == stats.EXACT and iv.estimate == 1.0 and iv.high == 1.0
    assert iv.low == pytest.approx(0.025 ** (1 / 8))  # Clopper-Pearson lower bound at x = n
    zero = stats.mean_ci([0.0] * 8)
    assert zero.low == 0.0 and zero.high == pytest.approx(1 - 0.025 ** (1 / 8))
    # strata that are each constant would give a zero-width stratified interval: the strata are dropped
    mixed = stats.mean_ci([1.0] * 6 + [0.0] * 6, ["easy"] * 6 + ["hard"] * 6)
    assert mixed.low < 0.5 < mixed.high
    # bins under 10 problems are not strata at all: the same interval as without them
    small = [1.0] * 5 + [0.0, 1.0] * 3 + [0.0] * 6
    assert stats.mean_ci(small, ["a"] * 5 + ["b"] * 6 + ["c"] * 6) == stats.mean_ci(small)
    big = [1.0] * 9 + [0.0] + [0.0] * 9 + [1.0]
    assert stats.mean_ci(big, ["a"] * 10 + ["b"] * 10) != stats.mean_ci(big)


def test_bad_confidence_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError) as e:
        stats.mean_ci([0, 1], confidence=1.5)
    assert e.value.field == "ci"
    with pytest.raises(ValueError):
        stats.mean_ci([])


# --- paired comparisons --------------------------------------------------------------------------


def test_mcnemar_exact_counts_only_discordant_problems():
    # 12 problems a solves and b does not, 1 the other way, 30 where both agree
    a = [1] * 12 + [0] + [1] * 15 + [0] * 15
    b = [0] * 12 + [1] + [1] * 15 + [0] * 15
    t = stats.mcnemar_exact(a, b)
    assert (t.better, t.worse) == (12, 1)
    assert t.p_value == pytest.approx(2 * (comb(13, 12) + comb(13, 13)) / 2**13)
    c = stats.compare_paired(a, b)
    assert c.significant and c.difference.estimate == pytest.approx(11 / 43) and c.difference.low > 0
    # the concordant problems do not matter to the test: only the 13 discordant ones
    assert stats.mcnemar_exact(a[:13], b[:13]).p_value == t.p_value


def test_a_balanced_difference_is_not_significant():
    a = [1] * 5 + [0] * 5 + [1] * 20
    b = [0] * 5 + [1] * 5 + [1] * 20
    c = stats.compare_paired(a, b)
    assert c.test.p_value == 1.0 and not c.significant
    assert c.difference.estimate == 0.0 and c.difference.low < 0 < c.difference.high
    same = stats.compare_paired([1, 0, 1], [1, 0, 1])
    assert same.test == stats.PairedTest(0, 0, 1.0) and not same.significant


def test_paired_beats_unpaired_when_the_same_problems_are_hard():
    # b is right on a strict subset of a's problems: unpaired intervals overlap, the paired one excludes 0
    a = [1] * 30 + [0] * 30
    b = [1] * 22 + [0] * 38
    ia, ib = stats.mean_ci(a), stats.mean_ci(b)
    assert ia.low < ib.high  # overlapping
    c = stats.compare_paired(a, b)
    assert c.difference.low > 0 and c.significant and (c.test.better, c.test.worse) == (8, 0)


def test_fractional_accuracies_use_the_sign_test():
    t = stats.mcnemar_exact([0.5, 0.75, 0.25, 1.0], [0.25, 0.75, 0.5, 0.0])
    assert (t.better, t.worse) == (2, 1)


def test_wins_headline_counts_better_and_significant():
    sig = stats.compare_paired([1] * 20, [0] * 20)
    better = stats.compare_paired([1, 1, 0, 1], [1, 0, 1, 0])
    worse = stats.compare_paired([0, 0, 1], [1, 0, 1])
    tie = stats.compare_paired([1, 0], [1, 0])
    assert stats.wins_headline([sig, better, better, worse, tie]) == "better at 3 of 5 budgets, significant at 1"
    assert "significantly worse at 1" in stats.wins_headline([stats.compare_paired([0] * 20, [1] * 20)])


# --- warnings' thresholds --------------------------------------------------------------------------


def test_warning_thresholds():
    assert stats.small_sample_warnings(n_heldout=30) == []
    (w,) = stats.small_sample_warnings(n_heldout=29)
    assert "29 held-out problems (< 30)" in w
    assert stats.small_sample_warnings(bin_support={"easy": 10, "hard": 40}) == []
    (w,) = stats.small_sample_warnings(bin_support={"easy": 10, "medium": 9})
    assert "'medium': 9 calibration problems (< 10)" in w
    above = stats.Interval(3.0, 1.1, 8.0)
    touching = stats.Interval(3.0, 1.0, 8.0)
    assert stats.small_sample_warnings(efficiency={"gain": above}) == []
    (w,) = stats.small_sample_warnings(efficiency={"gain": touching})
    assert "includes 1x" in w


def test_thin_bins_are_unreliable_and_the_selector_takes_the_robust_choice():
    table = calibrate(synthetic_sweep())
    table.support = {"easy": 9, "hard": 10}
    assert table.unreliable("easy") and not table.unreliable("hard") and table.unreliable("medium")
    got = decide(table, 4, {"a": 0.9, "b": 0.0}, None)
    assert got["a"] == (table.robust[4], ROBUST_UNRELIABLE)
    assert got["b"] == (table.choice("hard", 4), TABLE_RULE)
    assert decide(table, 4, {"a": 0.9}, None, reliability=False)["a"] == (table.choice("easy", 4), TABLE_RULE)
    table.support = {"easy": 10, "hard": 10}
    assert decide(table, 4, {"a": 0.9}, None)["a"][1] == TABLE_RULE


def test_a_table_records_its_bin_support_and_old_tables_count_their_profile(tmp_path):
    table = calibrate(synthetic_sweep())
    assert sum(table.support.values()) == len(table.calibration_ids)
    from testtime.optimal.calibrate import Table

    loaded = Table.load(table.save(tmp_path / "t.json"))
    assert loaded.support == table.support
    loaded.support = {}  # a table from before: its profile's bins give the same counts
    assert loaded.bin_support() == table.support


# --- the report --------------------------------------------------------------------------------------


def test_report_carries_intervals_warnings_and_marks_thin_bins():
    sw = synthetic_sweep()
    data = build_report(sw, calibrate(sw))
    points = [(label, name, p) for label, by in data["curves"].items() for name, curve in by.items() for p in curve]
    assert len(points) >= 10  # the loop below must have curves to check
    for label, name, p in points:
        assert p["ci"][0] - 1e-9 <= p["accuracy"] <= p["ci"][1] + 1e-9, (label, name, p)
    assert all("ci" in p for p in data["frontier"]["all"])
    m = data["metrics"]
    assert "[" in m["performance gain over CoT at N=4 (predicted bins)"]
    assert m["compute-optimal (predicted) vs best fixed"].startswith("better at ")
    assert "significant at" in m["compute-optimal (predicted) vs best fixed"]
    calib = data["tables"][0]
    assert all("UNRELIABLE" in row[0] for row in calib["rows"] if row[0] != "all")  # 5 calibration problems each
    assert any("held-out problems (< 30)" in w for w in data["warnings"])
    assert any("'easy'" in w and "(< 10)" in w for w in data["warnings"])
    assert f"rest on {len(calibrate(sw).holdout_ids)} held-out problems" in data["how_sure"]
    assert data["intervals"]["vs best fixed"]  # per budget, as data for --json
    page = render_html(from_dict(data), [])
    assert 'id="how-sure"' in page and "held-out problems (&lt; 30)" in page
    json.dumps(data)  # the report model stays JSON-able


def test_report_model_refuses_an_interval_that_misses_its_estimate():
    good = {"curves": {"all": {"x": [{"budget": 1, "accuracy": 0.5, "ci": [0.4, 0.6]}]}}}
    assert from_dict(good)["curves"]["all"]["x"][0]["ci"] == [0.4, 0.6]
    bad = {"curves": {"all": {"x": [{"budget": 1, "accuracy": 0.5, "ci": [0.6, 0.7]}]}}}
    with pytest.raises(ReportDataError, match=r"curves\['all'\]\['x'\]\[0\]\.ci"):
        from_dict(bad)
    with pytest.raises(ReportDataError, match="expected \\[low, high\\]"):
        from_dict({"curves": {"all": {"x": [{"budget": 1, "accuracy": 0.5, "ci": [0.4]}]}}})


def _curve(per_budget: dict[int, list[float]], ids: list[str]) -> list[HeldoutPoint]:
    return [HeldoutPoint(budget=b, accuracy=float(np.mean(v)), tokens=0.0, flops=0.0,
                         per_problem=dict(zip(ids, v, strict=True))) for b, v in per_budget.items()]


def test_efficiency_gain_interval_includes_1_on_few_problems_and_excludes_it_on_many():
    def case(n: int) -> stats.Interval | None:
        ids = [f"p{i}" for i in range(n)]
        rng = np.random.default_rng(0)
        # majority reaches its best (60%) only at N=16; the optimal curve is there at N=2
        maj = _curve({b: list((rng.random(n) < a).astype(float)) for b, a in ((1, 0.3), (4, 0.45), (16, 0.6))}, ids)
        opt = _curve({b: list((rng.random(n) < a).astype(float)) for b, a in ((1, 0.35), (2, 0.7), (16, 0.75))}, ids)
        return efficiency_interval(maj, opt, ids, {i: "all" for i in ids})

    few, many = case(12), case(400)
    assert few is not None and many is not None
    assert few.low <= 1.0 < few.high  # a dozen problems cannot show the gain
    assert many.low > 1.0 and many.contains(many.estimate)


# --- run --json ------------------------------------------------------------------------------------


def test_run_json_has_accuracy_intervals(tmp_path, monkeypatch):
    problems = load_dataset("arith", limit=10)
    # right on the first 6, wrong on the rest
    script = {p.question: [str(p.answer) if i < 6 else "-1"] for i, p in enumerate(problems)}
    monkeypatch.setattr(testtime.policy, "load_policy", lambda model=None, **_k: ScriptedPolicy(script))
    runner = CliRunner()
    base = ["run", "--dataset", "arith", "--limit", "10", "--strategy", "majority", "--n", "1", "--out",
            str(tmp_path), "--json"]
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert s["accuracy"] == pytest.approx(0.6) and s["ci"] == 0.95
    low, high = s["accuracy_ci"]
    assert 0.2 < low < 0.6 < high < 1.0
    assert set(s["by_level"]) == {"1", "2", "3", "4", "5"}  # arith's first 10: two of each level
    for level, row in s["by_level"].items():
        lo, hi = row["accuracy_ci"]
        assert lo <= row["accuracy"] <= hi, level
    narrow = json.loads(runner.invoke(app, [*base, "--ci", "0.5"]).stdout.strip().splitlines()[-1])
    assert narrow["ci"] == 0.5 and low < narrow["accuracy_ci"][0] and narrow["accuracy_ci"][1] < high
    assert "accuracy [95% CI]" in runner.invoke(app, base[:-1]).stdout


def test_run_refuses_a_bad_ci_before_loading_a_model(tmp_path, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("loaded a model")

    monkeypatch.setattr(testtime.policy, "load_policy", refuse)
    res = CliRunner().invoke(app, ["run", "--ci", "95", "--out", str(tmp_path)])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --ci 95") and "Traceback" not in res.output


# --- PRM AUROC ---------------------------------------------------------------------------------------


def test_auroc_interval_resamples_problems():
    rng = np.random.default_rng(1)
    groups = [f"q{i // 10}" for i in range(400)]  # 40 problems, 10 steps each
    labels = rng.random(400) < 0.4
    informative = labels + rng.normal(0, 0.8, 400)
    iv = auroc_ci(informative, labels, groups)
    assert iv is not None and iv.estimate == pytest.approx(auroc(informative, labels))
    assert 0.5 < iv.low < iv.estimate < iv.high < 1.0
    noise = auroc_ci(rng.random(400), labels, groups)
    assert noise is not None and noise.low < 0.5 < noise.high
    within = auroc_ci(informative, labels, groups, within_group=True)
    assert within is not None and within.low > 0.5
    assert auroc_ci([0.1, 0.2], [1, 1], ["a", "b"]) is None  # one class only: no AUROC, no interval


def test_report_cli_prints_how_sure_and_json_intervals(tmp_path):
    path = synthetic_sweep().save(tmp_path / "sweep-synthetic.json")
    res = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "report"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert any("held-out problems (< 30)" in w for w in info["warnings"])
    lo, hi = info["intervals"]["probe bin accuracy"]["ci"]
    assert lo <= info["intervals"]["probe bin accuracy"]["estimate"] <= hi
    per_budget = info["intervals"]["vs best fixed"].values()
    assert per_budget and all({"difference", "ci", "p_value", "significant"} <= set(v) for v in per_budget)
    assert "warning:" in res.output and "These figures rest on" in res.output  # the human part: stderr


def test_step_auroc_reports_intervals_over_problems():
    from testtime.probe.labels import LabeledSolution
    from testtime.probe.pipeline import step_auroc

    sols, rewards = [], []
    rng = np.random.default_rng(0)
    for i in range(12):  # 12 problems, a right and a wrong solution each, steps ranked mostly right
        for ok in (1, 0):
            sols.append(LabeledSolution(f"p{i}", "q", "5", "number", 1, ok, ["x", "y"], [ok, ok], [ok, ok], [4, 0],
                                        bool(ok), "eos"))
            rewards.append(list(0.3 * ok + rng.random(2)))
    res = step_auroc(sols, rewards)
    for key in ("auroc", "auroc_intermediate", "auroc_within_problem"):
        lo, hi = res[f"{key}_ci"]
        assert lo <= res[key] <= hi and hi - lo > 0.01, key
    one_class = step_auroc(sols[:1], rewards[:1])  # one problem, positives only: no AUROC, no interval
    assert one_class["auroc"] is None and one_class["auroc_ci"] is None


def test_curves_with_intervals_are_drawn_with_bands():
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from testtime.optimal.report.plots import draw_panel, strategy_colors

    pts = [{"budget": b, "accuracy": a, "flops": 1e9 * b, "ci": [a - 0.1, a + 0.1]} for b, a in ((1, 0.3), (4, 0.5))]
    data = from_dict({"curves": {"all": {"x": pts, "y": [{k: v for k, v in p.items() if k != "ci"} for p in pts]}}})
    fig, ax = plt.subplots()
    draw_panel(ax, data, "all", "budget", strategy_colors(data))
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # "x" has intervals, "y" has none
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(20.0) and ys.max() == pytest.approx(60.0)  # percent, low and high
    plt.close(fig)


def test_run_optimal_json_has_intervals_overall_and_per_bin(tmp_path, monkeypatch):
    from test_calibrate import _choice
    from testtime.optimal.calibrate import ALL, Predictor, Table
    from testtime.reward import ArithCheck

    problems = load_dataset("arith", limit=2)
    script = {problems[0].question: ["9"], problems[1].question: ["1", "2", "3", "4", "5"]}
    monkeypatch.setattr(testtime.policy, "load_policy", lambda model=None, **_k: ScriptedPolicy(script))
    cot, maj = _choice("cot", "cot", 1), _choice("majority", "majority", 4)
    table = Table(policy=ScriptedPolicy.model_id, prm=ArithCheck().name, oracle_prm=False, dataset="arith", recipe="t",
                  easy=0.5, hard=0.1, budgets=[1, 4], table={"easy": {4: cot}, "medium": {4: maj}, ALL: {4: maj}},
                  fixed={}, predictor=Predictor(4, [0.0, 1.0, 0.0], True), calibration_ids=[], holdout_ids=[])
    path = table.save(tmp_path / "t.json")
    res = CliRunner().invoke(app, ["run", "--strategy", "optimal", "--table", str(path), "--budget", "4", "--prm",
                                   "arith-check", "--limit", "2", "--fewshot", "0", "--max-tokens", "64", "--out",
                                   str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert s["accuracy"] == 0.5 and s["ci"] == 0.95
    assert s["accuracy_ci"][0] <= 0.5 <= s["accuracy_ci"][1]
    assert set(s["by_bin_ci"]) == set(s["by_bin"]) == {"easy", "medium"}
    lo, hi = s["by_bin_ci"]["easy"]  # one problem, right: the exact interval of 1 of 1
    assert hi == 1.0 and lo == pytest.approx(0.025)


def test_prm_eval_compares_best_of_n_with_majority_on_the_same_problems():
    from types import SimpleNamespace as NS

    from testtime.probe.pipeline import _bon_vs_majority

    def run(correct: list[int]) -> NS:
        return NS(results=[NS(problem=NS(id=f"p{i}", level=1 + i % 2), trace=NS(correct=bool(c)))
                           for i, c in enumerate(correct)])

    bon, maj = [1] * 10 + [0] * 30, [0] * 10 + [0] * 30  # BoN right on 10 problems majority missed
    out = _bon_vs_majority(run(bon), run(maj))
    d = out["bon_minus_majority"]
    assert (d["better"], d["worse"]) == (10, 0) and d["significant"] and d["ci"][0] > 0
    assert d["p_value"] == pytest.approx(2 / 2**10)
    assert out["bon_ci"][0] <= 0.25 <= out["bon_ci"][1] and out["majority_ci"][0] == 0.0
    assert _bon_vs_majority(run(bon), run(maj[:5])) == {}  # not the same problems: no paired comparison


def test_calibrate_cli_marks_thin_bins_and_warns(tmp_path):
    path = synthetic_sweep().save(tmp_path / "sweep-synthetic.json")
    res = CliRunner().invoke(app, ["calibrate", str(path)])
    assert res.exit_code == 0, res.output
    assert "unreliable" in res.output and "(< 10)" in res.output and "held-out problems (< 30)" in res.output


def test_seed_spread_is_the_spread_of_per_seed_means():
    # three problems, three seeds: per-seed means 2/3, 1/3, 1
    s = stats.seed_spread([[1, 0, 1], [1, 1, 1], [0, 0, 1]])
    assert s is not None
    assert s.per_seed == pytest.approx((2 / 3, 1 / 3, 1.0))
    assert s.sd == pytest.approx(float(np.std([2 / 3, 1 / 3, 1.0], ddof=1)))
    assert (s.low, s.high) == pytest.approx((1 / 3, 1.0))
    assert s.text() == "seeds: sd 33.3 pts, 33-100% over 3"
    assert stats.seed_spread([[1.0], [0.0]]) is None  # one seed: no spread
    assert stats.seed_spread([[1.0, 0.0], [1.0]]) is None  # a problem missing a seed
    assert stats.seed_spread([]) is None
    assert stats.seed_spread([[0.5, 0.5], [1.0, 1.0]]).sd == 0.0
