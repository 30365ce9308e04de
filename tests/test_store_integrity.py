"""The store under damage and concurrency, with real files and real processes.

* A damaged store (not a database, cut short, a page overwritten) stops any command with one line naming
  the file and the way out; ``testtime store check`` finds the damage and ``testtime store salvage`` copies
  every readable row into a new store, which a rerun then completes (recomputing only what was lost).
* Several processes writing one store at once all finish with every row intact: raw writers forced past
  SQLite's busy timeout (so testtime's retries run), and a real ``testtime run`` beside a real
  ``testtime sweep`` of the same run.
* ``kill -9`` at random points of a real ``testtime sweep`` (a subprocess, policy behind a local
  OpenAI-compatible fake server), repeated, then a rerun: no finished generation is lost or asked for
  again, and the sweep file equals an uninterrupted sweep's. ``TESTTIME_KILL_ROUNDS`` sets the rounds
  (``make fuzz`` runs more).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import testtime
import testtime.policy
from fakes import ScriptedPolicy
from faultserver import FaultServer, openai_handler
from testtime import engine
from testtime.cli import app
from testtime.datasets import load_dataset
from testtime.store import Store, StoreError
from testtime.store_salvage import check_store, salvage_store

SRC = str(Path(testtime.__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": SRC}
PROBLEMS = load_dataset("arith", limit=8, seed=5)
KILL_ROUNDS = int(os.environ.get("TESTTIME_KILL_ROUNDS", "4"))

# --- damaged stores --------------------------------------------------------------------------------------


def made_store(root: Path) -> Path:
    """A store with runs, problems, generations, rewards, a search tree and results (scripted policy)."""
    policy = ScriptedPolicy()
    for strategy, n in (("majority", 8), ("beam", 4)):
        config = engine.RunConfig(dataset="arith", strategy=strategy, n=n, m=2, max_depth=3, out=str(root),
                                  prm="arith-check" if strategy == "beam" else None, fewshot=0)
        engine.run(config, policy, PROBLEMS)
    return root / Store.FILENAME


def table_rows(db_file: Path, table: str) -> set[tuple]:
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] != "created" and r[1] != "updated"]
        return set(db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall())
    finally:
        db.close()


def zero_a_generations_page(db_file: Path) -> int:
    """Zero one leaf page of the generations table (found with SQLite's dbstat): its rows are gone for sure,
    every other table is untouched."""
    db = sqlite3.connect(db_file)
    leaves = [p for (p,) in db.execute("SELECT pageno FROM dbstat WHERE name='generations' AND pagetype='leaf'")]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    assert len(leaves) >= 4
    page = leaves[len(leaves) // 2]
    with db_file.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(bytes(size))
    return page


DAMAGE = {
    "not a database": lambda f: f.write_bytes(b"this was a spreadsheet once\n" * 500),
    "cut in half": lambda f: os.truncate(f, f.stat().st_size // 2),
    "a page zeroed": zero_a_generations_page,
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    made = made_store(root)
    with Store(root):  # a clean close checkpoints the WAL into the file: the copies below are whole
        pass
    return made


def damaged_copy(pristine: Path, dest: Path, kind: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Store.FILENAME
    shutil.copyfile(pristine, target)
    DAMAGE[kind](target)
    return target


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_store_is_one_line_naming_the_file_and_the_way_out(pristine, tmp_path, monkeypatch, kind):
    target = damaged_copy(pristine, tmp_path / "out", kind)
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "out")
    assert str(target) in str(err.value) and "store salvage" in str(err.value)
    # through the command line: the policy loads (a scripted stand-in), then the store is opened
    monkeypatch.setattr(testtime.policy, "load_policy", lambda *a, **k: ScriptedPolicy())
    res = CliRunner().invoke(app, ["run", "--dataset", "arith", "--limit", "2", "--n", "2", "--fewshot", "0",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and not isinstance(res.exception, StoreError | sqlite3.Error)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(target) in errors[0] and "testtime store check" in errors[0]
    assert "Traceback" not in res.output


def test_check_and_salvage_then_a_rerun_recomputes_only_what_was_lost(pristine, tmp_path):
    target = damaged_copy(pristine, tmp_path / "bad", "a page zeroed")
    runner = CliRunner()
    res = runner.invoke(app, ["store", "check", str(tmp_path / "bad"), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.output.strip().splitlines()[-1])
    assert not report["ok"] and (report["problems"] or report["error"])
    ok = runner.invoke(app, ["store", "check", str(pristine)])
    assert ok.exit_code == 0 and ": ok" in ok.output

    res = runner.invoke(app, ["store", "salvage", str(target), str(tmp_path / "new"), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output.strip().splitlines()[-1])
    assert got["lost"] and any(line.startswith("generations:") for line in got["lost"])
    new_file = tmp_path / "new" / Store.FILENAME
    assert got["target"] == str(new_file)
    # every salvaged row is exactly a row of the undamaged store; only generations on the page are missing
    for table in ("runs", "problems", "generations", "rewards", "nodes", "results"):
        salvaged, whole = table_rows(new_file, table), table_rows(pristine, table)
        assert salvaged <= whole, table
    lost_gens = len(table_rows(pristine, "generations")) - len(table_rows(new_file, "generations"))
    assert 0 < lost_gens < len(table_rows(pristine, "generations")) // 2
    assert check_store(new_file).ok
    # salvage never overwrites
    again = runner.invoke(app, ["store", "salvage", str(target), str(tmp_path / "new")])
    assert again.exit_code == 2 and "already exists" in again.output

    # a rerun on the salvaged store: the lost generations are generated again, nothing else
    policy = ScriptedPolicy()
    config = engine.RunConfig(dataset="arith", strategy="majority", n=8, out=str(tmp_path / "new"), fewshot=0)
    result = engine.run(config, policy, PROBLEMS)
    assert policy.n_generated <= lost_gens
    with Store(pristine.parent) as whole:
        assert [r["answer"] for r in whole.get_results(result.run_id)] == [r.trace.answer for r in result.results]


def test_salvage_of_a_file_that_is_no_database_says_everything_was_lost(pristine, tmp_path):
    target = damaged_copy(pristine, tmp_path / "bad", "not a database")
    report = salvage_store(target, tmp_path / "new.sqlite")
    assert not report.complete and "cannot be read as a database" in report.lost[0]
    assert sum(report.copied.values()) == 0 and check_store(tmp_path / "new.sqlite").ok


def test_salvage_of_a_truncated_store_keeps_the_front(pristine, tmp_path):
    target = damaged_copy(pristine, tmp_path / "bad", "cut in half")
    report = salvage_store(target, tmp_path / "new.sqlite")
    assert not report.complete and report.copied["generations"] > 0
    assert table_rows(tmp_path / "new.sqlite", "generations") <= table_rows(pristine, "generations")


# --- concurrent writers ------------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys, time
    import testtime.store as st
    from testtime.types import Completion
    st.BUSY_TIMEOUT_S = 0.001  # give up on SQLite's own wait at once: testtime's retries must do the work
    s = st.Store(sys.argv[1])
    who = sys.argv[2]
    for t in range(int(sys.argv[3])):
        s.put_generations([(f"{who}-{t}-{i}", "m", "p", {}, 0, t * 10 + i, Completion(f"{who} {t} {i}", "eos", 1, 0, 1))
                           for i in range(5)])
        s.start_run(f"{who}-run-{t}", {"t": t}, [])
    print(s.lock_retries, flush=True)
    s.close()
    """
)


