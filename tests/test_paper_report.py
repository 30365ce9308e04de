"""`report --paper`: Table 5 on a synthetic sweep whose answers are known, the authors' rule, and the
cache-independent FLOPs figure."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fakes import ScriptedPolicy
from testtime.cli import app
from testtime.optimal.calibrate import OPT_PRED, calibrate, evaluate
from testtime.optimal.paper import (
    AUTHORS,
    CALIBRATED,
    DEPLOYMENT,
    PAPER,
    authors_rule,
    paper_rows,
    paper_tables,
    params_from_name,
)
from testtime.optimal.sweep import Cell, ProblemInfo, SweepResult
from testtime.search.base import compute_of
from testtime.types import Completion, Compute

EASY = [f"e{i:02d}" for i in range(10)]
HARD = [f"h{i:02d}" for i in range(10)]
BUDGETS = [1, 2, 4, 16, 64, 256]
BEAM = "beam(m=4,finish=authors)/prm_last_max"
MAJORITY_EASY = {1: 0.5, 2: 0.55, 4: 0.6, 16: 0.65, 64: 0.7, 256: 0.8}  # majority peaks only at 256


def cell(pid: str, config: str, budget: int, acc: float, strategy: str, selection: str | None = None) -> Cell:
    # FLOPs 10 per unit of budget as the run did them, 30 when every sample pays its whole prompt
    return Cell(pid, config, strategy, 4 if strategy in ("beam", "dvts") else None, selection, budget, acc,
                tokens=5.0 * budget, flops=10.0 * budget, flops_uncached=30.0 * budget)


def table5_sweep(policy: str = "org/Toy-1B-Instruct", dataset: str = "math500") -> SweepResult:
    """Easy problems: CoT solves them (1.0), beam gets 0.9, majority climbs to 0.8 only at N=256.
    Hard problems: nothing but beam search helps, and it needs N=256 for 1.0."""
    cells = []
    for pid in EASY + HARD:
        easy = pid in EASY
        cells.append(cell(pid, "cot", 1, 1.0 if easy else 0.0, "cot"))
        for b in BUDGETS:
            cells.append(cell(pid, "majority", b, MAJORITY_EASY[b] if easy else 0.0, "majority"))
            cells.append(cell(pid, "best_of_n/prm_last_max", b, 0.95 if easy else 0.0, "best_of_n", "prm_last_max"))
        for i, b in enumerate([4, 16, 64, 256]):
            cells.append(cell(pid, BEAM, b, 0.9 if easy else 0.25 * (i + 1), "beam", "prm_last_max"))
            cells.append(cell(pid, "dvts(m=4)/prm_last_max", b, 0.8 if easy else 0.1, "dvts", "prm_last_max"))
    infos = ([ProblemInfo(p, 1, 0.8, 0.9, 0.9, 1.0, "math") for p in EASY]
             + [ProblemInfo(p, 5, 0.0, 0.1, 0.1, 0.0, "math") for p in HARD])
    recipe = {"name": "toy", "dataset": dataset, "holdout": 0.5, "seed": 0,
              "difficulty": {"easy": 0.5, "hard": 0.1, "probe_n": 4}}
    return SweepResult(recipe, policy, "prm-y", False, infos, cells, [], 0.0)


def by(rows, protocol, rule):
    [row] = [r for r in rows if r.protocol == protocol and r.rule.startswith(rule)]
    return row


def test_paper_protocol_on_all_problems_with_oracle_bins():
    sw = table5_sweep()
    rows = paper_rows(sw)
    assert {r.protocol for r in rows} == {PAPER}  # no table: no deployment rows
    row = by(rows, PAPER, CALIBRATED)
    assert row.n_problems == 20
    assert row.cot == pytest.approx(0.5)
    assert (row.majority.budget, row.majority.accuracy) == (256, pytest.approx(0.4))
    # easy bin: CoT@1 (1.0); hard bin: beam@256 (1.0)
    assert (row.optimal.budget, row.optimal.accuracy) == (256, pytest.approx(1.0))
    assert row.gain == pytest.approx(1.0)  # +100% over CoT
    # at N=1 compute-optimal (0.5) already beats majority@256 (0.4): the gain is a lower bound, > 256x
    assert row.efficiency.lower_bound and row.efficiency.value == pytest.approx(256.0)
    assert str(row.efficiency) == "> 256.0"
    # FLOPs at N=256: the mean of CoT@1 (easy) and beam@256 (hard), both ways
    assert row.optimal.flops == pytest.approx((10.0 + 2560.0) / 2)
    assert row.optimal.flops_uncached == pytest.approx((30.0 + 7680.0) / 2)


def test_the_authors_rule_is_a_reference_beside_the_calibrated_choice():
    rows = paper_rows(table5_sweep())
    ref = by(rows, PAPER, AUTHORS)
    assert "< 7B: beam search" in ref.rule
    # beam search on every bin: 0.9 on easy, 1.0 on hard at N=256; nothing below N=4
    assert (ref.optimal.budget, ref.optimal.accuracy) == (256, pytest.approx(0.95))
    assert ref.gain == pytest.approx(0.9)
    # beam@4 (0.9 easy, 0.25 hard = 0.575) already beats majority@256 (0.4): > 256/4
    assert str(ref.efficiency) == "> 64.0"
    # a 14B policy on MATH-500: DVTS on easy/medium, beam on hard
    rows14 = paper_rows(table5_sweep("org/Toy-14B-Instruct"))
    ref14 = by(rows14, PAPER, AUTHORS)
    assert "7-32B" in ref14.rule and ref14.optimal.accuracy == pytest.approx((0.8 + 1.0) / 2)


def test_deployment_rows_are_the_held_out_selector_figures():
    sw = table5_sweep()
    table = calibrate(sw)
    rows = paper_rows(sw, table)
    dep = by(rows, DEPLOYMENT, CALIBRATED)
    assert dep.n_problems == len(table.holdout_ids) < 20
    ev = evaluate(sw, table)
    pred = ev.curve(OPT_PRED)
    assert dep.optimal.accuracy == pytest.approx(pred[-1].accuracy)
    assert dep.optimal.flops == pytest.approx(pred[-1].flops)  # probe cost included, as the report charges it
    assert dep.optimal.flops_uncached > dep.optimal.flops
    assert by(rows, PAPER, CALIBRATED).n_problems == 20  # the paper rows stay on every problem
    tables = paper_tables(rows)
    assert [t["title"].split("(")[1].split(")")[0] for t in tables] == [PAPER, DEPLOYMENT]
    assert all(r[2] == 20 for r in tables[0]["rows"]) and all(r[2] == dep.n_problems for r in tables[1]["rows"])


def test_authors_rule_and_model_sizes():
    assert params_from_name("meta-llama/Llama-3.2-1B-Instruct") == 1.0
    assert params_from_name("Qwen/Qwen2.5-0.5B-Instruct") == 0.5
    assert params_from_name("smollm2-135m-instruct-q4_1.gguf") == pytest.approx(0.135)
    assert params_from_name("scripted-fake-v1") is None
    assert authors_rule(3.0, "math500")[0] == dict.fromkeys(("easy", "medium", "hard"), "beam")
    assert authors_rule(7.0, "math500")[0] == {"easy": "dvts", "medium": "dvts", "hard": "beam"}
    assert authors_rule(32.0, "math500")[0]["easy"] == "dvts"
    assert set(authors_rule(72.0, "math500")[0].values()) == {"best_of_n"}
    assert set(authors_rule(8.0, "aime24")[0].values()) == {"dvts"}
    assert set(authors_rule(14.0, "aime24")[0].values()) == {"best_of_n"}
    assert "MATH-500 rule" in authors_rule(0.1, "arith")[1]


@pytest.fixture
def no_plots(monkeypatch):
    """The PNGs are tested with the report itself; here only the tables matter (and drawing is slow)."""
    from testtime.optimal import report

    def blank(_data, _x, path):
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(report, "plot_accuracy", blank)


def test_report_paper_cli(tmp_path, no_plots):
    sw = table5_sweep()
    sw.save(tmp_path / "toy" / "sweep-toy.json")
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--paper", "--json"])  # the folder above it
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    protocols = {r["protocol"] for r in out["paper"]}
    assert protocols == {PAPER, DEPLOYMENT}
    md = (tmp_path / "toy" / "report" / "table5.md").read_text()
    assert "> 256.0x" in md and PAPER in md and DEPLOYMENT in md
    assert PAPER in (tmp_path / "toy" / "report" / "report.html").read_text()


def test_report_paper_over_a_folder_of_sweeps(tmp_path):
    for name, policy in (("a", "org/Toy-1B-Instruct"), ("b", "org/Toy-72B-Instruct")):
        sw = table5_sweep(policy)
        sw.recipe["name"] = name
        sw.save(tmp_path / name / f"sweep-{name}.json")
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--paper", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output.strip().splitlines()[-1])["paper"]
    assert sorted({r["policy"] for r in rows}) == ["org/Toy-1B-Instruct", "org/Toy-72B-Instruct"]
    assert any("> 32B: Best-of-N" in r["rule"] for r in rows)


def test_cache_independent_flops_charge_every_sample_its_whole_prompt():
    # 4 samples of a 100-token prompt: the first evaluates it, its siblings reuse the KV cache
    comps = [Completion("x", "eos", 100, 0 if i == 0 else 100, 20) for i in range(4)]
    c = compute_of(comps, n_params=1000)
    c.prm_tokens, c.prm_flops = 50, 2.0 * 7 * 50
    assert c.policy_flops == 2.0 * 1000 * (100 + 4 * 20)  # cache-aware: the prompt once
    assert c.policy_flops_uncached == 2.0 * 1000 * 4 * (100 + 20)  # as papers count
    assert c.flops_uncached == c.policy_flops_uncached + c.prm_flops
    d = c.to_dict()
    assert d["flops_uncached"] == c.flops_uncached
    total = Compute().add(c).add(c)
    assert total.flops_uncached == pytest.approx(2 * c.flops_uncached)
    assert Compute().flops_uncached == 0.0


# --- section 5: the authors' vote (string groups, a missing answer can win) ---------------------------------


def test_string_grouping_keeps_equivalent_spellings_apart_and_lets_no_answer_win():
    from testtime.search.selection import MAJORITY, Pool, answer_groups, group_index

    answers = ["\\frac{\\sqrt{2}}{2}", None, "\\frac{1}{\\sqrt{2}}", None, "\\sqrt{2}/2", None, "3"]
    math = answer_groups(answers, "math")
    string = answer_groups(answers, "math", "string")
    assert [0, 2, 4] in math and all(answers[i] is not None for g in math for i in g)  # equivalent: one group
    assert string == [[0], [1, 3, 5], [2], [4], [6]]  # three spellings, three groups; the missing ones one more
    pick = Pool.of(group_index(math, len(answers))).choose(MAJORITY)
    assert pick in (0, 2, 4)  # testtime: the three equivalent answers win (not merely some non-missing one, like "3")
    pick = Pool.of(group_index(string, len(answers))).choose(MAJORITY)
    assert answers[pick] is None  # the authors' vote: three missing answers outvote the split spellings


def test_answer_grouping_reaches_the_traces_and_the_run_identity(tmp_path):
    from testtime import engine
    from testtime.errors import ConfigError

    policy = ScriptedPolicy({"question a": ["4", None, None, "4.0", None]})
    problems = [engine.Problem("a", "question a", "4", kind="number")]
    # strict: the scripted samples without an answer hold step numbers that the fallback would read
    base = dict(dataset="arith", strategy="majority", n=5, out=str(tmp_path), fewshot=0, extraction="strict")
    ours = engine.run(engine.RunConfig(**base), policy, problems)
    authors = engine.run(engine.RunConfig(**base, answer_grouping="string"), policy, problems)
    assert ours.results[0].trace.answer == "4" and ours.summary()["accuracy"] == 1.0
    assert authors.results[0].trace.answer is None and authors.summary()["accuracy"] == 0.0
    assert ours.run_id != authors.run_id and "answer_grouping" not in engine.RunConfig(**base).identity("m")
    with pytest.raises(ConfigError) as e:
        engine.RunConfig(**base, answer_grouping="exact")
    assert e.value.field == "answer_grouping"
