"""End to end with the real embedded model (SmolLM2-135M via llama.cpp). Small token limits."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testtime import engine
from testtime.datasets import load_dataset
from testtime.policy.base import STEP_STOP, GenerationRequest, SamplingParams
from testtime.replay import CachedGenerator
from testtime.search.base import SearchContext
from testtime.store import Store

pytestmark = pytest.mark.integration


def _prompt(policy, level: int = 1) -> str:
    problem = load_dataset("arith", limit=5, levels=[level])[0]
    return SearchContext(CachedGenerator(policy, None)).prompt_for(problem)


def test_model_metadata(smollm2):
    assert smollm2.n_params > 100_000_000  # 135M parameters counted from the GGUF tensors
    assert smollm2.info.chat_template and "<|im_start|>" in smollm2.render_chat([{"role": "user", "content": "x"}])
    assert 2 in smollm2.info.eog_ids  # <|im_end|>


def test_stepwise_generation_and_token_counts(smollm2):
    params = SamplingParams(max_tokens=48, temperature=0.7, stop=(STEP_STOP,))
    [samples] = smollm2.generate([GenerationRequest(_prompt(smollm2, 3), 4, 11, params)])
    assert len(samples) == 4
    for c in samples:
        assert STEP_STOP not in c.text  # a step ends at the blank line
        assert c.finish_reason in ("stop", "eos", "length")
        assert (c.stop == STEP_STOP) == (c.finish_reason == "stop")
        assert 0 < c.generated_tokens <= 48
        if c.finish_reason == "length":
            assert c.generated_tokens == 48
    # one prompt evaluation for the n samples: the siblings read the first one's KV cells
    assert samples[0].prompt_tokens > 100
    assert all(c.cached_prompt_tokens == c.prompt_tokens for c in samples[1:])


def test_prefix_reuse_counts_cached_tokens(smollm2):
    params = SamplingParams(max_tokens=8, temperature=0.0)
    prompt = _prompt(smollm2, 2)
    smollm2.generate([GenerationRequest(prompt, 1, 0, params)])
    [[again]] = smollm2.generate([GenerationRequest(prompt + "Step 1:", 1, 0, params)])
    # the continuation re-evaluates only the new suffix (llama.cpp keeps at least one token to evaluate)
    assert again.cached_prompt_tokens >= again.prompt_tokens - 8
    assert again.prompt_tokens > 100


def test_same_request_same_samples(smollm2):
    params = SamplingParams(max_tokens=24, temperature=0.8)
    req = GenerationRequest(_prompt(smollm2, 2), 3, 123, params)
    first = [c.text for c in smollm2.generate([req])[0]]
    second = [c.text for c in smollm2.generate([req])[0]]
    assert first == second
    greedy = GenerationRequest(req.prompt, 1, 5, SamplingParams(max_tokens=24, temperature=0.0))
    other_seed = GenerationRequest(req.prompt, 1, 99, greedy.params)
    assert smollm2.generate([greedy])[0][0].text == smollm2.generate([other_seed])[0][0].text


def test_engine_majority_then_rerun_from_store(smollm2, tmp_path):
    config = engine.RunConfig(dataset="arith", strategy="majority", n=3, limit=4, out=str(tmp_path), max_tokens=96)
    first = engine.run(config, smollm2)
    s1 = first.summary()
    assert s1["n_problems"] == 4 and s1["new_generations"] == 12 and s1["cached_generations"] == 0
    assert s1["generated_tokens"] == sum(c.generated_tokens for r in first.results for c in r.trace.candidates)
    assert s1["flops"] == pytest.approx(
        2 * smollm2.n_params * (s1["prompt_tokens"] - s1["cached_prompt_tokens"] + s1["generated_tokens"])
    )
    # level 1 (single-digit addition) is the easy bin: the 135M model gets it right by majority
    assert first.results[0].problem.level == 1 and first.results[0].trace.correct
    again = engine.run(config, smollm2)
    s2 = again.summary()
    assert s2["new_generations"] == 0 and s2["cached_generations"] == 12
    assert [r.trace.answer for r in again.results] == [r.trace.answer for r in first.results]
    assert s2["accuracy"] == s1["accuracy"] and s2["generated_tokens"] == s1["generated_tokens"]
    with Store(tmp_path) as store:
        assert store.count_generations() == 12
        assert len(store.get_results(first.run_id)) == 4


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "testtime.cli", *args]


def test_kill9_then_resume_loses_no_finished_generation(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--dataset", "arith", "--limit", "12", "--strategy", "majority", "--n", "4",
            "--max-tokens", "160", "--out", str(out), "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    db = out / "testtime.sqlite"
    stored_at_kill = 0
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as con:
                        stored_at_kill = con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if stored_at_kill >= 8:
                    break
        assert proc.poll() is None, "run finished before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(db) as con:
        survived = con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert 8 <= survived < 48
    done = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n_problems"] == 12
    assert summary["cached_generations"] >= survived  # nothing that finished before the kill was redone
    assert summary["new_generations"] + summary["cached_generations"] == 48
    assert summary["new_generations"] == 48 - summary["cached_generations"]
