"""Fault injection for every remote part: the OpenAI-compatible policy backend and the HTTP scorer behind a
server that drops connections, answers 500 and 429 (with Retry-After), answers too late, cuts bodies short,
sends malformed or wrong JSON, and goes away mid-run and comes back (tests/faultserver.py).

Each fault ends in a retried success (the run's results equal a fault-free run's) or in a recorded failure
of that one problem while the run goes on; never a hang or a crash, and the store stays consistent. Also
the resource bound of grading: a storm of adversarial pairs keeps memory bounded and never runs more than
one math-verify worker.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fakes import ScriptedPolicy
from faultserver import FAULTS, FaultServer, openai_handler, score_handler
from testtime import engine, grading
from testtime.datasets import load_dataset
from testtime.policy.openai_compat import OpenAICompatPolicy
from testtime.reward.http import HTTPScorer, RetryPolicy
from testtime.store import Store
from testtime.store_salvage import check_store

PROBLEMS = load_dataset("arith", limit=6, seed=3)
TRANSIENT = ("drop", "500", "429", "slow", "truncated")  # retried by netretry
AT_ONCE = ("malformed", "wrong_shape")  # not retried by the client: the engine reruns the problem alone
CLIENT_TIMEOUT_S = 0.4

# what the tests injected, for the closing figures (printed with -s)
INJECTED: Counter[str] = Counter()


def no_hang(fn, *args, limit_s: float = 120.0, **kwargs):
    """``fn(*args)`` in a thread, failing the test if it has not returned within ``limit_s``."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result(timeout=limit_s)


def scheduled(faults: list[str | None]):
    """A plan that fails request k with ``faults[k]`` (None: answers it), then answers everything."""
    return lambda k, path, body: faults[k] if k < len(faults) else None


def mixed_schedule(kinds: tuple[str, ...], seed: int, rounds: int = 1, gap: int = 1) -> list[str | None]:
    """Every kind ``rounds`` times in a seeded order, each followed by ``gap`` answered requests (so a
    retry can succeed: at most one fault in a row per request stream)."""
    order = [k for k in kinds for _ in range(rounds)]
    random.Random(seed).shuffle(order)
    out: list[str | None] = []
    for k in order:
        out += [k] + [None] * gap
    return out


def openai_policy(server: FaultServer, retries: int = 4) -> OpenAICompatPolicy:
    return OpenAICompatPolicy(server.base_url, "fake", model_id="fake-openai", n_params=1000,
                              timeout_s=CLIENT_TIMEOUT_S, retries=retries, backoff_s=0.02, max_backoff_s=0.2,
                              max_concurrency=4, max_n_per_request=2)


def run(out: Path, policy, strategy: str = "best_of_n", scorer=None, problems=PROBLEMS, n: int = 4):
    config = engine.RunConfig(dataset="arith", strategy=strategy, n=n, out=str(out), fewshot=0,
                              prm="arith-check" if scorer is None and strategy != "majority" else None,
                              m=2, max_depth=4, batch_sequences=8)
    return no_hang(engine.run, config, policy, problems, scorer=scorer)


