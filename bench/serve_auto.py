"""Does `testtime serve`'s ``auto`` pay for chat clients? Held-out questions asked through the ``openai`` SDK
at one ``reasoning_effort``, answered by ``auto`` and by fixed strategies at the same average budget.

One ``testtime serve`` started with no options but its port and store (the embedded SmolLM2, the shipped chat
table, the arith-check PRM), and then, per series (``--series``, in this order), every question sent at once
as a chat whose only message is the bare question (the server adds its answer instruction as the system
turn, as for any chat client), with ``reasoning_effort`` ``--effort``:

- ``auto``: the server's default strategy; the allocator spreads the effort's average budget over each
  batch window's requests by predicted difficulty;
- ``cot``, ``majority``, ``best_of_n``: ``tts.strategy`` fixed, the budget still from ``reasoning_effort``.

The questions are held out from the chat table's calibration: ``--arith`` arith problems drawn with seed
``--arith-seed`` (the table's sweep used seed 0) and ``--gsm8k`` GSM8K test problems from index
``--gsm8k-offset`` on (the sweep used the first 80). One grader for every series (testtime's strict
extraction and grading). Tokens are the samples each answer used (``tts.policy_tokens``), counted whether
drawn now or replayed from the store an earlier series filled, so series sharing samples are charged alike.

Per series: accuracy [95% interval], completion tokens (total, per question, and as a share of the most
accurate fixed strategy's), the configs ``auto`` gave and what decided them, and auto against each fixed
series on the same questions (paired difference [95% bootstrap], McNemar's exact p).

Accuracy and tokens do not depend on the machine's load; the wall times printed beside them do.

    python bench/serve_auto.py [--arith 30] [--gsm8k 30] [--effort high] [--series auto,cot,majority,best_of_n]
        [--out runs/serve-auto/serve_auto.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peers import Proc, grade_replies, sdk, testtime_serve  # bench/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent
SERIES = ("auto", "cot", "majority", "best_of_n")


def held_out(arith: int, arith_seed: int, gsm8k: int, gsm8k_offset: int) -> list[Any]:
    """The questions no shipped table saw: fresh arith draws and GSM8K problems past the sweep's first ones."""
    from testtime.datasets import load_dataset

    problems = load_dataset("arith", limit=arith, seed=arith_seed) if arith else []
    if gsm8k:
        problems += load_dataset("gsm8k", limit=gsm8k_offset + gsm8k)[gsm8k_offset:]
    return problems


