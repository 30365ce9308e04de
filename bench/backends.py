"""Backends that agree: one workload (majority@8 on 30 arith problems, the same prompts and seeds) through
every policy backend, in one run:

- llama.cpp in-process (the CPU default);
- llama.cpp's HTTP server (xllamacpp, 16 slots) through the OpenAI-compatible backend, nothing by hand;
- vLLM offline (``VLLMPolicy`` on vLLM's CPU build, in ``.venv-vllm``: run there as a subprocess);
- ``vllm serve`` (``python -m vllm.entrypoints.openai.api_server`` from ``.venv-vllm``) through the
  OpenAI-compatible backend;
- transformers (``HFPolicy`` on the GGUF dequantized into a checkpoint folder, ``testing.vllm_model``).

For each: wall time, generated tokens/s, prompt tokens evaluated vs served from a cache, accuracy. A part
whose engine is missing prints one line saying so. Wall times need an idle machine; the token counts and
accuracies do not.

    python bench/backends.py [--limit 30] [--n 8] [--max-tokens 256] [--only llamacpp,server,vllm,vllm-serve,hf]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
PARTS = ("llamacpp", "server", "vllm", "vllm-serve", "hf")


def run_workload(policy, args) -> dict:
    from testtime import engine
    from testtime.datasets import load_dataset

    problems = load_dataset("arith", limit=args.limit)
    with tempfile.TemporaryDirectory() as out:
        cfg = engine.RunConfig(dataset="arith", strategy="majority", n=args.n, limit=args.limit, out=out,
                               max_tokens=args.max_tokens, seed=args.seed)
        t0 = time.perf_counter()
        res = engine.run(cfg, policy, problems)
        wall = time.perf_counter() - t0
    s = res.summary()
    finishes = [c.finish_reason for r in res.results for c in r.trace.candidates]
    return {"wall_s": round(wall, 1), "tok_s": round(s["generated_tokens"] / wall, 1),
            "generated_tokens": s["generated_tokens"], "prompt_tokens": s["prompt_tokens"],
            "cached_prompt_tokens": s["cached_prompt_tokens"], "accuracy": round(s["accuracy"], 4),
            "pass@1": round(s["pass@1"], 4), "length_hits": finishes.count("length"), "failed": s["failed"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def part_llamacpp(args) -> dict:
    from testtime.policy import load_policy

    policy = load_policy(None)
    try:
        return run_workload(policy, args)
    finally:
        policy.close()


def part_server(args) -> dict:
    import xllamacpp

    from testtime.policy import load_policy, resolve_model

    p = xllamacpp.CommonParams()
    p.model.path = str(resolve_model(None))
    p.hostnames, p.port, p.n_parallel, p.n_ctx = ["127.0.0.1"], 0, 16, 16 * 4096
    p.warmup, p.verbosity, p.log_json = False, -1, False
    server = xllamacpp.Server(p)
    try:
        policy = load_policy("smollm2", backend="openai", base_urls=[server.listening_address])
        try:
            return run_workload(policy, args)
        finally:
            policy.close()
    finally:
        del server


def hf_folder() -> Path:
    from testtime.testing.vllm_model import embedded_hf_model

    return embedded_hf_model()


def part_hf(args) -> dict:
    from testtime.policy import load_policy

    try:
        folder = hf_folder()
    except ImportError as e:
        raise Missing(f"transformers' GGUF conversion needs gguf and accelerate ({e})") from None
    policy = load_policy(str(folder), backend="hf")
    try:
        return run_workload(policy, args)
    finally:
        policy.close()


def part_vllm_inner(args) -> dict:
    """Runs inside .venv-vllm (``--inner vllm``)."""
    from testtime.policy import load_policy

    # eager: the compiled start-up costs ~100 s on a CPU, against ~27 s
    policy = load_policy(str(hf_folder()), backend="vllm", allow_cpu=True, enforce_eager=True)
    try:
        return run_workload(policy, args)
    finally:
        policy.close()


class Missing(Exception):
    """The part's engine is not installed here."""


