"""The measured limit model of the CPU default: how far each strategy's wall time is from this machine's floor.

For a run, the floor is the time the llama.cpp backend needs at the very least:

    floor = distinct prompt tokens / prompt-eval rate + generated tokens / batched decode rate at P

- distinct prompt tokens: the size of the token trie of every prompt the run sent (a perfect cache
  evaluates each shared prefix once); tokens come from the model's own tokenizer (a server's /tokenize);
- the prompt-eval rate: one long prompt evaluated once, measured first in the same run;
- the batched decode rate at P: P sequences decoded side by side, measured for each P the runs use, where
  P = the sequences the scheduler keeps in flight (lanes x samples per request, at most the slots).

Each strategy (CoT, majority@N, Best-of-N@N with arith-check, beam@N with arith-check, and the LLM judge
scoring a pool of solutions) runs once per schedule on a fresh server and a fresh store: testtime's
prefix-aware lanes, either left to the server's pick of slot (``lanes-unpinned``) or pinned to slots
(``lanes``), and ``scatter`` (the policy before issue 20: every request at once, the server picks the slot,
idle slots cleared as llama.cpp does by default). The default compares the library's own schedule (read from
``LlamaCppPolicy``'s defaults, so it follows the library) with ``scatter``. The table prints, per run:
prompt tokens evaluated / distinct, and wall time / floor. On a shared CPU the timings move with the
load: compare rows of one run only, and read the token ratios, which load does not change, first.

    python bench/limit_model.py [--problems 30] [--n 8] [--strategies cot,majority,best_of_n,beam,judge]
        [--schedules lanes-unpinned,scatter] [--max-tokens 384] [--slots 16]
"""

from __future__ import annotations

import argparse
import inspect
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from testtime import engine
from testtime.backends.llamacpp import plan_lanes
from testtime.datasets import load_dataset
from testtime.policy import load_policy
from testtime.policy.llamacpp import LlamaCppPolicy

# each schedule's llama.cpp options; scatter also wraps the policy (ScatterPolicy)
SCHEDULES: dict[str, dict[str, bool]] = {
    "lanes-unpinned": {"pin_lanes": False, "cache_idle_slots": False},
    "lanes": {"pin_lanes": True, "cache_idle_slots": False},
    "scatter": {"pin_lanes": False, "cache_idle_slots": True},
}


def library_schedule() -> str:
    """The schedule a plain ``load_policy(None)`` runs: the one whose options are LlamaCppPolicy's defaults."""
    params = inspect.signature(LlamaCppPolicy.__init__).parameters
    defaults = {k: params[k].default for k in ("pin_lanes", "cache_idle_slots")}
    return next(name for name, opts in SCHEDULES.items() if name != "scatter" and opts == defaults)


class ScatterPolicy:
    """The llama.cpp policy with the schedule it had before prefix-aware lanes: every request (or piece
    of `slots` samples) submitted at once, each free to land in any slot."""

    def __init__(self, policy: LlamaCppPolicy):
        self.policy = policy
        self.model_id, self.n_params, self.slots = policy.model_id, policy.n_params, policy.slots

    def render_chat(self, messages):
        return self.policy.render_chat(messages)

    def generate(self, requests, on_chunk=None):
        jobs = []
        for ri, req in enumerate(requests):
            start, end = req.first_index, req.first_index + req.n
            while start < end:
                n = min(self.slots, end - start)
                jobs.append((ri, start, self.policy._pool.submit(self.policy._call, req, start, n)))
                start += n
        out = [[] for _ in requests]
        for ri, first, fut in jobs:
            got = fut.result()
            if on_chunk is not None:
                on_chunk(ri, first, got)
            out[ri].extend(got)
        return out

    def next_token_logprobs(self, prompts, top_k=20):
        futures = [self.policy._pool.submit(self.policy._next_token, p, top_k) for p in prompts]
        return [f.result() for f in futures]

    def close(self):
        self.policy.close()