async def ask_all(url: str, problems: Sequence[Any], series: str, effort: str) -> tuple[list[dict[str, Any]], float]:
    """Every question at once (the server batches them); per question its reply text, usage and tts object."""
    client = sdk(url)
    extra = None if series == "auto" else {"tts": {"strategy": series}}

    async def one(p: Any) -> dict[str, Any]:
        try:
            r = await client.chat.completions.create(
                model="testtime", messages=[{"role": "user", "content": p.question}], reasoning_effort=effort,
                extra_body=extra)
        except Exception as e:  # one failed request is an error in its row, not the run's end
            return {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        tts = (r.model_extra or {}).get("tts") or {}
        return {"text": r.choices[0].message.content, "completion_tokens": r.usage.completion_tokens,
                "tts": tts}

    t0 = time.perf_counter()
    replies = await asyncio.gather(*(one(p) for p in problems))
    return list(replies), time.perf_counter() - t0


def summarize(series: str, replies: list[dict[str, Any]], graded: list[tuple[str | None, bool]],
              problems: Sequence[Any], wall_s: float) -> dict[str, Any]:
    """One series' record: correctness per question, tokens, and auto's decisions."""
    from testtime.stats import mean_ci

    correct = [float(ok) for _, ok in graded]
    tokens = [int((r.get("tts") or {}).get("policy_tokens") or 0) for r in replies]
    acc = mean_ci(correct)
    configs = Counter(f"{r['tts'].get('strategy')}@{r['tts'].get('budget')}" for r in replies if r.get("tts"))
    decided = Counter(str(r["tts"].get("decided_by")) for r in replies if r.get("tts", {}).get("decided_by"))
    bins = Counter(str(r["tts"].get("predicted_bin")) for r in replies if r.get("tts", {}).get("predicted_bin"))
    by_source: dict[str, list[float]] = {}
    for p, c in zip(problems, correct, strict=True):
        by_source.setdefault(str(p.meta.get("source", "?")), []).append(c)
    return {
        "series": series, "questions": len(replies), "correct": int(sum(correct)),
        "accuracy": acc.estimate, "accuracy_ci": [acc.low, acc.high],
        "by_source": {k: f"{int(sum(v))}/{len(v)}" for k, v in by_source.items()},
        "policy_tokens": sum(tokens), "tokens_per_question": sum(tokens) / max(1, len(tokens)),
        "errors": sum(1 for r in replies if "error" in r), "wall_s": round(wall_s, 1),
        "configs": dict(configs.most_common()), "decided_by": dict(decided.most_common()),
        "predicted_bins": dict(bins.most_common()),
        "per_question": [{"id": p.id, "correct": bool(c), "tokens": t, "answer": a,
                          "config": f"{r.get('tts', {}).get('strategy')}@{r.get('tts', {}).get('budget')}",
                          "decided_by": r.get("tts", {}).get("decided_by"), "error": r.get("error")}
                         for p, c, t, (a, _), r in zip(problems, correct, tokens, graded, replies, strict=True)],
    }


def comparisons(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """auto against each fixed series on the same questions: the paired accuracy difference and token share."""
    from testtime.stats import compare_paired

    if "auto" not in rows:
        return {}
    auto = [float(q["correct"]) for q in rows["auto"]["per_question"]]
    out = {}
    for name, r in rows.items():
        if name == "auto":
            continue
        other = [float(q["correct"]) for q in r["per_question"]]
        cmp = compare_paired(auto, other)
        share = rows["auto"]["policy_tokens"] / r["policy_tokens"] if r["policy_tokens"] else None
        out[name] = {"accuracy_diff": cmp.difference.estimate,
                     "accuracy_diff_ci": [cmp.difference.low, cmp.difference.high],
                     "mcnemar_p": cmp.test.p_value, "token_share": share}
    return out


def best_fixed(rows: dict[str, dict[str, Any]]) -> str | None:
    """The most accurate fixed series; among equals the cheapest (the one auto must match)."""
    fixed = [r for name, r in rows.items() if name != "auto"]
    return min(fixed, key=lambda r: (-r["correct"], r["policy_tokens"]))["series"] if fixed else None


def table(rows: dict[str, dict[str, Any]], cmp: dict[str, dict[str, Any]]) -> str:
    best = best_fixed(rows)
    ref = rows[best]["policy_tokens"] if best else None
    lines = ["| series | accuracy [95%] | by source | completion tokens | per question | vs best fixed | "
             "auto - series [95%], McNemar p | configs |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        share = f"{r['policy_tokens'] / ref:.0%}" if ref else "-"
        c = cmp.get(name)
        diff = (f"{c['accuracy_diff']:+.1%} [{c['accuracy_diff_ci'][0]:+.1%}, {c['accuracy_diff_ci'][1]:+.1%}], "
                f"p={c['mcnemar_p']:.2f}") if c else "-"
        configs = ", ".join(f"{k} x{v}" for k, v in r["configs"].items())
        label = f"{name} (best fixed)" if name == best else name
        lines.append(f"| {label} | {r['correct']}/{r['questions']} = {r['accuracy']:.1%} "
                     f"[{r['accuracy_ci'][0]:.1%}, {r['accuracy_ci'][1]:.1%}] | "
                     f"{', '.join(f'{k} {v}' for k, v in r['by_source'].items())} | {r['policy_tokens']:,} | "
                     f"{r['tokens_per_question']:.0f} | {share} | {diff} | {configs} |")
    return "\n".join(lines)


def parse_series(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in names if s not in SERIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--series: unknown {', '.join(bad) or '(none)'}; choose from "
                                         f"{', '.join(SERIES)}")
    return names


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arith", type=int, default=30, help="fresh arith questions")
    ap.add_argument("--arith-seed", type=int, default=7, help="their seed (the chat table used 0)")
    ap.add_argument("--gsm8k", type=int, default=30, help="GSM8K test questions")
    ap.add_argument("--gsm8k-offset", type=int, default=80, help="first GSM8K index (the table used 0..79)")
    ap.add_argument("--effort", choices=("low", "medium", "high"), default="high", help="reasoning_effort")
    ap.add_argument("--series", type=parse_series, default=list(SERIES), help=f"in order ({','.join(SERIES)})")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "serve-auto" / "serve_auto.json")
    args = ap.parse_args(argv)
    problems = held_out(args.arith, args.arith_seed, args.gsm8k, args.gsm8k_offset)
    report: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
                              "loadavg_start": os.getloadavg()}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-auto-") as tmp_:
        server: Proc = testtime_serve(Path(tmp_), "serve")
        try:
            for series in args.series:
                print(f"{series}: {len(problems)} questions at reasoning_effort {args.effort}", flush=True)
                replies, wall = asyncio.run(ask_all(server.url, problems, series, args.effort))
                graded = grade_replies([r.get("text") for r in replies], problems, "strict")
                rows[series] = summarize(series, replies, graded, problems, wall)
                r = rows[series]
                print(f"{series}: {r['correct']}/{r['questions']} correct, {r['policy_tokens']:,} tokens, "
                      f"{r['errors']} errors, {wall:.0f} s", flush=True)
        finally:
            server.close()
    cmp = comparisons(rows)
    report.update(series=rows, comparisons=cmp, best_fixed=best_fixed(rows), table=table(rows, cmp),
                  loadavg_end=os.getloadavg())
    print(f"\n{len(problems)} held-out questions through the openai SDK, reasoning_effort {args.effort} "
          f"({os.cpu_count()} CPUs, load {report['loadavg_start'][0]:.2f} at start)\n")
    print(report["table"])
    if "auto" in rows:
        print("\nauto decided by: " + "; ".join(f"{k} x{v}" for k, v in rows["auto"]["decided_by"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
