"""testtime command line: a thin typer app over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from testtime.cli.common import console, err_console, fail
from testtime.cli.prm import prm_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compute-optimal test-time scaling.")
data_app = typer.Typer(no_args_is_help=True, help="Bundled datasets.")
app.add_typer(data_app, name="data")
app.add_typer(prm_app, name="prm")


_fail = fail


def _fmt_flops(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.3g}"


def _result_table(result: Any) -> Table:
    s = result.summary()
    title = f"{s['strategy']} (N={s['n']}) on {s['dataset']}: {s['n_problems']} problems"
    if s.get("prm"):
        title += f", scored by {s['prm']}"
    if s.get("oracle_upper_bound"):
        title += " [ORACLE scorer: an upper bound, not a result]"
    t = Table(title=title)
    for col in ("level", "problems", "accuracy", "pass@1", "gen tokens / problem", "FLOPs"):
        t.add_column(col, justify="right")
    levels = result.by_level()
    if len(levels) > 1 or None not in levels:
        for level, row in levels.items():
            t.add_row(
                str(level), str(row["n_problems"]), f"{row['accuracy']:.1%}", f"{row['pass@1']:.1%}",
                f"{row['mean_generated_tokens']:.0f}", _fmt_flops(row["flops"]),
            )
        t.add_section()
    t.add_row(
        "all", str(s["n_problems"]), f"{s['accuracy']:.1%}", f"{s['pass@1']:.1%}",
        f"{s['mean_generated_tokens']:.0f}", _fmt_flops(s["flops"]), style="bold",
    )
    t.caption = (
        f"wall {s['wall_s']:.1f} s | generations: {s['new_generations']} new, {s['cached_generations']} "
        f"from store | prompt tokens {s['prompt_tokens']} ({s['cached_prompt_tokens']} from KV cache)"
    )
    return t


# Where the policy runs: shared by run, demo and (as recipe fields) sweep.
BackendOpt = Annotated[str, typer.Option(help="policy backend: llamacpp | vllm | hf | openai")]
BaseUrlOpt = Annotated[list[str] | None, typer.Option(
    "--base-url", help="openai: an OpenAI-compatible server (/v1/completions); repeat to spread load")]
PolicyOpt = Annotated[list[str] | None, typer.Option(
    "--policy-option", help="a backend option KEY=VALUE (repeatable), e.g. max_n_per_request=1, slots=8")]
ExecutorOpt = Annotated[str, typer.Option(help="local | ray (problems sharded over Ray actors)")]
AddressOpt = Annotated[str | None, typer.Option(help="ray: address of a running cluster (default: a local Ray)")]
ActorsOpt = Annotated[int | None, typer.Option(help="ray: number of actors (default: one per GPU, else 2)")]


def _policy_options(items: list[str] | None) -> dict[str, Any]:
    """--policy-option KEY=VALUE pairs; values are YAML scalars (16, 0.5, true, null, text)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            _fail(f"--policy-option {item}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _policy_spec_or_error(model: str | None, backend: str, base_urls: list[str], options: dict[str, Any],
                          name: Any = lambda opt: f"--{opt.replace('_', '-')}") -> Any:
    """The PolicySpec the options describe, or a one-line error naming the option (``name`` spells an
    option: --base-url on the command line, a recipe field in sweeps)."""
    from testtime.execution import PolicySpec
    from testtime.policy import BACKENDS

    if backend not in BACKENDS:
        return f"{name('backend')} {backend}: unknown (available: {', '.join(BACKENDS)})"
    options = dict(options)
    if base_urls:
        if backend != "openai":
            return f"{name('base_url')} only applies to {name('backend')} openai"
        options["base_urls"] = list(base_urls)
    if backend == "openai":
        if not options.get("base_urls"):
            return f"{name('backend')} openai needs {name('base_url')} URL (one or more OpenAI-compatible servers)"
        if not model:
            return f"{name('backend')} openai needs {name('model')} (the model name the server serves)"
    return PolicySpec(model, backend, options)


