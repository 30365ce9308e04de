"""Failures of remote backends: retries with backoff, then the failure is recorded for that problem and
the run goes on. Against a local OpenAI-compatible test server (tests/httpserver.py) that fails on purpose
for one problem's prompt, and a scripted policy that does the same without HTTP."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from fakes import ScriptedPolicy, last_user_turn
from httpserver import Reply, TestServer
from testtime import engine
from testtime.cli import app
from testtime.datasets import load_dataset
from testtime.netretry import RequestFailed
from testtime.optimal.calibrate import ALL, Choice, Predictor, Table
from testtime.optimal.recipe import load_recipe
from testtime.optimal.selector import run_optimal
from testtime.optimal.sweep import run_sweep
from testtime.policy.openai_compat import GenerationFailed, OpenAICompatPolicy
from testtime.reward.base import BatchScorer, Scored
from testtime.store import Store

PROBLEMS = load_dataset("arith", limit=6)
ANSWERS = {p.question: p.answer for p in PROBLEMS}
DOWN = PROBLEMS[2]  # the problem whose prompt the servers fail on


def last_question(prompt: str) -> str:
    """The question of the last user turn as plain_chat renders it ('Question: INSTRUCTIONS\\n\\nQ\\nAnswer:')."""
    return prompt.rsplit("Question: ", 1)[-1].split("\nAnswer:", 1)[0].split("\n\n")[-1]


class Completions:
    """A /v1/completions script: every sample answers its problem correctly, except that prompts of a
    problem in ``down`` get ``status`` (``fail_times`` times, or forever when None)."""

    def __init__(self, down: set[str] = frozenset(), status: int = 503, fail_times: int | None = None,
                 delay_s: float = 0.0):
        self.down = set(down)
        self.status = status
        self.fail_times = fail_times
        self.delay_s = delay_s
        self.asked: dict[str, int] = {}  # question -> requests received

    def __call__(self, k: int, path: str, body: dict) -> Reply:
        q = last_question(body["prompt"])
        self.asked[q] = self.asked.get(q, 0) + 1
        if q in self.down and (self.fail_times is None or self.asked[q] <= self.fail_times):
            return Reply(self.status, {"error": {"message": "failing on purpose"}}, delay_s=self.delay_s)
        n = body["n"]
        answer = ANSWERS.get(q, "?")
        choices = [{"index": i, "finish_reason": "stop",
                    "text": f"Step 1: I work it out (sample {body['seed'] + i}).\n\nThe answer is {answer}."}
                   for i in range(n)]
        return Reply(200, {"choices": choices, "usage": {"prompt_tokens": 20, "completion_tokens": 12 * n}})


@pytest.fixture
def serve():
    servers: list[TestServer] = []

    def start(script) -> TestServer:
        servers.append(TestServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def openai_policy(url: str, **kw) -> OpenAICompatPolicy:
    opts = dict(timeout_s=5.0, retries=1, backoff_s=0.0, max_backoff_s=0.0, n_params=1000)  # scripted: no size
    opts.update(kw)
    return OpenAICompatPolicy(url, "org/model", **opts)


def config(tmp_path, **kw) -> engine.RunConfig:
    base = dict(dataset="arith", strategy="majority", n=4, limit=6, out=str(tmp_path / "runs"), max_tokens=64)
    return engine.RunConfig(**{**base, **kw})


# --- recording a failure and retrying it on a rerun -------------------------------------------------


def test_failed_problem_is_recorded_and_the_run_continues(serve, tmp_path):
    script = Completions({DOWN.question})
    srv = serve(script)
    res = engine.run(config(tmp_path), openai_policy(srv.url))
    failed = res.results[2]
    assert failed.problem.id == DOWN.id and failed.failed
    assert failed.trace.correct is False and failed.trace.candidates == [] and failed.sample_correct == []
    assert "HTTP 503" in failed.error and "after 2 attempts" in failed.error and "\n" not in failed.error
    assert [r.failed for r in res.results] == [False, False, True, False, False, False]
    assert all(r.trace.correct for r in res.results if not r.failed)  # the others finished, and right
    s = res.summary()
    assert s["failed"] == 1 and list(s["failures"]) == [DOWN.id] and "HTTP 503" in s["failures"][DOWN.id]
    assert s["n_problems"] == 6 and s["accuracy"] == pytest.approx(5 / 6)  # failed counts as wrong
    assert s["new_generations"] == 20
    with Store(tmp_path / "runs") as store:
        stored = {t["problem_id"]: t for t in store.get_results(res.run_id)}
        run = store.get_run(res.run_id)
        assert store.count_generations() == 20
    assert len(stored) == 6 and stored[DOWN.id]["error"] and stored[DOWN.id]["correct"] is False
    assert "HTTP 503" in stored[DOWN.id]["error"]
    assert run["summary"]["failed"] == 1

    # the server recovers: the rerun fills the failed problem in and replays the rest from the store
    script.down.clear()
    before = dict(script.asked)
    again = engine.run(config(tmp_path), openai_policy(srv.url))
    s2 = again.summary()
    assert again.run_id == res.run_id
    assert s2["failed"] == 0 and s2["failures"] == {} and s2["accuracy"] == 1.0
    assert s2["new_generations"] == 4 and s2["cached_generations"] == 20
    assert {q: script.asked[q] - before.get(q, 0) for q in script.asked if script.asked[q] != before.get(q, 0)} == {
        DOWN.question: 1}  # only the failed problem's samples were asked for
    with Store(tmp_path / "runs") as store:
        stored = {t["problem_id"]: t for t in store.get_results(res.run_id)}
    assert len(stored) == 6 and stored[DOWN.id]["correct"] is True and stored[DOWN.id]["error"] is None


def test_the_failed_batch_is_isolated_without_resending_the_others(serve, tmp_path):
    script = Completions({DOWN.question})
    srv = serve(script)
    res = engine.run(config(tmp_path), openai_policy(srv.url, retries=2))
    assert res.summary()["failed"] == 1
    # one batch of 6 problems: the down one is tried 3 times in the batch and 3 times alone; the five
    # others are asked once each -- their samples were stored before the batch failed, then replayed
    assert script.asked[DOWN.question] == 6
    assert all(script.asked[p.question] == 1 for p in PROBLEMS if p is not DOWN)


def test_transient_failures_are_retried_with_backoff(serve, tmp_path):
    script = Completions({DOWN.question}, status=429, fail_times=2)
    srv = serve(script)
    t0 = time.perf_counter()
    res = engine.run(config(tmp_path), openai_policy(srv.url, retries=3, backoff_s=0.1, max_backoff_s=1.0))
    elapsed = time.perf_counter() - t0
    assert res.summary()["failed"] == 0 and res.summary()["accuracy"] == 1.0
    assert script.asked[DOWN.question] == 3  # two 429s, then the answer
    assert elapsed >= 0.1 + 0.2  # exponential backoff: 0.1 s, then 0.2 s (plus jitter)


def test_retries_run_out_on_timeouts(serve, tmp_path):
    script = Completions({DOWN.question}, status=200, delay_s=1.0)  # answers, but too late
    script.status = 503
    srv = serve(script)
    res = engine.run(config(tmp_path), openai_policy(srv.url, timeout_s=0.3, retries=1))
    err = res.summary()["failures"][DOWN.id]
    assert "timed out" in err and "after 2 attempts" in err


def test_a_client_error_is_recorded_without_retrying(serve, tmp_path):
    script = Completions({DOWN.question}, status=400)
    srv = serve(script)
    res = engine.run(config(tmp_path), openai_policy(srv.url, retries=3))
    assert "HTTP 400" in res.summary()["failures"][DOWN.id]
    assert script.asked[DOWN.question] == 2  # once in the batch, once alone: a 400 is not retried


# --- without HTTP: a scripted policy that fails like the OpenAI backend -----------------------------


class FlakyPolicy(ScriptedPolicy):
    """ScriptedPolicy whose requests for questions in `down` fail the way OpenAICompatPolicy's do: every
    other request is completed and reported first, then GenerationFailed lists the failed ones."""

    def __init__(self, script, down=(), **kw):
        super().__init__(script, **kw)
        self.down = set(down)

    def generate(self, requests, on_chunk=None):
        bad = [i for i, r in enumerate(requests) if any(q in last_user_turn(r.prompt) for q in self.down)]
        good = [i for i in range(len(requests)) if i not in bad]
        relay = None if on_chunk is None else (lambda ri, first, done: on_chunk(good[ri], first, done))
        out = super().generate([requests[i] for i in good], on_chunk=relay)
        if bad:
            raise GenerationFailed([(i, requests[i].first_index, requests[i].n, RuntimeError("down")) for i in bad])
        return out


SCRIPT = {p.question: [p.answer] for p in PROBLEMS}


def test_other_errors_propagate(tmp_path):
    policy = ScriptedPolicy(SCRIPT, crash_after=5)
    with pytest.raises(Exception, match="simulated crash"):
        engine.run(config(tmp_path), policy)


class MarkerScorer(BatchScorer):
    """Scores every step 0.5, except that solutions of the `down` question fail like an HTTP scorer."""

    name = "marker"

    def __init__(self, down: str):
        self.down = down

    def score_batch(self, requests):
        if any(r.question == self.down for r in requests):
            raise RequestFailed("http://127.0.0.1:9/score", "HTTP 503: scorer down", 3, status=503, retryable=True)
        return [Scored([0.5] * len(r.steps), tokens=len(r.steps)) for r in requests]


def test_a_scorer_failure_is_recorded_too(tmp_path):
    problems = PROBLEMS[:3]
    res = engine.run(config(tmp_path, strategy="best_of_n", prm="marker"), ScriptedPolicy(SCRIPT), problems,
                     scorer=MarkerScorer(problems[0].question))
    assert [r.failed for r in res.results] == [True, False, False]
    s = res.summary()  # the first result failed: the PRM fields come from the first that did not
    assert s["failed"] == 1 and "scorer down" in s["failures"][problems[0].id]
    assert s["prm"] == "marker" and s["accuracy"] == pytest.approx(2 / 3)
    assert s["selections"]["majority"] == pytest.approx(2 / 3)


def test_sweep_leaves_failed_problems_out_until_a_rerun(tmp_path):
    problems = PROBLEMS[:3]
    recipe = load_recipe(None, ["n_max=2", "strategies=[cot, majority]", f"out={tmp_path}", "prm=null", "limit=3",
                                "name=flaky", "fewshot=0", "max_tokens=32"])
    sw = run_sweep(recipe, FlakyPolicy(SCRIPT, down={problems[1].question}), None, problems)
    assert list(sw.failed) == [problems[1].id] and "down" in sw.failed[problems[1].id]
    assert {p.id for p in sw.problems} == {problems[0].id, problems[2].id}
    assert problems[1].id not in {c.problem_id for c in sw.cells}
    again = run_sweep(recipe, FlakyPolicy(SCRIPT), None, problems)
    assert again.failed == {} and len(again.problems) == 3


def test_selector_counts_failed_problems_as_wrong(tmp_path):
    problems = PROBLEMS[:2]
    policy = FlakyPolicy(SCRIPT, down={problems[1].question})
    choice = Choice("majority", "majority", 4, None, None, 1.0, 1)
    table = Table(
        policy=policy.model_id, prm=None, oracle_prm=False, dataset="arith", recipe="t", easy=0.5, hard=0.1,
        budgets=[4], table={label: {4: choice} for label in ("easy", "medium", "hard", ALL)}, fixed={},
        predictor=Predictor(4, [0.0, 1.0, 0.0], False), calibration_ids=[], holdout_ids=[],
    )
    base = engine.RunConfig(dataset="arith", out=str(tmp_path), max_tokens=64, fewshot=0)
    res = run_optimal(table, 4, policy, None, problems, base)
    assert res.correct == {problems[0].id: True, problems[1].id: False}
    assert list(res.bins) == [problems[0].id] and list(res.failed) == [problems[1].id]
    s = res.summary()
    assert s["accuracy"] == 0.5 and s["failed"] == 1 and s["failures"][problems[1].id].startswith("probe: ")


# --- the command line: --backend openai --base-url -------------------------------------------------

runner = CliRunner()


def test_cli_run_over_an_openai_server_records_the_failure(serve, tmp_path):
    script = Completions({DOWN.question}, status=400)  # not retried: the test stays fast
    srv = serve(script)
    args = ["run", "--backend", "openai", "--model", "org/model", "--base-url", srv.url, "--base-url", srv.url + "/v1",
            "--policy-option", "n_params=1000", "--limit", "6", "--n", "2", "--max-tokens", "32",
            "--out", str(tmp_path), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout.strip().splitlines()[-1])
    assert s["failed"] == 1 and list(s["failures"]) == [DOWN.id] and s["accuracy"] == pytest.approx(5 / 6)
    assert "1 problem(s) failed" in result.stderr and DOWN.id in result.stderr
    assert {b["model"] for b in srv.bodies} == {"org/model"}


def test_cli_policy_options_reach_the_backend(serve, tmp_path):
    srv = serve(Completions())
    args = ["run", "--backend", "openai", "--model", "org/model", "--base-url", srv.url, "--policy-option",
            "max_n_per_request=1", "--policy-option", "timeout_s=2.5",
            "--policy-option", "n_params=1000", "--limit", "2", "--n", "3", "--out",
            str(tmp_path), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(srv.bodies) == 6 and {b["n"] for b in srv.bodies} == {1}  # 2 problems x 3 samples, one each


@pytest.mark.parametrize("args, needle", [
    (["--backend", "nope"], "--backend nope: unknown (available: llamacpp, vllm, hf, openai)"),
    (["--policy-option", "novalue"], "--policy-option novalue: expected KEY=VALUE"),
    (["--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9", "--policy-option", "colour=red"],
     "--policy-option: OpenAICompatPolicy.__init__() got an unexpected keyword argument 'colour'"),
    (["--base-url", "http://127.0.0.1:9"], "--base-url: only applies to backend openai"),
    (["--backend", "openai", "--model", "m"], "--base-url: backend openai needs one or more OpenAI-compatible"),
    (["--backend", "openai", "--base-url", "http://127.0.0.1:9"], "--model: backend openai needs the model name"),
])
def test_cli_backend_option_errors_are_one_line(tmp_path, args, needle):
    result = runner.invoke(app, ["run", "--limit", "1", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
