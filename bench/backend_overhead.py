"""testtime vs the raw binding: majority@16 on 10 arith problems, measured side by side in one run.

Both sides use a fresh llama.cpp server (so neither inherits the other's KV cache), the same prompts,
the same sampling parameters and seeds, and the same concurrency (all requests submitted at once).
The testtime side goes through everything a real run does: prompt building, the store (hashing,
SQLite commits per chunk), answer extraction, majority voting and grading.
Goal: testtime wall time / raw wall time <= 1.05.

    python bench/backend_overhead.py [--problems 10] [--n 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from testtime import engine
from testtime.datasets import load_dataset
from testtime.policy import load_policy
from testtime.replay import CachedGenerator
from testtime.search.base import SearchContext


def raw_run(problems, n: int, seed: int, max_tokens: int, temperature: float) -> tuple[float, int]:
    """The same generations issued straight to xllamacpp's server, no testtime code in the loop."""
    policy = load_policy(None)
    ctx = SearchContext(CachedGenerator(policy, None), seed=seed)
    prompts = [(ctx.prompt_for(p), ctx.problem_seed(p)) for p in problems]  # prompt text only
    server = policy._server

    def one(prompt_seed):
        prompt, s = prompt_seed
        return server.handle_completions({
            "prompt": prompt, "n": n, "seed": s, "max_tokens": max_tokens, "temperature": temperature,
            "top_p": 1.0, "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "stop": [],
            "n_probs": 1, "cache_prompt": True,
        })

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        responses = list(pool.map(one, prompts))
    wall = time.perf_counter() - t0
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    problems = load_dataset("arith", limit=args.problems)
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