def _vllm_python() -> Path:
    if not VLLM_PY.exists():
        raise Missing(f"no {VLLM_PY.relative_to(ROOT)} (make test-vllm builds it)")
    probe = subprocess.run([str(VLLM_PY), "-c", "import vllm, testtime"], capture_output=True, text=True)
    if probe.returncode:
        raise Missing(f"vllm or testtime does not import in {VLLM_PY.parent.parent.name}: "
                      f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}")
    return VLLM_PY


def _vllm_folder(py: Path) -> str:
    got = subprocess.run([str(py), "-m", "testtime.testing.vllm_model"], capture_output=True, text=True, check=True)
    return got.stdout.strip().splitlines()[-1]


def part_vllm(args) -> dict:
    py = _vllm_python()
    cmd = [str(py), __file__, "--inner", "vllm", "--limit", str(args.limit), "--n", str(args.n), "--max-tokens",
           str(args.max_tokens), "--seed", str(args.seed)]
    env = {**os.environ, "TESTTIME_VLLM_CPU": "1",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}  # GiB
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if "Error" in line]
        raise RuntimeError(f"vLLM offline failed: {' | '.join(errors[-4:]) or done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_vllm_serve(args) -> dict:
    from testtime.policy import load_policy

    py = _vllm_python()
    folder = _vllm_folder(py)
    port = free_port()
    cmd = [str(py), "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--host", "127.0.0.1",
           "--port", str(port), "--enforce-eager", "--enable-prompt-tokens-details", "--enable-prefix-caching",
           # vLLM 0.32 CPU: a seeded request whose prefill is chunked kills the engine ("CPU Generator does not
           # use offset": rewinding a discarded token's generator), which 240 seeded requests at once set off
           "--no-enable-chunked-prefill"]
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")})
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited {proc.returncode}: {Path(log.name).read_text()[-1500:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("vllm serve not healthy after 300 s")
            time.sleep(1)
        policy = load_policy(folder, backend="openai", base_urls=[url])
        try:
            return run_workload(policy, args)
        finally:
            policy.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


RUNNERS = {"llamacpp": part_llamacpp, "server": part_server, "vllm": part_vllm, "vllm-serve": part_vllm_serve,
           "hf": part_hf}
LABELS = {"llamacpp": "llama.cpp in-process", "server": "llama.cpp server (openai)", "vllm": "vLLM offline (CPU)",
          "vllm-serve": "vllm serve (openai)", "hf": "transformers"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(PARTS))
    ap.add_argument("--inner", choices=["vllm"], help=argparse.SUPPRESS)  # the part run inside .venv-vllm
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(part_vllm_inner(args)))
        return
    rows: dict[str, dict] = {}
    for part in [p.strip() for p in args.only.split(",") if p.strip()]:
        if part not in RUNNERS:
            ap.error(f"--only: unknown part {part!r} (parts: {', '.join(PARTS)})")
        try:
            rows[part] = RUNNERS[part](args)
        except Missing as e:
            print(f"{LABELS[part]}: skipped, {e}", flush=True)
        except Exception as e:  # one engine's failure does not hide the others' rows
            print(f"{LABELS[part]}: FAILED: {type(e).__name__}: {str(e)[-800:]}", flush=True)
        else:
            print(f"{LABELS[part]}: done {json.dumps(rows[part])}", flush=True)
    print(f"\nmajority@{args.n} on {args.limit} arith problems, max_tokens {args.max_tokens}")
    print(f"{'backend':<27} {'wall_s':>7} {'tok/s':>7} {'prompt':>8} {'cached':>8} {'acc':>6} {'pass@1':>7} "
          f"{'length':>7}")
    for part, r in rows.items():
        print(f"{LABELS[part]:<27} {r['wall_s']:>7} {r['tok_s']:>7} {r['prompt_tokens']:>8} "
              f"{r['cached_prompt_tokens']:>8} {r['accuracy']:>6.1%} {r['pass@1']:>7.1%} {r['length_hits']:>7}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
