"""Best-of-N and the judge on the real embedded SmolLM2 (CPU): the whole PRM path, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testtime import engine
from testtime.datasets import load_dataset
from testtime.reward import ArithCheck, Judge
from testtime.reward.base import ScoreRequest
from testtime.store import Store

pytestmark = pytest.mark.integration


def test_best_of_n_with_arith_check(smollm2, tmp_path):
    problems = load_dataset("arith", limit=4, levels=[1, 2])
    cfg = engine.RunConfig(dataset="arith", strategy="best_of_n", n=4, limit=4, levels=[1, 2], out=str(tmp_path),
                           max_tokens=160, prm="arith-check")
    res = engine.run(cfg, smollm2, problems)
    checker = ArithCheck()
    for r in res.results:
        rewards = r.trace.scoring.rewards
        assert len(rewards) == 4
        for cand, rw in zip(r.trace.candidates, rewards, strict=True):
            # the stored rewards are exactly arith-check's verdicts on the stripped steps
            assert rw == [checker.step_reward(s.strip()) for s in cand.steps]
        sel = r.trace.selections
        pairs = {f"prm_{a}_{s}" for a in ("last", "min", "mean", "prod") for s in ("max", "vote")}
        # llama.cpp returns per-token logprobs, so the PRM-free confidence selections come with the pool
        assert set(sel) == {"majority", "confidence_vote", "confidence_top"} | pairs
        # every selection picks one of the candidates' answers
        answers = {c.answer for c in r.trace.candidates}
        assert all(v in answers for v in sel.values())
    s = res.summary()
    assert s["prm"] == checker.name == "arith-check@v2" and not s["oracle_upper_bound"]
    assert 0.0 <= min(s["selections"].values()) <= max(s["selections"].values()) <= s["pass@n"]
    with Store(tmp_path) as store:
        assert store.count_rewards() == sum(len({tuple(c.steps) for c in r.trace.candidates}) for r in res.results)


def test_judge_scores_steps_with_the_policy(smollm2):
    judge = Judge(smollm2)
    requests = [
        ScoreRequest("What is 12 - 5?", ("Step 1: 12 - 5 = 7.", "The answer is 7.")),
        ScoreRequest("What is 3 * 4?", ("Step 1: 3 * 4 = 13.",)),
    ]
    out = judge.score_batch(requests)
    assert [len(s.rewards) for s in out] == [2, 1]
    assert all(0.0 < r < 1.0 for s in out for r in s.rewards)
    assert judge.misses == 0  # SmolLM2 always puts Yes or No in its top 20
    assert all(s.tokens > 0 for s in out)
    # a re-read agrees up to the noise llama.cpp batch composition puts in logits (seen: 0.03)
    again = judge.score_batch(requests)
    flat = [r for s in out for r in s.rewards]
    assert [r for s in again for r in s.rewards] == pytest.approx(flat, abs=0.1)


def test_cli_best_of_n_json(tmp_path):
    cmd = [sys.executable, "-m", "testtime.cli", "run", "--strategy", "best_of_n", "--prm", "arith-check",
           "--n", "2", "--limit", "2", "--level", "1", "--max-tokens", "96", "--out", str(tmp_path), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["strategy"] == "best_of_n" and summary["prm"] == "arith-check@v2"
    assert "prm_min_vote" in summary["selections"] and "majority" in summary["selections"]
    bad = subprocess.run(cmd[:6] + ["--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--prm: a PRM-guided strategy needs a step scorer" in bad.stderr


@pytest.mark.parametrize("strategy", ["beam", "dvts"])
def test_tree_search_with_arith_check(smollm2, tmp_path, strategy):
    problems = load_dataset("arith", limit=3, levels=[1])
    cfg = engine.RunConfig(dataset="arith", strategy=strategy, n=4, m=2, limit=3, levels=[1], out=str(tmp_path),
                           max_tokens=160, prm="arith-check", max_depth=8)
    res = engine.run(cfg, smollm2, problems)
    s = res.summary()
    assert s["n_problems"] == 3 and s["m"] == 2
    # continuations share their prefix with the previous depth's request: most prompt tokens hit the cache
    assert s["prompt_tokens_cached"] > 0.5 * s["prompt_tokens"]
    with Store(tmp_path) as store:
        for r in res.results:
            tree = store.get_tree(res.run_id, r.problem.id)
            assert tree[0].depth == 0 and len(tree) > 4
            assert max(n.depth for n in tree) <= 8
            assert len(r.trace.candidates) >= 1
            first_level = [n for n in tree if n.depth == 1]
            assert len(first_level) == 4  # N first steps
            # beam keeps N/M = 2 unfinished nodes per depth; DVTS one per subtree (N/M = 2 subtrees)
            assert sum(n.kept and not n.terminal for n in first_level) <= 2
            # a candidate's steps are a root-to-leaf path of the recorded tree
            steps = {n.id: n for n in tree}
            leaf_paths = set()
            for n in tree:
                path, cur = [], n
                while cur.parent is not None:
                    path.append(cur.step)
                    cur = steps[cur.parent]
                leaf_paths.add(tuple(reversed(path)))
            assert all(tuple(c.steps) in leaf_paths for c in r.trace.candidates)
