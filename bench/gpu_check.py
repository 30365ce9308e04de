"""GPU check: testtime's transformers policy vs raw ``generate``, and batched PRM scoring, on random weights.

A prepared script of a few minutes for a machine with one GPU and no model hub. Everything is built
from configs in code with ``testtime.testing.synthetic`` (local tokenizers, random safetensors written
tensor by tensor): a Qwen2-1.5B-shaped policy (a plain Qwen2 causal LM; Qwen2-1.5B and Qwen2.5-1.5B
have the same tensor shapes) and a Qwen2.5-7B-shaped PRM in the Qwen2.5-Math-PRM layout (bf16, ~15 GB).
Measured side by side in one run:

(a) policy decoding at each batch size: ``HFPolicy.generate_fixed`` (testtime's batched decode loop)
    vs raw ``model.generate(do_sample=True)`` on the same loaded model, same prompt, same sampling
    (temperature 0.7, no top-k / top-p) and the same number of new tokens forced on both (EOS ignored
    by testtime, no EOS id for ``generate``). tokens/s of both, their ratio (goal >= 0.95x), and both as
    a fraction of the memory-bandwidth roofline: the device's bandwidth is measured here (a large
    device-to-device copy) and a decode step must read every weight once, so
    roofline tokens/s = bandwidth / weight bytes per step x batch size (KV-cache and activation reads
    ignored, so the true ceiling is a little lower at large batches). Raw ``generate`` reaches only about
    1% of it on an H200 (Python and kernel-launch bound), which is why vLLM is the speed path.
(b) PRM scoring through ``load_hf_prm``: every solution in one ``score_batch`` (the scorer packs its
    own batches) vs one solution per call; steps/s of both and the ratio (about 16x on an H200).

(c) vLLM, when vLLM and a CUDA GPU are both present: the same random policy checkpoint served by
    testtime's vLLM policy (``VLLMPolicy``, one ``LLM.generate`` per call, each sample its own seeded
    request) at each batch size, tokens/s against (a)'s testtime transformers figure; and the same random
    PRM scored through ``load_vllm_prm``, steps/s against (b)'s batched figure, with the largest
    difference between the two backends' step rewards (same weights: it should be near 0). Without vLLM
    or a GPU this part is skipped and the report says why.

Each part warms up first; CUDA is synchronised around every timed call; the order of the two timed
variants alternates between repeats and the median repeat is reported.

    python bench/gpu_check.py                                   # full shapes on cuda: a few minutes on an H200
    python bench/gpu_check.py --shape tiny --device cpu --json  # seconds on a laptop (what the tests run)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers, also when imported

from prm_throughput import build_solutions, tagged  # noqa: E402

PRESETS: dict[str, dict[str, Any]] = {
    # SHAPES names of testtime.testing.synthetic; "qwen2.5-1.5b" has Qwen2-1.5B's tensor shapes.
    "full": dict(policy_shape="qwen2.5-1.5b", prm_shape="qwen2.5-7b", batch_sizes=(1, 16, 64), new_tokens=128,
                 problems=16, n=4, copy_mib=2048, repeats=2),
    "tiny": dict(policy_shape="tiny", prm_shape="tiny", batch_sizes=(1, 8), new_tokens=16,
                 problems=4, n=2, copy_mib=64, repeats=2),
}
PROMPT = (
    "Solve the problem step by step. Write one step per paragraph and finish with \"The answer is N.\"\n\n"
    "A farmer has 17 sheep and buys 3 times as many goats. How many animals does the farmer have?"
)
TEMPERATURE = 0.7


def count(n: float) -> str:
    """A parameter count for humans: 1.54 B, 19.2 K."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(int(n))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Clock:
    """Wall time of a call, with the device synchronised before and after."""

    def __init__(self, torch: Any, device: Any):
        self.torch, self.cuda = torch, device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def time(self, fn: Any) -> tuple[float, Any]:
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out


