"""`testtime demo` on a scripted policy: the main job end to end -- a table with a difficulty model, fresh
problems, CoT / majority@N / uniform Best-of-N / compute-optimal allocation from one pool, paired figures,
the report with where the budget went."""

from __future__ import annotations

import pytest

import testtime.policy
from fakes import ScriptedPolicy
from test_cli_unit import last_json, runner
from testtime.cli import app
from testtime.datasets import load_dataset
from testtime.errors import ConfigError
from testtime.optimal.allocation import allocation_model, fit_allocation
from testtime.optimal.calibrate import Table, calibrate
from testtime.optimal.demo import demo_config
from testtime.optimal.sweep import Cell, ProblemInfo, SweepResult
from testtime.reward import ArithCheck

# pass@1 by level in the synthetic calibration sweep; Best-of-N pays on levels 2-3 only
PASS1 = {1: 0.95, 2: 0.4, 3: 0.2, 4: 0.0, 5: 0.0}


def synthetic_table(tmp_path, policy_id: str = ScriptedPolicy.model_id):
    """A table calibrated on a synthetic sweep over real arith problems (seed 0), with its difficulty model."""
    problems = load_dataset("arith", limit=60, seed=0)
    cells, infos = [], []
    for p in problems:
        q = PASS1[p.level]
        infos.append(ProblemInfo(p.id, p.level, q, q, 0.5, 1.0, "arith"))
        cells.append(Cell(p.id, "cot", "cot", None, None, 1, q, 40.0, 1e10))
        for k in (1, 2, 4):
            bon = 1 - (1 - q) ** k if p.level in (2, 3) else q
            cells.append(Cell(p.id, "majority", "majority", None, None, k, q, 40.0 * k, 1e10 * k))
            cells.append(Cell(p.id, "best_of_n/prm_min_vote", "best_of_n", None, "prm_min_vote", k, bon, 40.0 * k,
                              1.1e10 * k))
    recipe = {"name": "synthetic", "dataset": "arith", "limit": 60, "seed": 0, "holdout": 0.25,
              "difficulty": {"easy": 0.5, "hard": 0.1, "probe_n": 4}}
    sweep = SweepResult(recipe, policy_id, ArithCheck().name, False, infos, cells, [], 0.0)
    table = fit_allocation(calibrate(sweep), [sweep], hidden=False)
    return table, table.save(tmp_path / "table.json")


def test_demo_runs_the_main_job_and_prints_where_the_report_is(tmp_path, monkeypatch):
    table, path = synthetic_table(tmp_path)
    model = allocation_model(table)
    assert model.reference == "best_of_n/prm_min_vote"
    # persisted with the table, whole: the reloaded model predicts the same
    assert allocation_model(Table.load(path)).to_dict() == model.to_dict()
    assert {"question", "probe", "both"} == set(model.models) and model.default in model.models
    assert all(model.report[k]["heldout_allocation"] for k in model.models)  # how the default was chosen
    # the minimum gain: the largest on the grid whose held-out allocations lose nothing beyond noise
    grid = model.min_gain_report
    assert str(model.min_gain) in grid and set(grid) >= {"0.0", str(model.min_gain)}
    chosen, spend_all = grid[str(model.min_gain)], grid["0.0"]
    assert chosen["flops"] <= spend_all["flops"] and chosen["accuracy"] >= spend_all["accuracy"] - 0.05
    problems = load_dataset("arith", limit=10, seed=7)
    # levels 2-3 answered right by the second and fourth sample only; level 1 always right; 4-5 never
    script = {p.question: ([p.answer] if p.level == 1 else ["x", p.answer, "y", p.answer] if p.level in (2, 3)
                           else ["x"]) for p in problems}
    policy = ScriptedPolicy(script)
    monkeypatch.setattr(testtime.policy, "load_policy", lambda model=None, **_k: policy)
    args = ["demo", "--limit", "10", "--n", "4", "--table", str(path), "--out", str(tmp_path / "demo"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    s = last_json(result.stdout)
    assert s["n_problems"] == 10 and s["headline_budget"] == 4 and s["reference"] == "best_of_n/prm_min_vote"
    series = {(r["series"], r["budget"]) for r in s["rows"]}
    for b in (1, 2, 4):
        assert {("majority@N", b), ("uniform Best-of-N", b), ("compute-optimal (allocated)", b)} <= series
    assert ("cot", 1) in series
    # at an average budget of 2, the easy and the hopeless levels get less than the middle ones, where
    # Best-of-N pays; at the top of the menu (4) there is budget for everyone's most useful config
    level = {p.id: p.level for p in problems}
    samples = {pid: int(c.rsplit("@", 1)[1]) * (c != "cot@1") for pid, c in s["given"]["2"].items()}
    # every level is among the allocated problems, so none of the three checks below holds vacuously
    assert sorted({level[pid] for pid in samples}) == [1, 2, 3, 4, 5] and len(samples) == 10
    assert all(samples[pid] <= 1 for pid in samples if level[pid] == 1)
    assert all(samples[pid] >= 2 for pid in samples if level[pid] in (2, 3))
    assert all(samples[pid] <= 1 for pid in samples if level[pid] in (4, 5))
    assert set(s["budget_by_level_per_budget"]) == {"1", "2", "4"}
    assert set(s["paired"]) >= {"uniform Best-of-N@4", "majority@N@4", "cot"}
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
    assert s["report"].endswith("report.html") and len(s["plots"]) == 2
    for text in ("compute-optimal", "where the budget went", "report.html", "FLOPs compute-optimal needs"):
        assert text in result.stderr
    generated = policy.n_generated
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and policy.n_generated == generated  # a rerun replays everything
    assert last_json(again.stdout)["rows"] == s["rows"]


def test_demo_checks_its_options():
    with pytest.raises(ConfigError) as e:
        demo_config(limit=0)
    assert e.value.field == "limit"
    with pytest.raises(ConfigError) as e:
        demo_config(n=1)
    assert e.value.field == "n"
