"""`testtime run | demo | grade | data list | models`: parse the options, call the library, print its results.

Every value the library validates (strategy, N, M, aggregation, selection, tree options, sampling settings)
is checked by building the ``RunConfig`` and spelled back as a flag by ``common.config_error``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from testtime import settings as S
from testtime.cli import options as opt
from testtime.cli.common import (
    ActorsOpt,
    AddressOpt,
    BackendOpt,
    BaseUrlOpt,
    ExecutorOpt,
    PolicyOpt,
    check_prm,
    console,
    fail,
    fail_config,
    flag,
    fmt_flops,
    load_problems,
    open_policy,
    out_console,
    policy_options,
    print_failures,
    progress_bar,
)
from testtime.errors import ConfigError
from testtime.extraction import DEFAULT_EXTRACTION, EXTRACTIONS

ExtractionOpt = Annotated[str, typer.Option(
    help=f"how final answers are read: {' | '.join(EXTRACTIONS)} (strict: answer markers only; fallback: "
         "math-verify's extraction when an output marks no answer)")]


def accuracy_cis(result: Any, confidence: float) -> tuple[list[float], dict[str, list[float]]]:
    """[low, high] of the run's accuracy (bootstrap over problems, stratified by level) and of each level's."""
    from testtime.stats import accuracy_intervals

    if not result.results:
        return [0.0, 0.0], {}
    correct = [float(bool(r.trace.correct)) for r in result.results]
    overall, per = accuracy_intervals(correct, [str(r.problem.level) for r in result.results], confidence=confidence)
    return overall.as_list(), {k: v.as_list() for k, v in per.items()}


def _with_ci(acc: float, ci: list[float] | None, digits: int = 1) -> str:
    text = f"{100 * acc:.{digits}f}%"
    return text if ci is None else f"{text} [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def result_table(result: Any, confidence: float = 0.95) -> Table:
    s = result.summary()
    ci_all, ci_level = accuracy_cis(result, confidence)
    title = f"{s['strategy']} (N={s['n']}) on {s['dataset']}: {s['n_problems']} problems"
    if s.get("prm"):
        title += f", scored by {s['prm']}, answer (accuracy) by {s['selection']}"
    if s.get("oracle_upper_bound"):
        title += " [ORACLE scorer: an upper bound, not a result]"
    t = Table(title=title)
    for col in ("level", "problems", f"accuracy [{confidence:.0%} CI]", "pass@1", "gen tokens / problem", "FLOPs"):
        t.add_column(col, justify="right")
    levels = result.by_level()
    if len(levels) > 1 or None not in levels:
        for level, row in levels.items():
            t.add_row(
                str(level), str(row["n_problems"]), _with_ci(row["accuracy"], ci_level.get(str(level))),
                f"{row['pass@1']:.1%}",
                f"{row['mean_generated_tokens']:.0f}", fmt_flops(row["flops"]),
            )
        t.add_section()
    t.add_row(
        "all", str(s["n_problems"]), _with_ci(s["accuracy"], ci_all), f"{s['pass@1']:.1%}",
        f"{s['mean_generated_tokens']:.0f}", fmt_flops(s["flops"]), style="bold",
    )
    t.caption = (
        f"wall {s['wall_s']:.1f} s | generations: {s['new_generations']} new, {s['cached_generations']} "
        f"from store | prompt tokens {s['prompt_tokens']} ({s['cached_prompt_tokens']} from KV cache)"
    )
    return t


def selections_table(s: dict[str, Any]) -> Table | None:
    """Accuracy of every aggregation x selection pair, from one scoring pass."""
    sel = s.get("selections")
    if not sel:
        return None
    if "prm" not in s:  # an unscored pool: majority and the policy-confidence votes
        t = Table(title=f"{s['strategy']}@{s['n']}: accuracy per selection (no PRM)")
        for name in sel:
            t.add_column(name, justify="right")
        t.add_row(*(f"{v:.1%}" for v in sel.values()))
        return t
    title = f"{s['strategy']}@{s['n']} with {s['prm']}: accuracy per aggregation x selection"
    if s.get("oracle_upper_bound"):
        title += " [ORACLE: upper bound, looks at the reference answer]"
    t = Table(title=title)
    t.add_column("aggregation")
    for col in ("prm_max", "prm_vote"):
        t.add_column(col, justify="right")
    for agg in ("last", "min", "mean", "prod"):
        t.add_row(agg, f"{sel[f'prm_{agg}_max']:.1%}", f"{sel[f'prm_{agg}_vote']:.1%}")
    free = " | ".join(f"{k}: {v:.1%}" for k, v in sel.items() if not k.startswith("prm_"))
    t.caption = (f"no scores: {free} | reported answer: {s['selection']} | "
                 f"PRM tokens {s['prm_tokens']}, PRM FLOPs {fmt_flops(s['prm_flops'])}")
    return t


def print_run(result: Any, out: Console, confidence: float = 0.95) -> None:
    """A run's result table, its selections table (if scored) and any failed problems."""
    out.print(result_table(result, confidence))
    summary = result.summary()
    selections = selections_table(summary)
    if selections is not None:
        out.print(selections)
    print_failures(summary.get("failures"), out)


