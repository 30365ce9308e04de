"""`testtime sweep | calibrate | report`, and `run --strategy optimal`: the compute-optimal workflow's commands.

They parse options, call ``testtime.optimal`` and print what it returns; recipe errors name the recipe
file and its fields (``r.yaml: field prm: ...``), the library's ``ConfigError`` spelled by
``common.config_error``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from testtime import settings as S
from testtime.cli import options as opt
from testtime.cli.common import (
    check_prm,
    fail,
    fail_config,
    fmt_flops,
    load_problems,
    open_policy,
    out_console,
    print_failures,
    progress_bar,
)
from testtime.errors import ConfigError


def run_optimal(table_path: Path | None, budget: int | None, prm: str | None, force: bool, base: Any,
                mapping: dict[str, Any], where: dict[str, Any], as_json: bool, ci: float = 0.95,
                allocation: str | None = None, predictor: str | None = None, min_gain: float | None = None) -> None:
    """`run --strategy optimal`: the selector over `base` (a validated RunConfig template: dataset, seed,
    out, sampling and tree settings) with the calibrated table, at the budget: allocated over the batch, per
    problem by its predicted bin, or one fixed config for all."""
    from testtime.optimal.allocation import ALLOCATIONS, run_allocated, run_uniform
    from testtime.optimal.calibrate import Table as CalTable
    from testtime.optimal.selector import run_optimal as per_problem
    from testtime.optimal.tables import shipped_table

    if budget is None:
        fail("--strategy optimal needs --budget B (and --table T, unless the shipped table fits)")
    if budget < 1:
        fail_config(ConfigError("budget", budget, "must be >= 1"))
    try:
        cal = CalTable.load(table_path if table_path is not None else shipped_table(base.model, prm))
    except ConfigError as e:
        fail_config(e)
    mode = allocation or ("batch" if cal.allocation else "per-problem")
    if mode not in ALLOCATIONS:
        fail_config(ConfigError("allocation", mode, f"must be one of {', '.join(ALLOCATIONS)}"))
    if (predictor is not None or min_gain is not None) and mode != "batch":
        fail("--predictor and --min-gain apply to --allocation batch only")
    problems = load_problems(base.dataset, base.limit, base.seed, base.levels, **mapping)
    spec = prm or cal.prm
    printer = out_console(as_json)
    ex = open_policy(**where)
    try:
        if spec:
            check_prm(ex, spec)
        try:
            with printer.status(f"compute-optimal ({mode}), budget {budget}"):
                if mode == "batch":
                    result = run_allocated(cal, budget, ex, None, problems, base, predictor=predictor, force=force,
                                           prm=spec, min_gain=min_gain)
                elif mode == "uniform":
                    result = run_uniform(cal, budget, ex, None, problems, base, force=force, prm=spec)
                else:
                    result = per_problem(cal, budget, ex, None, problems, base, force=force, prm=spec)
        except ConfigError as e:
            fail_config(e)
    finally:
        ex.close()
    s = result.summary()
    s["allocation"] = mode
    if result.problems:  # intervals over problems, stratified by predicted bin (the bins the selector acted on)
        from testtime.stats import accuracy_intervals

        ids = [p.id for p in result.problems]
        overall, per = accuracy_intervals([float(result.correct.get(i, False)) for i in ids],
                                          [result.bins.get(i, "none") for i in ids], confidence=ci)
        s["accuracy_ci"], s["ci"] = overall.as_list(), ci
        s["by_bin_ci"] = {label: per[label].as_list() for label in s["by_bin"]}  # by_bin stays the library's
    t = Table(title=f"compute-optimal ({mode}) at budget {budget} on {base.dataset}: {s['n_problems']} problems"
              + (" [ORACLE PRM table: upper bound]" if cal.oracle_prm else ""))
    for col in ("predicted bin", "problems", "accuracy", "FLOPs / problem", "configs run"):
        t.add_column(col, justify="right")
    for label, row in s["by_bin"].items():
        t.add_row(label, str(row["n_problems"]), _pct_ci(row["accuracy"], s.get("by_bin_ci", {}).get(label)),
                  fmt_flops(row["flops_per_problem"]), ", ".join(f"{k} x{v}" for k, v in row["configs"].items()))
    t.add_section()
    n = max(1, s["n_problems"])
    t.add_row("all", str(s["n_problems"]), _pct_ci(s["accuracy"], s.get("accuracy_ci")), fmt_flops(s["flops"] / n),
              "", style="bold")
    cost = "predictor" if mode == "batch" else "probe"
    t.caption = (f"FLOPs {fmt_flops(s['flops'])} ({cost} {fmt_flops(s['probe_flops'])}) | generated tokens "
                 f"{s['generated_tokens']} | wall {s['wall_s']:.1f} s")
    if mode == "batch":
        t.caption += (f"\nbatch budget {fmt_flops(s['budget_flops_per_problem'])} / problem (uniform Best-of-{budget}, "
                      f"predicted), planned {fmt_flops(s['planned_flops_per_problem'])}, spent "
                      f"{fmt_flops(s['flops_per_problem'])}; predictor: {s['predictor']}")
    printer.print(t)
    shift = s.get("shift")
    if shift is not None and shift["shifted"]:
        what = ", ".join(f"{k} {v:.1f}x" for k, v in shift["components"].items() if v > 1.0)
        printer.print(f"[yellow]warning:[/yellow] these problems do not look like the table's calibration problems "
                      f"(shift score {shift['score']:.2f}{': ' + what if what else ''}"
                      f"{'; ' + '; '.join(shift['notes']) if shift['notes'] else ''}); the selector fell back to "
                      "safer choices. Recalibrate on your problems: testtime recalibrate --dataset YOURS.jsonl",
                      highlight=False)
    printer.print("decided by: " + ", ".join(f"{rule} x{n}" for rule, n in s["decided_by"].items()), highlight=False)
    print_failures(s.get("failures"), printer)
    if as_json:
        print(json.dumps(s, default=str))


def _pct_ci(acc: float, ci: list[float] | None, digits: int = 1) -> str:
    text = f"{100 * acc:.{digits}f}%"
    return text if ci is None else f"{text} [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def sweep(
    config: Annotated[Path | None, typer.Option("--config", help="recipe YAML (see recipes/)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a recipe field: key=value")] = None,
    extraction: Annotated[str | None, typer.Option(
        help="how final answers are read: strict | fallback (default: the recipe's extraction field)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every strategy x budget of a recipe over its problems (resumable), saved as a sweep file.

    The recipe's backend, policy_options, executor, address and actors say where the policy runs."""
    from testtime.datasets import DatasetError, load_dataset
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import n_runs, plan, run_sweep, sweep_path

    try:
        recipe = load_recipe(config, [*(set_ or []), *([f"extraction={extraction}"] if extraction else [])])
        for name in recipe.datasets or [recipe.dataset]:  # a bad dataset fails here, before a model loads
            load_dataset(name, limit=recipe.limit, seed=recipe.seed, levels=recipe.levels)
    except (ValueError, DatasetError) as e:
        fail(str(e))
    printer = out_console(as_json)
    where = str(config or "recipe")
    ex = open_policy(recipe.model, recipe.backend, None, recipe.executor, recipe.address, recipe.actors,
                     options=recipe.policy_options, recipe=where)
    try:
        if recipe.prm and any(spec.cls.needs_scorer for spec, _n in plan(recipe)):
            check_prm(ex, recipe.prm, where)
        total = n_runs(recipe)
        with progress_bar(printer, eta=True) as progress:
            task = progress.add_task("sweep", total=total)

            def on_progress(done: int, total: int, label: str) -> None:
                progress.update(task, completed=done, description=f"sweep: {label}")

            try:
                # the sweep loads every dataset of the recipe (passing one problem list would run datasets[0] only)
                result = run_sweep(recipe, ex, None, None, on_progress)
            except ConfigError as e:
                fail_config(e, where)
    finally:
        ex.close()
    path = sweep_path(recipe)
    printer.print(f"sweep: {len(result.cells)} cells over {len(result.problems)} problems, "
                  f"{len(result.configs())} configs, {total} runs in {result.wall_s:.1f} s -> {path}")
    print_failures(result.failed, printer, "left out of the sweep")
    if as_json:
        print(json.dumps({"sweep": str(path), "cells": len(result.cells), "problems": len(result.problems),
                          "configs": result.configs(), "wall_s": result.wall_s, "failed": result.failed}))