def measure_bandwidth(torch: Any, device: Any, clock: Clock, mib: int, repeats: int = 20) -> float:
    """Device memory bandwidth in bytes/s: a large device-to-device copy, bytes read + written / time."""
    n = mib << 20
    src = torch.ones(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    wall, _ = clock.time(lambda: [dst.copy_(src) for _ in range(repeats)])
    return 2 * n * repeats / wall


def weight_bytes_per_step(model: Any) -> int:
    """Bytes of weights one decode step reads: every parameter once, except an untied input embedding
    (a lookup reads only the batch's rows). A tied embedding is read in full as the LM head."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if embed.data_ptr() != head.data_ptr():
        total -= embed.numel() * embed.element_size()
    return total


@contextlib.contextmanager
def no_eos(model: Any):
    """Raw ``generate`` fills an unset eos_token_id from the model's generation config; clear it there
    so the run has no EOS criterion at all and always makes max_new_tokens tokens."""
    gen = model.generation_config
    saved = gen.eos_token_id
    gen.eos_token_id = None
    try:
        yield
    finally:
        gen.eos_token_id = saved


def check_policy(args: argparse.Namespace, torch: Any, device: Any, clock: Clock, workdir: Path,
                 bandwidth: float) -> dict[str, Any]:
    from transformers import GenerationConfig

    from testtime.policy.base import GenerationRequest, SamplingParams
    from testtime.policy.hf import HFPolicy
    from testtime.testing.synthetic import SHAPES, build_random_prm

    t0 = time.perf_counter()
    # "generic": a plain Qwen2ForCausalLM checkpoint with the Qwen2.5 tokenizer and chat template
    path = build_random_prm(workdir / "policy", "generic", **SHAPES[args.policy_shape], dtype=args.dtype,
                            device=str(device))
    policy = HFPolicy(str(path), device=str(device), dtype=args.dtype, max_batch_rows=max(args.batch_sizes))
    model = policy.model
    ids = policy.token_ids(PROMPT)
    step_bytes = weight_bytes_per_step(model)
    log(f"policy: random {args.policy_shape}-shaped Qwen2 LM ({count(policy.n_params)} params, "
        f"{step_bytes / 1e9:.2f} GB of weights per decode step, {args.dtype}) built and loaded in "
        f"{time.perf_counter() - t0:.1f} s; prompt {len(ids)} tokens, {args.new_tokens} new tokens")

    def ours(bs: int, new: int) -> int:
        req = GenerationRequest(PROMPT, bs, 0, SamplingParams(temperature=TEMPERATURE))
        out = policy.generate_fixed([req], new)[0]
        assert len(out) == bs and all(c.generated_tokens == new for c in out)
        return bs * new

    def raw(bs: int, new: int) -> int:
        inputs = torch.tensor([ids] * bs, device=device)
        config = GenerationConfig(do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0, max_new_tokens=new,
                                  eos_token_id=None, pad_token_id=policy.pad_id)
        with torch.inference_mode(), no_eos(model):
            out = model.generate(inputs, attention_mask=torch.ones_like(inputs), generation_config=config)
        assert tuple(out.shape) == (bs, len(ids) + new), tuple(out.shape)
        return bs * new

    runners = {"testtime": ours, "raw": raw}
    for fn in runners.values():  # warm-up: kernels, allocator, cuBLAS handles
        fn(min(args.batch_sizes), 4)
        fn(max(args.batch_sizes), 4)
    rows = []
    for bs in args.batch_sizes:
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for rep in range(args.repeats):
            for name in (("testtime", "raw") if rep % 2 == 0 else ("raw", "testtime")):
                wall, tokens = clock.time(lambda fn=runners[name], bs=bs: fn(bs, args.new_tokens))
                rates[name].append(tokens / wall)
        ours_tps, raw_tps = (statistics.median(rates[k]) for k in ("testtime", "raw"))
        roofline = bandwidth / step_bytes * bs
        row = {"batch_size": bs, "testtime_tokens_per_s": ours_tps, "raw_tokens_per_s": raw_tps,
               "ratio": ours_tps / raw_tps, "roofline_tokens_per_s": roofline,
               "testtime_roofline_fraction": ours_tps / roofline, "raw_roofline_fraction": raw_tps / roofline}
        rows.append(row)
        log(f"  batch {bs:>3}: testtime {ours_tps:,.0f} tok/s, raw generate {raw_tps:,.0f} tok/s "
            f"({row['ratio']:.2f}x); roofline {roofline:,.0f} tok/s")
    result = {"shape": args.policy_shape, "params": policy.n_params, "weight_bytes_per_step": step_bytes,
              "prompt_tokens": len(ids), "new_tokens": args.new_tokens, "temperature": TEMPERATURE,
              "model_id": policy.model_id, "rows": rows, "ratio_min": min(r["ratio"] for r in rows)}
    policy.close()
    return result


def check_prm(args: argparse.Namespace, torch: Any, device: Any, clock: Clock, workdir: Path) -> dict[str, Any]:
    from testtime.reward.hf import load_hf_prm
    from testtime.testing.synthetic import SHAPES, build_random_prm

    t0 = time.perf_counter()
    path = build_random_prm(workdir / "prm", "qwen-prm", **SHAPES[args.prm_shape], dtype=args.dtype,
                            device=str(device))
    prm = load_hf_prm(str(path), device=str(device), dtype=args.dtype)
    log(f"prm: random {args.prm_shape}-shaped Qwen2.5-Math-PRM ({count(prm.n_params)} params, {args.dtype}) "
        f"built and loaded in {time.perf_counter() - t0:.1f} s")
    solutions = build_solutions(args.problems, args.n, 6)
    steps = sum(len(s) for _, s in solutions)
    warm = tagged(solutions[: min(8, len(solutions))], "warm")
    prm.score_batch(warm)
    prm.score_batch(warm[:1])
    rates: dict[str, list[float]] = {"batched": [], "single": []}
    calls: dict[str, int] = {}
    for rep in range(args.repeats):
        for mode in (("batched", "single") if rep % 2 == 0 else ("single", "batched")):
            reqs = tagged(solutions, f"r{rep}{mode[0]}")
            before = prm.forward_calls
            if mode == "batched":
                wall, scored = clock.time(lambda reqs=reqs: prm.score_batch(reqs))
            else:
                wall, scored = clock.time(lambda reqs=reqs: [s for r in reqs for s in prm.score_batch([r])])
            assert sum(len(s.rewards) for s in scored) == steps
            calls[mode] = prm.forward_calls - before
            rates[mode].append(steps / wall)
    batched, single = statistics.median(rates["batched"]), statistics.median(rates["single"])
    log(f"  batched {batched:,.1f} steps/s ({calls['batched']} forwards per pass), one per call {single:,.1f} "
        f"steps/s ({calls['single']} forwards): {batched / single:.2f}x")
    prm.close()
    return {"shape": args.prm_shape, "params": prm.n_params, "solutions": len(solutions), "steps": steps,
            "batched_steps_per_s": batched, "single_steps_per_s": single,
            "forwards_per_pass": calls, "ratio": batched / single}


def vllm_skip_reason(device_type: str, has_vllm: bool) -> str | None:
    """Why the vLLM part cannot run here (None: it runs): it needs vLLM installed and a CUDA device."""
    if not has_vllm:
        return "vLLM is not installed (pip install 'testtime[vllm]')"
    if device_type != "cuda":
        return f"vLLM's part needs a CUDA GPU (device is {device_type})"
    return None


def vllm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def check_vllm(args: argparse.Namespace, res: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """vLLM on the checkpoints (a) and (b) built, at the same batch sizes and solutions."""
    from testtime.policy.base import GenerationRequest, SamplingParams
    from testtime.policy.vllm import VLLMPolicy
    from testtime.reward.hf import load_hf_prm
    from testtime.reward.vllm import load_vllm_prm

    out: dict[str, Any] = {}
    policy_dir, prm_dir = workdir / "policy", workdir / "prm"
    if policy_dir.is_dir():
        t0 = time.perf_counter()
        policy = VLLMPolicy(str(policy_dir), dtype=args.dtype, gpu_memory_utilization=0.4,
                            max_model_len=1024 + args.new_tokens)
        log(f"vllm policy loaded in {time.perf_counter() - t0:.1f} s")
        sp = SamplingParams(temperature=TEMPERATURE, max_tokens=args.new_tokens)
        policy.generate([GenerationRequest(PROMPT, max(args.batch_sizes), 0, sp)])  # warm-up
        hf_rates = {r["batch_size"]: r["testtime_tokens_per_s"] for r in res.get("policy", {}).get("rows", [])}
        rows = []
        for bs in args.batch_sizes:
            rates = []
            for rep in range(args.repeats):
                t0 = time.perf_counter()
                done = policy.generate([GenerationRequest(PROMPT, bs, 1000 * rep, sp)])[0]
                rates.append(sum(c.generated_tokens for c in done) / (time.perf_counter() - t0))
            rows.append(vllm_row(bs, statistics.median(rates), hf_rates.get(bs)))
            log(f"  vllm batch {bs:>3}: {rows[-1]['vllm_tokens_per_s']:,.0f} tok/s")
        policy.close()
        out["policy"] = {"rows": rows}
    if prm_dir.is_dir():
        solutions = build_solutions(args.problems, args.n, 6)
        reqs = tagged(solutions, "vllm")
        ref = load_hf_prm(str(prm_dir), dtype=args.dtype)
        want = ref.score_batch(reqs)
        ref.close()
        prm = load_vllm_prm(str(prm_dir), dtype=args.dtype, gpu_memory_utilization=0.4)
        prm.score_batch(tagged(solutions[:4], "warm"))
        steps = sum(len(s) for _, s in solutions)
        t0 = time.perf_counter()
        got = prm.score_batch(tagged(solutions, "timed"))
        wall = time.perf_counter() - t0
        prm.close()
        out["prm"] = {"steps": steps, "vllm_steps_per_s": steps / wall,
                      "hf_batched_steps_per_s": res.get("prm", {}).get("batched_steps_per_s"),
                      "max_abs_reward_diff": max_reward_diff([s.rewards for s in got], [s.rewards for s in want])}
        log(f"  vllm prm {steps / wall:,.1f} steps/s; rewards differ from transformers by at most "
            f"{out['prm']['max_abs_reward_diff']:.4f}")
    return out


def vllm_row(batch_size: int, vllm_tps: float, hf_tps: float | None) -> dict[str, Any]:
    """One (c) row: vLLM's tokens/s, and its ratio to testtime's transformers decode at that batch size."""
    return {"batch_size": batch_size, "vllm_tokens_per_s": vllm_tps, "hf_tokens_per_s": hf_tps,
            "vllm_vs_hf": vllm_tps / hf_tps if hf_tps else None}


def max_reward_diff(a: list[list[float]], b: list[list[float]]) -> float:
    """The largest absolute difference between two backends' step rewards for the same solutions."""
    if [len(x) for x in a] != [len(x) for x in b]:
        raise ValueError("the two backends scored different numbers of steps")
    return max((abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)), default=0.0)