def with_strategy_options(func: Any) -> Any:
    """``func`` with a flag for every strategy option its own parameters do not spell, generated from the
    strategies' Options declarations (adding an option there adds its flag); unset (None), the strategy's
    default applies. Their values arrive in ``func``'s ``**strategy_options``."""
    from testtime.settings import strategy_option_settings

    sig = inspect.signature(func, eval_str=True)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in own}
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=s.option(flag(name), default_shown=s.default))
             for name, s in strategy_option_settings().items() if name not in names]
    func.__signature__ = sig.replace(parameters=[*own, *extra])
    return func


@with_strategy_options
def run(
    dataset: Annotated[str, typer.Option(help="arith, arith:N, math500, aime24, amc23, gsm8k, or a .jsonl")] = "arith",
    strategy: Annotated[str, typer.Option(
        help="cot | majority | adaptive_majority | deepconf_online | best_of_n | beam | dvts | rebase | "
             "particle_filter | optimal")] = "majority",
    n: Annotated[int, typer.Option(help="budget: samples per problem")] = 8,
    prm: Annotated[str | None, typer.Option(
        help="step scorer for best_of_n: arith-check, judge[:MODEL], oracle, hf:PATH, vllm:PATH, http:URL")] = None,
    aggregation: Annotated[str | None, typer.Option(
        help="step rewards -> score: last | min | mean | prod [default: the scorer's (arith-check: mean)]")] = None,
    selection: Annotated[str | None, typer.Option(
        help="answer choice: prm_max | prm_vote | majority [default: the scorer's (prm_max)]")] = None,
    m: Annotated[int, typer.Option("--m", help="beam / dvts / rebase: beam width M (N must be a multiple)")] = 4,
    max_depth: Annotated[int, typer.Option(help="tree searches: steps per path at most")] = 40,
    step_max_tokens: Annotated[int, typer.Option(help="tree searches: max tokens per step")] = 256,
    rank_by: Annotated[str, typer.Option(help="tree searches: rank nodes by last | min | mean | prod")] = "last",
    terminate_on: Annotated[str, typer.Option(
        help="tree searches: a path ends (besides EOS / max depth) at a step stating an answer (answer) or only "
             "at a step writing \\boxed (boxed: the paper's)")] = "answer",
    beam_finish: Annotated[str, typer.Option(
        help="beam: sal = every finished path counts, N at full width; authors = finished and unfinished "
             "ranked together, N/M paths returned (the paper's)")] = "sal",
    answer_grouping: Annotated[str, typer.Option(
        help="vote groups: math = equivalent answers, no answer never wins; string = normalized answer "
             "strings, no answer is a group of its own (the paper's)")] = "math",
    limit: Annotated[int | None, typer.Option(help="first K problems")] = None,
    level: Annotated[list[int] | None, typer.Option(help="keep only these difficulty levels")] = None,
    seed: opt.Seed = S.SEED.default,
    out: Annotated[Path, typer.Option(help="output folder (holds the SQLite store)")] = Path("runs"),
    model: Annotated[str | None, typer.Option(
        help="GGUF path or embedded model name (llamacpp), HF id or path (vllm, hf), served name (openai)")] = None,
    backend: BackendOpt = "llamacpp",
    base_url: BaseUrlOpt = None,
    policy_option: PolicyOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    max_tokens: opt.MaxTokens = S.MAX_TOKENS.default,
    temperature: opt.Temperature = S.TEMPERATURE.default,
    top_p: opt.TopP = S.TOP_P.default,
    fewshot: opt.Fewshot = S.FEWSHOT.default,
    system: Annotated[str | None, typer.Option(help="the policy's system turn (default: its template's)")] = None,
    instruction: Annotated[str | None, typer.Option(
        help="text before the question in the user turn (default: testtime's step-by-step instruction)")] = None,
    fewshot_file: Annotated[Path | None, typer.Option(
        help='JSONL of worked examples {"question", "solution", "level" (optional)} used instead of the '
             "built-in ones; --fewshot says how many")] = None,
    question_field: Annotated[str, typer.Option(help="JSONL: question field (dotted path)")] = "question",
    answer_field: Annotated[str, typer.Option(help="JSONL: answer field (dotted path)")] = "answer",
    kind: Annotated[str, typer.Option(help="JSONL: answer kind (math, number, aime, amc, gsm8k)")] = "math",
    level_field: Annotated[str | None, typer.Option(
        help='JSONL: difficulty level field (dotted path; default: a "level" field where a row has one)')] = None,
    extraction: ExtractionOpt = DEFAULT_EXTRACTION,
    table: Annotated[Path | None, typer.Option(help="optimal: the calibration table (testtime calibrate)")] = None,
    budget: Annotated[int | None, typer.Option(
        help="optimal: the average budget per problem, in samples (batch: the batch may spend what a uniform "
             "Best-of-B would; per-problem and uniform: a cap on each problem)")] = None,
    allocation: Annotated[str | None, typer.Option(
        help="optimal: batch = spend the batch's budget where predicted accuracy per FLOP is highest; "
             "per-problem = each problem's predicted bin's calibrated choice within B; uniform = the best fixed "
             "config within B for all [default: batch when the table has a difficulty model]")] = None,
    predictor: Annotated[str | None, typer.Option(
        help="optimal, batch: difficulty from the question (question), a probe of a few samples (probe), or "
             "both [default: the table's]")] = None,
    min_gain: Annotated[float | None, typer.Option(
        help="optimal, batch: the least a step may buy, in points of accuracy per sample it costs (0: spend the "
             "budget while any gain is predicted) [default: the table's, chosen on its held-out problems]")] = None,
    force: Annotated[bool, typer.Option(help="optimal: apply a table calibrated for another PRM or policy")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary as the last line")] = False,
    ci: opt.Ci = S.CI.default,
    **strategy_options: Any,  # every other declared strategy option (with_strategy_options): None = its default
) -> None:
    """Run a strategy over a dataset with the policy and print the result table.

    --strategy optimal --table T --budget B: the compute-optimal selector (probe, predicted bin, that
    bin's best calibrated config within B).
    """
    from testtime.config import RunConfig
    from testtime.execution import require_prm
    from testtime.stats import check_confidence

    mapping: dict[str, Any] = {"question_field": question_field, "answer_field": answer_field, "kind": kind} \
        if dataset.endswith(".jsonl") else {}
    if level_field is not None:
        if not mapping:
            fail(f"--level-field applies only to a .jsonl --dataset, not '{dataset}'")
        mapping["level_field"] = level_field
    common = dict(dataset=dataset, limit=limit, levels=level or None, seed=seed, model=model, out=str(out),
                  max_tokens=max_tokens, temperature=temperature, top_p=top_p, fewshot=fewshot, system=system,
                  instruction=instruction, fewshot_file=str(fewshot_file) if fewshot_file else None,
                  max_depth=max_depth, step_max_tokens=step_max_tokens, terminate_on=terminate_on,
                  answer_grouping=answer_grouping, beam_finish=beam_finish, extraction=extraction,
                  **{k: v for k, v in strategy_options.items() if v is not None})
    try:
        check_confidence(ci)  # before any model runs
        options = policy_options(policy_option)
        if strategy == "optimal":
            # the template every run of the selector starts from (its strategy and N come from the table)
            config = RunConfig(strategy="majority", n=1, **common)
        else:
            config = RunConfig(strategy=strategy, n=n, prm=prm, aggregation=aggregation, selection=selection, m=m,
                               rank_by=rank_by, **common)
            if config.strategy_class.needs_scorer:
                require_prm(config.prm)
    except ConfigError as e:
        fail_config(e)
    where = dict(model=model, backend=backend, base_urls=base_url, executor=executor, address=address, actors=actors,
                 options=options)
    if strategy == "optimal":
        from testtime.cli.optimal import run_optimal

        run_optimal(table, budget, prm, force, config, mapping, where, as_json, ci, allocation, predictor, min_gain)
        return
    problems = load_problems(dataset, limit, seed, level, **mapping)
    ex = open_policy(**where)
    try:
        if config.prm:
            check_prm(ex, config.prm)
        result = run_with_progress(config, ex, problems, out_console(as_json), ci)
    finally:
        ex.close()
    if as_json:
        summary = result.summary()
        summary["accuracy_ci"], by_level_ci = accuracy_cis(result, ci)
        summary["ci"] = ci
        summary["by_level"] = {str(k): {**v, "accuracy_ci": by_level_ci[str(k)]} for k, v in result.by_level().items()}
        print(json.dumps(summary))


def run_with_progress(config: Any, executor: Any, problems: list, out: Console, confidence: float = 0.95) -> Any:
    """The run on the executor under a progress bar, then its tables and any failed problems."""
    with progress_bar(out) as progress:
        task = progress.add_task(f"{config.strategy}@{config.n}", total=len(problems))
        result = executor.run(config, problems, on_progress=lambda done, total: progress.update(task, completed=done))
    print_run(result, out, confidence)
    return result


def demo(
    dataset: Annotated[str, typer.Option(help="dataset spec (see run)")] = "arith",
    limit: Annotated[int, typer.Option(help="problems")] = 100,
    n: Annotated[int, typer.Option(help="the largest average budget: one pool of n samples per problem")] = 8,
    seed: Annotated[int, typer.Option(help="problem seed (7: problems the shipped table never saw)")] = 7,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/demo"),
    table: Annotated[Path | None, typer.Option(help="calibration table (default: the shipped one)")] = None,
    min_gain: Annotated[float | None, typer.Option(help="see run --min-gain [default: the table's]")] = None,
    model: Annotated[str | None, typer.Option(help="GGUF path or embedded model name (see run)")] = None,
    fewshot_file: Annotated[Path | None, typer.Option(help="JSONL of worked examples (see run)")] = None,
    extraction: ExtractionOpt = DEFAULT_EXTRACTION,
    backend: BackendOpt = "llamacpp",
    base_url: BaseUrlOpt = None,
    policy_option: PolicyOpt = None,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    ci: opt.Ci = S.CI.default,
) -> None:
    """The main job: on fresh problems, compute-optimal allocation (the shipped table and difficulty model)
    against CoT, majority@N and uniform Best-of-N at the same average budget, with paired intervals, and the
    HTML report with where the budget went."""
    from testtime.optimal.calibrate import Table as CalTable
    from testtime.optimal.demo import PRM, demo_config, run_demo
    from testtime.optimal.tables import shipped_table
    from testtime.stats import check_confidence

    try:
        check_confidence(ci)  # before any model runs
        options = policy_options(policy_option)
        few = str(fewshot_file) if fewshot_file else None
        base = demo_config(dataset, n, limit, seed, model, out, few, extraction)  # the library checks the rest
        table_path = table if table is not None else shipped_table(model, PRM)
        cal = CalTable.load(table_path)
    except ConfigError as e:
        fail_config(e)
    problems = load_problems(dataset, limit, seed, None)
    ex = open_policy(model, backend, base_url, executor, address, actors, options)
    printer = out_console(as_json)
    try:
        check_prm(ex, PRM)
        with printer.status("demo") as status:
            result = run_demo(ex, cal, table_path, problems, base, n,
                              on_step=lambda step: status.update(f"demo: {step}"), min_gain=min_gain,
                              confidence=ci)
    except ConfigError as e:
        fail_config(e)
    finally:
        ex.close()
    for t in demo_tables(result):
        printer.print(t)
    from testtime.optimal.study_report import headline_lines

    for line in headline_lines(result.study, result.summary):
        printer.print(line, highlight=False)
    printer.print(verdict(result), highlight=False)
    # soft_wrap: the path stays on one line, whole, for copying
    printer.print(f"HTML report (accuracy vs FLOPs, where the budget went per level): {result.files.html}",
                  soft_wrap=True)
    if as_json:
        print(json.dumps(result.json(), default=str))


def verdict(result: Any) -> str:
    """One sentence on whether allocation paid here, from the paired comparison with uniform Best-of-N."""
    from testtime.optimal.study import UNIFORM

    p = result.summary["paired"].get(f"{UNIFORM}@{result.n}")
    if p is None:
        return "no paired comparison with uniform Best-of-N"
    ratio = p["flops_ratio"]
    match = result.summary["flops_to_match_uniform"]
    if match["estimate"] is not None and match["estimate"] < 0.9 and match["ci"] and match["ci"][1] < 1.0:
        ci = match["ci"]
        return (f"compute-optimal reaches uniform Best-of-{result.n}'s accuracy at {100 * match['estimate']:.0f}% "
                f"[{100 * ci[0]:.0f}%, {100 * ci[1]:.0f}%] of its FLOPs: the saving is the result here; at the same "
                f"average budget {result.n}: {p['text']} at {ratio:.2f}x its FLOPs")
    if p["significant"] and p["difference"] > 0:
        return (f"compute-optimal beats uniform Best-of-{result.n} here: {p['text']}, at {ratio:.2f}x its FLOPs")
    if p["significant"]:
        return f"compute-optimal is WORSE than uniform Best-of-{result.n} here: {p['text']}, at {ratio:.2f}x its FLOPs"
    return (f"compute-optimal vs uniform Best-of-{result.n}: {p['text']} at {ratio:.2f}x its FLOPs -- the accuracy "
            f"difference is within noise on {len(result.study.problems)} problems"
            + ("; the saving in FLOPs is the result" if ratio < 0.9 else ""))


def demo_tables(result: Any) -> list[Table]:
    """Accuracy [interval] and FLOPs per series and average budget; the paired comparisons; where the
    budget went per level."""
    from testtime.optimal.study import ALLOCATED, HINDSIGHT, UNIFORM, rows_by_series

    s = result.summary
    budgets = sorted({r["budget"] for r in s["rows"]})
    level = f"{s.get('confidence', 0.95):.0%}"
    acc = Table(title=f"{result.dataset}: {s['n_problems']} fresh problems, accuracy [{level} interval] and FLOPs "
                      "per problem by average budget N")
    acc.add_column("series")
    for b in budgets:
        acc.add_column(f"N={b}", justify="right")
    for series, by_b in rows_by_series(s["rows"]).items():
        label = series
        sel = next((r["label"] for r in by_b.values() if r["label"]), "")
        if series in (UNIFORM, HINDSIGHT) and sel:
            label = f"{series} ({sel if series == UNIFORM else 'varies'})"
        acc.add_row(label, *[f"{100 * by_b[b]['accuracy']:.0f}% [{100 * by_b[b]['accuracy_ci'][0]:.0f}, "
                             f"{100 * by_b[b]['accuracy_ci'][1]:.0f}] {fmt_flops(by_b[b]['flops'])}"
                             if b in by_b else "" for b in budgets],
                    style="bold green" if series == ALLOCATED else None)
    acc.caption = f"compute-optimal: predictor {s['predictor']}, its cost included; table reference {s['reference']}"
    paired = Table(title=f"compute-optimal at average budget {result.n} minus each baseline (paired)")
    paired.add_column("baseline")
    paired.add_column(f"accuracy difference [{level}], McNemar")
    paired.add_column("FLOPs ratio", justify="right")
    for k, v in s["paired"].items():
        paired.add_row(k, v["text"], f"{v['flops_ratio']:.2f}x")
    where = Table(title="where the budget went (mean FLOPs per problem by level)")
    where.add_column("level")
    where.add_column(f"uniform Best-of-{result.n}", justify="right")
    per = s["budget_by_level_per_budget"]
    for b in per:
        where.add_column(f"compute-optimal @{b}", justify="right")
    for level, row in s["budget_by_level"].items():
        where.add_row(level, fmt_flops(row.get(UNIFORM, 0.0)),
                      *[fmt_flops(per[b].get(level, {}).get(ALLOCATED, 0.0)) for b in per])
    where.caption = "configs given: " + ", ".join(f"{c} x{k}" for c, k in s["configs"].get(str(result.n), {}).items())
    return [acc, paired, where]


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


def models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Embedded models (GGUF files shipped in wheels) and whether they are installed."""
    from testtime.policy import list_models

    rows = list_models()
    if as_json:
        print(json.dumps(rows))
        return
    t = Table(title="embedded models (any GGUF path also works with --model)")
    for col in ("name", "description", "prompting", "installed", "package", "path"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["description"], r["prompting"], r["installed"], r["package"], r["path"])
    console.print(t)


def grade(
    pairs: Annotated[Path, typer.Option(help='JSONL, each line {"pred": an answer, "ref": ..., "kind": optional}, '
                                             'or {"text": a whole model output, "ref": ..., "kind": optional}')],
    kind: Annotated[str, typer.Option(help="default answer kind")] = "math",
    extraction: ExtractionOpt = DEFAULT_EXTRACTION,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show how answers are judged: each line's extracted answer and verdict.

    A "text" line goes through exactly the extraction (--extraction) and grading a run does; a "pred" line is an
    answer (a whole solution in it is reduced to its marked final answer first)."""
    from testtime.extraction import check_extraction, extract_answers, marked_answer
    from testtime.grading import KINDS, grade_answers

    try:
        check_extraction(extraction)
    except ConfigError as e:
        fail_config(e)
    if not pairs.is_file():
        fail(f"--pairs {pairs}: no such file")
    rows: list[tuple[int, str, str, str, bool]] = []  # line, pred or text, ref, kind, is a whole output
    with pairs.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{pairs}:{lineno}: invalid JSON ({e.msg} at column {e.colno})")
            if not isinstance(obj, dict):
                fail(f"{pairs}:{lineno}: expected a JSON object")
            if "text" in obj and "pred" in obj:
                fail(f"{pairs}:{lineno}: fields 'pred' and 'text': give one (an answer, or a whole model output)")
            is_text = "text" in obj
            for key in ("text" if is_text else "pred", "ref"):
                if key not in obj:
                    fail(f"{pairs}:{lineno}: field '{key}': missing" + (
                        " (or give 'text', a whole model output)" if key == "pred" else ""))
                if is_text and key == "text":
                    if not isinstance(obj[key], str):
                        fail(f"{pairs}:{lineno}: field 'text': expected a string")
                elif not isinstance(obj[key], (str, int, float)) or isinstance(obj[key], bool):
                    fail(f"{pairs}:{lineno}: field '{key}': expected a string or number")
            k = obj.get("kind", kind)
            if k not in KINDS:
                fail(f"{pairs}:{lineno}: field 'kind': unknown {k!r} (expected one of {sorted(KINDS)})")
            rows.append((lineno, str(obj["text" if is_text else "pred"]), str(obj["ref"]), k, is_text))
    # whole outputs: the run's extraction, in one batch; a pred is an answer (a solution in it is reduced to
    # its marked final answer)
    texts = [i for i, r in enumerate(rows) if r[4]]
    answers: list[str | None] = [None if r[4] else marked_answer(r[1]) or r[1] for r in rows]
    for i, a in zip(texts, extract_answers([rows[i][1] for i in texts], extraction), strict=True):
        answers[i] = a
    verdicts = grade_answers([(a, r[2], r[3]) for a, r in zip(answers, rows, strict=True)])
    printer = out_console(as_json)
    out = []
    for (lineno, _, ref, k, is_text), answer, ok in zip(rows, answers, verdicts, strict=True):
        out.append({"line": lineno, "pred": answer, "ref": ref, "kind": k, "equivalent": ok, "from_text": is_text})
        shown = (f"extracted={answer!r}" if answer is not None else "extracted=None (no answer found)") \
            if is_text else f"pred={answer!r}"
        printer.print(f"{lineno}: {'[green]equivalent[/green]' if ok else '[red]different[/red]'}  "
                      f"{escape(shown)} ref={escape(repr(ref))} kind={k}", highlight=False)
    if as_json:
        print(json.dumps({"n": len(out), "equivalent": sum(v["equivalent"] for v in out), "extraction": extraction,
                          "verdicts": out}))