def _open_executor(model: str | None, backend: str, base_urls: list[str] | None, executor: str,
                   address: str | None, actors: int | None, options: dict[str, Any] | None = None,
                   name: Any = None, prefix: str = "") -> Any:
    """Open the policy on the executor the options name; bad combinations are one-line errors (``name``
    spells an option, ``prefix`` starts the message: a recipe's file name)."""
    from testtime.execution import RAY_MISSING, open_executor

    name = name or (lambda opt: f"--{opt.replace('_', '-')}")
    spec = _policy_spec_or_error(model, backend, base_urls or [], options or {}, name)
    if isinstance(spec, str):
        _fail(prefix + spec)
    if executor not in ("local", "ray"):
        _fail(f"{prefix}{name('executor')} {executor}: unknown (available: local, ray)")
    if executor == "local" and (address is not None or actors is not None):
        opt = "address" if address is not None else "actors"
        _fail(f"{prefix}{name(opt)} only applies to {name('executor')} ray")
    if actors is not None and actors < 1:
        _fail(f"{prefix}{name('actors')} {actors}: must be >= 1")
    try:
        return open_executor(executor, spec, address=address, actors=actors)
    except ImportError as e:
        _fail(str(e) if str(e) == RAY_MISSING else f"{prefix}{name('backend')} {backend}: {e}")
    except TypeError as e:  # an option the backend does not take
        _fail(f"{prefix}{name('policy_option')}: {e}")
    except (ValueError, FileNotFoundError, RuntimeError, ConnectionError) as e:
        _fail(prefix + str(e))


def _check_prm(executor: Any, spec: str, where: str | None = None) -> None:
    """Build the scorer now (on every actor with Ray), so a bad --prm is one line before any work."""
    try:
        executor.scorer_info(spec)
    except (ValueError, ImportError, FileNotFoundError) as e:
        if where:
            _fail(f"{where}: field prm: {e}")
        _fail(str(e) if str(e).startswith("--prm") else f"--prm {spec}: {e}")


def _print_failures(summary: dict[str, Any], out_console: Console, what: str = "counted as wrong") -> None:
    failures = summary.get("failures") or {}
    if failures:
        out_console.print(f"[yellow]warning:[/yellow] {len(failures)} problem(s) failed ({what}; rerun to retry "
                          "them):", highlight=False)
        for pid, err in list(failures.items())[:20]:
            out_console.print(escape(f"  {pid}: {err}"), highlight=False, soft_wrap=True)
        if len(failures) > 20:
            out_console.print(f"  ... and {len(failures) - 20} more (see the run's summary in the store)")