def print_table(res: dict[str, Any]) -> None:
    print(f"device {res['device_name']} ({res['device']}), {res['dtype']}; "
          f"memory bandwidth (device copy) {res['bandwidth_bytes_per_s'] / 1e9:,.1f} GB/s")
    if "policy" in res:
        p = res["policy"]
        print(f"\n(a) policy: random {p['shape']}-shaped Qwen2 LM, {count(p['params'])} params, "
              f"{p['weight_bytes_per_step'] / 1e9:.3f} GB per decode step; {p['prompt_tokens']}-token prompt, "
              f"{p['new_tokens']} new tokens per sample, T={p['temperature']}")
        print(f"{'batch':>6}{'testtime tok/s':>16}{'raw tok/s':>12}{'ratio':>8}{'roofline tok/s':>16}"
              f"{'testtime %roof':>16}{'raw %roof':>11}")
        for r in p["rows"]:
            print(f"{r['batch_size']:>6}{r['testtime_tokens_per_s']:>16,.1f}{r['raw_tokens_per_s']:>12,.1f}"
                  f"{r['ratio']:>7.2f}x{r['roofline_tokens_per_s']:>16,.0f}"
                  f"{100 * r['testtime_roofline_fraction']:>15.2f}%{100 * r['raw_roofline_fraction']:>10.2f}%")
        print(f"testtime / raw generate: {p['ratio_min']:.2f}x at worst (goal >= 0.95x)")
    if "prm" in res:
        q = res["prm"]
        print(f"\n(b) PRM: random {q['shape']}-shaped Qwen2.5-Math-PRM, {count(q['params'])} params; "
              f"{q['solutions']} solutions, {q['steps']} steps per pass")
        print(f"{'mode':<14}{'steps/s':>10}{'forwards/pass':>15}")
        for mode, key in (("batched", "batched_steps_per_s"), ("one per call", "single_steps_per_s")):
            calls = q["forwards_per_pass"]["batched" if mode == "batched" else "single"]
            print(f"{mode:<14}{q[key]:>10,.1f}{calls:>15}")
        print(f"batched / one per call: {q['ratio']:.2f}x")
    v = res.get("vllm", {})
    if "skipped" in v:
        print(f"\n(c) vLLM: skipped: {v['skipped']}")
    for r in v.get("policy", {}).get("rows", []):
        ratio = f"{r['vllm_vs_hf']:.2f}x testtime transformers" if r["vllm_vs_hf"] else ""
        print(f"(c) vLLM policy batch {r['batch_size']:>3}: {r['vllm_tokens_per_s']:,.1f} tok/s {ratio}")
    if "prm" in v:
        p = v["prm"]
        print(f"(c) vLLM PRM: {p['vllm_steps_per_s']:,.1f} steps/s; max |reward diff| vs transformers "
              f"{p['max_abs_reward_diff']:.4f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--shape", choices=sorted(PRESETS), default="full",
                    help="full: Qwen2-1.5B policy + Qwen2.5-7B PRM; tiny: seconds on a CPU (tests)")
    ap.add_argument("--batch-sizes", default=None, help="comma-separated (default: full 1,16,64; tiny 1,8)")
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens per sample (default: full 128; tiny 16)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per variant (median reported)")
    ap.add_argument("--part", choices=("all", "policy", "prm"), default="all",
                    help="all: (a), (b) and, where vLLM and a GPU are present, (c) on their checkpoints")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1 for tiny shapes on cpu)")
    ap.add_argument("--workdir", default=None, help="where the random checkpoints go (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = ap.parse_args(argv)
    preset = PRESETS[args.shape]
    args.policy_shape, args.prm_shape = preset["policy_shape"], preset["prm_shape"]
    args.batch_sizes = ([int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes
                        else list(preset["batch_sizes"]))
    args.new_tokens = args.new_tokens or preset["new_tokens"]
    args.repeats = args.repeats or preset["repeats"]
    args.problems, args.n = preset["problems"], preset["n"]
    if min(args.batch_sizes) < 1 or args.new_tokens < 4 or args.repeats < 1:
        ap.error("batch sizes and --repeats must be >= 1, --new-tokens >= 4")

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    threads = args.threads or (1 if device.type == "cpu" and args.shape == "tiny" else None)
    if threads:
        torch.set_num_threads(threads)
    clock = Clock(torch, device)
    t0 = time.perf_counter()
    bandwidth = measure_bandwidth(torch, device, clock, preset["copy_mib"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    log(f"{name}: memory bandwidth (device copy of {preset['copy_mib']} MiB) {bandwidth / 1e9:,.1f} GB/s")
    res: dict[str, Any] = {"benchmark": "gpu_check", "shape": args.shape, "device": str(device), "device_name": name,
                           "dtype": args.dtype, "bandwidth_bytes_per_s": bandwidth}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.part in ("all", "policy"):
            res["policy"] = check_policy(args, torch, device, clock, Path(tmp), bandwidth)
            gc.collect()  # the policy's memory goes back before the PRM loads
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if args.part in ("all", "prm"):
            res["prm"] = check_prm(args, torch, device, clock, Path(tmp))
        reason = vllm_skip_reason(device.type, vllm_installed()) if args.part == "all" else "--part is not all"
        if reason is None:
            gc.collect()
            torch.cuda.empty_cache()
            res["vllm"] = check_vllm(args, res, Path(tmp))
        else:
            res["vllm"] = {"skipped": reason}
            log(f"vllm part skipped: {reason}")
    res["ratios"] = {k: v for k, v in (
        ("policy_vs_raw_generate_min", res.get("policy", {}).get("ratio_min")),
        ("prm_batched_vs_single", res.get("prm", {}).get("ratio")),
    ) if v is not None}
    res["wall_s"] = time.perf_counter() - t0
    assert all(math.isfinite(v) and v > 0 for v in res["ratios"].values()), res["ratios"]
    if args.json:
        print(json.dumps(res))
    else:
        print_table(res)
        print(f"\n{res['wall_s']:.0f} s in all")
    return res


if __name__ == "__main__":
    main()
