"""The command line without a model: grade, data list, run's argument errors, run over a scripted policy."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import testtime.policy
from fakes import ScriptedPolicy
from testtime.cli import app
from testtime.datasets import load_dataset

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_real_model(monkeypatch):
    """Any test that got as far as loading a model would be slow: fail it instead."""

    def refuse(*_a, **_k):
        raise AssertionError("a unit test tried to load the real policy model")

    monkeypatch.setattr(testtime.policy, "load_policy", refuse)


def write_jsonl(path, lines: list[str | dict]) -> str:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return str(path)


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


# --- grade --------------------------------------------------------------------------------------

PAIRS = [
    {"pred": "\\frac{1}{2}", "ref": "0.5"},
    {"pred": "3", "ref": "4", "kind": "number"},
    {"pred": "025", "ref": "25", "kind": "aime"},
    {"pred": "Step 1: 2 + 2 = 4.\n\nThe answer is $4$.", "ref": "4", "kind": "arith"},
    {"pred": 12, "ref": 12.0, "kind": "number"},
    {"pred": "24.5", "ref": "24", "kind": "aime"},
]


def test_grade_json(tmp_path):
    f = write_jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], PAIRS[1], "", PAIRS[2], PAIRS[3], PAIRS[4], PAIRS[5]])
    result = runner.invoke(app, ["grade", "--pairs", f, "--json"])
    assert result.exit_code == 0, result.output
    # with --json stdout holds only the JSON object; the per-pair lines go to stderr
    assert len(result.stdout.strip().splitlines()) == 1
    out = last_json(result.stdout)
    assert out["n"] == 6
    assert [v["equivalent"] for v in out["verdicts"]] == [True, False, True, True, True, False]
    assert out["equivalent"] == 4
    assert [v["line"] for v in out["verdicts"]] == [1, 2, 4, 5, 6, 7]  # blank line 3 skipped, still counted
    assert [v["kind"] for v in out["verdicts"]] == ["math", "number", "aime", "arith", "number", "aime"]
    assert out["verdicts"][3]["pred"] == "4"  # a whole solution is reduced to its final answer
    assert out["verdicts"][4]["pred"] == "12" and out["verdicts"][4]["ref"] == "12.0"
    assert "1: equivalent" in result.stderr and "2: different" in result.stderr


def test_grade_text_output_and_default_kind(tmp_path):
    f = write_jsonl(tmp_path / "pairs.jsonl", [{"pred": "007", "ref": "7"}, {"pred": "7.5", "ref": "7"}])
    result = runner.invoke(app, ["grade", "--pairs", f, "--kind", "aime"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("1: equivalent") and "kind=aime" in lines[0]
    assert lines[1].startswith("2: different")
    assert not result.stdout.strip().startswith("{")


@pytest.mark.parametrize(
    "bad, field",
    [
        ('{"pred": "1", "ref": }', "invalid JSON"),
        ('["1", "2"]', "expected a JSON object"),
        ('{"pred": "1"}', "field 'ref'"),
        ('{"ref": "1"}', "field 'pred'"),
        ('{"pred": ["1"], "ref": "1"}', "field 'pred'"),
        ('{"pred": "1", "ref": null}', "field 'ref'"),
        ('{"pred": true, "ref": "1"}', "field 'pred'"),
        ('{"pred": "1", "ref": "1", "kind": "latex"}', "field 'kind'"),
    ],
)
def test_grade_malformed_line_is_a_one_line_error(tmp_path, bad, field):
    f = write_jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], bad, PAIRS[1]])
    result = runner.invoke(app, ["grade", "--pairs", f, "--json"])
    line = one_line_error(result)
    assert f"{f}:2:" in line
    assert field in line
    assert result.stdout.strip() == ""  # no verdicts and no JSON: the file is rejected before grading


def test_grade_missing_file(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    line = one_line_error(runner.invoke(app, ["grade", "--pairs", missing]))
    assert "--pairs" in line and "nope.jsonl" in line


# --- data list ----------------------------------------------------------------------------------


def test_data_list_json():
    result = runner.invoke(app, ["data", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = last_json(result.stdout)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"math500", "aime24", "amc23", "gsm8k", "arith"}
    assert by_name["math500"]["n_problems"] == 500 and by_name["aime24"]["n_problems"] == 30
    assert by_name["amc23"]["n_problems"] == 40 and by_name["gsm8k"]["n_problems"] == 1319
    assert by_name["arith"]["n_problems"] is None
    assert {r["kind"] for r in rows} == {"math", "aime", "amc", "gsm8k", "arith"}
    assert all(r["license"] and r["description"] for r in rows)


def test_data_list_table():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    for name in ("math500", "aime24", "amc23", "gsm8k", "arith"):
        assert name in result.stdout


# --- run: argument errors (no model is loaded) ---------------------------------------------------


@pytest.mark.parametrize("n", ["0", "-3"])
def test_run_n_below_one(tmp_path, n):
    line = one_line_error(runner.invoke(app, ["run", "--n", n, "--out", str(tmp_path)]))
    assert f"--n {n}" in line


def test_run_unknown_dataset(tmp_path):
    line = one_line_error(runner.invoke(app, ["run", "--dataset", "nosuch", "--out", str(tmp_path)]))
    assert "'nosuch'" in line and "math500" in line


def test_run_unknown_strategy(tmp_path):
    line = one_line_error(runner.invoke(app, ["run", "--strategy", "nosuch", "--out", str(tmp_path)]))
    assert "--strategy nosuch" in line and "rebase" in line and "majority" in line


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--dataset", "arith", "--limit", "0"], "no problems selected"),
        (["--dataset", "arith", "--level", "9"], "9"),
        (["--dataset", "arith:x"], "arith:x"),
        (["--dataset", "missing-file.jsonl"], "missing-file.jsonl"),
    ],
)
def test_run_dataset_errors(tmp_path, args, needle):
    line = one_line_error(runner.invoke(app, ["run", *args, "--out", str(tmp_path)]))
    assert needle in line


def test_run_bad_option_type_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["run", "--n", "many", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--n" in result.output


# --- run over a scripted policy -----------------------------------------------------------------


def test_run_json_with_a_scripted_policy(tmp_path, monkeypatch):
    problems = load_dataset("arith", limit=3)
    script = {problems[0].question: ["9", "9"], problems[1].question: ["4", "5"], problems[2].question: ["1"]}
    policies = []

    def fake_load(model=None, **_k):
        policies.append(ScriptedPolicy(script))
        return policies[-1]

    monkeypatch.setattr(testtime.policy, "load_policy", fake_load)
    args = ["run", "--dataset", "arith", "--limit", "3", "--n", "2", "--out", str(tmp_path), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    s = last_json(first.stdout)
    assert s["n_problems"] == 3 and s["n"] == 2
    assert s["accuracy"] == pytest.approx(1 / 3)  # "9" right; "4" (tie, first) wrong; "1" wrong
    assert s["pass@1"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert s["pass@n"] == pytest.approx(2 / 3)
    assert s["new_generations"] == 6 and s["cached_generations"] == 0
    assert set(s["by_level"]) == {"1", "2", "3"}
    assert policies[0].closed
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    s2 = last_json(second.stdout)
    assert s2["run_id"] == s["run_id"]
    assert s2["new_generations"] == 0 and s2["cached_generations"] == 6
    assert policies[1].n_generated == 0


def test_sweep_and_calibrate_errors_are_one_line(tmp_path):
    line = one_line_error(runner.invoke(app, ["sweep", "--config", str(tmp_path / "nope.yaml")]))
    assert "nope.yaml: no such recipe file" in line
    bad = tmp_path / "r.yaml"
    bad.write_text("n_max: 4\nstrategies: [cot, {name: teleport}]\n")
    line = one_line_error(runner.invoke(app, ["sweep", "--config", str(bad)]))
    assert "r.yaml: field strategies.1.name" in line and "teleport" in line
    line = one_line_error(runner.invoke(app, ["calibrate", str(tmp_path / "sweep-x.json")]))
    assert "sweep-x.json: no such file" in line and "testtime sweep" in line
    (tmp_path / "sweep-y.json").write_text('{"version": 99}')
    line = one_line_error(runner.invoke(app, ["report", str(tmp_path / "sweep-y.json")]))
    assert "field version: 99" in line


def test_optimal_needs_table_and_budget(tmp_path):
    line = one_line_error(runner.invoke(app, ["run", "--strategy", "optimal", "--out", str(tmp_path)]))
    assert "needs --budget B" in line
    # no --table: the shipped one, which exists only for the embedded default with arith-check
    line = one_line_error(runner.invoke(app, ["run", "--strategy", "optimal", "--budget", "4", "--prm", "judge",
                                              "--out", str(tmp_path)]))
    assert line.startswith("error: --table: none ships for model smollm2-135m with PRM judge")
    line = one_line_error(runner.invoke(app, ["run", "--strategy", "optimal", "--table", str(tmp_path / "t.json"),
                                              "--budget", "4", "--out", str(tmp_path)]))
    assert "--table" in line and "no such file" in line


# --- the library's ConfigError, spelled as flags ------------------------------------------------------


def test_config_error_spelling():
    from testtime.cli.common import config_error
    from testtime.errors import ConfigError

    err = ConfigError(("n", "m"), (6, 4), "N must be a positive multiple of M")
    assert config_error(err) == "--n 6 --m 4: N must be a positive multiple of M"
    assert config_error(ConfigError("step_max_tokens", 0, "must be >= 1")) == "--step-max-tokens 0: must be >= 1"
    assert config_error(ConfigError("prm", message="needs a scorer")) == "--prm: needs a scorer"
    assert config_error(ConfigError("prm", message="needs a scorer"), "r.yaml") == "r.yaml: field prm: needs a scorer"
    assert (config_error(ConfigError("base_url", message="only for openai"), "r.yaml")
            == "r.yaml: field policy_options.base_urls: only for openai")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--strategy", "beam", "--prm", "arith-check", "--n", "6", "--m", "4"],
         "--n 6 --m 4: N must be a positive multiple of M"),
        (["--strategy", "best_of_n"], "--prm: "),
        (["--strategy", "best_of_n", "--prm", "arith-check", "--aggregation", "max"], "--aggregation max: unknown"),
        (["--strategy", "best_of_n", "--prm", "arith-check", "--selection", "best"], "--selection best: unknown"),
        (["--strategy", "beam", "--prm", "arith-check", "--rank-by", "max"], "--rank-by max: unknown"),
        (["--strategy", "dvts", "--prm", "arith-check", "--max-depth", "0"], "--max-depth 0: must be >= 1"),
        (["--strategy", "rebase", "--prm", "arith-check", "--step-max-tokens", "0"],
         "--step-max-tokens 0: must be >= 1"),
        (["--temperature", "-1"], "--temperature -1.0: must be in [0, 2]"),
        (["--max-tokens", "0"], "--max-tokens 0: must be >= 1"),
        (["--fewshot", "-1"], "--fewshot -1: must be >= 0"),
        (["--strategy", "optimal", "--table", "t.json", "--budget", "0"], "--budget 0: must be >= 1"),
        (["--executor", "local", "--actors", "3"], "--actors 3: only applies to executor ray"),
        (["--policy-option", "=1"], "--policy-option =1: expected KEY=VALUE"),
    ],
)
def test_run_config_errors_are_the_library_s_spelled_as_flags(tmp_path, args, expected):
    line = one_line_error(runner.invoke(app, ["run", "--limit", "1", "--out", str(tmp_path), *args]))
    assert line.startswith(f"error: {expected}"), line


def test_unscored_strategy_ignores_prm_options(tmp_path, monkeypatch):
    """An unscored strategy's config drops --prm and does not read --aggregation: no error, no scorer."""
    problems = load_dataset("arith", limit=1)
    monkeypatch.setattr(testtime.policy, "load_policy", lambda model=None, **_k: ScriptedPolicy({}))
    result = runner.invoke(app, ["run", "--limit", "1", "--n", "2", "--prm", "nosuch", "--out", str(tmp_path),
                                 "--json"])
    assert result.exit_code == 0, result.output
    s = last_json(result.stdout)
    assert s["n_problems"] == len(problems) and "prm" not in s