def test_writers_in_several_processes_all_finish_with_every_row(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), f"w{k}", "40"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(3)]
    retries = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        retries += int(out.strip())
    with Store(tmp_path) as s:
        assert s.count_generations() == 3 * 40 * 5
        assert len(s.list_runs()) == 3 * 40
    assert check_store(tmp_path).ok
    print(f"\nconcurrent raw writers: 3 processes x 40 transactions, {retries} lock retries")


def hold_write_lock(db_file: Path, seconds: float, held: threading.Event) -> None:
    """Another writer: takes the store's write lock and keeps it for ``seconds``."""
    db = sqlite3.connect(db_file, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


def test_a_write_retries_past_the_busy_timeout_then_gives_up_in_one_line(tmp_path, monkeypatch):
    import testtime.store as store_mod
    from testtime.types import Completion

    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.01)  # SQLite's own wait ends at once
    row = ("k", "m", "p", {}, 0, 0, Completion("t", "eos", 1, 0, 1))
    with Store(tmp_path) as s:
        held = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(s.path, 0.6, held))
        holder.start()
        held.wait()
        t0 = time.perf_counter()
        s.put_generations([row])  # waits for the other writer, by retrying
        assert time.perf_counter() - t0 >= 0.4 and s.lock_retries >= 1
        holder.join()
        assert s.count_generations() == 1
    with Store(tmp_path, retry_s=0.3) as s:
        held = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(s.path, 1.5, held))
        holder.start()
        held.wait()
        with pytest.raises(StoreError, match="still locked by another process") as err:
            s.put_generations([row])
        assert str(s.path) in str(err.value) and "\n" not in str(err.value)
        holder.join()


