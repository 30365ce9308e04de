"""Policy confidence (DeepConf): token confidences, sample summaries, the backends' parsing, the store, and
the confidence_vote / confidence_top selections from live runs to sweep cells."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from fakes import ScriptedPolicy
from testtime import engine
from testtime.confidence import summarize, token_confidence
from testtime.errors import ConfigError
from testtime.optimal.metrics import selection_subset_scores, subsample_curves
from testtime.policy.llamacpp import content_confidence
from testtime.policy.openai_compat import choice_confidence
from testtime.policy.vllm import sample_confidence
from testtime.search.base import ScoredOptions
from testtime.search.selection import CONFIDENCE_SELECTIONS, SELECTIONS, Pool
from testtime.store import Store
from testtime.types import Completion, Confidence, Problem, Trace

VOTE, TOP, MAJ = SELECTIONS["confidence_vote"], SELECTIONS["confidence_top"], SELECTIONS["majority"]


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    assert token_confidence([-0.1, -2.0, -3.9]) == pytest.approx(2.0)
    # a peaked distribution (the runners-up far below the top) is the more confident one
    assert token_confidence([-0.01, -8.0, -9.0]) > token_confidence([-0.7, -0.8, -1.5])
    with pytest.raises(ValueError):
        token_confidence([])


def test_summaries_mean_lowest_window_and_tail():
    confs = [5.0, 5.0, 1.0, 1.0, 5.0, 5.0, 4.0, 2.0]
    c = summarize(confs, group=2, tail=3)
    assert c == Confidence(mean=3.5, lowest_group=1.0, tail=pytest.approx(11 / 3), tokens=8)
    # the weakest stretch, not the weakest token: windows of 3 -> min over (11, 7, 7, 11, 14, 11) / 3
    assert summarize(confs, group=3, tail=3).lowest_group == pytest.approx(7 / 3)
    short = summarize([2.0, 4.0], group=16, tail=32)  # windows longer than the sample shrink to it
    assert short == Confidence(3.0, 3.0, 3.0, 2)
    assert summarize([]) is None


def test_backends_parse_their_topk_formats_into_the_same_summary():
    tops = [[-0.1, -2.0], [-0.5, -1.5], [-0.2, -3.0]]
    expect = summarize([token_confidence(t) for t in tops])
    llama = [{"id": 1, "logprob": t[0], "top_logprobs": [{"logprob": x} for x in t]} for t in tops]
    assert content_confidence(llama) == expect
    openai = {"tokens": ["a", "b", "c"], "top_logprobs": [{f"t{j}": x for j, x in enumerate(t)} for t in tops]}
    assert choice_confidence(openai) == expect
    assert choice_confidence({"content": llama}) == expect  # llama.cpp's server through the OpenAI API
    # vLLM: {token id: Logprob}, the sampled token added when it is not in the top k -> the best k are taken
    vllm = [{j: SimpleNamespace(logprob=x) for j, x in enumerate(t)} for t in tops]
    vllm[0][99] = SimpleNamespace(logprob=-20.0)
    tops5 = [sorted(t + ([-20.0] if i == 0 else []), reverse=True)[:5] for i, t in enumerate(tops)]
    assert sample_confidence(vllm) == summarize([token_confidence(t) for t in tops5])
    # no top-k anywhere: no confidence, never a made-up one
    assert content_confidence([{"id": 1, "logprob": -0.1}]) is None
    assert choice_confidence({"tokens": ["a"]}) is None and sample_confidence(None) is None


def test_store_keeps_the_confidence_and_reads_old_rows_without_one(tmp_path):
    conf = Confidence(2.5, 1.25, 3.0, 12)
    with Store(tmp_path) as s:
        s.put_generations([
            ("k1", "m", "p", {}, 0, 0, Completion("a", "eos", 3, 0, 12, confidence=conf)),
            ("k2", "m", "p", {}, 0, 1, Completion("b", "eos", 3, 3, 5)),
        ])
        got = s.get_generations(["k1", "k2"])
    assert got["k1"].confidence == conf and got["k1"].from_store and got["k2"].confidence is None


def test_store_created_before_the_column_gains_it(tmp_path):
    import sqlite3

    with Store(tmp_path):
        pass
    db = sqlite3.connect(tmp_path / Store.FILENAME)  # an older store: the table without the column
    db.execute("ALTER TABLE generations DROP COLUMN confidence")
    db.commit()
    db.close()
    with Store(tmp_path) as s:
        conf = Confidence(1, 1, 1, 4)
        s.put_generations([("k", "m", "p", {}, 0, 0, Completion("a", "eos", 3, 0, 4, confidence=conf))])
        assert s.get_generations(["k"])["k"].confidence == conf


# --- the selections ----------------------------------------------------------------------------------


def test_confidence_vote_weighs_each_sample_by_its_confidence():
    # groups: A = {0, 1, 2}, B = {3, 4}; majority says A, but B's two samples are far surer
    pool = Pool.of([0, 0, 0, 1, 1], confidence=[1.0, 1.0, 1.0, 4.0, 4.0])
    assert pool.choose(MAJ) == 0
    assert pool.choose(VOTE) == 3
    # on a subset only its members vote
    assert pool.choose(VOTE, [0, 1, 3]) == 3 and pool.choose(VOTE, [0, 1, 2, 3]) == 3
    assert pool.choose(VOTE, [0, 1, 2]) == 0


def test_confidence_top_votes_among_the_most_confident_half():
    # A = {0, 1, 2} (two sure, one not), B = {3, 4, 5} (each fairly sure): weighted voting says B (9 > 8.5),
    # the top half {0, 1, 3} says A (8 > 3)
    pool = Pool.of([0, 0, 0, 1, 1, 1], confidence=[4.0, 4.0, 0.5, 3.0, 3.0, 3.0])
    assert pool.choose(VOTE) == 3
    assert pool.choose(TOP) == 0
    # candidates without an answer neither vote nor count toward the share kept
    pool2 = Pool.of([None, None, 0, 1], confidence=[9.0, 9.0, 1.0, 2.0])
    assert pool2.choose(TOP) == 3 and pool2.choose(VOTE) == 3
    assert Pool.of([None], confidence=[1.0]).choose(VOTE) is None


def test_ties_go_to_the_group_seen_first():
    pool = Pool.of([0, 1], confidence=[2.0, 2.0])
    assert pool.choose(VOTE) == 0 and pool.choose(TOP) == 0


def test_pools_without_every_confidence_offer_no_confidence_selection():
    assert [s.name for s in Pool.of([0, 1], confidence=[1.0, None]).selections()] == ["majority"]
    names = [s.name for s in Pool.of([0, 1], confidence=[1.0, 2.0]).selections()]
    assert names == ["majority", *CONFIDENCE_SELECTIONS] == ["majority", "confidence_vote", "confidence_top"]
    with pytest.raises(ValueError, match="confidences"):
        Pool.of([0, 1]).choose(VOTE)


def test_scored_strategies_refuse_confidence_as_their_answer():
    with pytest.raises(ConfigError) as e:
        ScoredOptions(selection="confidence_vote")
    assert e.value.field == "selection"


# --- from a run to --json and to sweep cells -----------------------------------------------------------

PROBLEMS = [Problem("p1", "What is 2 + 2?", "4", kind="number"), Problem("p2", "What is 3 + 3?", "6", kind="number")]
# p1: three wrong but unsure "5", two right and sure "4"; p2: right by majority and by confidence
SCRIPT = {"2 + 2": ["5", "4", "5", "4", "5"], "3 + 3": ["6", "6", "1", "6", "2"]}
CONFS = {"2 + 2": [0.5, 3.0, 0.5, 3.0, 0.5], "3 + 3": [2.0, 2.0, 2.0, 2.0, 2.0]}


def config(tmp_path, strategy="majority", n=5):
    return engine.RunConfig(dataset="arith", strategy=strategy, n=n, out=str(tmp_path), fewshot=0, max_tokens=32)


def test_majority_runs_report_the_confidence_votes_in_json(tmp_path):
    res = engine.run(config(tmp_path), ScriptedPolicy(SCRIPT, confidences=CONFS), PROBLEMS)
    s = res.summary()
    assert s["accuracy"] == 0.5  # the reported answer stays majority's
    assert s["selections"] == {"majority": 0.5, "confidence_vote": 1.0, "confidence_top": 1.0}
    t = res.results[0].trace
    assert t.answer == "5" and t.selections == {"majority": "5", "confidence_vote": "4", "confidence_top": "4"}
    assert [c.confidence.lowest_group for c in t.candidates] == CONFS["2 + 2"]
    # the trace record keeps the confidences (the store's results table, reports)
    back = Trace.from_record(t.record())
    assert back.candidates[1].confidence == t.candidates[1].confidence
    # replayed from the store: the same confidences, nothing regenerated
    again = engine.run(config(tmp_path), ScriptedPolicy(SCRIPT), PROBLEMS)
    assert again.summary()["new_generations"] == 0 and again.summary()["selections"] == s["selections"]


def test_a_policy_without_logprobs_reports_majority_only(tmp_path):
    s = engine.run(config(tmp_path), ScriptedPolicy(SCRIPT), PROBLEMS).summary()
    assert "selections" not in s


def test_sweep_cells_name_confidence_votes_as_their_own_configs(tmp_path):
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import run_sweep

    r = load_recipe(None, ["n_max=4", "budgets=[1, 2, 4]", "prm=null", "strategies=[cot]", f"out={tmp_path}"])
    sweep = run_sweep(r, ScriptedPolicy(SCRIPT, confidences=CONFS), problems=PROBLEMS)
    cells = {(c.problem_id, c.config, c.budget): c for c in sweep.cells}
    assert {c.config for c in sweep.cells} == {"cot", "majority", "confidence_vote", "confidence_top"}
    vote = cells[("p1", "confidence_vote", 4)]
    assert (vote.strategy, vote.selection) == ("majority", "confidence_vote")
    maj = cells[("p1", "majority", 4)]
    assert maj.selection is None and vote.flops == maj.flops  # no PRM: the same samples, the same cost
    # p1's pool of 4: "5", "4", "5", "4" -> majority ties to "5" (wrong); confidence says "4"
    assert maj.accuracy == 0.0 and vote.accuracy == 1.0
    # every cell is the expected accuracy over subsets, by the same rule the live run uses
    pool = Pool.of([0, 1, 0, 1], confidence=CONFS["2 + 2"][:4])
    want = subsample_curves(4, [2], selection_subset_scores(pool, [False, True, False, True]))
    assert cells[("p1", "confidence_top", 2)].accuracy == pytest.approx(want["confidence_top"][2])
    # pairs of the 4 samples: every pair holding a sure "4" votes "4" (5 of 6); majority's ties go to the first
    assert math.isclose(cells[("p1", "confidence_vote", 2)].accuracy, 5 / 6)
    assert math.isclose(cells[("p1", "majority", 2)].accuracy, 2 / 6)