# --- demo over a scripted policy: tests/test_demo.py ---------------------------------------------------


# --- prm eval: the library checks its options before any model loads --------------------------------


@pytest.mark.parametrize("args, expected", [
    (["--selection", "majority"], "--selection majority: expected prm_max or prm_vote"),
    (["--aggregation", "max"], "--aggregation max: unknown"),
    (["--n", "0"], "--n 0: must be >= 1"),
    (["--exclude-from", "nope.json"], "--exclude-from nope.json: "),
    (["--backend", "openai"], "--backend openai: probes read the policy's weights"),
])
def test_prm_eval_option_errors(tmp_path, args, expected):
    line = one_line_error(runner.invoke(app, ["prm", "eval", "--prm", "arith-check", "--limit", "2", "--out",
                                              str(tmp_path), *args]))
    assert line.startswith(f"error: {expected}"), line


def test_python_dash_m_runs_the_same_app():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "testtime.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for command in ("run", "demo", "sweep", "calibrate", "report", "grade", "models", "data", "prm"):
        assert command in done.stdout


# --- --fewshot-file and --level-field -------------------------------------------------------------------

SHOT = {"question": "Shot: what is 40 + 2?", "solution": "Step 1: 40 + 2 = 42.\n\nThe answer is 42."}


def scripted_loader(monkeypatch, script=None) -> list[ScriptedPolicy]:
    policies: list[ScriptedPolicy] = []

    def fake_load(model=None, **_k):
        policies.append(ScriptedPolicy(script))
        return policies[-1]

    monkeypatch.setattr(testtime.policy, "load_policy", fake_load)
    return policies


