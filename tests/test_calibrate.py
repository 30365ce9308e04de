"""Calibration on a synthetic sweep with a known best cell per bin; held-out evaluation; the selector."""

from __future__ import annotations

import math

import pytest

from fakes import ScriptedPolicy
from testtime import engine
from testtime.datasets import load_dataset
from testtime.errors import ConfigError
from testtime.optimal.calibrate import (
    ALL,
    SHRINKAGE_GRID,
    Choice,
    Predictor,
    Table,
    best_within,
    calibrate,
    evaluate,
    folds,
    mean_accuracy,
    split_problems,
)
from testtime.optimal.selector import check_table, run_optimal
from testtime.optimal.sweep import Cell, ProblemInfo, SweepResult

EASY = [f"e{i:02d}" for i in range(12)]
HARD = [f"h{i:02d}" for i in range(12)]


def cell(pid, config, budget, acc, strategy=None, m=None, selection=None):
    strategy = strategy or config.split("/")[0].split("(")[0]
    return Cell(pid, config, strategy, m, selection, budget, acc, tokens=10.0 * budget, flops=100.0 * budget)


def synthetic_sweep() -> SweepResult:
    """Easy problems: CoT already solves them. Hard ones: only beam@4 solves them; majority@2 half of them."""
    cells = []
    for pid in EASY:
        cells.append(cell(pid, "cot", 1, 1.0))
        for b in (1, 2, 4):
            cells.append(cell(pid, "majority", b, 0.9))
            cells.append(cell(pid, "best_of_n/prm_min_max", b, 0.8, selection="prm_min_max"))
        for b in (2, 4):
            cells.append(cell(pid, "beam(m=2)/prm_last_max", b, 0.7, "beam", 2, "prm_last_max"))
    for i, pid in enumerate(HARD):
        cells.append(cell(pid, "cot", 1, 0.0))
        for b in (1, 2, 4):
            cells.append(cell(pid, "majority", b, 0.5 if b >= 2 and i % 2 == 0 else 0.0))
            cells.append(cell(pid, "best_of_n/prm_min_max", b, 0.0, selection="prm_min_max"))
        cells.append(cell(pid, "beam(m=2)/prm_last_max", 2, 0.0, "beam", 2, "prm_last_max"))
        cells.append(cell(pid, "beam(m=2)/prm_last_max", 4, 1.0, "beam", 2, "prm_last_max"))
    infos = [ProblemInfo(p, 1, 0.9, 1.0, 0.9) for p in EASY] + [ProblemInfo(p, 5, 0.0, 0.25, 0.1) for p in HARD]
    recipe = {"name": "synthetic", "dataset": "arith", "holdout": 0.5, "seed": 0,
              "difficulty": {"easy": 0.5, "hard": 0.1, "probe_n": 4}}
    return SweepResult(recipe, "policy-x", "prm-y", False, infos, cells, [], 0.0)


def test_split_is_stable_and_partitions():
    ids = EASY + HARD
    calib, held = split_problems(ids, 0.5, seed=0)
    assert sorted(calib + held) == sorted(ids) and not set(calib) & set(held)
    assert split_problems(list(reversed(ids)), 0.5, 0) == (sorted(calib, key=ids[::-1].index),
                                                           sorted(held, key=ids[::-1].index))
    assert split_problems(ids, 0.5, seed=1) != (calib, held)


def test_best_within_prefers_accuracy_then_smaller_budget():
    sw = synthetic_sweep()
    acc = mean_accuracy(sw.cells, set(EASY))
    assert best_within(acc, 4).config == "cot"  # 1.0 at budget 1 beats everything
    acc_h = mean_accuracy(sw.cells, set(HARD))
    assert (best_within(acc_h, 4).config, best_within(acc_h, 4).budget) == ("beam(m=2)/prm_last_max", 4)
    b2 = best_within(acc_h, 2)
    assert (b2.config, b2.budget, b2.accuracy) == ("majority", 2, 0.25)
    assert best_within(acc_h, 0) is None