# --- real sweeps: concurrent with a run, and killed -------------------------------------------------------


def recipe(server: FaultServer, out: Path, path: Path) -> Path:
    data = {
        "name": "reliab", "dataset": "arith", "limit": 8, "seed": 5, "backend": "openai", "model": "fake",
        "policy_options": {"base_urls": [server.base_url], "retries": 3, "backoff_s": 0.05, "timeout_s": 20,
                           "max_n_per_request": 2, "n_params": 1000},
        "prm": "arith-check", "n_max": 4, "budgets": [1, 2, 4], "fewshot": 0, "max_tokens": 64, "max_depth": 4,
        "strategies": ["cot", "majority", "best_of_n", {"name": "beam", "m": 2}], "out": str(out),
    }
    path.write_text(json.dumps(data))
    return path


def sweep_cmd(recipe_path: Path) -> list[str]:
    return [sys.executable, "-m", "testtime.cli", "sweep", "--config", str(recipe_path)]


def run_cmd(server: FaultServer, out: Path) -> list[str]:
    # the sweep's majority run (same identity: same run id), as `testtime run` writes it
    return [sys.executable, "-m", "testtime.cli", "run", "--backend", "openai", "--base-url", server.base_url,
            "--model", "fake", "--policy-option", "max_n_per_request=2",
            "--policy-option", "n_params=1000", "--dataset", "arith", "--limit", "8",
            "--seed", "5", "--strategy", "majority", "--n", "4", "--fewshot", "0", "--max-tokens", "64",
            "--out", str(out), "--json"]


def sweep_figures(out: Path) -> dict:
    d = json.loads((out / "sweep-reliab.json").read_text())
    d.pop("wall_s")
    d["recipe"].pop("out")
    return d


@pytest.fixture(scope="module")
def server():
    srv = FaultServer(openai_handler)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clean(server, tmp_path_factory) -> tuple[dict, int]:
    """An uninterrupted sweep's figures, and how many generations it stores."""
    root = tmp_path_factory.mktemp("clean")
    subprocess.run(sweep_cmd(recipe(server, root / "out", root / "r.json")), env=ENV, check=True,
                   capture_output=True, timeout=300)
    return sweep_figures(root / "out"), len(samples_in(root / "out" / Store.FILENAME))


def sample_id(prompt: str, seed: int, max_tokens: int, temperature: float, stop: list[str]) -> tuple:
    return prompt, seed, max_tokens, float(temperature), tuple(stop)


