"""Prefix reuse on a sliding-window model: the cached share of prompt tokens with llama.cpp's default SWA
cache (``swa_full=False``, before) and a full-size one (``swa_full=True``, what the backend now picks for a
GGUF with ``attention.sliding_window``), on the same CoT run. Also how the run ends: accuracy, samples that
hit max_tokens, FLOPs. SmolLM2 (no sliding window) is the reference.

Token counts and accuracy do not depend on machine load; the wall times printed do.

    python bench/swa_cache.py [--model gemma3-270m] [--limit 60] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from testtime import engine
from testtime.datasets import load_dataset
from testtime.policy import load_policy


def measure(model: str, swa_full: bool | None, limit: int, max_tokens: int, fewshot: int) -> dict:
    problems = load_dataset("arith", limit=limit)
    policy = load_policy(model, swa_full=swa_full)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = engine.RunConfig(dataset="arith", strategy="cot", n=1, limit=limit, out=out, max_tokens=max_tokens,
                                   fewshot=fewshot)
            res = engine.run(cfg, policy, problems)
    finally:
        policy.close()
    s = res.summary()
    finishes = [c.finish_reason for r in res.results for c in r.trace.candidates]
    return {
        "model": model, "swa_full": policy.swa_full, "sliding_window": policy.info.sliding_window,
        "problems": limit, "prompt_tokens": s["prompt_tokens"], "cached_prompt_tokens": s["cached_prompt_tokens"],
        "cached_share": round(s["cached_prompt_tokens"] / max(1, s["prompt_tokens"]), 4),
        "accuracy": round(s["accuracy"], 4), "length_hits": finishes.count("length"), "samples": len(finishes),
        "generated_tokens": s["generated_tokens"], "flops": s["flops"], "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--reference", default="smollm2-135m", help="a model without sliding windows ('' to skip)")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--fewshot", type=int, default=3)
    args = ap.parse_args()
    rows = [measure(args.model, False, args.limit, args.max_tokens, args.fewshot),
            measure(args.model, None, args.limit, args.max_tokens, args.fewshot)]
    if args.reference:
        rows.append(measure(args.reference, None, args.limit, args.max_tokens, args.fewshot))
    print(f"{'model':<14} {'swa_full':>8} {'prompt':>8} {'cached':>8} {'share':>6} {'acc':>6} {'length':>7} "
          f"{'GFLOPs':>8} {'wall_s':>7}")
    for r in rows:
        print(f"{r['model']:<14} {r['swa_full']!s:>8} {r['prompt_tokens']:>8} {r['cached_prompt_tokens']:>8} "
              f"{r['cached_share']:>6.1%} {r['accuracy']:>6.1%} {r['length_hits']:>3}/{r['samples']:<3} "
              f"{r['flops'] / 1e9:>8.1f} {r['wall_s']:>7}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
