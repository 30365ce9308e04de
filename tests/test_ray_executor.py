"""The Ray executor: problems sharded over actors, results streamed into the one store, resumable, a killed
actor's chunks retried elsewhere. Unit tests run scripted policies (and a scripted OpenAI server) inside a
local Ray on loopback; the integration tests drive the embedded SmolLM2 through llama.cpp in two actors.

One local Ray serves the whole module (its workers get this folder on PYTHONPATH, so the scripted
policies below can be opened inside actors); executors find it initialised, use it and leave it running.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakes import ScriptedPolicy
from httpserver import TestServer
from testtime import engine
from testtime.cli import app
from testtime.datasets import load_dataset
from testtime.execution import RAY_MISSING, LocalExecutor, PolicySpec, open_executor
from testtime.extraction import extract_answer
from testtime.grading import grade_many
from testtime.search.selection import majority_vote, math_equivalent
from testtime.store import Store

TESTS = str(Path(__file__).parent)
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="needs ray (pip install 'testtime[ray]')")

PROBLEMS = load_dataset("arith", limit=6)
SCRIPT = {p.question: [p.answer, "1", p.answer, None] for p in PROBLEMS}  # 3 of 4 samples right, one without
runner = CliRunner()


def scripted(**kw) -> ScriptedPolicy:
    """Opened inside the actors (by reference: this module is importable there)."""
    return ScriptedPolicy(SCRIPT, **kw)


class SlowPolicy(ScriptedPolicy):
    def __init__(self, delay_s: float, **kw):
        super().__init__(SCRIPT, **kw)
        self.delay_s = delay_s

    def generate(self, requests, on_chunk=None):
        time.sleep(self.delay_s)
        return super().generate(requests, on_chunk)


def slow(delay_s: float = 0.5) -> SlowPolicy:
    return SlowPolicy(delay_s)


@pytest.fixture(scope="module")
def local_ray():
    if not HAVE_RAY:
        pytest.skip("needs ray (pip install 'testtime[ray]')")
    import ray

    from testtime.execution.ray import init_ray

    started = init_ray(runtime_env={"env_vars": {"PYTHONPATH": TESTS}})
    yield ray
    if started:
        ray.shutdown()


def config(out, **kw) -> engine.RunConfig:
    base = dict(dataset="arith", strategy="majority", n=4, limit=6, out=str(out), max_tokens=64)
    return engine.RunConfig(**{**base, **kw})


def texts(result) -> list[list[str]]:
    return [[c.text for c in r.trace.candidates] for r in result.results]


def generation_keys(out) -> set[str]:
    with sqlite3.connect(Path(out) / Store.FILENAME) as con:
        return {k for (k,) in con.execute("SELECT key FROM generations")}


COMPARED = ("run_id", "n_problems", "accuracy", "pass@1", "pass@n", "failed", "generated_tokens", "prompt_tokens",
            "cached_prompt_tokens", "flops", "new_generations", "cached_generations", "selections")


def assert_same_results(a, b) -> None:
    assert [r.problem.id for r in a.results] == [r.problem.id for r in b.results]
    assert texts(a) == texts(b)
    assert [r.trace.answer for r in a.results] == [r.trace.answer for r in b.results]
    assert [r.trace.correct for r in a.results] == [r.trace.correct for r in b.results]
    assert [r.sample_correct for r in a.results] == [r.sample_correct for r in b.results]
    sa, sb = a.summary(), b.summary()
    assert {k: sa.get(k) for k in COMPARED} == {k: sb.get(k) for k in COMPARED}


# --- without Ray ----------------------------------------------------------------------------------


def test_missing_ray_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "testtime.execution.ray", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'testtime\[ray\]'"):
        importlib.import_module("testtime.execution.ray")
    with pytest.raises(ImportError, match=r"pip install 'testtime\[ray\]'"):
        open_executor("ray", PolicySpec())
    result = runner.invoke(app, ["run", "--executor", "ray", "--limit", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {RAY_MISSING}"


@pytest.mark.parametrize("args, needle", [
    (["--executor", "nope"], "--executor nope: unknown (available: local, ray)"),
    (["--address", "127.0.0.1:6379"], "--address 127.0.0.1:6379: only applies to executor ray"),
    (["--actors", "2"], "--actors 2: only applies to executor ray"),
    (["--executor", "ray", "--actors", "0"], "--actors 0: must be >= 1"),
])
def test_executor_option_errors_are_one_line(tmp_path, args, needle):
    result = runner.invoke(app, ["run", "--limit", "1", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr


def test_local_executor_opens_and_closes_its_policy(tmp_path):
    ex = LocalExecutor(PolicySpec(factory=scripted))
    res = ex.run(config(tmp_path, strategy="best_of_n", prm="arith-check"), PROBLEMS)
    assert ex.scorer_info("arith-check").name == "arith-check@v2" and res.summary()["prm"] == "arith-check@v2"
    ex.close()
    assert ex.policy.closed


# --- Ray, scripted policies -----------------------------------------------------------------------


@needs_ray
@pytest.mark.parametrize("strategy, extra", [
    ("majority", {}),
    ("best_of_n", {"prm": "arith-check"}),
    ("beam", {"prm": "arith-check", "m": 2, "max_depth": 4}),
])
def test_ray_gives_the_local_results(local_ray, tmp_path, strategy, extra):
    local = engine.run(config(tmp_path / "local", strategy=strategy, **extra), scripted(), PROBLEMS)
    progress = []
    with open_executor("ray", PolicySpec(factory=scripted), actors=2) as ex:
        assert len({*ex.pids.values()}) == 2 and ex.model_id == "scripted-fake-v1"
        res = ex.run(config(tmp_path / "ray", strategy=strategy, **extra), PROBLEMS,
                     on_progress=lambda d, t: progress.append((d, t)))
        assert ex.chunks_submitted == 3  # 6 problems in chunks of 2: a few per actor
    assert_same_results(local, res)
    assert progress == [(0, 6), (2, 6), (4, 6), (6, 6)]
    assert generation_keys(tmp_path / "ray") == generation_keys(tmp_path / "local")
    with Store(tmp_path / "ray") as a, Store(tmp_path / "local") as b:
        assert a.count_rewards() == b.count_rewards()
        stored = [{t["problem_id"]: (t["answer"], t["correct"]) for t in st.get_results(res.run_id)} for st in (a, b)]
        assert stored[0] == stored[1] and len(stored[0]) == 6  # rows in arrival order, the same rows
        assert a.get_run(res.run_id)["status"] == "done"
        if strategy == "beam":  # the search trees land in the store too
            assert a.get_tree(res.run_id, PROBLEMS[0].id) == b.get_tree(res.run_id, PROBLEMS[0].id) != []


@needs_ray
def test_a_rerun_submits_nothing_finished_and_replays_the_rest(local_ray, tmp_path):
    spec = PolicySpec(factory=scripted)
    with open_executor("ray", spec, actors=2) as ex:
        first = ex.run(config(tmp_path), PROBLEMS[:3])  # the same run, half its problems
        assert first.summary()["new_generations"] == 12
        assert ex.problems_submitted == 3
        full = ex.run(config(tmp_path), PROBLEMS)
        assert ex.problems_submitted == 6  # only the three unfinished problems went out
        s = full.summary()
        assert s["new_generations"] == 12 and s["cached_generations"] == 12
        again = ex.run(config(tmp_path), PROBLEMS)
        assert ex.problems_submitted == 6  # everything finished: nothing submitted
        assert again.summary()["new_generations"] == 0 and again.summary()["cached_generations"] == 24
        assert texts(full) == texts(again)
        assert [r.trace.answer for r in full.results] == [r.trace.answer for r in again.results]
        # results gone, generations kept: the chunks run again but the actors regenerate nothing
        with sqlite3.connect(tmp_path / Store.FILENAME) as con:
            con.execute("DELETE FROM results")
        replay = ex.run(config(tmp_path), PROBLEMS)
        assert replay.summary()["new_generations"] == 0 and replay.summary()["cached_generations"] == 24
        assert texts(replay) == texts(full)
        # a larger budget reuses the stored samples through the actors: only indices 4 and 5 are new
        bigger = ex.run(config(tmp_path, n=6), PROBLEMS)
        assert bigger.summary()["new_generations"] == 12 and bigger.summary()["cached_generations"] == 24
    local = engine.run(config(tmp_path / "local", n=6), scripted(), PROBLEMS)
    assert texts(local) == texts(bigger)


@needs_ray
def test_a_killed_actors_chunks_run_elsewhere(local_ray, tmp_path):
    ray = local_ray
    local = engine.run(config(tmp_path / "local"), scripted(), PROBLEMS)
    killed: list = []
    with open_executor("ray", PolicySpec(factory=slow), actors=2, chunk_problems=1) as ex:

        def kill_after_first_chunk(done: int, total: int) -> None:
            if done >= 1 and not killed:
                killed.append(ex.actors[0])
                ray.kill(ex.actors[0])  # it has its next chunk in flight

        res = ex.run(config(tmp_path / "ray"), PROBLEMS, on_progress=kill_after_first_chunk)
        assert killed and killed[0] not in ex.actors and len(ex.actors) == 2
        assert ex.actors_started == 3  # a replacement
        assert ex.chunks_submitted > 6  # the lost chunk went out again
    assert_same_results(local, res)
    assert res.summary()["failed"] == 0
    assert generation_keys(tmp_path / "ray") == generation_keys(tmp_path / "local")


@needs_ray
def test_failures_on_actors_are_recorded_and_retried_on_rerun(local_ray, tmp_path):
    from test_failures import DOWN, Completions

    script = Completions({DOWN.question})
    srv = TestServer(script)
    try:
        spec = PolicySpec("org/model", "openai",
                          {"base_urls": [srv.url], "retries": 1, "backoff_s": 0.0, "n_params": 1000})
        with open_executor("ray", spec, actors=2) as ex:
            assert ex.model_id == "openai:org/model"
            res = ex.run(config(tmp_path), PROBLEMS)
            s = res.summary()
            assert s["failed"] == 1 and "HTTP 503" in s["failures"][DOWN.id] and s["accuracy"] == pytest.approx(5 / 6)
            assert s["new_generations"] == 20  # generated in the failed batch, replayed while isolating it
            script.down.clear()
            again = ex.run(config(tmp_path), PROBLEMS)
            assert again.summary()["failed"] == 0 and again.summary()["accuracy"] == 1.0
            assert again.summary()["new_generations"] == 4  # only the failed problem went out again
    finally:
        srv.close()


@needs_ray
def test_cli_run_on_ray_over_an_openai_server(local_ray, tmp_path):
    from test_failures import Completions

    srv = TestServer(Completions())
    try:
        args = ["run", "--executor", "ray", "--actors", "2", "--backend", "openai", "--model", "org/model",
                "--base-url", srv.url, "--policy-option", "n_params=1000", "--limit", "6", "--n", "2", "--out",
                str(tmp_path), "--json"]
        result = runner.invoke(app, args)
    finally:
        srv.close()
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout.strip().splitlines()[-1])
    assert s["n_problems"] == 6 and s["accuracy"] == 1.0 and s["failed"] == 0 and s["new_generations"] == 12
    assert local_ray.is_initialized()  # the CLI used the running Ray and left it running


@needs_ray
def test_a_sweep_on_ray_gives_the_local_sweep(local_ray, tmp_path):
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import run_sweep

    def recipe(out):
        return load_recipe(None, ["n_max=4", "strategies=[cot, best_of_n, {name: beam, m: 2}]", f"out={out}",
                                  "prm=arith-check", "limit=6", "name=r", "max_tokens=32", "max_depth=4"])

    local = run_sweep(recipe(tmp_path / "local"), scripted(), None, PROBLEMS)
    with open_executor("ray", PolicySpec(factory=scripted), actors=2) as ex:
        remote = run_sweep(recipe(tmp_path / "ray"), ex, None, PROBLEMS)
    assert (remote.policy, remote.prm, remote.oracle_prm, remote.run_ids) == (local.policy, local.prm,
                                                                               local.oracle_prm, local.run_ids)
    assert remote.cells == local.cells and remote.problems == local.problems and remote.failed == {}


@needs_ray
def test_the_local_ray_is_on_loopback(local_ray):
    nodes = local_ray.nodes()
    assert len(nodes) == 1 and nodes[0]["NodeManagerAddress"] == "127.0.0.1"


@needs_ray
def test_an_actor_that_cannot_open_the_policy_is_a_plain_error(local_ray, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        open_executor("ray", PolicySpec(str(tmp_path / "nope.gguf")), actors=1)


# --- Ray, the embedded model through llama.cpp ------------------------------------------------------

# One slot and one thread per llama.cpp instance: each runs its requests one after another. Measured on
# this model: llama.cpp's sample texts depend on its KV-cache state (which prompt was evaluated before,
# and so how much of a prompt is re-evaluated, in which batch shape) -- running the same 24 requests in
# another order changed 3 of 24 texts, the same order reproduced all 24. Two actors see the problems in
# other orders than one local process, so their texts can differ from the local run's in a few samples
# even with identical requests and seeds. What is exact, and asserted: the requests (prompts, sampling
# parameters, seeds, sample indices -- the store keys), the run, and that the Ray results are exactly
# what the local engine computes from the same samples (a local replay of the Ray store).
LLAMA = {"slots": 1, "ctx_per_slot": 1024}


def _consistent(res) -> None:
    for r in res.results:
        answers = [c.answer for c in r.trace.candidates]
        # the answers the run's extraction policy reads (the default falls back to math-verify when unmarked)
        assert len(answers) == 4 and answers == [extract_answer(c.text, policy=res.config.extraction)
                                                 for c in r.trace.candidates]
        assert r.sample_correct == grade_many([(a, r.problem.answer) for a in answers], kind=r.problem.kind)
        assert r.trace.answer == majority_vote(answers, math_equivalent(r.problem.kind))[0]


def _replays_locally(tmp_path, out, res) -> None:
    """The local engine over the Ray run's store: nothing generated, the very same results."""
    with LocalExecutor(PolicySpec(options={**LLAMA, "threads": 1})) as ex:
        replay = ex.run(config(out, max_tokens=48), PROBLEMS)
    assert replay.summary()["new_generations"] == 0
    assert texts(replay) == texts(res)
    assert [r.trace.answer for r in replay.results] == [r.trace.answer for r in res.results]
    assert [r.trace.correct for r in replay.results] == [r.trace.correct for r in res.results]
    assert replay.summary()["generated_tokens"] == res.summary()["generated_tokens"]