def samples_in(db_file: Path) -> set[tuple]:
    """Every stored generation as the fake server saw it asked for: prompt, sampler seed, sampling settings."""
    if not db_file.exists():
        return set()
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT prompt, seed, sample_index, params FROM generations").fetchall()
    except sqlite3.OperationalError:  # no table yet
        return set()
    finally:
        db.close()
    out = set()
    for prompt, seed, index, params in rows:
        p = json.loads(params)
        out.add(sample_id(prompt, seed + index, p["max_tokens"], p["temperature"], p["stop"]))
    return out


def asked(requests: list[tuple[str, dict]]) -> list[tuple]:
    return [sample_id(body["prompt"], body["seed"] + k, body["max_tokens"], body["temperature"], body["stop"])
            for _path, body in requests for k in range(body["n"])]


def test_a_run_and_a_sweep_writing_one_store_at_once_both_finish_intact(server, clean, tmp_path):
    out = tmp_path / "out"
    sweep = subprocess.Popen(sweep_cmd(recipe(server, out, tmp_path / "r.json")), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = subprocess.Popen(run_cmd(server, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_out, run_err = run.communicate(timeout=300)
    _sweep_out, sweep_err = sweep.communicate(timeout=300)
    assert run.returncode == 0, run_err[-2000:]
    assert sweep.returncode == 0, sweep_err[-2000:]
    assert sweep_figures(out) == clean[0]
    summary = json.loads(run_out.strip().splitlines()[-1])
    assert summary["failed"] == 0 and summary["n_problems"] == 8
    report = check_store(out)
    assert report.ok
    with Store(out) as s:
        results = s.get_results(summary["run_id"])
    assert sorted(r["problem_id"] for r in results) == sorted(p.id for p in PROBLEMS)


def test_kill_9_at_random_points_of_a_sweep_loses_and_recomputes_nothing(server, clean, tmp_path):
    out = tmp_path / "out"
    rpath = recipe(server, out, tmp_path / "r.json")
    db_file = out / Store.FILENAME
    rng = random.Random(19)
    total = clean[1]  # generations a whole sweep stores
    snapshots: list[tuple[int, set]] = []  # (server requests seen at the kill, samples stored at the kill)
    kills = 0
    for r in range(KILL_ROUNDS):
        proc = subprocess.Popen(sweep_cmd(rpath), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stored = len(samples_in(db_file))
        # kill once the store has grown by a random share of what is left (round 0: maybe before any row)
        goal = stored + rng.randint(0 if r == 0 else 1, max(1, (total - stored) // 2))
        while proc.poll() is None and len(samples_in(db_file)) < goal:
            time.sleep(rng.uniform(0.005, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        snapshots.append((len(server.requests), samples_in(db_file)))
    final = subprocess.run(sweep_cmd(rpath), env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert kills >= 1

    stored_at_end = samples_in(db_file)
    for seen, stored in snapshots:
        assert stored <= stored_at_end  # nothing committed was lost
        again = set(asked(server.requests[seen:])) & stored
        assert not again, f"{len(again)} stored generations were asked for again"
    assert len(stored_at_end) == total
    assert sweep_figures(out) == clean[0]
    assert check_store(out).ok
    print(f"\nkill -9 sweep: {kills} of {KILL_ROUNDS} rounds killed mid-sweep, then a rerun; "
          f"{len(stored_at_end)} generations, none recomputed")


def test_salvage_refuses_rows_whose_values_were_read_from_lost_pages():
    from testtime.store import generation_key
    from testtime.store_salvage import _damaged_values

    row = {"key": generation_key("m", "prompt", {"t": 1}, 0, 2), "model": "m", "prompt": "prompt",
           "params": '{"t": 1}', "seed": 0, "sample_index": 2, "text": "42"}
    assert _damaged_values("generations", row) is None
    assert "hash" in _damaged_values("generations", {**row, "prompt": "promp"})  # changed content, same key
    assert "NUL" in _damaged_values("generations", {**row, "text": "4\x00\x00"})
    assert "NUL" in _damaged_values("runs", {"run_id": "r\x00"})