@app.command()
def run(
    dataset: Annotated[str, typer.Option(help="arith, arith:N, math500, aime24, amc23, gsm8k, or a .jsonl")] = "arith",
    strategy: Annotated[str, typer.Option(help="cot | majority | best_of_n | beam | dvts | rebase")] = "majority",
    n: Annotated[int, typer.Option(help="budget: samples per problem")] = 8,
    prm: Annotated[str | None, typer.Option(
        help="step scorer for best_of_n: arith-check, judge[:MODEL], oracle, hf:PATH, vllm:PATH, http:URL")] = None,
    aggregation: Annotated[str, typer.Option(help="step rewards -> score: last | min | mean | prod")] = "last",
    selection: Annotated[str, typer.Option(help="answer choice: prm_max | prm_vote | majority")] = "prm_max",
    m: Annotated[int, typer.Option("--m", help="beam / dvts / rebase: beam width M (N must be a multiple)")] = 4,
    max_depth: Annotated[int, typer.Option(help="tree searches: steps per path at most")] = 40,
    step_max_tokens: Annotated[int, typer.Option(help="tree searches: max tokens per step")] = 256,
    rank_by: Annotated[str, typer.Option(help="tree searches: rank nodes by last | min | mean | prod")] = "last",
    limit: Annotated[int | None, typer.Option(help="first K problems")] = None,
    level: Annotated[list[int] | None, typer.Option(help="keep only these difficulty levels")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="output folder (holds the SQLite store)")] = Path("runs"),
    model: Annotated[str | None, typer.Option(
        help="GGUF path or embedded model name (llamacpp), HF id or path (vllm, hf), served name (openai)")] = None,
    backend: BackendOpt = "llamacpp",
    base_url: BaseUrlOpt = None,
    policy_option: PolicyOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    max_tokens: Annotated[int, typer.Option(help="max generated tokens per solution")] = 384,
    temperature: Annotated[float, typer.Option(help="sampling temperature (cot is greedy)")] = 0.7,
    fewshot: Annotated[int, typer.Option(help="worked examples in the prompt")] = 3,
    system: Annotated[str | None, typer.Option(help="the policy's system turn (default: its template's)")] = None,
    instruction: Annotated[str | None, typer.Option(
        help="text before the question in the user turn (default: testtime's step-by-step instruction)")] = None,
    question_field: Annotated[str, typer.Option(help="JSONL: question field (dotted path)")] = "question",
    answer_field: Annotated[str, typer.Option(help="JSONL: answer field (dotted path)")] = "answer",
    kind: Annotated[str, typer.Option(help="JSONL: answer kind (math, number, aime, amc, gsm8k)")] = "math",
    table: Annotated[Path | None, typer.Option(help="optimal: the calibration table (testtime calibrate)")] = None,
    budget: Annotated[int | None, typer.Option(help="optimal: the budget N per problem")] = None,
    force: Annotated[bool, typer.Option(help="optimal: apply a table calibrated for another PRM or policy")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary as the last line")] = False,
) -> None:
    """Run a strategy over a dataset with the policy and print the result table.

    --strategy optimal --table T --budget B: the compute-optimal selector (probe, predicted bin, that
    bin's best calibrated config within B).
    """
    from testtime import engine
    from testtime.datasets import DatasetError, load_dataset
    from testtime.search import SCORED, STRATEGIES, TREE
    from testtime.search.aggregation import AGGREGATIONS, SELECTIONS

    if n < 1:
        _fail(f"--n {n}: must be >= 1")
    where = dict(model=model, backend=backend, base_urls=base_url, executor=executor, address=address, actors=actors,
                 options=_policy_options(policy_option))
    if strategy == "optimal":
        base = dict(dataset=dataset, limit=limit, levels=level or None, seed=seed, model=model, out=str(out),
                    max_tokens=max_tokens, temperature=temperature, fewshot=fewshot, max_depth=max_depth,
                    step_max_tokens=step_max_tokens, system=system, instruction=instruction)
        _run_optimal(table, budget, prm, force, base, as_json, where)
        return
    if strategy not in STRATEGIES:
        _fail(f"--strategy {strategy}: unknown (available: {', '.join(STRATEGIES)})")
    if strategy in SCORED and not prm:
        _fail(f"--strategy {strategy} needs --prm (e.g. --prm arith-check)")
    if aggregation not in AGGREGATIONS:
        _fail(f"--aggregation {aggregation}: unknown (valid: {', '.join(AGGREGATIONS)})")
    if selection not in SELECTIONS:
        _fail(f"--selection {selection}: unknown (valid: {', '.join(SELECTIONS)})")
    if strategy in TREE:
        if m < 1 or n % m:
            _fail(f"--n {n} --m {m}: N must be a positive multiple of M")
        if rank_by not in AGGREGATIONS:
            _fail(f"--rank-by {rank_by}: unknown (valid: {', '.join(AGGREGATIONS)})")
        if max_depth < 1 or step_max_tokens < 1:
            _fail(f"--max-depth {max_depth} --step-max-tokens {step_max_tokens}: must be >= 1")
    config = engine.RunConfig(
        dataset=dataset, strategy=strategy, n=n, limit=limit, levels=level or None, seed=seed,
        model=model, out=str(out), max_tokens=max_tokens, temperature=temperature, fewshot=fewshot,
        system=system, instruction=instruction,
        prm=prm if strategy in SCORED else None, aggregation=aggregation, selection=selection,
        m=m, max_depth=max_depth, step_max_tokens=step_max_tokens, rank_by=rank_by,
    )
    mapping = {}
    if dataset.endswith(".jsonl"):
        mapping = {"question_field": question_field, "answer_field": answer_field, "kind": kind}
    try:
        problems = load_dataset(dataset, limit=limit, seed=seed, levels=level or None, **mapping)
    except (DatasetError, FileNotFoundError) as e:
        _fail(str(e))
    if not problems:
        _fail(f"--dataset {dataset}: no problems selected")
    ex = _open_executor(**where)
    try:
        if config.prm:
            _check_prm(ex, config.prm)
        result = _run_with_progress(config, ex, problems, err_console if as_json else console)
    finally:
        ex.close()
    if as_json:
        summary = result.summary()
        summary["by_level"] = {str(k): v for k, v in result.by_level().items()}
        print(json.dumps(summary))


