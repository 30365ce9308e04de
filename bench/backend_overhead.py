"""testtime vs the raw binding: majority@16 on 10 arith problems, measured side by side in one run.

Both sides use a fresh llama.cpp server (so neither inherits the other's KV cache), the same prompts,
the same sampling parameters and seeds, and the same concurrency (all requests submitted at once).
The testtime side goes through everything a real run does: prompt building, the store (hashing,
SQLite commits per chunk), answer extraction, majority voting and grading.
Goal: testtime wall time / raw wall time <= 1.05. The raw side asks for the same top-k log-probabilities
as testtime's backend (``testtime.confidence.TOP_K``), so the ratio is not flattered by cheaper requests.

``--logprobs`` measures instead what asking for log-probabilities costs: on ONE warm server, the same raw
requests with ``n_probs`` 0 (none), 1 and TOP_K (5), interleaved within every repeat in a rotating order so
drift and cache state hit every variant alike; it prints each ratio's geometric mean with a t interval over
the paired repeats.

    python bench/backend_overhead.py [--problems 10] [--n 16] [--repeats 2]
    python bench/backend_overhead.py --logprobs [--problems 10] [--n 16] [--repeats 8]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.stats as sps

from testtime import engine
from testtime.confidence import TOP_K
from testtime.datasets import load_dataset
from testtime.policy import load_policy
from testtime.replay import CachedGenerator
from testtime.search.base import SearchContext


def raw_requests(policy, problems, n: int, seed: int, max_tokens: int, temperature: float,
                 n_probs: int) -> tuple[float, list[dict]]:
    """The generations issued straight to xllamacpp's server, no testtime code in the loop: wall time and
    the responses."""
    ctx = SearchContext(CachedGenerator(policy, None), seed=seed)
    prompts = [(ctx.prompt_for(p), ctx.problem_seed(p)) for p in problems]  # prompt text only
    server = policy._server

    def one(prompt_seed):
        prompt, s = prompt_seed
        return server.handle_completions({
            "prompt": prompt, "n": n, "seed": s, "max_tokens": max_tokens, "temperature": temperature,
            "top_p": 1.0, "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "stop": [],
            "n_probs": n_probs, "cache_prompt": True,
        })

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        responses = list(pool.map(one, prompts))
    return time.perf_counter() - t0, responses


def raw_run(problems, n: int, seed: int, max_tokens: int, temperature: float) -> tuple[float, int]:
    """The same generations as testtime's side, on a fresh server, with testtime's n_probs."""
    policy = load_policy(None)
    wall, responses = raw_requests(policy, problems, n, seed, max_tokens, temperature, TOP_K)
    tokens = sum(len(c["logprobs"]["content"]) for r in responses for c in r["choices"])
    policy.close()
    return wall, tokens


def testtime_run(problems, n: int, seed: int, max_tokens: int, temperature: float) -> tuple[float, int]:
    policy = load_policy(None)
    with tempfile.TemporaryDirectory() as out:
        config = engine.RunConfig(dataset="arith", strategy="majority", n=n, seed=seed, out=out,
                                  max_tokens=max_tokens, temperature=temperature, batch_sequences=n * len(problems))
        t0 = time.perf_counter()
        result = engine.run(config, policy, problems)
        wall = time.perf_counter() - t0
    policy.close()
    return wall, result.compute.generated_tokens


def paired_ratio(num: list[float], den: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Geometric mean of num[i] / den[i] over paired repeats, with a t interval on the log ratios (a wall-time
    ratio is multiplicative, and the pairing cancels what the repeats share)."""
    logs = np.log(np.asarray(num, dtype=float) / np.asarray(den, dtype=float))
    mean = float(logs.mean())
    if len(logs) < 2:
        return {"ratio": math.exp(mean), "low": math.nan, "high": math.nan, "repeats": len(logs)}
    half = float(sps.t.ppf(0.5 + confidence / 2, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
    return {"ratio": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half),
            "repeats": len(logs)}


def texts(responses: list[dict]) -> list[list[str]]:
    return [[c["text"] for c in sorted(r["choices"], key=lambda c: c["index"])] for r in responses]


def logprobs_cost(problems, n: int, max_tokens: int, repeats: int) -> dict:
    """Wall time of the same raw requests with n_probs 0, 1 and TOP_K on one warm server, interleaved."""
    variants = (0, 1, TOP_K)
    policy = load_policy(None)
    for k in variants:  # warm-up: every variant once, so the first timed call pays no one-off cost
        raw_requests(policy, problems, n, 0, max_tokens, 0.7, k)
    walls: dict[int, list[float]] = {k: [] for k in variants}
    same_text = True
    for rep in range(repeats):
        order = variants[rep % 3:] + variants[:rep % 3]  # rotate so no variant always runs first
        got = {}
        for k in order:
            wall, responses = raw_requests(policy, problems, n, rep, max_tokens, 0.7, k)
            walls[k].append(wall)
            got[k] = texts(responses)
        # same seeds: the samples must be identical, else the variants did different work
        same_text &= got[0] == got[1] == got[TOP_K]
        print(f"repeat {rep}: " + " | ".join(f"n_probs {k}: {walls[k][-1]:.2f} s" for k in variants))
    policy.close()
    out = {"benchmark": "logprobs_cost", "problems": len(problems), "n": n, "max_tokens": max_tokens,
           "same_samples": same_text, "walls": {str(k): w for k, w in walls.items()},
           f"top{TOP_K}_over_top1": paired_ratio(walls[TOP_K], walls[1]),
           f"top{TOP_K}_over_none": paired_ratio(walls[TOP_K], walls[0]),
           "top1_over_none": paired_ratio(walls[1], walls[0])}
    for key in (f"top{TOP_K}_over_top1", f"top{TOP_K}_over_none", "top1_over_none"):
        r = out[key]
        print(f"{key}: {r['ratio']:.3f} (95% t interval over {r['repeats']} paired repeats: "
              f"{r['low']:.3f}-{r['high']:.3f})")
    if not same_text:
        print("warning: the variants' samples differ for the same seeds; the ratios compare different work")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=None, help="default 2 (8 with --logprobs)")
    ap.add_argument("--logprobs", action="store_true",
                    help=f"measure n_probs 0 / 1 / {TOP_K} on one warm server instead of testtime vs raw")
    args = ap.parse_args()
    problems = load_dataset("arith", limit=args.problems)
    if args.logprobs:
        print(json.dumps(logprobs_cost(problems, args.n, args.max_tokens, args.repeats or 8)))
        return
    args.repeats = args.repeats or 2
    rows = []
    for rep in range(args.repeats):
        order = ("raw", "testtime") if rep % 2 == 0 else ("testtime", "raw")  # alternate to cancel drift
        got = {}
        for side in order:
            fn = raw_run if side == "raw" else testtime_run
            got[side] = fn(problems, args.n, rep, args.max_tokens, 0.7)
        (rw, rt), (tw, tt) = got["raw"], got["testtime"]
        rows.append({"repeat": rep, "raw_s": rw, "raw_tokens": rt, "testtime_s": tw, "testtime_tokens": tt,
                     "ratio_wall": tw / rw, "ratio_tok_per_s": (rt / rw) / (tt / tw)})
        print(f"repeat {rep}: raw {rw:.1f} s ({rt} tok, {rt / rw:.0f} tok/s) | testtime {tw:.1f} s "
              f"({tt} tok, {tt / tw:.0f} tok/s) | wall ratio {tw / rw:.3f} | "
              f"raw tok/s over testtime tok/s {(rt / rw) / (tt / tw):.3f}")
    mean_ratio = sum(r["ratio_tok_per_s"] for r in rows) / len(rows)
    print(json.dumps({"benchmark": "backend_overhead", "problems": args.problems, "n": args.n,
                      "mean_overhead_ratio": mean_ratio, "goal": 1.05, "rows": rows}))


if __name__ == "__main__":
    main()
