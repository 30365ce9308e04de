"""The new strategies and selections through sweep -> calibrate -> report -> selector, on scripted fakes:
they enter the config space like the paper's ones, with their own costs."""

from __future__ import annotations

import re

import pytest

from fakes import ScriptedPolicy
from testtime import engine
from testtime.datasets import load_dataset
from testtime.optimal.analysis import build_report
from testtime.optimal.calibrate import calibrate
from testtime.optimal.recipe import load_recipe
from testtime.optimal.selector import run_optimal
from testtime.optimal.sweep import run_sweep
from testtime.reward import ArithCheck

# every sample is reported with a confidence; the answers come from the fake's hash (mostly wrong)
CONFS = {"": [1.0, 2.0, 0.5, 3.0]}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    problems = load_dataset("arith", limit=12, seed=3)
    # half the problems: the right answer in samples 1 and 3, the surest ones; majority says "5"
    script = {p.question: ["5", p.answer, "5", p.answer] for p in problems[::2]}
    policy = ScriptedPolicy(script, confidences=CONFS)
    recipe = load_recipe(None, ["n_max=4", "budgets=[1, 2, 4]", f"out={out}", "name=chain", "fewshot=0",
                                "max_tokens=32", "strategies=[cot, majority, best_of_n, adaptive_majority, "
                                "particle_filter]"])
    sweep = run_sweep(recipe, policy, ArithCheck(), problems)
    table = calibrate(sweep)
    return problems, policy, recipe, sweep, table, out


def test_sweep_has_a_config_for_each_new_strategy_and_selection(chain):
    _problems, _policy, _recipe, sweep, _table, _out = chain
    configs = set(sweep.configs())
    assert {"confidence_vote", "confidence_top", "adaptive_majority", "majority", "cot"} <= configs
    assert any(c.startswith("particle_filter/prm_") for c in configs)
    assert any(c.startswith("best_of_n/prm_") for c in configs)
    # adaptive voting costs the samples it drew: never more than majority at the same N
    by = {(c.problem_id, c.config, c.budget): c for c in sweep.cells}
    for pid in {c.problem_id for c in sweep.cells}:
        assert by[(pid, "adaptive_majority", 4)].tokens <= by[(pid, "majority", 4)].tokens + 1e-9
        # the confidence votes are free on the scored pool's samples: policy FLOPs only, like majority
        assert by[(pid, "confidence_vote", 4)].flops == by[(pid, "majority", 4)].flops


def test_confidence_voting_wins_where_the_scripted_confidence_is_right(chain):
    problems, _policy, _recipe, sweep, _table, _out = chain
    by = {(c.problem_id, c.config, c.budget): c.accuracy for c in sweep.cells}
    for p in problems[::2]:
        assert by[(p.id, "confidence_vote", 4)] == 1.0 and by[(p.id, "majority", 4)] == 0.0


def test_calibration_and_report_treat_them_as_families(chain):
    _problems, _policy, _recipe, sweep, table, out = chain
    report = build_report(sweep, table, out)
    families = set(report["curves"]["all"])
    assert {"confidence_vote", "confidence_top", "adaptive_majority"} <= families
    assert any(f.startswith("particle_filter") for f in families)
    # the table's choices are among the sweep's configs (the richer space is searched)
    chosen = {ch.config for row in table.table.values() for ch in row.values()}
    assert chosen <= set(sweep.configs())


def test_the_selector_answers_with_a_calibrated_confidence_vote(chain, tmp_path):
    problems, policy, _recipe, sweep, table, _out = chain
    for row in table.table.values():  # force the choice: confidence voting at N=4 in every bin
        for b, ch in row.items():
            row[b] = type(ch)("confidence_vote", "majority", 4, None, "confidence_vote", 1.0, 6)
    base = engine.RunConfig(dataset="arith", out=str(tmp_path), max_tokens=32, fewshot=0)
    res = run_optimal(table, 4, policy, ArithCheck(), problems, base)
    right = {p.id for p in problems[::2]}
    assert {pid for pid, ok in res.correct.items() if ok} >= right  # majority would miss every one of them