def _run_optimal(table_path: Path | None, budget: int | None, prm: str | None, force: bool, base: dict,
                 as_json: bool, where: dict[str, Any] | None = None) -> None:
    from testtime.datasets import DatasetError, load_dataset
    from testtime.optimal.calibrate import Table as CalTable
    from testtime.optimal.selector import run_optimal

    if table_path is None or budget is None:
        _fail("--strategy optimal needs --table T and --budget B")
    if budget < 1:  # type: ignore[operator]
        _fail(f"--budget {budget}: must be >= 1")
    try:
        cal = CalTable.load(table_path)  # type: ignore[arg-type]
        problems = load_dataset(base["dataset"], limit=base["limit"], seed=base["seed"], levels=base["levels"])
    except (ValueError, DatasetError, FileNotFoundError) as e:
        _fail(str(e))
    spec = prm or cal.prm
    out_console = err_console if as_json else console
    ex = _open_executor(**(where or {"model": base["model"], "backend": "llamacpp", "base_urls": None,
                                     "executor": "local", "address": None, "actors": None}))
    try:
        if spec:
            _check_prm(ex, spec)
        try:
            with out_console.status(f"compute-optimal selector, budget {budget}"):
                result = run_optimal(cal, budget, ex, None, problems, base, force=force, prm=spec)  # type: ignore[arg-type]
        except ValueError as e:
            _fail(str(e))
    finally:
        ex.close()
    s = result.summary()
    t = Table(title=f"compute-optimal at budget {budget} on {base['dataset']}: {s['n_problems']} problems"
              + (" [ORACLE PRM table: upper bound]" if cal.oracle_prm else ""))
    for col in ("predicted bin", "problems", "accuracy", "configs run"):
        t.add_column(col, justify="right")
    for label, row in s["by_bin"].items():
        t.add_row(label, str(row["n_problems"]), f"{row['accuracy']:.1%}",
                  ", ".join(f"{k} x{v}" for k, v in row["configs"].items()))
    t.add_section()
    t.add_row("all", str(s["n_problems"]), f"{s['accuracy']:.1%}", "", style="bold")
    t.caption = (f"FLOPs {_fmt_flops(s['flops'])} (probe {_fmt_flops(s['probe_flops'])}) | generated tokens "
                 f"{s['generated_tokens']} | wall {s['wall_s']:.1f} s")
    out_console.print(t)
    _print_failures(s, out_console)
    if as_json:
        print(json.dumps(s, default=str))


