"""PRM throughput: steps scored per second, batched vs one solution per call, side by side in one run.

Scorers: (a) the transformers backend on a random Qwen2.5-Math-PRM-shaped checkpoint ("small" shape,
CPU by default) built locally with ``build_random_prm``; (b) the LLM judge over the embedded llama.cpp
policy. Both score the same candidate solutions: arith problems' worked solutions, varied per candidate
(terse or verbose wording, an arithmetic slip carried through, "Check:" steps up to ``--steps``).

Per repeat, each scorer runs two timed passes: batched = one ``score_batch`` over every solution (the
scorer packs its own length-sorted batches; the judge submits all step prompts at once) and unbatched =
``score_batch([one])`` per solution. The pass order alternates between repeats, and each pass tags its
questions so no pass reuses another's llama.cpp prefix cache (a real scoring call sees new solutions).
For the judge, the same run then measures its ceiling: raw llama.cpp evaluating short prompts of a judge
step's size one at a time vs all at once; batched judging cannot beat one-by-one by more than that.
Each scorer is warmed up once, on separately tagged solutions, before timing. tokens/s counts the
tokens each scorer reports (``Scored.tokens``): hf, the solution's tokens; the judge, uncached prompt tokens.

    python bench/prm_throughput.py [--scorer all|hf|judge] [--problems 8] [--n 4] [--steps 6] [--repeats 2]
        [--hf-shape small] [--hf-device cpu] [--hf-max-batch-size N] ...
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

from testtime.datasets import load_arith
from testtime.reward.base import BatchScorer, ScoreRequest

_OP_STEP = re.compile(r"Step \d+: (-?\d+) ([-+*/]) (\d+) = (-?\d+)\.")
_VERBOSE = {"+": "Adding {x} to {a} gives", "-": "Subtracting {x} from {a} leaves",
            "*": "Multiplying {a} by {x} gives", "/": "Dividing {a} by {x} gives"}
_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}


def _apply(a: int, op: str, x: int) -> int:
    return a + x if op == "+" else a - x if op == "-" else a * x if op == "*" else a // x


def candidate(reference: list[str], j: int, max_steps: int, rng: random.Random) -> list[str]:
    """Candidate ``j`` for a problem: the reference chain, reworded (odd j), with a slip carried
    through (some j >= 2), and "Check:" steps inserted up to ``max_steps`` steps in all."""
    ops = [(op, int(x)) for _, op, x, _ in (_OP_STEP.fullmatch(s).groups() for s in reference[:-1])]
    value = int(_OP_STEP.fullmatch(reference[0]).group(1))
    slip = rng.randrange(len(ops)) if j >= 2 and rng.random() < 0.6 else None
    verbose = j % 2 == 1
    checks = rng.randint(0, max(0, max_steps - len(reference)))
    check_after = set(rng.sample(range(len(ops)), min(checks, len(ops))))
    steps = []
    for k, (op, x) in enumerate(ops):
        a, value = value, _apply(value, op, x)
        if k == slip:
            value += rng.choice((-10, -2, -1, 1, 3, 10))
        how = _VERBOSE[op].format(a=a, x=x) + ": " if verbose else ""
        steps.append(f"Step {k + 1}: {how}{a} {op} {x} = {value}.")
        if k in check_after:
            steps.append(f"Check: {value} {_INVERSE[op]} {x} = {a}.")
    steps.append(f"So the final answer is {value}." if verbose else f"The answer is {value}.")
    return steps if len(steps) <= max_steps else steps[: max_steps - 1] + steps[-1:]


def build_solutions(problems: int, n: int, max_steps: int) -> list[tuple[str, list[str]]]:
    out = []
    for p in load_arith(problems):
        rng = random.Random(p.id)  # the same candidates on every run
        out += [(p.question, candidate(p.meta["solution_steps"], j, max_steps, rng)) for j in range(n)]
    return out


def tagged(solutions: list[tuple[str, list[str]]], tag: str) -> list[ScoreRequest]:
    # The tag leads the question, so prompts of different passes share no prefix past the template.
    return [ScoreRequest(f"[{tag}] {q}", tuple(steps)) for q, steps in solutions]


def timed_pass(scorer: BatchScorer, requests: list[ScoreRequest], batched: bool) -> dict:
    calls0 = getattr(scorer, "forward_calls", None)
    t0 = time.perf_counter()
    if batched:
        scored = scorer.score_batch(requests)
    else:
        scored = [s for r in requests for s in scorer.score_batch([r])]
    wall = time.perf_counter() - t0
    steps = sum(len(s.rewards) for s in scored)
    tokens = sum(s.tokens for s in scored)
    row = {"mode": "batched" if batched else "unbatched", "wall_s": wall, "steps": steps, "tokens": tokens,
           "steps_per_s": steps / wall, "tokens_per_s": tokens / wall}
    if calls0 is not None:
        row["forward_calls"] = scorer.forward_calls - calls0
    return row


def measure(name: str, scorer: BatchScorer, solutions: list[tuple[str, list[str]]], repeats: int) -> dict:
    warm = tagged(solutions[: min(8, len(solutions))], "warm")
    scorer.score_batch(warm)
    scorer.score_batch(warm[:1])
    rows = []
    for rep in range(repeats):
        order = (True, False) if rep % 2 == 0 else (False, True)  # alternate to cancel drift
        for batched in order:
            row = timed_pass(scorer, tagged(solutions, f"r{rep}{'b' if batched else 'u'}"), batched)
            rows.append({"scorer": name, "repeat": rep, **row})
            print(f"  {name} repeat {rep} {row['mode']:>9}: {row['steps']} steps in {row['wall_s']:.2f} s "
                  f"= {row['steps_per_s']:.1f} steps/s", flush=True)
    summary: dict = {}
    for mode in ("batched", "unbatched"):
        mine = [r for r in rows if r["mode"] == mode]
        wall, steps, tokens = (sum(r[k] for r in mine) for k in ("wall_s", "steps", "tokens"))
        summary[mode] = {"wall_s": wall, "steps": steps, "tokens": tokens, "steps_per_s": steps / wall,
                         "tokens_per_s": tokens / wall,
                         "median_steps_per_s": statistics.median(r["steps_per_s"] for r in mine)}
        if "forward_calls" in mine[0]:
            summary[mode]["forward_calls_per_pass"] = mine[0]["forward_calls"]
    # The median pass per mode shrugs off a pass slowed (or sped) by other load on a shared machine;
    # the ratio of the overall rates is kept alongside.
    b, u = summary["batched"], summary["unbatched"]
    summary["ratio"] = b["median_steps_per_s"] / u["median_steps_per_s"]
    summary["ratio_overall"] = b["steps_per_s"] / u["steps_per_s"]
    return {"summary": summary, "rows": rows}


def hf_scorer(args: argparse.Namespace, workdir: Path) -> BatchScorer:
    from testtime.reward.hf import load_hf_prm
    from testtime.testing.synthetic import SHAPES, build_random_prm

    t0 = time.perf_counter()
    path = build_random_prm(workdir / "prm", args.hf_family, **SHAPES[args.hf_shape], dtype=args.hf_dtype,
                            device=args.hf_device)
    prm = load_hf_prm(str(path), device=args.hf_device, dtype=args.hf_dtype,
                      max_batch_tokens=args.hf_max_batch_tokens, max_batch_size=args.hf_max_batch_size)
    print(f"hf: random {args.hf_shape} {args.hf_family} checkpoint ({prm.n_params / 1e6:.1f} M params, "
          f"{args.hf_dtype} on {args.hf_device}) built and loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    return prm


def eval_ceiling(policy, chunk_tokens: int, count: int = 32) -> dict:
    """What batching can buy the judge on this machine: raw llama.cpp evaluating `count` short prompts of
    about `chunk_tokens` tokens (a judge step's new tokens) with one next-token distribution each, one at
    a time vs all at once (the server batches concurrent slots into one forward pass)."""
    from concurrent.futures import ThreadPoolExecutor

    words = max(1, chunk_tokens // 2)  # "w12 " is about two tokens

    def one(i: int, tag: str) -> None:
        text = f"{tag}{i}: " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(words))
        policy._server.handle_completions({"prompt": text, "n": 1, "max_tokens": 1, "temperature": 0.0,
                                           "n_probs": 20, "cache_prompt": False})

    best = {False: 0.0, True: 0.0}  # concurrent? -> prompts per second, best of two alternating rounds
    with ThreadPoolExecutor(max(1, policy.slots)) as pool:
        list(pool.map(lambda i: one(i, "warm"), range(policy.slots)))
        for rnd in range(2):
            for concurrent in (False, True):
                tag = f"r{rnd}{'c' if concurrent else 's'}"  # fresh text per round: nothing cached
                t0 = time.perf_counter()
                list((pool.map if concurrent else map)(lambda i, t=tag: one(i, t), range(count)))
                best[concurrent] = max(best[concurrent], count / (time.perf_counter() - t0))
    seq, par = best[False], best[True]
    return {"chunk_tokens": chunk_tokens, "prompts": count, "one_at_a_time_per_s": seq, "concurrent_per_s": par,
            "ratio": par / seq}


def judge_scorer(args: argparse.Namespace) -> BatchScorer:
    from testtime.policy import load_policy
    from testtime.reward.judge import Judge

    t0 = time.perf_counter()
    policy = load_policy(None, slots=args.slots, ctx_per_slot=args.ctx_per_slot)
    print(f"judge: {policy.model_id} loaded in {time.perf_counter() - t0:.1f} s "
          f"({args.slots} slots x {args.ctx_per_slot} ctx)", flush=True)
    return Judge(policy, owns_policy=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scorer", choices=("hf", "judge", "all"), default="all")
    ap.add_argument("--problems", type=int, default=8, help="arith problems (levels round-robin)")
    ap.add_argument("--n", type=int, default=4, help="candidate solutions per problem")
    ap.add_argument("--steps", type=int, default=6, help="at most this many steps per solution (>= 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per mode for the judge")
    # An hf pass takes well under a second on CPU: more repeats, same cost order, less noise.
    ap.add_argument("--hf-repeats", type=int, default=6, help="timed passes per mode for hf")
    ap.add_argument("--hf-shape", default="small", help="a testtime.testing.synthetic.SHAPES name")
    ap.add_argument("--hf-family", default="qwen-prm")
    ap.add_argument("--hf-device", default="cpu")
    ap.add_argument("--hf-dtype", default="float32")
    # The scorer's batch bounds (load_hf_prm's defaults): on CPU one big padded batch can lose to
    # per-solution calls; tighter bounds give length-homogeneous batches.
    ap.add_argument("--hf-max-batch-tokens", type=int, default=None,
                    help="default: the backend's (2048 on CPU, 32768 on GPU)")
    ap.add_argument("--hf-max-batch-size", type=int, default=None, help="default: the backend's (8 on CPU, 64 on GPU)")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--ctx-per-slot", type=int, default=2048)
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be >= 2")
    solutions = build_solutions(args.problems, args.n, args.steps)
    lengths = [len(s) for _, s in solutions]
    print(f"{len(solutions)} solutions, {sum(lengths)} steps per pass ({min(lengths)}-{max(lengths)} per solution)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("hf", "judge"):
            if args.scorer not in (name, "all"):
                continue
            scorer = hf_scorer(args, Path(tmp)) if name == "hf" else judge_scorer(args)
            try:
                results[name] = measure(name, scorer, solutions, args.hf_repeats if name == "hf" else args.repeats)
                if name == "judge":
                    results[name]["summary"]["misses"] = scorer.misses
                    # the judge's own new tokens per step, from the batched passes
                    b = results[name]["summary"]["batched"]
                    ceiling = eval_ceiling(scorer.policy, max(1, round(b["tokens"] / max(1, b["steps"]))))
                    results[name]["summary"]["ceiling"] = ceiling
                    print(f"  judge ceiling: raw llama.cpp, {ceiling['prompts']} prompts of ~"
                          f"{ceiling['chunk_tokens']} tokens + one next-token distribution: "
                          f"{ceiling['one_at_a_time_per_s']:.1f}/s one at a time, {ceiling['concurrent_per_s']:.1f}/s "
                          f"all at once = {ceiling['ratio']:.2f}x: what batching the judge can gain at most",
                          flush=True)
            finally:
                scorer.close()
    print(f"\n{'scorer':<7}{'mode':<11}{'steps':>7}{'wall s':>9}{'steps/s':>10}{'median':>8}{'tokens/s':>10}"
          f"{'calls/pass':>12}")
    for name, res in results.items():
        s = res["summary"]
        for mode in ("batched", "unbatched"):
            m = s[mode]
            calls = m.get("forward_calls_per_pass", "")
            print(f"{name:<7}{mode:<11}{m['steps']:>7}{m['wall_s']:>9.2f}{m['steps_per_s']:>10.1f}"
                  f"{m['median_steps_per_s']:>8.1f}{m['tokens_per_s']:>10.0f}{calls:>12}")
        print(f"{name:<7}{'ratio':<11}{'':>16}{s['ratio_overall']:>9.2f}x{s['ratio']:>7.2f}x"
              "  batched / unbatched steps per second (overall, median pass)")
    print(json.dumps({
        "benchmark": "prm_throughput", "problems": args.problems, "n": args.n, "max_steps": args.steps,
        "solutions": len(solutions), "steps_per_pass": sum(lengths),
        "repeats": {"hf": args.hf_repeats, "judge": args.repeats},
        "hf": {"shape": args.hf_shape, "family": args.hf_family, "device": args.hf_device, "dtype": args.hf_dtype,
               "max_batch_tokens": args.hf_max_batch_tokens, "max_batch_size": args.hf_max_batch_size},
        "results": {k: v["summary"] for k, v in results.items()},
        "rows": [r for v in results.values() for r in v["rows"]],
    }))


if __name__ == "__main__":
    main()
