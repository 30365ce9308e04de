"""Issue 26's measurement: does compute-optimal allocation pay on the embedded default?

    python bench/allocation.py [--limit 100] [--seed 7] [--shifted 60] [--out runs/allocation] [--json]

On `--limit` fresh `arith` problems (a seed no table or test uses), through one store, it runs
``optimal.study.allocation_study`` with the shipped table at average budgets 1, 2, 4, 8, 16 for every
predictor the table offers (question-only, the sample probe, both: each charged its own cost), the old
per-problem selector at the headline budget, and uniform Best-of-N with the scorer's default selection
beside the table's reference one and the hindsight best. It prints accuracy [95%] and FLOPs per series,
the paired comparisons at budget 8 (stratified bootstrap, McNemar), the FLOPs allocation needs to match
uniform Best-of-8 and the efficiency gain over majority (bootstrap intervals), each predictor's
held-out calibration (Brier, bin accuracy) from the table, then the same on `--shifted` re-worded
problems (operators in words, other frames; answers graded as numbers). Every sample is drawn once:
the Best-of-16 pool serves every budget and series.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from testtime.config import RunConfig
from testtime.datasets import load_dataset
from testtime.datasets.arith import _draw
from testtime.execution import LocalExecutor
from testtime.optimal.allocation import allocation_model
from testtime.optimal.calibrate import Table
from testtime.optimal.selector import run_optimal
from testtime.optimal.study import ALLOCATED, Study, allocation_study
from testtime.optimal.study_report import headline_lines
from testtime.optimal.tables import shipped_table
from testtime.policy import load_policy
from testtime.reward import load_scorer
from testtime.stats import compare_paired, mean_ci
from testtime.types import Problem

PRM = "arith-check"
_WORDS = {"+": ("add {x}", "increase it by {x}", "put {x} more on top"),
          "-": ("take away {x}", "subtract {x}", "decrease it by {x}"),
          "*": ("multiply it by {x}", "make it {x} times as large"),
          "/": ("divide it by {x}", "split it into {x} equal parts and keep one")}
_FRAMES = ("Start with {start}. {ops}. What number do you end with?",
           "Think of the number {start}. {ops}. What is the number now?",
           "A counter shows {start}. {ops}. What does the counter show?")


def reworded(n: int, seed: int = 13) -> list[Problem]:
    """`n` arith problems (levels round-robin) re-worded: operators in words, other frames; kind number."""
    out = []
    for i in range(n):
        level = 1 + i % 5
        rng = random.Random(f"reworded|{seed}|{level}|{i}")
        _q, chain = _draw(level, rng)
        ops = [rng.choice(_WORDS[op]).format(x=x) for op, x in chain.ops]
        text = ", then ".join(ops)
        question = rng.choice(_FRAMES).format(start=chain.start, ops=text[0].upper() + text[1:])
        out.append(Problem(f"reworded-s{seed}-L{level}-{i:04d}", question, str(chain.values()[-1]), kind="number",
                           meta={"level": level, "source": "reworded arith"}))
    return out


def uniform_with(study: Study, executor: Any, base: RunConfig, selection: str, budget: int) -> dict[str, float]:
    """Uniform Best-of-`budget` read with another selection (a replay: same samples, same scores)."""
    from testtime.search.selection import SELECTIONS

    sel = SELECTIONS[selection]
    res = executor.run(base.with_strategy("best_of_n", budget, prm=PRM, aggregation=sel.aggregation or "last",
                                          selection=sel.rule), study.problems)
    return {r.problem.id: float(bool(r.trace.selections_correct.get(selection, r.trace.correct)))
            for r in res.results}


def measure(executor: Any, table: Table, problems: list[Problem], base: RunConfig, kinds: list[str],
            default_selection: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    studies: dict[str, Study] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        study = allocation_study(table, executor, problems, base, PRM, budgets=(1, 2, 4, 8, 16), headline=8,
                                 predictor=kind)
        studies[kind] = study
        out[kind] = {**study.summary(), "lines": headline_lines(study, study.summary()),
                     "wall_s": time.perf_counter() - t0}
    first = studies[kinds[0]]
    strata = first.strata
    alloc = {k: s.get(ALLOCATED, 8) for k, s in studies.items()}
    extra: dict[str, Any] = {}
    if default_selection:
        dflt = uniform_with(first, executor, base, default_selection, 8)
        ci = mean_ci([dflt[i] for i in first.ids], strata)
        extra["uniform Best-of-8, scorer default " + default_selection] = {
            "accuracy": ci.estimate, "ci": [ci.low, ci.high],
            "vs allocation": {k: compare_paired([a.correct[i] for i in first.ids], [dflt[i] for i in first.ids],
                                                strata).describe() for k, a in alloc.items() if a}}
    old = run_optimal(table, 8, executor, None, problems, base, prm=PRM)
    ci = mean_ci([float(old.correct.get(i, False)) for i in first.ids], strata)
    n = max(1, len(problems))
    extra["per-problem selector (probe + bins) @8"] = {
        "accuracy": ci.estimate, "ci": [ci.low, ci.high], "flops": old.compute.flops / n,
        "probe_flops": old.probe_compute.flops / n, "decided_by": old.summary()["decided_by"]}
    out["extra"] = extra
    return out


def print_block(title: str, res: dict[str, Any]) -> None:
    print(f"\n## {title}")
    for kind, s in res.items():
        if kind == "extra":
            continue
        print(f"\n### predictor: {kind} ({s['n_problems']} problems, {s['wall_s']:.0f} s)")
        print("| series | N | accuracy [95%] | FLOPs/problem |\n|---|---|---|---|")
        for r in s["rows"]:
            if r["series"] == ALLOCATED or kind == next(iter(res)):
                print(f"| {r['series']}{' (' + r['label'] + ')' if r['label'] else ''} | {r['budget']} | "
                      f"{100 * r['accuracy']:.1f}% [{100 * r['accuracy_ci'][0]:.1f}, {100 * r['accuracy_ci'][1]:.1f}]"
                      f" | {r['flops']:.3g} |")
        for k, v in s["paired"].items():
            print(f"- allocation@8 - {k}: {v['text']}, FLOPs ratio {v['flops_ratio']:.2f}x")
        for line in s["lines"]:
            print(f"- {line}")
        print(f"- configs at 8: {s['configs'].get('8')}")
        spent = {lv: {k: f"{v:.3g}" for k, v in d.items()} for lv, d in s["budget_by_level"].items()}
        print(f"- FLOPs by level at 8: {spent}")
    for k, v in res.get("extra", {}).items():
        print(f"- {k}: {json.dumps(v, default=str)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shifted", type=int, default=60, help="re-worded problems (0: none)")
    ap.add_argument("--table", type=Path, default=None)
    ap.add_argument("--predictors", default=None, help="comma-separated kinds (default: all the table has)")
    ap.add_argument("--out", default="runs/allocation")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    table_path = a.table or shipped_table(None, PRM)
    table = Table.load(table_path)
    model = allocation_model(table)
    if model is None:
        print(f"{table_path}: no difficulty model (run make table)", file=sys.stderr)
        return 2
    kinds = a.predictors.split(",") if a.predictors else list(model.models)
    print(f"# allocation bench: table {table_path}\n")
    for kind, rep in (model.report or {}).items():
        print(f"- predictor {kind}: blocks {model.models[kind].blocks}, held-out Brier {rep['brier']:.4f} "
              f"(constant {rep['brier_constant']:.4f}), bin accuracy {100 * rep['bin_accuracy']:.1f}% "
              f"[{100 * rep['bin_accuracy_ci'][0]:.1f}, {100 * rep['bin_accuracy_ci'][1]:.1f}] on {rep['n']}")
    policy = load_policy()
    scorer = load_scorer(PRM)
    default_selection = getattr(scorer, "default_selection", None)
    results: dict[str, Any] = {"table": str(table_path), "predictors": model.report}
    with LocalExecutor(policy, scorer) as ex:
        problems = load_dataset("arith", limit=a.limit, seed=a.seed)
        base = RunConfig(dataset="arith", strategy="majority", n=1, limit=a.limit, seed=a.seed, out=a.out)
        results["in_distribution"] = measure(ex, table, problems, base, kinds, default_selection)
        print_block(f"{a.limit} fresh arith problems (seed {a.seed})", results["in_distribution"])
        if a.shifted:
            # a user's own file: read as JSONL (answers graded as numbers, the built-in non-arith examples)
            path = Path(a.out) / f"reworded-{a.shifted}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"id": p.id, "question": p.question, "answer": p.answer,
                                                "level": p.level}) + "\n" for p in reworded(a.shifted)))
            shifted = load_dataset(str(path), kind="number", id_field="id")
            sbase = RunConfig(dataset=str(path), strategy="majority", n=1, seed=a.seed, out=a.out)
            results["shifted"] = measure(ex, table, shifted, sbase, kinds, default_selection)
            print_block(f"{a.shifted} re-worded arith problems", results["shifted"])
    policy.close()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "allocation-bench.json").write_text(json.dumps(results, indent=1, default=str))
    if a.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