def _run_with_progress(config: Any, executor: Any, problems: list, out_console: Console) -> Any:
    """The run on the executor under a progress bar, then its result table (and the selections table, if
    scored) and any failed problems."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out_console) as progress:
        task = progress.add_task(f"{config.strategy}@{config.n}", total=len(problems))
        result = executor.run(config, problems, on_progress=lambda done, total: progress.update(task, completed=done))
    out_console.print(_result_table(result))
    selections = _selections_table(result.summary())
    if selections is not None:
        out_console.print(selections)
    _print_failures(result.summary(), out_console)
    return result


def _selections_table(s: dict[str, Any]) -> Table | None:
    """Accuracy of every aggregation x selection pair, from one scoring pass."""
    sel = s.get("selections")
    if not sel:
        return None
    title = f"{s['strategy']}@{s['n']} with {s['prm']}: accuracy per aggregation x selection"
    if s.get("oracle_upper_bound"):
        title += " [ORACLE: upper bound, looks at the reference answer]"
    t = Table(title=title)
    t.add_column("aggregation")
    for col in ("prm_max", "prm_vote"):
        t.add_column(col, justify="right")
    for agg in ("last", "min", "mean", "prod"):
        t.add_row(agg, f"{sel[f'prm_{agg}_max']:.1%}", f"{sel[f'prm_{agg}_vote']:.1%}")
    t.caption = (f"majority (no scores): {sel['majority']:.1%} | reported answer: {s['selection']} | "
                 f"PRM tokens {s['prm_tokens']}, PRM FLOPs {_fmt_flops(s['prm_flops'])}")
    return t


def _demo_runs(dataset, limit, n, seed, out, model, executor, problems, results, out_console) -> None:
    from testtime import engine

    for strategy, budget in (("cot", 1), ("majority", n)):
        config = engine.RunConfig(dataset=dataset, strategy=strategy, n=budget, limit=limit, seed=seed,
                                  model=model, out=str(out))
        results[strategy] = _run_with_progress(config, executor, problems, out_console)


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="dataset spec (see run)")] = "arith",
    limit: Annotated[int, typer.Option(help="problems")] = 30,
    n: Annotated[int, typer.Option(help="majority budget N_max")] = 8,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/demo"),
    model: Annotated[str | None, typer.Option(help="GGUF path or embedded model name (see run)")] = None,
    backend: BackendOpt = "llamacpp",
    base_url: BaseUrlOpt = None,
    policy_option: PolicyOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """CoT vs majority voting at every N <= N_max, per difficulty level, with a plot."""
    from testtime.datasets import DatasetError, load_dataset
    from testtime.metrics import majority_curve, powers_of_two
    from testtime.report import plot_budget_curves

    if n < 1:
        _fail(f"--n {n}: must be >= 1")
    try:
        problems = load_dataset(dataset, limit=limit, seed=seed)
    except (DatasetError, FileNotFoundError) as e:
        _fail(str(e))
    ex = _open_executor(model, backend, base_url, executor, address, actors, _policy_options(policy_option))
    out_console = err_console if as_json else console
    results = {}
    try:
        _demo_runs(dataset, limit, n, seed, out, model, ex, problems, results, out_console)
    finally:
        ex.close()

    ks = powers_of_two(n)
    by_level: dict[str, list[tuple[list[str | None], list[bool]]]] = {}
    cot_by_level: dict[str, list[bool]] = {}
    for r_cot, r_maj in zip(results["cot"].results, results["majority"].results, strict=True):
        label = f"level {r_maj.problem.level}" if r_maj.problem.level is not None else "all"
        # a failed problem has no samples: every curve counts it as wrong
        keys = [None if g is None else str(g) for g in r_maj.trace.meta.get("answer_groups", [None] * n)]
        if r_maj.failed:
            r_maj.sample_correct = [False] * n
        by_level.setdefault(label, []).append((keys, r_maj.sample_correct))
        cot_by_level.setdefault(label, []).append(bool(r_cot.trace.correct))
    curves: dict[str, dict[int, float]] = {}
    for label, pools in by_level.items():
        per_problem = [majority_curve(keys, ok, ks, seed=seed) for keys, ok in pools]
        curves[label] = {k: sum(c[k] for c in per_problem) / len(per_problem) for k in ks}
    cot = {label: sum(v) / len(v) for label, v in cot_by_level.items()}
    table = Table(title=f"accuracy vs samples per problem ({dataset}, {len(problems)} problems)")
    table.add_column("level")
    table.add_column("CoT", justify="right")
    for k in ks:
        table.add_column(f"maj@{k}", justify="right")
    table.add_column(f"pass@{n}", justify="right")
    for label in curves:
        pass_n = [any(ok) for _, ok in by_level[label]]
        table.add_row(label, f"{cot[label]:.0%}", *[f"{curves[label][k]:.0%}" for k in ks],
                      f"{sum(pass_n) / len(pass_n):.0%}")
    out_console.print(table)
    plot = plot_budget_curves(curves, cot, out / "accuracy_vs_n.png",
                              f"SmolLM2 on {dataset}: majority voting vs CoT")
    out_console.print(f"plot: {plot}")
    if as_json:
        print(json.dumps({
            "plot": str(plot), "cot": results["cot"].summary(), "majority": results["majority"].summary(),
            "curves": curves, "cot_by_level": cot,
        }))


@app.command()
def sweep(
    config: Annotated[Path | None, typer.Option("--config", help="recipe YAML (see recipes/)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a recipe field: key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every strategy x budget of a recipe over its problems (resumable), saved as a sweep file.

    The recipe's backend, policy_options, executor, address and actors say where the policy runs."""
    from testtime.datasets import DatasetError, load_dataset
    from testtime.optimal.recipe import load_recipe
    from testtime.optimal.sweep import n_runs, plan, run_sweep
    from testtime.search import SCORED

    try:
        recipe = load_recipe(config, set_ or [])
        problems = load_dataset(recipe.dataset, limit=recipe.limit, seed=recipe.seed, levels=recipe.levels)
    except (ValueError, DatasetError) as e:
        _fail(str(e))
    out_console = err_console if as_json else console
    where = str(config or "recipe")
    ex = _open_executor(recipe.model, recipe.backend, None, recipe.executor, recipe.address, recipe.actors,
                        options=recipe.policy_options, prefix=f"{where}: ",
                        name=lambda opt: {"base_url": "policy_options.base_urls",
                                          "policy_option": "policy_options"}.get(opt, opt))
    try:
        if recipe.prm and any(spec.name in SCORED for spec, _n in plan(recipe)):
            _check_prm(ex, recipe.prm, where)
        total = n_runs(recipe)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=out_console) as progress:
            task = progress.add_task("sweep", total=total)

            def on_progress(done: int, total: int, label: str) -> None:
                progress.update(task, completed=done, description=f"sweep: {label}")

            result = run_sweep(recipe, ex, None, problems, on_progress)
    finally:
        ex.close()
    from testtime.optimal.sweep import sweep_path

    path = sweep_path(recipe)
    out_console.print(f"sweep: {len(result.cells)} cells over {len(result.problems)} problems, "
                      f"{len(result.configs())} configs, {total} runs in {result.wall_s:.1f} s -> {path}")
    _print_failures({"failures": result.failed}, out_console, "left out of the sweep")
    if as_json:
        print(json.dumps({"sweep": str(path), "cells": len(result.cells), "problems": len(result.problems),
                          "configs": result.configs(), "wall_s": result.wall_s, "failed": result.failed}))