@pytest.mark.integration
@needs_ray
def test_llamacpp_on_two_ray_actors_matches_the_local_executor(local_ray, tmp_path):
    with LocalExecutor(PolicySpec(options={**LLAMA, "threads": 1})) as ex:
        local = ex.run(config(tmp_path / "local", max_tokens=48), PROBLEMS)
    with open_executor("ray", PolicySpec(options=LLAMA), actors=2) as ex:
        assert len(set(ex.pids.values())) == 2
        res = ex.run(config(tmp_path / "ray", max_tokens=48), PROBLEMS)
    assert res.run_id == local.run_id and res.summary()["failed"] == 0
    assert [r.problem.id for r in res.results] == [p.id for p in PROBLEMS]
    keys = generation_keys(tmp_path / "ray")
    assert len(keys) == 24 and keys == generation_keys(tmp_path / "local")  # the same requests and seeds
    _consistent(res)
    _replays_locally(tmp_path, tmp_path / "ray", res)
    same = sum(a == b for ta, tb in zip(texts(local), texts(res), strict=True) for a, b in zip(ta, tb, strict=True))
    # Measured: 24/24 identical in 3 of 3 runs on a loaded 2-core machine; the KV-cache effect above changed 3 of
    # 24 when the order changed. The floor allows that and one more; beyond it the actors sample something else
    # (other prompts, seeds or sampling parameters), which is what this test exists to catch.
    assert same >= 20, f"only {same}/24 texts identical to the local run"
    # where a problem's samples are identical, so is everything computed from them
    identical = [(a, b) for a, b in zip(local.results, res.results, strict=True)
                 if [c.text for c in a.trace.candidates] == [c.text for c in b.trace.candidates]]
    # at most 4 changed texts leave at least 2 of the 6 problems with all 4 samples identical
    assert len(identical) >= 2, f"only {len(identical)}/6 problems with identical samples"
    for a, b in identical:
        assert (a.trace.answer, a.trace.correct, a.sample_correct) == (b.trace.answer, b.trace.correct,
                                                                     b.sample_correct)


@pytest.mark.integration
@needs_ray
def test_llamacpp_run_survives_a_killed_actor(local_ray, tmp_path):
    ray = local_ray
    killed: list = []
    with open_executor("ray", PolicySpec(options=LLAMA), actors=2, chunk_problems=1) as ex:

        def kill_after_first_chunk(done: int, total: int) -> None:
            if done >= 1 and not killed:
                killed.append(ex.actors[0])
                ray.kill(ex.actors[0])

        res = ex.run(config(tmp_path / "ray", max_tokens=48), PROBLEMS, on_progress=kill_after_first_chunk)
        assert killed and ex.actors_started == 3 and ex.chunks_submitted > 6
    assert res.summary()["failed"] == 0 and len(res.results) == 6
    assert len(generation_keys(tmp_path / "ray")) == 24
    _consistent(res)
    _replays_locally(tmp_path, tmp_path / "ray", res)