def outcome(result) -> dict[str, tuple]:
    return {r.problem.id: (r.trace.answer, r.trace.correct, tuple(c.answer for c in r.trace.candidates))
            for r in result.results}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The fault-free runs every faulty run is compared with (majority and beam search)."""
    out = tmp_path_factory.mktemp("baseline")
    server = FaultServer(openai_handler)
    try:
        policy = openai_policy(server)
        got = {s: outcome(run(out, policy, s)) for s in ("majority", "beam")}
        policy.close()
    finally:
        server.stop()
    return got


def retried_or_recorded(result, want: dict, at_once: int) -> set[str]:
    """Every problem either has the fault-free result or is recorded as failed (at most one per fault the
    client cannot retry); returns the failed ones."""
    s = result.summary()
    failed = set(s["failures"])
    assert s["failed"] == len(failed) <= at_once
    got = outcome(result)
    assert {k: v for k, v in got.items() if k not in failed} == {k: v for k, v in want.items() if k not in failed}
    assert all(got[k][1] is False for k in failed)  # a failed problem counts as wrong
    return failed


def healed_rerun(out: Path, server: FaultServer, policy, strategy: str, failed: set[str], want: dict,
                 scorer=None) -> None:
    """With the faults gone, a rerun asks only about the failed problems and gets the fault-free result."""
    server.plan = lambda k, path, body: None
    before = len(server.requests)
    again = run(out, policy, strategy, scorer)
    questions = {p.question for p in PROBLEMS if p.id in failed}
    assert (len(server.requests) > before) == bool(failed)  # asked again exactly when something had failed
    for _path, body in server.requests[before:]:
        text = body.get("prompt") or " ".join(it["question"] for it in body["items"])
        assert any(q in text for q in questions), "a finished problem was asked about again"
    assert again.summary()["failed"] == 0 and outcome(again) == want
    report = check_store(out)
    assert report.ok and report.rows["results"] == len(PROBLEMS)


@pytest.mark.parametrize("strategy", ["majority", "beam"])
def test_policy_faults_are_retried_or_recorded(tmp_path, baseline, strategy):
    schedule = mixed_schedule(TRANSIENT + AT_ONCE, seed=len(strategy))
    server = FaultServer(openai_handler, scheduled(schedule), slow_s=CLIENT_TIMEOUT_S + 0.3)
    policy = openai_policy(server)
    try:
        result = run(tmp_path, policy, strategy)
        assert server.faults == Counter(k for k in schedule if k)  # every scheduled fault was served
        INJECTED.update(server.faults)
        failed = retried_or_recorded(result, baseline[strategy], at_once=sum(server.faults[k] for k in AT_ONCE))
        assert check_store(tmp_path).ok
        healed_rerun(tmp_path, server, policy, strategy, failed, baseline[strategy])
    finally:
        policy.close()
        server.stop()


def test_a_problem_whose_requests_keep_failing_is_recorded_and_retried_on_rerun(tmp_path, baseline):
    bad = PROBLEMS[1]
    kinds = iter(["500", "drop", "429", "truncated", "malformed", "wrong_shape"] * 100)

    def plan(k: int, path: str, body: dict) -> str | None:
        return next(kinds) if bad.question in body["prompt"] else None

    server = FaultServer(openai_handler, plan)
    policy = openai_policy(server, retries=2)
    try:
        first = run(tmp_path, policy, "majority")
        INJECTED.update(server.faults)
        s = first.summary()
        assert s["failed"] == 1 and list(s["failures"]) == [bad.id]
        assert "POST" in s["failures"][bad.id] or "choices" in s["failures"][bad.id]
        others = {k: v for k, v in outcome(first).items() if k != bad.id}
        assert others == {k: v for k, v in baseline["majority"].items() if k != bad.id}
        assert check_store(tmp_path).ok
        with Store(tmp_path) as store:
            failed = [r for r in store.get_results(first.run_id) if r.get("error")]
        assert [r["problem_id"] for r in failed] == [bad.id]
        # the server heals; a rerun asks only for the failed problem and now gets the fault-free result
        server.plan = lambda k, path, body: None
        before = len(server.requests)
        again = run(tmp_path, policy, "majority")
        asked = server.requests[before:]
        assert asked and all(bad.question in body["prompt"] for _path, body in asked)
        assert again.summary()["failed"] == 0 and outcome(again) == baseline["majority"]
    finally:
        policy.close()
        server.stop()


def test_a_server_that_dies_mid_run_and_comes_back(tmp_path, baseline):
    server: FaultServer

    def plan(k: int, path: str, body: dict) -> str | None:
        if k == 3:  # this answer is lost, and the server is gone for 0.6 s
            server.down(0.6)
            return "drop"
        return None

    server = FaultServer(openai_handler, plan)
    policy = OpenAICompatPolicy(server.base_url, "fake", model_id="fake-openai", n_params=1000,
                                timeout_s=CLIENT_TIMEOUT_S, retries=8, backoff_s=0.05, max_backoff_s=0.3,
                                max_concurrency=4, max_n_per_request=2)
    try:
        t0 = time.perf_counter()
        result = run(tmp_path, policy, "majority")
        wall = time.perf_counter() - t0
    finally:
        policy.close()
        server.stop()
    INJECTED.update(server.faults)
    assert server.faults == Counter({"down": 1, "drop": 1})
    assert wall >= 0.6  # it did wait for the server to come back
    assert result.summary()["failed"] == 0 and outcome(result) == baseline["majority"]
    assert check_store(tmp_path).ok


# --- the HTTP scorer ------------------------------------------------------------------------------------


def http_scorer(server: FaultServer, retries: int = 4) -> HTTPScorer:
    return HTTPScorer(server.base_url, name="fake-prm", batch_size=2, max_concurrency=2,
                      retry=RetryPolicy(timeout_s=CLIENT_TIMEOUT_S, retries=retries, backoff_s=0.02,
                                        max_backoff_s=0.2))


def test_scorer_faults_are_retried_or_recorded(tmp_path):
    clean = FaultServer(score_handler)
    try:
        want = outcome(run(tmp_path / "clean", ScriptedPolicy(), "best_of_n", http_scorer(clean)))
    finally:
        clean.stop()

    schedule = mixed_schedule(TRANSIENT + AT_ONCE, seed=7)
    server = FaultServer(score_handler, scheduled(schedule), slow_s=CLIENT_TIMEOUT_S + 0.3)
    try:
        got = run(tmp_path / "faulty", ScriptedPolicy(), "best_of_n", http_scorer(server))
        assert server.faults == Counter(k for k in schedule if k)
        INJECTED.update(server.faults)
        failed = retried_or_recorded(got, want, at_once=sum(server.faults[k] for k in AT_ONCE))
        assert check_store(tmp_path / "faulty").ok
        healed_rerun(tmp_path / "faulty", server, ScriptedPolicy(), "best_of_n", failed, want, http_scorer(server))

        # one problem's scoring keeps failing: that problem is recorded as failed, the rest equal `want`
        bad = PROBLEMS[4]
        server.plan = lambda k, path, body: "500" if any(it["question"] == bad.question for it in body["items"]) \
            else None
        before = server.faults["500"]
        third = run(tmp_path / "down", ScriptedPolicy(), "best_of_n", http_scorer(server, retries=2))
        INJECTED["500"] += server.faults["500"] - before
        s = third.summary()
        assert s["failed"] == 1 and list(s["failures"]) == [bad.id] and "HTTP 500" in s["failures"][bad.id]
        assert {k: v for k, v in outcome(third).items() if k != bad.id} == \
            {k: v for k, v in want.items() if k != bad.id}
        assert check_store(tmp_path / "down").ok
    finally:
        server.stop()


def test_every_fault_kind_was_injected():
    """The figures for the closing note: faults injected per kind by this module (run it whole)."""
    if not INJECTED:
        pytest.skip("run with the rest of the module")
    print("\nfaults injected per kind:", dict(sorted(INJECTED.items())))
    assert set(INJECTED) >= set(FAULTS) | {"down"}


# --- resource bounds of grading ---------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def grading_workers() -> list[int]:
    """Live child processes of this process that run the math-verify worker."""
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and b"_testtime_grading_worker" in cmd and " Z " not in stat.rsplit(")", 1)[1][:3]:
            out.append(int(entry.name))
    return out


def adversarial_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """(pred, ref) pairs that are slow or heavy for a LaTeX parser and a CAS."""
    makers = [
        lambda: ("\\frac{" * 400 + "1" + "}" * 400, "1"),
        lambda: ("9" * 3000, "9" * 2999 + "8"),
        lambda: ("2^{2^{2^{2^{2^{99}}}}}", "2^{2^{2^{2^{2^{98}}}}}"),
        lambda: ("(" * 300 + "x+1" + ")" * 300, "x+1"),
        lambda: ("\\sqrt{" * 200 + "2" + "}" * 200, "\\sqrt{2}"),
        lambda: (" + ".join(f"x^{{{i}}}" for i in range(300)), "0"),
        lambda: ("".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(2000)), "\\pi"),
        lambda: (f"{rng.randrange(10**50)}^{{{rng.randrange(10**6)}}}", f"{rng.randrange(10**50)}"),
        lambda: ("\\begin{pmatrix}" + "\\\\".join("&".join("x" for _ in range(30)) for _ in range(30))
                 + "\\end{pmatrix}", "0"),
        lambda: (f"\\frac{{{rng.randrange(1, 99)}}}{{{rng.randrange(1, 99)}}}", f"{rng.random():.6f}"),
    ]
    return [rng.choice(makers)() for _ in range(n)]


def test_a_grading_storm_keeps_memory_bounded_and_one_worker():
    rng = random.Random(19)
    grading.grade_many([("\\frac{1}{2}", "0.5")])  # the worker is up (its start is not the storm's)
    parent0 = rss_kb(os.getpid())
    starts0 = grading.worker_stats()["starts"]
    peak_worker, most_workers, pairs_done = 0, 0, 0
    t0 = time.perf_counter()
    for _round in range(5):
        pairs = adversarial_pairs(rng, 8)
        verdicts = grading.grade_many(pairs, kind="math", timeout_s=0.5)
        assert len(verdicts) == len(pairs) and all(isinstance(v, bool) for v in verdicts)
        pairs_done += len(pairs)
        workers = grading_workers()
        most_workers = max(most_workers, len(workers))
        for pid in workers:
            peak_worker = max(peak_worker, rss_kb(pid))
    wall = time.perf_counter() - t0
    stats = grading.worker_stats()
    grown_mb = (rss_kb(os.getpid()) - parent0) / 1024
    print(f"\ngrading storm: {pairs_done} adversarial pairs in {wall:.1f} s, worker restarts "
          f"{stats['starts'] - starts0}, timeouts {stats['timeouts']}, peak worker RSS {peak_worker / 1024:.0f} MB, "
          f"parent RSS growth {grown_mb:.1f} MB")
    assert most_workers <= 1  # a stuck worker is replaced, never joined by another
    assert grown_mb < 100  # the parent holds no per-pair state beyond the verdict cache
    assert peak_worker < 1024 * 1024  # a worker stays under 1 GB whatever it is fed
    assert grading.grade_many([("\\frac{1}{2}", "0.5"), ("3", "4")]) == [True, False]  # and still grades


# --- a Ray actor killed mid-chunk during a sweep ------------------------------------------------------------

TESTS = str(Path(__file__).parent)
SRC = str(Path(grading.__file__).resolve().parent.parent)  # this testtime, also inside the actors


class _SlowScripted(ScriptedPolicy):
    """A scripted policy that takes a while per call, so a chunk is in flight when its actor is killed."""

    def generate(self, requests, on_chunk=None):
        time.sleep(0.2)
        return super().generate(requests, on_chunk)


def slow_scripted() -> ScriptedPolicy:
    return _SlowScripted()


def test_a_ray_actor_killed_mid_chunk_during_a_sweep(tmp_path):
    ray = pytest.importorskip("ray")
    import threading

    from testtime.execution import PolicySpec, open_executor
    from testtime.execution.ray import init_ray
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import run_sweep

    def recipe(out: Path):
        return load_recipe(None, ["n_max=4", "strategies=[cot, best_of_n, {name: beam, m: 2}]", f"out={out}",
                                  "prm=arith-check", "name=r", "max_tokens=32", "max_depth=3", "fewshot=0"])

    local = run_sweep(recipe(tmp_path / "local"), ScriptedPolicy(), None, PROBLEMS)
    started = init_ray(runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, SRC])}})
    try:
        with open_executor("ray", PolicySpec(factory=slow_scripted), actors=2, chunk_problems=1) as ex:
            killed: list = []

            def kill_one_mid_chunk() -> None:
                deadline = time.monotonic() + 120
                while ex.chunks_submitted < 4 and time.monotonic() < deadline:
                    time.sleep(0.02)
                killed.append(ex.actors[0])
                ray.kill(ex.actors[0])  # it holds a chunk in flight

            killer = threading.Thread(target=kill_one_mid_chunk, daemon=True)
            killer.start()
            remote = no_hang(run_sweep, recipe(tmp_path / "ray"), ex, None, PROBLEMS, limit_s=300)
            killer.join(timeout=10)
            assert killed and ex.actors_started >= 3  # the killed actor was replaced
    finally:
        if started:
            ray.shutdown()
    assert remote.failed == {} and remote.run_ids == local.run_ids
    assert remote.cells == local.cells and remote.problems == local.problems
    INJECTED["ray actor killed"] += len(killed)
