"""sweep -> calibrate -> optimal run -> report on the real SmolLM2, on a tiny configuration."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from testtime.cli import app
from testtime.config import RunConfig
from testtime.optimal.calibrate import Table, calibrate
from testtime.optimal.recipe import load_recipe
from testtime.optimal.selector import run_optimal
from testtime.optimal.sweep import SweepResult, run_sweep, sweep_path
from testtime.reward import ArithCheck

pytestmark = pytest.mark.integration


def test_sweep_calibrate_optimal_report(smollm2, tmp_path):
    recipe = load_recipe(None, [
        "name=tiny", "limit=6", "levels=[1, 2]", "n_max=2", "max_tokens=96", "max_depth=4", f"out={tmp_path}",
        "strategies=[cot, best_of_n, {name: beam, m: 2}]", "difficulty.probe_n=2",
    ])
    progress = []
    sw = run_sweep(recipe, smollm2, ArithCheck(), on_progress=lambda d, t, label: progress.append((d, t)))
    assert progress[-1] == (3, 3)  # pool, cot, beam@2
    assert sweep_path(recipe).exists() and SweepResult.load(sweep_path(recipe)).cells == sw.cells
    configs = sw.configs()
    assert {"cot", "majority", "best_of_n/prm_min_vote", "beam(m=2)/prm_last_max"} <= set(configs)
    assert {c.budget for c in sw.cells if c.config == "majority"} == {1, 2}
    assert all(0.0 <= p.pass1 <= 1.0 for p in sw.problems) and len(sw.problems) == 6
    # a rerun replays everything from the store
    again = run_sweep(recipe, smollm2, ArithCheck())
    assert [(c.config, c.budget, c.accuracy) for c in again.cells] == [(c.config, c.budget, c.accuracy)
                                                                      for c in sw.cells]

    table = calibrate(sw)
    tpath = table.save(tmp_path / "table.json")
    assert Table.load(tpath).table.keys() == table.table.keys()
    base = RunConfig(dataset="arith", limit=6, levels=[1, 2], out=str(tmp_path), max_tokens=96, max_depth=4)
    from testtime.datasets import load_dataset

    problems = load_dataset("arith", limit=6, levels=[1, 2])
    res = run_optimal(table, 2, smollm2, ArithCheck(), problems, base)
    s = res.summary()
    assert s["n_problems"] == 6 and 0.0 <= s["accuracy"] <= 1.0 and s["probe_flops"] > 0
    assert sum(row["n_problems"] for row in s["by_bin"].values()) == 6

    runner = CliRunner()
    # the same selector from the command line replays every run from the store
    out = runner.invoke(app, ["run", "--strategy", "optimal", "--table", str(tpath), "--budget", "2", "--prm",
                              "arith-check", "--limit", "6", "--level", "1", "--level", "2", "--max-tokens", "96",
                              "--max-depth", "4", "--out", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.stdout.strip().splitlines()[-1])
    assert cli["accuracy"] == s["accuracy"] and cli["run_ids"] == s["run_ids"] and cli["by_bin"] == s["by_bin"]
    out = runner.invoke(app, ["report", str(sweep_path(recipe)), "--table", str(tpath), "--out",
                              str(tmp_path / "report"), "--json"])
    assert out.exit_code == 0, out.output
    info = json.loads(out.output.strip().splitlines()[-1])
    html = (tmp_path / "report" / "report.html").read_text()
    assert info["html"].endswith("report.html") and len(info["pngs"]) == 2
    assert "efficiency gain over majority voting (oracle bins)" in info["metrics"]
    assert "node" in html and "http://" not in html and "https://" not in html
