"""Recalibration on a user's own file: one pool, a table for their problems, held-out figures."""

from __future__ import annotations

import json

import pytest
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
    cis = res.heldout_intervals()  # every held-out figure with its interval, and the sample-size warning
    assert all(cis[r["budget"]][OPT_PRED][0] <= r[OPT_PRED] <= cis[r["budget"]][OPT_PRED][1] for r in rows_out)
    assert any("held-out problems (< 30)" in w for w in res.warnings())
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
    result = runner.invoke(app, ["recalibrate", "--dataset", str(path), "--table", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip() == (
        "error: --table only applies with --label-free (recalibration makes a new table)")
    result = runner.invoke(app, ["recalibrate", "--dataset", str(path), "--label-free", "--prm", "judge",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: --table: none ships")


def test_label_free_refit_keeps_the_choices_and_fits_the_predictor_to_self_consistency(tmp_path):
    from test_calibrate import synthetic_sweep
    from testtime import engine
    from testtime.errors import ConfigError
    from testtime.optimal.calibrate import calibrate
    from testtime.optimal.recalibrate import refit_label_free
    from testtime.optimal.shift import check_shift

    table = calibrate(synthetic_sweep())
    rows = [{"q": f"Unlabelled question number {i}?"} for i in range(12)]
    path = tmp_path / "unlabelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = load_dataset(str(path), question_field="q", answer_field=None, kind="number")
    assert all(p.answer == "" for p in problems)  # no answers needed
    # the first 6: every sample agrees (settled); the others: 8 different answers (unsettled)
    script = {r["q"]: ["7"] if i < 6 else [str(k) for k in range(8)] for i, r in enumerate(rows)}
    base = engine.RunConfig(dataset=str(path), out=str(tmp_path / "out"), fewshot=0, max_tokens=32)
    with LocalExecutor(ScriptedPolicy(script)) as ex:
        refit = refit_label_free(table, ex, problems, base, n=8)
        with pytest.raises(ConfigError) as e:
            refit_label_free(table, ex, problems, base, n=table.predictor.probe_n)
        assert e.value.field == "n"
    assert refit.table == table.table and refit.robust == table.robust  # choices kept
    assert refit.predictor != table.predictor and refit.predictor_source.startswith("label-free")
    # settled problems predict high, unsettled low: the fit follows self-consistency
    assert refit.predictor.predict(1.0, None) > 0.9 and refit.predictor.predict(0.25, None) < 0.2
    # 8 different answers in 8 samples: self-consistency 1/8, just inside the medium bin (>= 0.1)
    assert sorted(set(refit.profile.bins)) == ["easy", "medium"] and len(refit.profile.agreement) == 12
    # its profile is the user's problems now: the same problems do not look shifted against it
    assert not check_shift(refit.profile, refit.profile.agreement, [], []).shifted
