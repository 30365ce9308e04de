"""Beam search batching and prefix reuse: testtime vs the raw backend, measured side by side in one run.

1. testtime runs beam search (arith-check PRM) over P problems on a fresh llama.cpp server, with a
   fresh store; every backend call it makes (one per depth, all problems together) is recorded.
2. The raw side replays exactly those calls, depth by depth, straight to a fresh xllamacpp server
   (all requests of a depth submitted at once, as testtime does): no store, no scoring, no trees.
   Throughput ratio = testtime generated tokens/s / raw generated tokens/s. Goal >= 0.9.
3. Prefix reuse: prompt tokens testtime's run evaluated, against
   (a) a cache-less run, where every step sample evaluates its whole prefix (prompt + path so far):
       testtime's own ``prompt_tokens`` count, which charges every sample its full prefix. Goal <= 0.10.
   (b) a stricter baseline: the same replay on llama.cpp with its prompt cache off (``cache_prompt:
       false``), where the k samples of one request still share one evaluation of their prefix. Its
       floor is the first depth: every problem's prompt is evaluated once whatever the cache does
       (llama.cpp does not share KV across slots), so shallow trees with long few-shot prompts sit
       far above 0.10 here; the continuation-only ratio (depth >= 2) isolates what reuse saves.

    python bench/search_batching.py [--problems 20] [--n 8] [--m 4] [--max-depth 12] [--max-tokens 256]
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


class Recorder:
    """Wraps a policy: every generate() call's requests, in order."""

    def __init__(self, policy):
        self.policy = policy
        self.model_id, self.n_params = policy.model_id, policy.n_params
        self.calls = []

    def render_chat(self, messages):
        return self.policy.render_chat(messages)

    def generate(self, requests, on_chunk=None):
        self.calls.append(list(requests))
        return self.policy.generate(requests, on_chunk=on_chunk)

    def close(self):
        self.policy.close()


def run_testtime(args, problems, slots: int):
    policy = Recorder(load_policy(None, slots=slots))
    with tempfile.TemporaryDirectory() as out:
        cfg = engine.RunConfig(dataset="arith", strategy="beam", n=args.n, m=args.m, out=out, prm="arith-check",
                               max_tokens=args.max_tokens, max_depth=args.max_depth,
                               batch_sequences=args.n * len(problems))  # every problem in every call
        t0 = time.perf_counter()
        res = engine.run(cfg, policy, problems)
        wall = time.perf_counter() - t0
    policy.close()
    return wall, res, policy.calls


def replay(calls, slots: int, cache_prompt: bool):
    """The recorded calls, straight to the server: (wall, generated tokens, prompt tokens evaluated per call)."""
    policy = load_policy(None, slots=slots)
    server = policy._server
    generated = 0
    evaluated: list[int] = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        for call in calls:
            bodies = []
            for req in call:
                start = req.first_index
                while start < req.first_index + req.n:  # as the backend splits requests above `slots`
                    n = min(slots, req.first_index + req.n - start)
                    body = policy._body(req, start, n)
                    body["cache_prompt"] = cache_prompt
                    bodies.append(body)
                    start += n
            evaluated.append(0)
            for resp in pool.map(server.handle_completions, bodies):
                generated += sum(len(c["logprobs"]["content"]) for c in resp["choices"])
                evaluated[-1] += int(resp["timings"]["prompt_n"])
    wall = time.perf_counter() - t0
    policy.close()
    return wall, generated, evaluated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--max-depth", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--slots", type=int, default=16)
    args = ap.parse_args()
    problems = load_dataset("arith", limit=args.problems, levels=args.levels)

    tt_wall, res, calls = run_testtime(args, problems, args.slots)
    s = res.summary()
    raw_wall, raw_gen, raw_eval = replay(calls, args.slots, cache_prompt=True)
    off_wall, off_gen, off_eval = replay(calls, args.slots, cache_prompt=False)

    tt_tps = s["generated_tokens"] / tt_wall
    raw_tps = raw_gen / raw_wall
    throughput_ratio = tt_tps / raw_tps
    prefix_ratio = s["prompt_tokens_evaluated"] / s["prompt_tokens"]
    strict_ratio = s["prompt_tokens_evaluated"] / sum(off_eval)
    continuation_ratio = sum(raw_eval[1:]) / max(1, sum(off_eval[1:]))
    sequences = sum(r.n for c in calls for r in c)
    print(f"beam N={args.n} M={args.m} on {len(problems)} arith problems (levels {args.levels}), "
          f"{len(calls)} backend calls (one per depth), {sequences} step samples, accuracy {s['accuracy']:.1%}")
    print(f"{'side':<26}{'wall s':>9}{'gen tokens':>12}{'tok/s':>9}{'prompt evaluated':>18}")
    print(f"{'testtime beam':<26}{tt_wall:>9.1f}{s['generated_tokens']:>12}{tt_tps:>9.1f}"
          f"{s['prompt_tokens_evaluated']:>18}")
    print(f"{'raw replay, prefix cache':<26}{raw_wall:>9.1f}{raw_gen:>12}{raw_tps:>9.1f}{sum(raw_eval):>18}")
    print(f"{'raw replay, no cache':<26}{off_wall:>9.1f}{off_gen:>12}{off_gen / off_wall:>9.1f}{sum(off_eval):>18}")
    print(f"{'cache-less (every sample)':<26}{'':>9}{'':>12}{'':>9}{s['prompt_tokens']:>18}")
    print(f"throughput ratio testtime / raw backend: {throughput_ratio:.3f} (goal >= 0.9)")
    print(f"prompt tokens evaluated, testtime / cache-less: {prefix_ratio:.3f} (goal <= 0.10)")
    print(f"  stricter, testtime / llama.cpp without prompt cache: {strict_ratio:.3f}; "
          f"depth >= 2 only (raw, cache on / off): {continuation_ratio:.3f}; "
          f"first depth evaluated: {off_eval[0]} of {sum(off_eval)}")
    print(json.dumps({
        "benchmark": "search_batching", "problems": len(problems), "n": args.n, "m": args.m,
        "backend_calls": len(calls), "step_samples": sequences, "accuracy": s["accuracy"],
        "testtime": {"wall_s": tt_wall, "generated_tokens": s["generated_tokens"], "tokens_per_s": tt_tps,
                     "prompt_tokens": s["prompt_tokens"], "prompt_tokens_evaluated": s["prompt_tokens_evaluated"],
                     "prompt_tokens_cached": s["prompt_tokens_cached"]},
        "raw": {"wall_s": raw_wall, "generated_tokens": raw_gen, "tokens_per_s": raw_tps,
                "prompt_evaluated_per_depth": raw_eval},
        "raw_no_cache": {"wall_s": off_wall, "generated_tokens": off_gen, "prompt_evaluated_per_depth": off_eval},
        "throughput_ratio": throughput_ratio, "prefix_ratio": prefix_ratio, "strict_prefix_ratio": strict_ratio,
        "continuation_prefix_ratio": continuation_ratio,
    }))


if __name__ == "__main__":
    main()