def test_the_measurement_bench_pairs_confidence_voting_against_majority(chain):
    """bench/new_strategies.py's figures on this chain: the scripted confidence wins show up as a positive
    paired difference against majority, and the with/without-new-configs comparison covers every budget."""
    new_strategies = _bench()
    _problems, _policy, _recipe, sweep, table, _out = chain
    out = new_strategies.measure(sweep)
    assert out["held_out"] == len(table.holdout_ids) and out["calibration"] == len(table.calibration_ids)
    held = set(table.holdout_ids)
    wins = [c for c in sweep.cells if c.problem_id in held and c.config == "confidence_vote" and c.budget == 4
            and c.accuracy > next(d.accuracy for d in sweep.cells if (d.problem_id, d.config, d.budget)
                                  == (c.problem_id, "majority", 4))]
    assert wins  # the held-out half holds some of the scripted problems
    text = out["versus_majority"]["confidence_vote"][4]
    assert text.startswith("+") and f"({len(wins)} better, 0 worse" in text
    for k in ("compute-optimal (oracle bins)", "compute-optimal (predicted bins)"):
        assert set(out["richer_minus_paper"][k]) == {1, 2, 4}
    paper = {c.config for c in sweep.cells if new_strategies.from_paper(c)}
    assert {"cot", "majority"} <= paper and any(c.startswith("best_of_n/prm_") for c in paper)
    assert not paper & {"confidence_vote", "confidence_top", "adaptive_majority"}
    assert not any(c.startswith("particle_filter") for c in paper)
    assert set(out["new_configs"]) == set(sweep.configs()) - paper and set(out["paper_configs"]) == paper


def _bench():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import new_strategies

    return new_strategies


def test_every_strategy_and_selection_says_whether_it_is_the_papers():
    from pathlib import Path

    from testtime.search import STRATEGIES
    from testtime.search.deepconf import DeepConfOnline
    from testtime.search.selection import SELECTIONS

    assert all("from_paper" in vars(cls) for cls in STRATEGIES.values())  # declared, not inherited
    paper = {name for name, cls in STRATEGIES.items() if cls.from_paper}
    assert paper == {"cot", "majority", "best_of_n", "beam", "dvts"} and not DeepConfOnline.from_paper
    # the paper's recipes run exactly the paper's strategies
    recipes = sorted((Path(__file__).resolve().parent.parent / "recipes" / "paper").glob("*.yaml"))
    assert recipes and all({s.name for s in load_recipe(r).strategies} == paper for r in recipes)
    assert {k for k, s in SELECTIONS.items() if not s.from_paper} == {"confidence_vote", "confidence_top"}


def test_the_paper_baseline_leaves_out_deepconf_online():
    """A sweep where only deepconf_online solves the hard problems at N=2: with it, compute-optimal gains
    there; the paper-only baseline must not contain it (it did when the bench listed new strategies by hand)."""
    from test_calibrate import HARD, cell, synthetic_sweep

    sw = synthetic_sweep()
    sw.cells += [cell(pid, "deepconf_online", b, 1.0 if pid in HARD and b >= 2 else 0.0)
                 for pid in [p.id for p in sw.problems] for b in (1, 2, 4)]
    out = _bench().measure(sw)
    assert "deepconf_online" in out["new_configs"] and "deepconf_online" not in out["paper_configs"]
    assert "deepconf_online" in out["versus_majority"]
    with_new = out["optimal"]["with new strategies"]["compute-optimal (oracle bins)"]
    paper = out["optimal"]["paper's strategies only"]["compute-optimal (oracle bins)"]
    assert with_new[2][0] > paper[2][0]  # the hard held-out problems solved at N=2 only with deepconf_online
    better = re.search(r"\((\d+) better, 0 worse", out["richer_minus_paper"]["compute-optimal (oracle bins)"][2])
    assert better and int(better.group(1)) > 0