@app.command()
def calibrate(
    sweep_file: Annotated[Path, typer.Argument(help="a sweep file (testtime sweep)")],
    out: Annotated[Path | None, typer.Option(help="where to write the table (default: beside the sweep)")] = None,
    easy: Annotated[float | None, typer.Option(help="easy bin: pass@1 >= this (default: the recipe's)")] = None,
    hard: Annotated[float | None, typer.Option(help="hard bin: pass@1 < this (default: the recipe's)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The best config per (difficulty bin, budget) on the calibration split, saved as a versioned table."""
    from testtime.optimal.calibrate import calibrate as do_calibrate
    from testtime.optimal.sweep import SweepResult

    try:
        sw = SweepResult.load(sweep_file)
        table = do_calibrate(sw, easy=easy, hard=hard)
    except ValueError as e:
        _fail(str(e))
    path = table.save(out or sweep_file.with_name(sweep_file.stem.replace("sweep-", "table-") + ".json"))
    out_console = err_console if as_json else console
    t = Table(title=f"calibrated best config per bin and budget ({table.policy[:16]}, PRM {table.prm}, "
                    f"{len(table.calibration_ids)} calibration problems)")
    t.add_column("bin")
    for b in table.budgets:
        t.add_column(f"N<={b}")
    for label, row in table.table.items():
        t.add_row(label, *[f"{row[b].config}@{row[b].budget} ({row[b].accuracy:.0%})" if b in row else "-"
                           for b in table.budgets])
    out_console.print(t)
    out_console.print(f"table: {path}")
    if as_json:
        print(json.dumps({"table": str(path), "budgets": table.budgets,
                          "best": {k: {str(b): f"{c.config}@{c.budget}" for b, c in v.items()}
                                   for k, v in table.table.items()}}))


@app.command()
def report(
    sweep_file: Annotated[Path, typer.Argument(help="a sweep file, or the folder holding one (testtime sweep)")],
    table: Annotated[Path | None, typer.Option(help="calibration table (default: calibrate the sweep now)")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default: SWEEP_DIR/report)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """PNG plots and a self-contained HTML report (tables, held-out curves, search-tree viewer)."""
    from testtime.optimal.analysis import build_report
    from testtime.optimal.calibrate import Table as CalTable
    from testtime.optimal.calibrate import calibrate as do_calibrate
    from testtime.optimal.report import write_report
    from testtime.optimal.sweep import SweepResult

    if sweep_file.is_dir():
        found = sorted(sweep_file.glob("sweep-*.json"))
        if not found:
            _fail(f"{sweep_file}: no sweep-*.json in this folder (run `testtime sweep` first)")
        sweep_file = found[0]
    try:
        sw = SweepResult.load(sweep_file)
        cal = CalTable.load(table) if table else do_calibrate(sw)
        data = build_report(sw, cal, sweep_file.parent)
        files = write_report(data, out or sweep_file.parent / "report")
    except ValueError as e:
        _fail(str(e))
    out_console = err_console if as_json else console
    m = Table(title="headline figures (held-out problems)")
    m.add_column("metric")
    m.add_column("value", justify="right")
    for k, v in data["metrics"].items():
        m.add_row(k, v)
    out_console.print(m)
    out_console.print(f"report: {files.html}")
    for png in files.pngs:
        out_console.print(f"plot: {png}")
    if as_json:
        print(json.dumps({"html": str(files.html), "pngs": [str(p) for p in files.pngs], "metrics": data["metrics"]}))


@data_app.command("list")
def data_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The bundled datasets and the synthetic arith task."""
    from testtime.datasets import list_datasets

    infos = list_datasets()
    if as_json:
        print(json.dumps([i.__dict__ for i in infos]))
        return
    t = Table(title="datasets")
    for col in ("name", "problems", "kind", "description", "license"):
        t.add_column(col)
    for i in infos:
        t.add_row(i.name, "generated" if i.n_problems is None else str(i.n_problems), i.kind, i.description, i.license)
    console.print(t)


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Embedded models (GGUF files shipped in wheels) and whether they are installed."""
    from testtime.policy import list_models

    rows = list_models()
    if as_json:
        print(json.dumps(rows))
        return
    t = Table(title="embedded models (any GGUF path also works with --model)")
    for col in ("name", "description", "installed", "package", "path"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["description"], r["installed"], r["package"], r["path"])
    console.print(t)


@app.command()
def grade(
    pairs: Annotated[Path, typer.Option(help='JSONL, each line {"pred": ..., "ref": ..., "kind": optional}')],
    kind: Annotated[str, typer.Option(help="default answer kind")] = "math",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show how answers are judged: each (pred, ref) pair's verdict."""
    from testtime.grading import KINDS, extract_answer, is_equivalent

    if not pairs.is_file():
        _fail(f"--pairs {pairs}: no such file")
    rows: list[tuple[int, str, str, str]] = []
    with pairs.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                _fail(f"{pairs}:{lineno}: invalid JSON ({e.msg} at column {e.colno})")
            if not isinstance(obj, dict):
                _fail(f"{pairs}:{lineno}: expected a JSON object")
            for key in ("pred", "ref"):
                if key not in obj:
                    _fail(f"{pairs}:{lineno}: field '{key}': missing")
                if not isinstance(obj[key], (str, int, float)) or isinstance(obj[key], bool):
                    _fail(f"{pairs}:{lineno}: field '{key}': expected a string or number")
            k = obj.get("kind", kind)
            if k not in KINDS:
                _fail(f"{pairs}:{lineno}: field 'kind': unknown {k!r} (expected one of {sorted(KINDS)})")
            rows.append((lineno, str(obj["pred"]), str(obj["ref"]), k))
    verdicts = []
    for lineno, pred, ref, k in rows:
        # a pred holding a whole solution is reduced to its final answer first
        extracted = extract_answer(pred) or pred
        ok = is_equivalent(extracted, ref, k)
        verdicts.append({"line": lineno, "pred": extracted, "ref": ref, "kind": k, "equivalent": ok})
        (err_console if as_json else console).print(
            f"{lineno}: {'[green]equivalent[/green]' if ok else '[red]different[/red]'}  "
            f"pred={extracted!r} ref={ref!r} kind={k}", highlight=False,
        )
    if as_json:
        print(json.dumps({"n": len(verdicts), "equivalent": sum(v["equivalent"] for v in verdicts),
                          "verdicts": verdicts}))


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
