"""Recalibration on a user's own file: one pool, a table for their problems, held-out figures."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fakes import ScriptedPolicy
from testtime.cli import app
from testtime.datasets import load_dataset
from testtime.execution import LocalExecutor
from testtime.optimal.calibrate import OPT_PRED, Table
from testtime.optimal.recalibrate import recalibrate, recalibration_recipe

runner = CliRunner()


def user_file(tmp_path, n=20):
    rows = [{"q": f"Tom has {i} apples and buys {i + 1} more. How many now?", "a": str(2 * i + 1)} for i in range(n)]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_recalibrate_end_to_end_on_a_small_file(tmp_path):
    path, rows = user_file(tmp_path)
    problems = load_dataset(str(path), question_field="q", answer_field="a", kind="number")
    # half the problems: every sample right; the other half: right only in 1 of 4 samples
    script = {r["q"]: [r["a"]] if i % 2 == 0 else [r["a"], "0", "0", "0"] for i, r in enumerate(rows)}
    recipe = recalibration_recipe(str(path), prm="arith-check", n_max=4, out=str(tmp_path / "out"), fewshot=0)
    assert [s.name for s in recipe.strategies] == ["cot", "best_of_n"] and recipe.budgets == [1, 2, 4]
    with LocalExecutor(ScriptedPolicy(script)) as ex:
        res = recalibrate(recipe, ex, problems)
    assert res.table_path.exists() and Table.load(res.table_path) == res.table
    assert len(res.sweep.problems) == 20 and set(res.table.calibration_ids) | set(res.table.holdout_ids) == {
        p.id for p in problems}
    assert res.table.profile is not None and res.table.profile.kinds == {"number": len(res.table.calibration_ids)}
    rows_out = res.heldout_rows()
    assert [r["budget"] for r in rows_out] == [1, 2, 4] and all(r[OPT_PRED] is not None for r in rows_out)
    # a rerun replays the pool from the store: nothing new is generated
    policy = ScriptedPolicy(script)
    with LocalExecutor(policy) as ex:
        recalibrate(recipe, ex, problems)
    assert policy.n_generated == 0


def test_recalibrate_cli_errors_are_one_line(tmp_path):
    path, _ = user_file(tmp_path, 4)
    result = runner.invoke(app, ["recalibrate", "--dataset", str(path), "--n-max", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: --n-max")
    result = runner.invoke(app, ["recalibrate", "--dataset", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nope.jsonl" in result.stderr and len(result.stderr.strip().splitlines()) == 1
