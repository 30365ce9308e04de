"""`testtime serve` under load, on loopback, with the embedded SmolLM2 (the server runs as its own process,
``testtime serve``, so its memory is measured apart from the clients').

(a) Load: C concurrent clients (default 200) send small chat requests (cot, a few tokens) for a fixed time.
    Reported: requests answered, intended 429s (the bounded queue), any other error, p50 / p99 latency of the
    answered ones, and the server's RSS before and after.
(b) Cross-request batching: R concurrent Best-of-8 requests (default 16 arith questions, arith-check PRM)
    against a server that batches them, vs the same requests sent one at a time to a fresh server (fresh
    stores, so nothing replays). Reported: wall time of each and the throughput ratio. Goal >= 3x on 2 cores.
    Beside it, measured in the same run, the ceiling batching could reach on this machine: the raw llama.cpp
    decode rate with as many sequences as the batched requests keep in flight (the server's slots) over the
    rate with one request's samples (its N). A Best-of-8 request already decodes its 8 samples side by side,
    so cross-request batching can only add what the wider batch decodes faster.

    python bench/serve_load.py [--clients 200] [--duration 30] [--requests 16] [--max-tokens 48] [--skip-load]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from limit_model import decode_rate  # bench/ is the script's directory, so first on sys.path

from testtime.datasets import load_dataset
from testtime.policy import load_policy
from testtime.serve.thread import free_port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """``testtime serve`` in a subprocess on a free loopback port."""

    def __init__(self, out: str, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # no deadline to speak of: a benchmark waits for its answers however loaded the machine is
        cmd = [sys.executable, "-m", "testtime.cli", "serve", "--port", str(self.port), "--out", out,
               "--deadline-s", "86400", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"server did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def load_test(url: str, clients: int, duration: float, max_tokens: int) -> dict:
    latencies: list[float] = []
    status: dict[str, int] = {}
    errors: list[str] = []
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=duration + 120, limits=limits) as http:
        async def client(k: int) -> None:
            i = 0
            while time.monotonic() < stop_at:
                body = {"model": "testtime", "max_tokens": max_tokens, "tts": {"strategy": "cot"},
                        "messages": [{"role": "user", "content": f"Say the number {k * 1000 + i}."}]}
                i += 1
                t0 = time.monotonic()
                try:
                    r = await http.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                status[str(r.status_code)] = status.get(str(r.status_code), 0) + 1
                if r.status_code == 200:
                    latencies.append(time.monotonic() - t0)
                elif r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                else:
                    errors.append(f"{r.status_code}: {r.text[:200]}")

        await asyncio.gather(*(client(k) for k in range(clients)))
    return {"clients": clients, "duration_s": duration, "status": status, "answered": len(latencies),
            "other_errors": len(errors), "error_examples": errors[:3],
            "p50_s": pct(latencies, 0.50), "p99_s": pct(latencies, 0.99),
            "mean_s": statistics.fmean(latencies) if latencies else float("nan")}


def decode_ceiling(requests: int) -> tuple[int, dict[int, float]]:
    """Raw llama.cpp decode tokens/s with 1 sequence, one Best-of-8 request's 8, and the width the batched
    requests keep in flight (every slot of the server's default policy, at most 8 per request)."""
    policy = load_policy(None)
    try:
        wide = min(policy.slots, 8 * requests)
        decode_rate(policy, wide)  # warm-up: first-call allocations are not the steady rate
        return wide, {w: decode_rate(policy, w) for w in (1, 8, wide)}
    finally:
        policy.close()


def bon_bodies(requests: int, max_tokens: int) -> list[dict]:
    problems = load_dataset("arith", limit=requests, seed=11)
    return [{"model": "testtime", "max_tokens": max_tokens, "seed": 100 + i,
             "tts": {"strategy": "best_of_n", "budget": 8},
             "messages": [{"role": "user", "content": f"{p.question} End with: The answer is N."}]}
            for i, p in enumerate(problems)]


async def post_all(url: str, bodies: list[dict], concurrent: bool) -> tuple[float, int]:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as http:
        t0 = time.perf_counter()
        if concurrent:
            rs = await asyncio.gather(*(http.post("/v1/chat/completions", json=b) for b in bodies))
        else:
            rs = [await http.post("/v1/chat/completions", json=b) for b in bodies]
        wall = time.perf_counter() - t0
    bad = [r for r in rs if r.status_code != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed: {bad[0].text[:300]}")
    return wall, sum(r.json()["usage"]["completion_tokens"] for r in rs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--load-max-tokens", type=int, default=4)
    ap.add_argument("--queue-size", type=int, default=64, help="the load server's queue (so 429s can happen)")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-batching", action="store_true")
    ap.add_argument("--modes", default="one_at_a_time,batched", help="(b): which sides to run")
    ap.add_argument("--skip-ceiling", action="store_true", help="(b): no raw decode-rate ceiling")
    args = ap.parse_args()
    report: dict = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_load:
            srv = Server(f"{tmp}/load", "--queue-size", str(args.queue_size), "--max-batch", "32")
            try:
                before = rss_mb(srv.proc.pid)
                load = asyncio.run(load_test(srv.url, args.clients, args.duration, args.load_max_tokens))
                load.update(rss_before_mb=round(before, 1), rss_after_mb=round(rss_mb(srv.proc.pid), 1))
            finally:
                srv.close()
            report["load"] = load
            print(f"(a) {args.clients} clients x {args.duration:g} s: answered {load['answered']}, status "
                  f"{load['status']}, other errors {load['other_errors']}, p50 {load['p50_s']:.2f} s, "
                  f"p99 {load['p99_s']:.2f} s, server RSS {load['rss_before_mb']} -> {load['rss_after_mb']} MB",
                  flush=True)
        if not args.skip_batching and not args.skip_ceiling:
            wide, rates = decode_ceiling(args.requests)
            report["ceiling"] = {"decode_tok_s": {str(k): round(v, 1) for k, v in rates.items()},
                                 "best_of_8": round(rates[wide] / rates[8], 2),
                                 "single": round(rates[wide] / rates[1], 2)}
            print(f"(b) raw decode: P=1 {rates[1]:.0f} tok/s, P=8 {rates[8]:.0f} tok/s, P={wide} {rates[wide]:.0f} "
                  f"tok/s: batching Best-of-8 requests can reach at most {report['ceiling']['best_of_8']:.2f}x "
                  f"(requests of one sample: {report['ceiling']['single']:.2f}x)", flush=True)
        if not args.skip_batching:
            bodies = bon_bodies(args.requests, args.max_tokens)
            walls = {}
            for mode in args.modes.split(","):
                # one at a time: no window to wait for (nothing else is coming)
                window = "200" if mode == "batched" else "0"
                srv = Server(f"{tmp}/{mode}", "--max-batch", str(args.requests), "--batch-window-ms", window)
                try:
                    walls[mode] = asyncio.run(post_all(srv.url, bodies, concurrent=mode == "batched"))
                finally:
                    srv.close()
                wall, tokens = walls[mode]
                report[mode] = {"wall_s": round(wall, 2), "tokens": tokens, "tokens_per_s": round(tokens / wall, 3)}
                print(f"(b) {args.requests} x Best-of-8, {mode}: {wall:.1f} s, {tokens} tokens", flush=True)
            if len(walls) == 2:
                (seq, seq_tok), (bat, bat_tok) = walls["one_at_a_time"], walls["batched"]
                ratio = (bat_tok / bat) / (seq_tok / seq)
                report["batching"] = {"requests": args.requests, "budget": 8, "max_tokens": args.max_tokens,
                                      "throughput_ratio": round(ratio, 2)}
                print(f"(b) throughput ratio batched / one at a time: {ratio:.2f}x", flush=True)
    report["loadavg_end"] = os.getloadavg()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