def test_calibrate_finds_the_known_best_cells(tmp_path):
    sw = synthetic_sweep()
    table = calibrate(sw)
    assert set(table.table) == {"easy", "hard", ALL}
    assert {b: c.config for b, c in table.table["easy"].items()} == {1: "cot", 2: "cot", 4: "cot"}
    assert {b: (c.config, c.budget) for b, c in table.table["hard"].items()} == {
        1: ("cot", 1),  # every config scores 0 on hard at N=1: shrinkage breaks the tie by all problems
        2: ("majority", 2), 4: ("beam(m=2)/prm_last_max", 4)}
    assert table.choice("hard", 3).budget == 2 and table.choice("hard", 100).budget == 4
    with pytest.raises(ConfigError, match="budget 0: below the smallest"):
        table.choice("hard", 0)
    # the predictor learned pass@1 from agreement / probe score: it separates the two groups
    assert table.predictor.predict(1.0, 0.9) >= 0.5 > 0.1 > table.predictor.predict(0.25, 0.1)
    path = table.save(tmp_path / "t.json")
    again = Table.load(path)
    assert again.table["hard"][4] == table.table["hard"][4] and again.predictor == table.predictor
    assert again.prm == "prm-y" and again.policy == "policy-x"


def test_table_load_errors(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('{"kind": "something"}')
    with pytest.raises(ValueError, match="field kind"):
        Table.load(p)
    p.write_text("{nope")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        Table.load(p)
    with pytest.raises(ValueError, match="no such file"):
        Table.load(tmp_path / "missing.json")


def test_held_out_compute_optimal_beats_every_fixed_config(monkeypatch):
    sw = synthetic_sweep()
    table = calibrate(sw)
    # 12 problems per bin, half held out: every bin rests on < 10 calibration problems, so the selector
    # does not trust the bins and takes the robust choice everywhere
    assert all(n < 10 for n in table.bin_support().values())
    assert set(evaluate(sw, table).decided_by[4]) == {"robust: unreliable bin"}
    # with the reliability threshold lowered, the per-bin choices apply
    monkeypatch.setattr("testtime.optimal.calibrate.MIN_BIN_CALIBRATION", 1)
    ev = evaluate(sw, table)
    allc = ev.curves[ALL]
    opt = {p.budget: p.accuracy for p in allc["compute-optimal (oracle bins)"]}
    fixed = {p.budget: p.accuracy for p in allc["best fixed"]}
    assert all(opt[b] >= fixed[b] for b in fixed)
    assert opt[4] == 1.0 > fixed[4]  # easy -> CoT, hard -> beam@4: every held-out problem solved
    pred = {p.budget: p for p in allc["compute-optimal (predicted bins)"]}
    assert pred[4].accuracy == 1.0  # the probe predicts the right bins here
    assert pred[4].flops > allc["compute-optimal (oracle bins)"][-1].flops  # probe compute counted
    assert ev.confusion == [[sum(1 for p in table.holdout_ids if p in EASY), 0],
                               [0, sum(1 for p in table.holdout_ids if p in HARD)]]


def test_selector_refuses_another_prm_or_policy():
    table = calibrate(synthetic_sweep())
    with pytest.raises(ValueError, match="calibrated with PRM 'prm-y' but this run scores with 'arith-check'"):
        check_table(table, "policy-x", "arith-check", force=False)
    with pytest.raises(ValueError, match="calibrated for policy 'policy-x'"):
        check_table(table, "other", "prm-y", force=False)
    check_table(table, "other", "arith-check", force=True)


def _choice(config, strategy, budget, selection=None):
    return Choice(config, strategy, budget, None, selection, 1.0, 1)


def test_selector_runs_each_bins_choice_and_counts_the_probe(tmp_path):
    problems = load_dataset("arith", limit=2)
    policy = ScriptedPolicy({problems[0].question: ["9"], problems[1].question: ["1", "2", "3", "4", "5"]})
    from testtime.reward import ArithCheck

    table = Table(  # calibrated with the scorer's name (it carries the rules version)
        policy=policy.model_id, prm=ArithCheck().name, oracle_prm=False, dataset="arith", recipe="t", easy=0.5,
        hard=0.1,
        budgets=[1, 4],
        table={"easy": {1: _choice("cot", "cot", 1), 4: _choice("cot", "cot", 1)},
               "medium": {1: _choice("majority", "majority", 1), 4: _choice("majority", "majority", 4)},
               "hard": {1: _choice("majority", "majority", 1), 4: _choice("majority", "majority", 4)},
               ALL: {1: _choice("cot", "cot", 1), 4: _choice("majority", "majority", 4)}},
        fixed={}, predictor=Predictor(4, [0.0, 1.0, 0.0], True), calibration_ids=[], holdout_ids=[],
    )
    base = engine.RunConfig(dataset="arith", out=str(tmp_path), max_tokens=64, fewshot=0)
    res = run_optimal(table, 4, policy, ArithCheck(), problems, base)
    assert res.bins == {problems[0].id: "easy", problems[1].id: "medium"}  # agreement 1.0 and 0.25
    assert res.choices[problems[0].id].config == "cot" and res.choices[problems[1].id].budget == 4
    assert res.correct == {problems[0].id: True, problems[1].id: False}
    s = res.summary()
    assert s["accuracy"] == 0.5 and s["by_bin"]["easy"]["configs"] == {"cot@1": 1}
    assert s["probe_generated_tokens"] > 0 and s["generated_tokens"] > s["probe_generated_tokens"]
    assert len(res.run_ids) == 3  # the probe, then one run per distinct config


def test_sweep_over_seeds_averages_per_problem(tmp_path):
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import run_sweep

    problems = load_dataset("arith", limit=2)
    # seed-independent script: problem 0 always right, problem 1 right in 2 of 4 samples
    policy = ScriptedPolicy({problems[0].question: ["9"], problems[1].question: ["5", "1", "5", "2"]})
    recipe = load_recipe(None, ["seeds=[0, 1]", "n_max=4", "strategies=[cot, majority]", f"out={tmp_path}",
                                "prm=null", "limit=2", "name=seeds", "fewshot=0", "max_tokens=32"])
    seen = []
    sw = run_sweep(recipe, policy, None, problems, on_progress=lambda d, t, label: seen.append(label))
    assert len(sw.run_ids) == 4 and len(set(sw.run_ids)) == 4  # (pool, cot) x 2 seeds, distinct runs
    assert [p.pass1 for p in sw.problems] == [1.0, 0.5]  # one info per problem, seeds averaged
    # one cell per problem, both seeds' accuracies inside it (the script answers alike under every seed)
    maj4 = [c for c in sw.cells if c.config == "majority" and c.budget == 4]
    assert len(maj4) == 2 and all(c.seed_accuracies is not None and len(c.seed_accuracies) == 2 for c in maj4)
    assert any("seed 1" in label for label in seen)
    assert SweepResult.load(tmp_path / "sweep-seeds.json").cells == sw.cells  # round-trips with the seeds


def test_merge_seeds_averages_and_keeps_each_seeds_accuracy():
    from testtime.optimal.sweep import merge_seeds

    a0, a1 = cell("p", "majority", 4, 1.0), cell("p", "majority", 4, 0.0)
    a1.tokens, a1.flops = 30.0, 500.0
    b0 = cell("q", "cot", 1, 1.0)  # only seed 0 has it: averaged over what exists, no spread
    merged = {(c.problem_id, c.config): c for c in merge_seeds([(0, a0), (1, a1), (0, b0)], [0, 1])}
    m = merged[("p", "majority")]
    assert (m.accuracy, m.tokens, m.flops, m.seed_accuracies) == (0.5, 35.0, 450.0, [1.0, 0.0])
    assert merged[("q", "cot")].seed_accuracies is None and merged[("q", "cot")].accuracy == 1.0
    # seed order is the recipe's, not arrival order
    assert merge_seeds([(1, a1), (0, a0)], [0, 1])[0].seed_accuracies == [1.0, 0.0]
    assert merge_seeds([(0, a0), (0, b0)], [0]) == [a0, b0]  # one seed: cells untouched


def test_evaluate_sees_every_seed_and_the_report_shows_their_spread():
    """Before merging, evaluate() keyed cells by (problem, config, budget) and kept only the last seed's."""
    from testtime.optimal.analysis import build_report

    sw = synthetic_sweep()
    for c in sw.cells:  # two seeds: majority is right on seed 0 and wrong on seed 1 for easy problems
        if c.config == "majority" and c.problem_id in EASY:
            c.seed_accuracies, c.accuracy = [1.0, 0.0], 0.5
        else:
            c.seed_accuracies = [c.accuracy, c.accuracy]
    table = calibrate(sw)
    ev = evaluate(sw, table)
    held_easy = [p for p in table.holdout_ids if p in EASY]
    maj = {p.budget: p for p in ev.curve("majority")}
    assert all(maj[1].per_problem[p] == 0.5 for p in held_easy)
    report = build_report(sw, table)
    point = next(p for p in report["reference"][ALL]["majority"] if p["budget"] == 1)
    share = len(held_easy) / len(table.holdout_ids)
    spread = point["seed_spread"]
    assert spread["per_seed"][0] - spread["per_seed"][1] == pytest.approx(share)  # the easy share flips
    assert spread["sd"] == pytest.approx(share / math.sqrt(2))
    assert "per_seed" not in point and "per_problem" not in point
    row = next(r for r in report["tables"][1]["rows"] if r[0] == 1)
    assert any("seeds: sd" in str(x) for x in row)


# --- choices that generalise: shrinkage, minimum support, cross-validation, fallbacks -----------------


def test_thin_bins_take_the_all_problems_choice():
    sw = synthetic_sweep()
    table = calibrate(sw, min_support=6)  # 5 calibration problems per bin: too few to choose on their own
    for label in ("easy", "hard"):
        assert {b: c.config for b, c in table.table[label].items()} == {b: c.config for b, c in table.fixed.items()}
    assert table.min_support == 6


def test_shrinkage_pulls_a_bin_toward_all_problems():
    sw = synthetic_sweep()
    alone, pulled = calibrate(sw, shrinkage=0.0), calibrate(sw, shrinkage=math.inf)
    assert alone.table["easy"][4].config == "cot"  # the easy bin on its own: CoT solves it
    assert pulled.table["easy"][4].config == pulled.fixed[4].config == "beam(m=2)/prm_last_max"
    # lambda = 5 (= n_bin): half way between the bin's accuracy and the config's accuracy on all problems
    half = calibrate(sw, shrinkage=5.0).table["hard"][2]
    assert half.config == "majority" and half.accuracy == pytest.approx((0.4 + 0.65) / 2)  # hard 4/5 x 0.5
    with pytest.raises(ConfigError) as e:
        calibrate(sw, shrinkage=-1.0)
    assert e.value.field == "shrinkage"


def test_cross_validation_picks_lambda_and_prefers_the_conservative_on_ties():
    sw = synthetic_sweep()
    table = calibrate(sw)
    cv = {float(k): v for k, v in table.cv.items()}
    assert set(cv) == set(SHRINKAGE_GRID)
    best = max(cv.values())
    assert cv[table.shrinkage] == best and all(lam <= table.shrinkage for lam, a in cv.items() if a == best)
    # per-bin choices beat one choice for all here (easy -> CoT, hard -> beam): a finite lambda wins
    assert cv[0.0] > cv[math.inf] and not math.isinf(table.shrinkage)


def test_folds_are_stratified_and_stable():
    ids = [f"e{i}" for i in range(10)] + [f"h{i}" for i in range(10)]
    strata = {i: i[0] for i in ids}
    parts = folds(ids, 5, strata)
    assert sorted(p for f in parts for p in f) == sorted(ids)
    assert all(sum(p.startswith("e") for p in f) == 2 for f in parts)  # each bin spread evenly
    assert folds(list(reversed(ids)), 5, strata) == parts


def test_fallback_rows():
    table = calibrate(synthetic_sweep())
    # robust: the best mean over bins (each weighted equally), never a single bin's favourite
    assert table.robust[1].config == "cot" and table.robust[4].config == "beam(m=2)/prm_last_max"
    # prm_free: CoT or majority only, whatever the PRM-scored configs do
    assert {c.strategy for c in table.prm_free.values()} <= {"cot", "majority"}
    assert table.fallback("prm_free", 4).config == "majority" and table.fallback("robust", 0) is None


def test_table_with_profile_round_trips(tmp_path):
    table = calibrate(synthetic_sweep())
    back = Table.load(table.save(tmp_path / "t.json"))
    assert back == table
    assert back.profile is not None and len(back.profile.agreement) == len(table.calibration_ids)


def test_evaluate_reports_hindsight_and_every_fixed_config():
    from testtime.optimal.calibrate import FIXED, HINDSIGHT, OPT_PRED

    sw = synthetic_sweep()
    table = calibrate(sw)
    ev = evaluate(sw, table)
    allc = ev.curves[ALL]
    hind = {p.budget: p.accuracy for p in allc[HINDSIGHT]}
    fixed = {p.budget: p.accuracy for p in allc[FIXED]}
    assert all(hind[b] >= fixed[b] for b in fixed)  # hindsight is chosen on the held-out problems themselves
    # every fixed config that fits the budget, with its held-out accuracy; hindsight is the best of them
    for b, accs in ev.fixed_configs.items():
        assert all(int(k.rsplit("@", 1)[1]) <= b for k in accs)
        assert max(accs.values()) == pytest.approx(hind[b])
    assert "cot@1" in ev.fixed_configs[1] and "beam(m=2)/prm_last_max@4" in ev.fixed_configs[4]
    # the predicted-bin curve is what the selector does, fallbacks included: every held-out problem has a rule
    assert sum(ev.decided_by[4].values()) == ev.n_holdout == len(table.holdout_ids) and OPT_PRED in allc
    assert ev.shift is not None and ev.shift.n_batch == len(table.holdout_ids)


def test_the_shipped_table_loads_and_names_the_default_policy_and_prm():
    from testtime.optimal.tables import shipped_table

    table = Table.load(shipped_table(None, None))
    assert table.prm is not None and table.prm.startswith("arith-check")
    assert table.profile is not None and table.robust and table.prm_free
    # enough calibration problems in every bin to choose on their own (the issue asks for at least 10)
    counts = {b: table.profile.bins.count(b) for b in set(table.profile.bins)}
    assert min(counts.values()) >= 10, counts
    with pytest.raises(ConfigError) as e:
        shipped_table("gemma3-270m", "arith-check")
    assert e.value.field == "table"


def test_sweeps_of_one_policy_and_prm_merge_into_one_table():
    a = synthetic_sweep()
    b = synthetic_sweep()
    for p in b.problems:
        p.id = "b-" + p.id
    for c in b.cells:
        c.problem_id = "b-" + c.problem_id
    merged = SweepResult.merge([a, b])
    assert len(merged.problems) == 48 and len(merged.cells) == len(a.cells) + len(b.cells)
    assert merged.recipe["holdout"] == a.recipe["holdout"] and merged.recipe["name"] == "synthetic+synthetic"
    assert len(calibrate(merged).calibration_ids) > len(calibrate(a).calibration_ids)
    with pytest.raises(ConfigError, match="more than one sweep"):
        SweepResult.merge([a, a])
    other = synthetic_sweep()
    other.prm = "judge"
    with pytest.raises(ConfigError, match="one table is for one of each"):
        SweepResult.merge([a, other])
