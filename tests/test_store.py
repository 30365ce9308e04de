"""The SQLite store: generation keys, generation/result/run rows, schema check, crash durability."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import testtime
from testtime.store import SCHEMA_VERSION, Store, generation_key
from testtime.types import Candidate, Completion, Compute, Problem, Trace

SRC = str(Path(testtime.__file__).resolve().parent.parent)

BASE = dict(
    model="m",
    prompt="What is 2 + 2?",
    params={"max_tokens": 256, "temperature": 0.7, "top_p": 1.0, "top_k": 0, "stop": []},
    seed=7,
    sample_index=0,
)


def key_of(**changes) -> str:
    args = {**BASE, **changes}
    return generation_key(args["model"], args["prompt"], args["params"], args["seed"], args["sample_index"])


def comp(text: str, gen: int = 3, prompt: int = 10, cached: int = 0, finish: str = "eos", stop=None) -> Completion:
    return Completion(text, finish, prompt, cached, gen, stop=stop)


def row(key: str, c: Completion, idx: int = 0, prompt: str = "p") -> tuple:
    return (key, "m", prompt, {"temperature": 0.7}, 1, idx, c)


# --- generation_key ---------------------------------------------------------------------------


def test_generation_key_is_a_sha256_hex_digest_and_deterministic():
    k = key_of()
    assert len(k) == 64 and int(k, 16) >= 0
    assert key_of() == k


@pytest.mark.parametrize(
    "change",
    [
        {"model": "m2"},
        {"prompt": "What is 2 + 3?"},
        {"prompt": "What is 2 + 2? "},  # trailing space is a different prompt
        {"seed": 8},
        {"sample_index": 1},
        {"params": {**BASE["params"], "max_tokens": 257}},
        {"params": {**BASE["params"], "temperature": 0.0}},
        {"params": {**BASE["params"], "top_p": 0.9}},
        {"params": {**BASE["params"], "top_k": 40}},
        {"params": {**BASE["params"], "stop": ["\n\n"]}},
        {"params": {k: v for k, v in BASE["params"].items() if k != "top_k"}},  # a missing param
    ],
)
def test_generation_key_changes_with_every_field(change):
    assert key_of(**change) != key_of()


def test_generation_key_does_not_confuse_seed_and_sample_index():
    # seed 7 / sample 1 and seed 8 / sample 0 are different store rows (keys hash both fields apart)
    assert key_of(seed=7, sample_index=1) != key_of(seed=8, sample_index=0)


def test_generation_key_is_stable_across_dict_key_order():
    params = BASE["params"]
    reordered = dict(reversed(list(params.items())))
    assert list(reordered) != list(params)
    assert key_of(params=reordered) == key_of()
    nested = {"a": {"x": 1, "y": 2}, "b": 1}
    assert key_of(params=nested) == key_of(params={"b": 1, "a": {"y": 2, "x": 1}})


def test_generation_key_matches_sampling_params_to_dict():
    from testtime.policy.base import SamplingParams

    sp = SamplingParams(stop=("\n\n",))
    as_tuple = {**sp.to_dict(), "stop": ("\n\n",)}  # a tuple serialises like the list to_dict gives
    assert key_of(params=sp.to_dict()) == key_of(params=as_tuple)


# --- store files and schema ---------------------------------------------------------------------


def test_store_in_a_folder_and_at_a_sqlite_path(tmp_path):
    with Store(tmp_path / "out" / "nested") as s:
        assert s.path == tmp_path / "out" / "nested" / Store.FILENAME
    with Store(tmp_path / "other" / "x.sqlite") as s:
        assert s.path == tmp_path / "other" / "x.sqlite"
    assert (tmp_path / "out" / "nested" / Store.FILENAME).is_file()
    assert (tmp_path / "other" / "x.sqlite").is_file()


def test_store_uses_wal(tmp_path):
    with Store(tmp_path) as s:
        mode = s._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_schema_version_mismatch_is_an_error(tmp_path):
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match=rf"schema version {SCHEMA_VERSION + 1}.*reads {SCHEMA_VERSION}"):
        Store(tmp_path)


def test_reopening_keeps_the_schema_version_row(tmp_path):
    Store(tmp_path).close()
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    rows = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchall()
    db.close()
    assert rows == [(str(SCHEMA_VERSION),)]


# --- generations --------------------------------------------------------------------------------


def test_put_get_roundtrip_keeps_every_field(tmp_path):
    a = comp("Step 1: x.\n\nThe answer is 4.", gen=9, prompt=21, cached=5, finish="stop", stop="\n\n")
    b = comp("unicode: é ∑ \\frac{1}{2}", gen=4, prompt=21, cached=21, finish="length")
    with Store(tmp_path) as s:
        assert s.get_generations(["k1", "k2"]) == {}
        s.put_generations([row("k1", a, 0), row("k2", b, 1)])
        got = s.get_generations(["k1", "k2", "absent"])
        assert s.count_generations() == 2
    assert set(got) == {"k1", "k2"}
    for key, want in (("k1", a), ("k2", b)):
        g = got[key]
        assert (g.text, g.finish_reason, g.stop, g.prompt_tokens, g.cached_prompt_tokens, g.generated_tokens) == (
            want.text, want.finish_reason, want.stop, want.prompt_tokens, want.cached_prompt_tokens,
            want.generated_tokens,
        )
        assert g.from_store is True
    assert a.from_store is False  # the caller's object is not touched


def test_put_stores_request_fields(tmp_path):
    with Store(tmp_path) as s:
        s.put_generations([("k", "model-x", "the prompt", {"b": 1, "a": 2}, 42, 3, comp("t"))])
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    r = db.execute("SELECT model, prompt, params, seed, sample_index FROM generations WHERE key='k'").fetchone()
    db.close()
    assert r == ("model-x", "the prompt", json.dumps({"a": 2, "b": 1}), 42, 3)


def test_insert_or_ignore_keeps_the_first(tmp_path):
    with Store(tmp_path) as s:
        s.put_generations([row("k", comp("first", gen=1))])
        s.put_generations([row("k", comp("second", gen=2)), row("k2", comp("other"))])
        got = s.get_generations(["k", "k2"])
        assert s.count_generations() == 2
    assert got["k"].text == "first" and got["k"].generated_tokens == 1
    assert got["k2"].text == "other"


def test_get_many_keys_beyond_the_parameter_limit(tmp_path):
    n = 1234  # more than two chunks of 500 host parameters
    with Store(tmp_path) as s:
        s.put_generations([row(f"k{i}", comp(f"t{i}"), i) for i in range(n)])
        got = s.get_generations([f"k{i}" for i in range(n)] + ["missing"])
    assert len(got) == n
    assert all(got[f"k{i}"].text == f"t{i}" for i in range(n))


def test_get_generations_accepts_a_generator(tmp_path):
    with Store(tmp_path) as s:
        s.put_generations([row("a", comp("A")), row("b", comp("B"))])
        got = s.get_generations(k for k in ("a", "b"))
    assert {k: v.text for k, v in got.items()} == {"a": "A", "b": "B"}


def test_failed_put_rolls_back_the_whole_batch(tmp_path):
    with Store(tmp_path) as s:
        bad = ("bad", "m", "p", {}, 1, 1, None)  # not a Completion: fails while building the rows
        with pytest.raises(AttributeError):
            s.put_generations([row("good", comp("g")), bad])
        assert s.count_generations() == 0
        s.put_generations([row("later", comp("l"))])  # no transaction was left open
        assert s.count_generations() == 1


# --- runs and results ---------------------------------------------------------------------------

PROBLEMS = [
    Problem("p1", "What is 1 + 1?", "2", "arith", {"level": 1}),
    Problem("p2", "What is 2 + 3?", "5", "arith", {"level": 2}),
]


def make_trace(pid: str, answer: str | None, correct: bool | None, budget: int = 4) -> Trace:
    cands = [
        Candidate(["Step 1: a.\n\n", f"The answer is {answer}."], answer, "eos", 7, correct),
        Candidate(["no answer"], None, "length", 3, False),
    ]
    return Trace(pid, "majority", budget, cands, answer, correct,
                 compute=Compute(prompt_tokens=20, generated_tokens=10, policy_flops=60.0, new_generations=2),
                 meta={"votes": [1]})


def test_runs_start_and_finish(tmp_path):
    with Store(tmp_path) as s:
        assert s.get_run("r1") is None
        s.start_run("r1", {"n": 4, "dataset": "arith"}, PROBLEMS)
        run = s.get_run("r1")
        assert run["status"] == "running" and run["summary"] is None
        assert run["config"] == {"n": 4, "dataset": "arith"}
        s.finish_run("r1", {"accuracy": 0.5})
        done = s.get_run("r1")
        assert done["status"] == "done" and done["summary"] == {"accuracy": 0.5}
        assert done["created"] == run["created"] and done["updated"] >= run["updated"]
        # restarting the same run id marks it running again, keeps one row and its creation time
        s.start_run("r1", {"n": 4, "dataset": "arith"}, PROBLEMS)
        again = s.get_run("r1")
        assert again["status"] == "running" and again["created"] == run["created"]
        s.start_run("r2", {"n": 8}, PROBLEMS[:1])
        assert [r["run_id"] for r in s.list_runs()] == ["r1", "r2"]
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    rows = db.execute(
        "SELECT run_id, problem_id, position, answer, kind, meta FROM problems ORDER BY run_id, position"
    ).fetchall()
    db.close()
    assert rows == [
        ("r1", "p1", 0, "2", "arith", '{"level": 1}'),
        ("r1", "p2", 1, "5", "arith", '{"level": 2}'),
        ("r2", "p1", 0, "2", "arith", '{"level": 1}'),
    ]


def test_results_put_get(tmp_path):
    with Store(tmp_path) as s:
        s.start_run("r", {}, PROBLEMS)
        assert s.get_results("r") == []
        s.put_result("r", make_trace("p1", "2", True))
        s.put_result("r", make_trace("p2", None, False))
        s.put_result("other", make_trace("p1", "9", False))
        got = s.get_results("r")
    assert [g["problem_id"] for g in got] == ["p1", "p2"]
    first = got[0]
    assert first["answer"] == "2" and first["correct"] is True and first["strategy"] == "majority"
    assert first["budget"] == 4 and first["meta"] == {"votes": [1]}
    assert first["candidates"][0]["steps"] == ["Step 1: a.\n\n", "The answer is 2."]
    assert first["candidates"][1]["answer"] is None
    assert first["compute"]["policy_flops"] == 60.0 and first["compute"]["new_generations"] == 2
    assert got[1]["answer"] is None and got[1]["correct"] is False


def test_results_of_some_problems_only(tmp_path):
    """A long-lived run (a server's) reads back only the batch's problems, in stored order, any number of them."""
    with Store(tmp_path) as s:
        for i in range(1200):  # more ids than one SQL parameter chunk
            s.put_result("r", make_trace(f"p{i}", str(i), True))
        s.put_result("other", make_trace("p7", "x", False))
        assert [g["problem_id"] for g in s.get_results("r", ["p7", "p3", "missing"])] == ["p3", "p7"]
        assert s.get_results("r", []) == []
        wanted = [f"p{i}" for i in range(0, 1200, 2)] + [f"p{i}" for i in range(1, 1200, 2)]
        assert [g["problem_id"] for g in s.get_results("r", wanted)] == [f"p{i}" for i in range(1200)]
        assert s.get_results("other", {"p7"})[0]["answer"] == "x"


def test_result_rows_replace_and_keep_columns(tmp_path):
    with Store(tmp_path) as s:
        s.put_result("r", make_trace("p1", "3", False))
        s.put_result("r", make_trace("p1", "2", True))  # same (run, problem, strategy, budget)
        s.put_result("r", make_trace("p1", "2", True, budget=8))  # another budget: a new row
        assert len(s.get_results("r")) == 2
    db = sqlite3.connect(tmp_path / Store.FILENAME)
    rows = db.execute("SELECT budget, answer, correct, compute FROM results ORDER BY budget").fetchall()
    db.close()
    assert [(b, a, c) for b, a, c, _ in rows] == [(4, "2", 1), (8, "2", 1)]
    compute = json.loads(rows[0][3])
    assert compute["flops"] == 60.0 and compute["generated_tokens"] == 10


# --- sharing and durability ---------------------------------------------------------------------


def test_a_second_store_sees_committed_rows(tmp_path):
    writer = Store(tmp_path)
    reader = Store(tmp_path)
    try:
        writer.put_generations([row("k", comp("hello"))])
        writer.start_run("r", {"a": 1}, PROBLEMS)
        writer.put_result("r", make_trace("p1", "2", True))
        # both connections open: the reader sees what the writer committed
        assert reader.get_generations(["k"])["k"].text == "hello"
        assert reader.get_run("r")["status"] == "running"
        assert len(reader.get_results("r")) == 1
    finally:
        writer.close()
        reader.close()
    with Store(tmp_path) as again:
        assert again.count_generations() == 1


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from testtime.store import Store
    from testtime.types import Completion
    s = Store(sys.argv[1])
    for batch in range(3):
        s.put_generations([
            (f"k{batch}-{i}", "m", "p", {"t": 1}, 0, batch * 10 + i,
             Completion(f"text {batch} {i}", "eos", 5, 0, 2))
            for i in range(10)
        ])
    s.start_run("killed-run", {"x": 1}, [])
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    print("not reached", flush=True)
    """
)


def test_rows_survive_sigkill_after_commit(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "committed"
    wal = Path(str(tmp_path / Store.FILENAME) + "-wal")
    assert wal.is_file() and wal.stat().st_size > 0  # killed before any close/checkpoint
    with Store(tmp_path) as s:
        assert s.count_generations() == 30
        got = s.get_generations([f"k{b}-{i}" for b in range(3) for i in range(10)])
        assert got["k2-9"].text == "text 2 9" and got["k0-0"].generated_tokens == 2
        assert s.get_run("killed-run")["status"] == "running"