def calibrate(
    sweep_files: Annotated[list[Path], typer.Argument(
        help="a sweep file (testtime sweep); several of one policy and PRM are calibrated as one")],
    out: Annotated[Path | None, typer.Option(help="where to write the table (default: beside the sweep)")] = None,
    easy: Annotated[float | None, typer.Option(help="easy bin: pass@1 >= this (default: the recipe's)")] = None,
    hard: Annotated[float | None, typer.Option(help="hard bin: pass@1 < this (default: the recipe's)")] = None,
    predictor: Annotated[str, typer.Option(
        help="difficulty models for --allocation batch: hidden = also the policy's hidden state at the end of the "
             "prompt (one llama.cpp forward pass per problem), text = question text and level only, question-text = "
             "the question's text alone (what a chat request carries: the tables `testtime serve` uses), none")
    ] = "hidden",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The best config per (difficulty bin, budget) on the calibration split, and the difficulty models and
    success curves the batch allocator uses, saved as a versioned table."""
    from testtime.optimal.calibrate import calibrate as do_calibrate
    from testtime.optimal.sweep import SweepResult

    sweep_file = sweep_files[0]
    if predictor not in ("hidden", "text", "question-text", "none"):
        fail(f"--predictor {predictor}: must be hidden, text, question-text or none")
    try:
        sweeps = [SweepResult.load(f) for f in sweep_files]
        sw = SweepResult.merge(sweeps)
        table = do_calibrate(sw, easy=easy, hard=hard)
    except ConfigError as e:  # a value of ours the library refuses (--easy, --hard)
        fail_config(e)
    except ValueError as e:
        fail(str(e))
    printer = out_console(as_json)
    no_model = None
    if predictor != "none":
        from testtime.optimal.allocation import fit_allocation

        try:
            fit_allocation(table, sweeps, hidden=predictor == "hidden", level=predictor != "question-text")
        except ConfigError as e:  # e.g. a sweep whose problems cannot be reloaded: the table is still usable
            no_model = e.render()
    path = table.save(out or sweep_file.with_name(sweep_file.stem.replace("sweep-", "table-") + ".json"))
    if no_model:
        printer.print(f"[yellow]warning:[/yellow] no difficulty model for --allocation batch: {no_model}",
                      highlight=False)
    if table.allocation:
        printer.print(predictor_table(table.allocation))
    t = Table(title=f"calibrated best config per bin and budget ({table.policy[:16]}, PRM {table.prm}, "
                    f"{len(table.calibration_ids)} calibration problems)")
    t.add_column("bin")
    for b in table.budgets:
        t.add_column(f"N<={b}")
    support = table.bin_support()
    for label, row in table.table.items():
        name = f"{label} (n={support[label]}{', unreliable' if table.unreliable(label) else ''})" \
            if label in support else label
        t.add_row(name, *[f"{row[b].config}@{row[b].budget} ({row[b].accuracy:.0%})" if b in row else "-"
                          for b in table.budgets])
    printer.print(t)
    from testtime.stats import small_sample_warnings

    for w in small_sample_warnings(len(table.holdout_ids), support):
        printer.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    printer.print(f"table: {path}")
    if as_json:
        print(json.dumps({"table": str(path), "budgets": table.budgets,
                          "best": {k: {str(b): f"{c.config}@{c.budget}" for b, c in v.items()}
                                   for k, v in table.table.items()}}))


def predictor_table(allocation: dict[str, Any]) -> Table:
    """Each difficulty model's held-out calibration (Brier vs a constant, bin accuracy with its exact interval)
    and what its allocations scored there, its own cost paid; the default marked."""
    t = Table(title="difficulty models on the held-out problems (--allocation batch; --predictor)")
    for col in ("predictor", "features", "Brier (constant)", "bin accuracy [95%]", "allocated accuracy by B"):
        t.add_column(col)
    for kind, rep in allocation.get("report", {}).items():
        blocks = "+".join(allocation["models"][kind]["blocks"])
        ci = rep.get("bin_accuracy_ci") or [0.0, 0.0]
        acc = ", ".join(f"{p['budget']}: {100 * p['accuracy']:.0f}%" for p in rep.get("heldout_allocation", []))
        mark = " (default)" if kind == allocation.get("default") else ""
        t.add_row(kind + mark, blocks, f"{rep['brier']:.3f} ({rep['brier_constant']:.3f})",
                  f"{100 * rep['bin_accuracy']:.0f}% [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]", acc)
    return t


def report(
    sweep_file: Annotated[Path, typer.Argument(help="a sweep file, or the folder holding one (testtime sweep)")],
    table: Annotated[Path | None, typer.Option(help="calibration table (default: calibrate the sweep now)")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default: SWEEP_DIR/report)")] = None,
    paper: Annotated[bool, typer.Option(
        "--paper", help="also the paper's Table 5 (all problems, oracle bins) beside the held-out figures; a "
                        "folder: every sweep-*.json below it, one row each")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    ci: opt.Ci = S.CI.default,
) -> None:
    """PNG plots and a self-contained HTML report (tables, held-out curves, search-tree viewer)."""
    from testtime.optimal.analysis import build_report
    from testtime.optimal.calibrate import Table as CalTable
    from testtime.optimal.calibrate import calibrate as do_calibrate
    from testtime.optimal.report import write_report
    from testtime.optimal.sweep import SweepResult
    from testtime.stats import check_confidence

    try:
        check_confidence(ci)  # before any sweep is read
    except ConfigError as e:
        fail_config(e)
    if paper and sweep_file.is_dir():  # every sweep below the folder (the paper recipes write one folder each)
        below = sorted(sweep_file.rglob("sweep-*.json"))
        if len(below) > 1:
            report_paper(below, table, out or sweep_file / "report", as_json)
            return
        sweep_file = below[0] if below else sweep_file
    if sweep_file.is_dir():
        found = sorted(sweep_file.glob("sweep-*.json"))
        if not found:
            fail(f"{sweep_file}: no sweep-*.json in this folder (run `testtime sweep` first)")
        sweep_file = found[0]
    try:
        sw = SweepResult.load(sweep_file)
        cal = CalTable.load(table) if table else do_calibrate(sw)
        data = build_report(sw, cal, sweep_file.parent, confidence=ci)
        rows = []
        if paper:
            from testtime.optimal.paper import paper_rows, paper_tables

            rows = paper_rows(sw, cal)
            data["tables"] = [*paper_tables(rows), *data["tables"]]
        files = write_report(data, out or sweep_file.parent / "report")
    except ConfigError as e:
        fail_config(e)
    except ValueError as e:
        fail(str(e))
    printer = out_console(as_json)
    if paper:
        _print_paper(rows, printer, files.html.parent)
    m = Table(title="headline figures (held-out problems)")
    m.add_column("metric")
    m.add_column("value", justify="right")
    for k, v in data["metrics"].items():
        m.add_row(k, v)
    printer.print(m)
    if data.get("how_sure"):
        printer.print(data["how_sure"], highlight=False)
    for w in data.get("warnings", []):
        printer.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    printer.print(f"report: {files.html}")
    for png in files.pngs:
        printer.print(f"plot: {png}")
    if as_json:
        extra = {"paper": [_paper_json(r) for r in rows]} if paper else {}
        print(json.dumps({"html": str(files.html), "pngs": [str(p) for p in files.pngs], "metrics": data["metrics"],
                          "intervals": data.get("intervals", {}), "warnings": data.get("warnings", []), **extra}))


def report_paper(sweep_files: list[Path], table: Path | None, out: Path, as_json: bool) -> None:
    """`report --paper FOLDER`: Table 5 over several sweeps (one policy each), each calibrated now."""
    from testtime.optimal.calibrate import calibrate as do_calibrate
    from testtime.optimal.paper import paper_rows
    from testtime.optimal.sweep import SweepResult

    if table is not None:
        fail("--table names one sweep's table: give that sweep's file, not a folder of sweeps")
    rows = []
    try:
        for f in sweep_files:
            sw = SweepResult.load(f)
            rows.extend(paper_rows(sw, do_calibrate(sw)))
    except ConfigError as e:
        fail_config(e)
    except ValueError as e:
        fail(str(e))
    printer = out_console(as_json)
    _print_paper(rows, printer, out)
    if as_json:
        print(json.dumps({"paper": [_paper_json(r) for r in rows]}))


def _print_paper(rows: list[Any], printer: Any, out: Path) -> None:
    """Each protocol's Table 5 on the console and as markdown (``table5.md``) in the report folder."""
    from testtime.optimal.paper import paper_tables

    out.mkdir(parents=True, exist_ok=True)
    md = []
    for t in paper_tables(rows):
        rich = Table(title=t["title"])
        for c in t["columns"]:
            rich.add_column(c)
        for r in t["rows"]:
            rich.add_row(*[str(x) for x in r])
        printer.print(rich)
        md += [f"## {t['title']}", "", "| " + " | ".join(t["columns"]) + " |",
               "|" + "---|" * len(t["columns"]), *["| " + " | ".join(str(x) for x in r) + " |" for r in t["rows"]], ""]
    (out / "table5.md").write_text("\n".join(md))
    printer.print(f"Table 5: {out / 'table5.md'}")


def _paper_json(row: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(row)
    d["efficiency"] = None if row.efficiency is None else str(row.efficiency)
    return d


def recalibrate(
    dataset: Annotated[str, typer.Option(help="your problems with answers: a .jsonl (or any dataset spec)")],
    prm: Annotated[str | None, typer.Option(help="step scorer of the Best-of-N pool (none: majority only)")] = None,
    n_max: Annotated[int, typer.Option(help="samples per problem in the pool (curves for every N <= this)")] = 8,
    holdout: Annotated[float, typer.Option(help="share of problems held out to evaluate the table")] = 0.3,
    limit: Annotated[int | None, typer.Option(help="first K problems")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    model: Annotated[str | None, typer.Option(help="GGUF path or embedded model name (see run)")] = None,
    fewshot: opt.Fewshot = S.FEWSHOT.default,
    max_tokens: opt.MaxTokens = S.MAX_TOKENS.default,
    question_field: Annotated[str, typer.Option(help="JSONL: question field (dotted path)")] = "question",
    answer_field: Annotated[str, typer.Option(help="JSONL: answer field (dotted path)")] = "answer",
    kind: Annotated[str, typer.Option(help="JSONL: answer kind (math, number, aime, amc, gsm8k)")] = "math",
    out: Annotated[Path, typer.Option(help="output folder (store, sweep file, table)")] = Path("runs/recalibrate"),
    label_free: Annotated[bool, typer.Option(
        help="no answers: keep --table's choices, refit only its difficulty predictor on your problems")] = False,
    table: Annotated[Path | None, typer.Option(help="--label-free: the table to refit (default: the shipped one)")
                     ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Calibrate a table on your own problems: one pool (CoT + Best-of-N / majority), calibration, held-out figures."""
    from pydantic import ValidationError

    from testtime.optimal.recalibrate import recalibrate as do_recalibrate
    from testtime.optimal.recalibrate import recalibration_recipe

    if label_free:
        _refit_label_free(dataset, table, prm, n_max, limit, seed, model, fewshot, max_tokens, question_field, kind,
                          out, as_json)
        return
    if table is not None:
        fail("--table only applies with --label-free (recalibration makes a new table)")

    try:
        recipe = recalibration_recipe(dataset, prm=prm, n_max=n_max, holdout=holdout, out=str(out), limit=limit,
                                      seed=seed, model=model, fewshot=fewshot, max_tokens=max_tokens)
    except ValidationError as e:  # the recipe's fields are this command's options
        err = e.errors()[0]
        where = f"--{str(err['loc'][0]).replace('_', '-')}" if err["loc"] else "recalibrate"
        fail(f"{where}: {err['msg']}")
    mapping = {"question_field": question_field, "answer_field": answer_field, "kind": kind} \
        if dataset.endswith(".jsonl") else {}
    problems = load_problems(dataset, limit, seed, None, **mapping)
    printer = out_console(as_json)
    ex = open_policy(model, "llamacpp", None, "local", None, None)
    try:
        if prm:
            check_prm(ex, prm)
        with progress_bar(printer, eta=True) as progress:
            task = progress.add_task("recalibrate", total=3)
            try:
                res = do_recalibrate(recipe, ex, problems, lambda d, t, label: progress.update(
                    task, completed=d, total=t, description=f"recalibrate: {label}"))
            except ConfigError as e:
                fail_config(e)
    finally:
        ex.close()
    rows = res.heldout_rows()
    names = [k for k in rows[0] if k != "budget"] if rows else []
    t = Table(title=f"held-out accuracy on {len(res.table.holdout_ids)} of your {len(res.sweep.problems)} problems "
                    f"(table chosen on the other {len(res.table.calibration_ids)})")
    t.add_column("N", justify="right")
    for name in names:
        t.add_column(name, justify="right")
    cis = res.heldout_intervals()
    for row in rows:
        b = row["budget"]
        t.add_row(str(b), *["-" if row[n] is None else _pct_ci(row[n], cis.get(b, {}).get(n), 0) for n in names])
    t.caption = "[brackets]: 95% bootstrap intervals over the held-out problems"
    printer.print(t)
    for w in res.warnings():
        printer.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    printer.print(f"table: {res.table_path}  (use it: testtime run --strategy optimal --table {res.table_path} "
                  f"--budget {max(res.table.budgets)} ...)")
    if as_json:
        print(json.dumps({"table": str(res.table_path), "sweep": str(res.sweep_path), "heldout": rows,
                          "heldout_ci": {str(b): v for b, v in cis.items()}, "warnings": res.warnings(),
                          "shrinkage": res.table.shrinkage, "n_problems": len(res.sweep.problems)}))


def _refit_label_free(dataset: str, table_path: Path | None, prm: str | None, n: int, limit: int | None, seed: int,
                      model: str | None, fewshot: int, max_tokens: int, question_field: str, kind: str, out: Path,
                      as_json: bool) -> None:
    from testtime.config import RunConfig
    from testtime.optimal.calibrate import Table as CalTable
    from testtime.optimal.recalibrate import refit_label_free
    from testtime.optimal.tables import shipped_table

    try:
        cal = CalTable.load(table_path if table_path is not None else shipped_table(model, prm))
        base = RunConfig(dataset=dataset, limit=limit, seed=seed, model=model, out=str(out), fewshot=fewshot,
                         max_tokens=max_tokens)
    except ConfigError as e:
        fail_config(e)
    mapping = {"question_field": question_field, "answer_field": None, "kind": kind} \
        if dataset.endswith(".jsonl") else {}
    problems = load_problems(dataset, limit, seed, None, **mapping)
    printer = out_console(as_json)
    spec = prm or cal.prm
    ex = open_policy(model, "llamacpp", None, "local", None, None)
    try:
        if spec and cal.predictor.uses_score:
            check_prm(ex, spec)
        with printer.status(f"label-free refit on {len(problems)} problems"):
            refit = refit_label_free(cal, ex, problems, base, n=n, prm=spec if cal.predictor.uses_score else None)
    except ConfigError as e:
        fail_config(e)
    finally:
        ex.close()
    path = refit.save(out / f"table-label-free-{Path(dataset).stem}.json")
    counts = {b: refit.profile.bins.count(b) for b in sorted(set(refit.profile.bins))} if refit.profile else {}
    printer.print(f"predictor refit without answers ({refit.predictor_source}): coefficients "
                  f"{[round(c, 3) for c in refit.predictor.coef]} (were {[round(c, 3) for c in cal.predictor.coef]}); "
                  f"predicted bins {counts}", highlight=False)
    printer.print(f"table: {path}")
    if as_json:
        print(json.dumps({"table": str(path), "coef": refit.predictor.coef, "bins": counts}))
