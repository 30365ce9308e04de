"""`testtime demo` on a scripted policy: the main job end to end -- one pool, calibration on half, the
selector on the other half, the table with the compute-optimal row and the paper's metrics, the report."""

from __future__ import annotations

import pytest

import testtime.policy
from fakes import ScriptedPolicy
from test_cli_unit import last_json, runner
from testtime.cli import app
from testtime.datasets import load_dataset
from testtime.errors import ConfigError
from testtime.optimal.demo import demo_recipe


def test_demo_runs_the_main_job_and_prints_where_the_report_is(tmp_path, monkeypatch):
    problems = load_dataset("arith", limit=8)
    # half the problems: right in the two surest samples only (majority ties to the wrong first answer)
    script = {p.question: ["x", p.answer, "y", p.answer] for p in problems[::2]}
    policy = ScriptedPolicy(script, confidences={"": [1.0, 3.0, 1.0, 3.0]})
    monkeypatch.setattr(testtime.policy, "load_policy", lambda model=None, **_k: policy)
    result = runner.invoke(app, ["demo", "--limit", "8", "--n", "4", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    s = last_json(result.stdout)
    assert s["calibration_problems"] + s["held_out_problems"] == 8 == s["n_problems"]
    rows = s["held_out_accuracy"]
    assert list(rows)[:2] == ["cot", "majority"] and list(rows)[-1] == "compute-optimal"
    assert {"confidence_vote", "confidence_top", "adaptive_majority"} <= set(rows)
    assert any(r.startswith("best_of_n") for r in rows)
    assert set(rows["majority"]) == {"1", "2", "4"} and set(rows["cot"]) == {"1"}
    assert any("performance gain over CoT" in k for k in s["metrics"])
    assert any("efficiency gain over majority" in k for k in s["metrics"])
    # the selector really ran on the held-out half, from the stored samples only
    assert s["selector"]["n_problems"] == s["held_out_problems"]
    assert (tmp_path / "report" / "report.html").is_file() and s["report"] == str(tmp_path / "report" / "report.html")
    assert all(float(v) <= int(b) for b, v in s["adaptive_samples_used"].items())
    # the human-readable part (stderr with --json): the table, the metrics, the report path
    for text in ("compute-optimal", "confidence_vote", "performance gain over CoT", "report.html"):
        assert text in result.stderr
    generated = policy.n_generated
    again = runner.invoke(app, ["demo", "--limit", "8", "--n", "4", "--out", str(tmp_path), "--json"])
    assert again.exit_code == 0 and policy.n_generated == generated  # a rerun replays everything
    assert last_json(again.stdout)["held_out_accuracy"] == rows


def test_demo_checks_its_options():
    with pytest.raises(ConfigError) as e:
        demo_recipe(limit=2)
    assert e.value.field == "limit"
    with pytest.raises(ConfigError) as e:
        demo_recipe(n=0)
    assert e.value.field == "n"