def test_run_with_a_fewshot_file(tmp_path, monkeypatch):
    policies = scripted_loader(monkeypatch)
    shots = write_jsonl(tmp_path / "shots.jsonl", [SHOT, {**SHOT, "question": "Shot: what is 1 + 1?"}])
    args = ["run", "--dataset", "arith", "--limit", "2", "--n", "2", "--out", str(tmp_path), "--json",
            "--fewshot-file", shots, "--fewshot", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    prompts = [c.prompt for call in policies[0].calls for c in call]
    assert prompts and all("Shot: what is 40 + 2?" in p and "1 + 1" not in p for p in prompts)
    without = runner.invoke(app, args[:-4] + ["--fewshot", "1"])
    assert last_json(without.stdout)["run_id"] != last_json(result.stdout)["run_id"]
    assert not any("Shot:" in c.prompt for call in policies[1].calls for c in call)


@pytest.mark.parametrize(
    ("lines", "tail"),
    [
        (None, "shots.jsonl: no such file"),
        ([], "shots.jsonl: no few-shot examples (the file is empty)"),
        ([SHOT, "{not json"], "shots.jsonl:2: invalid JSON (Expecting property name enclosed in double quotes at "
                              "column 2)"),
        ([SHOT, {"question": "q"}], "shots.jsonl:2: field 'solution': missing"),
        ([{"question": 7, "solution": "The answer is 7."}], "shots.jsonl:1: field 'question': expected a string, "
                                                             "got number"),
    ],
)
def test_run_fewshot_file_errors_are_one_line(tmp_path, lines, tail):
    path = tmp_path / "shots.jsonl"
    if lines is not None:
        write_jsonl(path, lines)
    line = one_line_error(runner.invoke(app, ["run", "--limit", "1", "--out", str(tmp_path),
                                              "--fewshot-file", str(path)]))
    assert line == f"error: --fewshot-file: {tmp_path}/{tail}"


def test_demo_fewshot_file_error_is_one_line(tmp_path):
    path = write_jsonl(tmp_path / "shots.jsonl", [{"question": "q"}])
    line = one_line_error(runner.invoke(app, ["demo", "--out", str(tmp_path), "--fewshot-file", path]))
    assert line == f"error: --fewshot-file: {path}:1: field 'solution': missing"


def test_run_level_field_dotted_path_in_by_level(tmp_path, monkeypatch):
    rows = [{"question": f"Q{i}: what is {i} + {i}?", "answer": 2 * i, "info": {"grade": i % 2 + 1}}
            for i in range(4)]
    data = write_jsonl(tmp_path / "mine.jsonl", rows)
    scripted_loader(monkeypatch, {r["question"]: [str(r["answer"])] for r in rows})
    base = ["run", "--dataset", data, "--strategy", "cot", "--out", str(tmp_path), "--json"]
    result = runner.invoke(app, [*base, "--level-field", "info.grade"])
    assert result.exit_code == 0, result.output
    s = last_json(result.stdout)
    assert {k: v["n_problems"] for k, v in s["by_level"].items()} == {"1": 2, "2": 2}
    picked = runner.invoke(app, [*base, "--level-field", "info.grade", "--level", "2"])
    assert last_json(picked.stdout)["n_problems"] == 2
    line = one_line_error(runner.invoke(app, [*base, "--level-field", "info.nope"]))
    assert line == f"error: {data}:1: field 'info.nope': missing"
    line = one_line_error(runner.invoke(app, ["run", "--level-field", "x", "--out", str(tmp_path)]))
    assert "--level-field applies only to a .jsonl --dataset" in line


def test_optimal_with_the_shipped_table_loads_its_recorded_prm(tmp_path, monkeypatch):
    """No --prm: the shipped table's recorded scorer name (arith-check@v2) is the spec the run scores with."""
    from testtime.optimal.calibrate import Table as CalTable
    from testtime.optimal.tables import shipped_table

    table = CalTable.load(shipped_table(None, None))
    assert table.prm == "arith-check@v2"
    monkeypatch.setattr(testtime.policy, "load_policy",
                        lambda model=None, **_k: ScriptedPolicy({}, model_id=table.policy))
    result = runner.invoke(app, ["run", "--dataset", "arith", "--strategy", "optimal", "--budget", "8", "--limit",
                                 "2", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    s = last_json(result.stdout)
    assert s["strategy"] == "optimal" and s["prm"] == "arith-check@v2" and s["n_problems"] == 2


def test_best_of_n_reports_which_selection_its_accuracy_uses(tmp_path, monkeypatch, caplog):
    """Unset, the selection is the scorer's (arith-check: prm_mean_max), named by the table and the JSON;
    an explicit aggregation the scorer has no signal in is reported, with one warning line."""
    scripted_loader(monkeypatch)
    args = ["run", "--strategy", "best_of_n", "--prm", "arith-check", "--limit", "2", "--n", "2", "--json"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    s = last_json(result.stdout)
    assert s["selection"] == "prm_mean_max" and s["accuracy"] == s["selections"]["prm_mean_max"]
    assert "scored by arith-check@v2, answer (accuracy) by prm_mean_max" in " ".join(result.stderr.split())
    with caplog.at_level("WARNING", logger="testtime.engine"):
        given = runner.invoke(app, [*args, "--aggregation", "last", "--out", str(tmp_path / "b")])
    assert given.exit_code == 0, given.output
    assert last_json(given.stdout)["selection"] == "prm_last_max"
    assert [r.getMessage() for r in caplog.records] == [
        "aggregation last: scorer arith-check@v2 declares no signal in it (supported: min, mean, prod); "
        "reporting it anyway"]


def test_report_ci_sets_the_level_of_every_interval_it_prints(tmp_path):
    from tests.test_calibrate import synthetic_sweep

    sweep = synthetic_sweep().save(tmp_path / "sweep-s.json")
    line = one_line_error(runner.invoke(app, ["report", str(sweep), "--ci", "1.5"]))
    assert line.startswith("error: --ci 1.5:"), line  # refused as run refuses it, before the sweep is read

    def report(*ci: str) -> dict:
        result = runner.invoke(app, ["report", str(sweep), "--out", str(tmp_path / f"r{len(ci)}"), "--json", *ci])
        assert result.exit_code == 0, result.output
        return last_json(result.stdout)

    wide, narrow = report(), report("--ci", "0.5")
    widths = {}
    for name, data in (("wide", wide), ("narrow", narrow)):
        iv = data["intervals"]["accuracy at N=4 (predicted bins)"]
        widths[name] = iv["ci"][1] - iv["ci"][0]
    assert widths["narrow"] < widths["wide"], widths  # the headline's interval is drawn at --ci
    assert wide["metrics"] != narrow["metrics"]  # and the printed figures with it


def test_demo_ci_sets_the_level_of_its_tables_paired_comparisons_and_report(tmp_path):
    """demo --ci: the study's rows and paired differences are drawn at it, and every title says which."""
    from testtime.optimal.study import ALLOCATED, COT, UNIFORM, Point, Study
    from testtime.optimal.study_report import study_tables
    from testtime.types import Problem

    ids = [f"p{i}" for i in range(20)]

    def pt(series: str, budget: int, solved: set[int]) -> Point:
        return Point(series, budget, {i: float(k in solved) for k, i in enumerate(ids)},
                     {i: 10.0 * budget for i in ids})

    study = Study([Problem(i, "q", "1", meta={"level": 1 + k % 2}) for k, i in enumerate(ids)],
                  [pt(ALLOCATED, 4, set(range(14))), pt(UNIFORM, 4, set(range(4, 13))), pt(COT, 1, set(range(6)))],
                  headline=4, reference="best_of_n/prm_min_vote", predictor="question", wall_s=0.0)
    wide, narrow = study.summary(0.95), study.summary(0.5)

    def width(ci: list[float]) -> float:
        return ci[1] - ci[0]

    for a, b in zip(wide["rows"], narrow["rows"], strict=True):
        assert width(b["accuracy_ci"]) < width(a["accuracy_ci"]), (a, b)
    assert width(narrow["paired"][f"{UNIFORM}@4"]["ci"]) < width(wide["paired"][f"{UNIFORM}@4"]["ci"])
    assert study_tables(study, narrow)[0]["title"].startswith("Accuracy [50% interval]")

    from testtime.cli.run import demo_tables

    class Result:
        dataset, n, summary = "arith", 4, narrow

    Result.study = study
    acc, paired, _ = demo_tables(Result())
    assert "accuracy [50% interval]" in acc.title and paired.columns[1].header.startswith("accuracy difference [50%]")
    line = one_line_error(runner.invoke(app, ["demo", "--ci", "0", "--out", str(tmp_path)]))
    assert line.startswith("error: --ci 0.0:"), line  # refused before any model loads


def test_sweep_runs_every_dataset_of_the_recipe(tmp_path, monkeypatch):
    # `datasets: [a, b]` once ran only a's problems through the CLI (it passed one problem list along)
    import testtime.cli.optimal as cli_optimal
    import testtime.optimal.sweep as sweep_mod

    seen = {}

    class Closed:
        def close(self):
            pass

    def fake_run_sweep(recipe, ex, scorer, problems, on_progress=None):
        seen["problems"], seen["datasets"] = problems, recipe.datasets
        raise SystemExit(0)

    monkeypatch.setattr(cli_optimal, "open_policy", lambda *a, **k: Closed())
    monkeypatch.setattr(sweep_mod, "run_sweep", fake_run_sweep)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("datasets: [arith, gsm8k]\nlimit: 2\nstrategies: [cot]\nprm: null\n")
    runner.invoke(app, ["sweep", "--config", str(recipe)])
    assert seen == {"problems": None, "datasets": ["arith", "gsm8k"]}  # run_sweep loads both itself
    recipe.write_text("datasets: [arith, nope]\nlimit: 2\nstrategies: [cot]\nprm: null\n")
    line = one_line_error(runner.invoke(app, ["sweep", "--config", str(recipe)]))
    assert "nope" in line