class Recorder:
    """Wraps a policy: the prompts it was sent, prompt tokens evaluated, tokens generated, parallelism."""

    def __init__(self, policy, slots: int, overhead: float):
        self.policy, self.slots, self.overhead = policy, slots, overhead
        self.model_id, self.n_params = policy.model_id, policy.n_params
        self.prompts: list[str] = []
        self.evaluated = self.generated = 0
        self.parallel: list[tuple[int, int]] = []  # (sequences in flight, generated tokens) per call

    def render_chat(self, messages):
        return self.policy.render_chat(messages)

    def generate(self, requests, on_chunk=None):
        out = self.policy.generate(requests, on_chunk)
        self.prompts += [r.prompt for r in requests]
        widest = max(min(self.slots, r.n) for r in requests)
        lanes = len(plan_lanes([r.prompt for r in requests], max(1, self.slots // widest), self.overhead).lanes)
        gen = sum(c.generated_tokens for comps in out for c in comps)
        self.evaluated += sum(c.prompt_tokens - c.cached_prompt_tokens for comps in out for c in comps)
        self.generated += gen
        self.parallel.append((min(self.slots, lanes * widest), gen))
        return out

    def next_token_logprobs(self, prompts, top_k=20):
        out = self.policy.next_token_logprobs(prompts, top_k)
        self.prompts += prompts
        self.evaluated += sum(r.prompt_tokens - r.cached_prompt_tokens for r in out)
        self.generated += len(prompts)
        lanes = len(plan_lanes(prompts, self.slots, self.overhead).lanes)
        self.parallel.append((lanes, len(prompts)))
        return out

    def close(self):
        self.policy.close()


class Tokenizer:
    """The model's tokenizer, through a one-slot llama.cpp server's /tokenize."""

    def __init__(self, model_path):
        import httpx
        import xllamacpp

        from testtime.backends.llamacpp import quiet_stderr, server_params

        p = server_params(model_path, 1, 512, None, False)
        p.port = 0
        with quiet_stderr(True):
            self._server = xllamacpp.Server(p)
        self._http = httpx.Client(base_url=self._server.listening_address, timeout=120.0)

    def __call__(self, text: str) -> tuple[int, ...]:
        r = self._http.post("/tokenize", json={"content": text, "add_special": False, "parse_special": True})
        r.raise_for_status()
        return tuple(r.json()["tokens"])


def distinct_tokens(tokenize: Tokenizer, prompts: list[str]) -> int:
    """Nodes of the token trie of the prompts."""
    ids = sorted({tokenize(p) for p in set(prompts)})
    total, prev = 0, ()
    for t in ids:
        shared = 0
        while shared < min(len(t), len(prev)) and t[shared] == prev[shared]:
            shared += 1
        total += len(t) - shared
        prev = t
    return total


def prompt_eval_rate(policy: LlamaCppPolicy) -> float:
    """Prompt tokens per second: a long prompt no cache holds, evaluated once (best of two)."""
    rates = []
    for k in range(2):
        text = f"[{k}] " + " ".join(f"item {i} is {i * 7 % 13}." for i in range(80))
        resp = policy._server.handle_completions({"prompt": text, "n": 1, "max_tokens": 1, "temperature": 0.0,
                                                  "cache_prompt": False})
        t = resp["timings"]
        rates.append(t["prompt_n"] / (t["prompt_ms"] / 1000))
    return max(rates)


def decode_rate(policy: LlamaCppPolicy, parallel: int, tokens: int = 48) -> float:
    """Generated tokens per second with `parallel` sequences decoding side by side (short prompts)."""
    body = {"n": 1, "max_tokens": tokens, "temperature": 1.0, "seed": 1, "cache_prompt": True,
            "ignore_eos": True, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    prompts = [f"Count from {i}:" for i in range(parallel)]
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda p: policy._server.handle_completions({**body, "prompt": p, "max_tokens": 2}), prompts))
        t0 = time.perf_counter()
        resps = list(pool.map(lambda p: policy._server.handle_completions({**body, "prompt": p}), prompts))
        wall = time.perf_counter() - t0
    return sum(r["timings"]["predicted_n"] for r in resps) / wall


def run_strategy(name: str, args, policy, problems) -> None:
    with tempfile.TemporaryDirectory() as out:
        if name == "judge":
            from prm_throughput import build_solutions, tagged

            from testtime.reward.judge import Judge

            solutions = build_solutions(len(problems), args.n, 6)
            Judge(policy).score_batch(tagged(solutions, "pool"))
            return
        prm = "arith-check" if name in ("best_of_n", "beam") else None
        cfg = engine.RunConfig(dataset="arith", strategy=name, n=args.n if name != "cot" else 1, out=out,
                               prm=prm, max_tokens=args.max_tokens, limit=len(problems))
        engine.run(cfg, policy, problems)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=30, help="arith problems (the demo's first ones)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--strategies", default="cot,majority,best_of_n,beam,judge")
    ap.add_argument("--schedules", default=f"{library_schedule()},scatter",
                    help=f"comma-separated, of {', '.join(SCHEDULES)} (default: the library's, and scatter)")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--ctx-per-slot", type=int, default=4096)
    args = ap.parse_args()
    schedules = args.schedules.split(",")
    unknown = [x for x in schedules if x not in SCHEDULES]
    if unknown:
        ap.error(f"--schedules {args.schedules}: unknown {', '.join(unknown)} (available: {', '.join(SCHEDULES)})")
    problems = load_dataset("arith", limit=args.problems)
    probe = load_policy(None, slots=args.slots, ctx_per_slot=args.ctx_per_slot)
    overhead = probe.prefix_overhead
    tokenize = Tokenizer(probe.info.path)
    pp = prompt_eval_rate(probe)
    decode: dict[int, float] = {}
    print(f"prompt eval: {pp:.0f} tok/s", flush=True)
    rows: list[dict[str, Any]] = []
    for name in args.strategies.split(","):
        for schedule in schedules:
            # scatter reproduces the policy before issue 20: llama.cpp's default of clearing idle slots too
            base = load_policy(None, slots=args.slots, ctx_per_slot=args.ctx_per_slot, **SCHEDULES[schedule])
            policy = Recorder(ScatterPolicy(base) if schedule == "scatter" else base, args.slots, overhead)
            t0 = time.perf_counter()
            try:
                run_strategy(name, args, policy, problems)
            finally:
                wall = time.perf_counter() - t0
                policy.close()
            # P: the generated-token-weighted mean of the sequences in flight, rounded to a measured width
            gen = sum(g for _, g in policy.parallel) or 1
            width = max(1, round(sum(p * g for p, g in policy.parallel) / gen)) if schedule != "scatter" else args.slots
            if width not in decode:
                decode[width] = decode_rate(probe, width)
                print(f"decode at {width} sequences: {decode[width]:.0f} tok/s", flush=True)
            distinct = distinct_tokens(tokenize, policy.prompts)
            floor = distinct / pp + policy.generated / decode[width]
            row = {"strategy": name, "schedule": schedule, "wall_s": wall, "evaluated": policy.evaluated,
                   "distinct": distinct, "generated": policy.generated, "parallel": width, "floor_s": floor,
                   "prompt_ratio": policy.evaluated / distinct, "floor_ratio": wall / floor}
            rows.append(row)
            print(f"  {name:<10}{schedule:<16} evaluated {policy.evaluated:>7} / distinct {distinct:>6} = "
                  f"{row['prompt_ratio']:.2f}x; {policy.generated} generated at P={width}; wall {wall:.1f} s "
                  f"/ floor {floor:.1f} s = {row['floor_ratio']:.2f}x", flush=True)
    probe.close()
    print(f"\n{'strategy':<11}{'schedule':<16}{'evaluated':>10}{'distinct':>9}{'ratio':>7}{'generated':>10}{'P':>4}"
          f"{'wall s':>8}{'floor s':>8}{'x floor':>8}")
    for r in rows:
        print(f"{r['strategy']:<11}{r['schedule']:<16}{r['evaluated']:>10}{r['distinct']:>9}{r['prompt_ratio']:>6.2f}x"
              f"{r['generated']:>10}{r['parallel']:>4}{r['wall_s']:>8.1f}{r['floor_s']:>8.1f}{r['floor_ratio']:>7.2f}x")
    print(json.dumps({"benchmark": "limit_model", "problems": args.problems, "n": args.n, "slots": args.slots,
                      "prompt_eval_tok_s": pp, "decode_tok_s": decode, "rows": rows}))


if __name__ == "__main__":
    main()
