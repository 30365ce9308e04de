"""Peers side by side, in one run: the same arith questions, the same chat prompt, temperature 0.7, N samples
each and a majority vote over the final number, through testtime and the tools users pick instead.

Tools (``--only``, in this order):

- ``raw``: the llama.cpp server itself, one chat request per question with ``n=N`` (the floor);
- ``proxy``: ``testtime serve --backend openai`` in front of that server (``tts: majority, budget N``);
- ``embedded``: ``testtime serve`` with its in-process llama.cpp, the default (same request);
- ``optillm``: optillm (its own venv) as a proxy in front of the server, approach ``majority_voting``, k=N;
- ``its_hub``: its_hub's ``its-iaas`` server (its own venv), algorithm ``self-consistency``, budget N;
- ``its_hub_pf``: its_hub's ``ParticleFiltering`` (library, its own venv), budget N particles, with a PRM
  adapter over testtime's arith-check scorer (served by this script over testtime's HTTP scorer protocol).

One llama.cpp server (xllamacpp, the build testtime embeds) on loopback with the embedded SmolLM2 and
``--slots`` slots is started empty before each tool that uses it (so no tool is served from another's
cache) and stopped after it; the embedded tool runs alone. Every tool is driven the same way: the ``openai``
SDK's async client, ``--concurrency`` requests in flight (default 30, like a chat app's users), one chat
request per question whose only message is the user turn (``--prompt``: testtime's zero-shot instruction
then the question, or the bare question). Wall time runs from the first request to the last reply.

One grader for all: each tool's reply is read with testtime's extraction (``--extraction``, strict: answer
markers only) and graded with ``testtime.grading``; the raw floor's N choices are voted with testtime's
majority (math-equivalence groups), the tools vote themselves.

Per tool: wall, wall / floor, completion tokens generated (llama.cpp's own count, ``/metrics``
``tokens_predicted_total``, for every tool behind the server; for the embedded server, which has no such
endpoint, the per-sample counts testtime stored, which come from llama.cpp's per-token entries the same way;
beside it, every sample text the bench can see re-tokenized with the model's tokenizer, as a cross-check),
the tokens the tool reports in ``usage``, accuracy, errors, and the sampling settings the tool sent (read
back from the server's ``/slots`` after the run; the embedded backend's from its request body). By default
the server's own sampling defaults are set to testtime's (top_k off, min_p 0, top_p 1) so that a tool that
sends none draws from the same distribution; ``--server-sampling stock`` keeps llama.cpp's (top_k 40,
min_p 0.05). Peers are installed once each into ``bench/.peers/<name>`` (never into .venv) and reused.

Wall times need an idle machine; token counts and accuracies do not.

    python bench/peers.py [--limit 30] [--n 8] [--concurrency 30] [--max-tokens 384] [--slots 16]
        [--only raw,proxy,embedded,optillm,its_hub,its_hub_pf] [--out runs/peers/peers.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / ".peers"
TOOLS = ("raw", "proxy", "embedded", "optillm", "its_hub", "its_hub_pf")
LABELS = {
    "raw": "raw server, n=N per request (the floor)",
    "proxy": "testtime serve, proxy mode",
    "embedded": "testtime serve, embedded llama.cpp (default)",
    "optillm": "optillm majority_voting",
    "its_hub": "its_hub SelfConsistency (its-iaas)",
    "its_hub_pf": "its_hub ParticleFiltering + arith-check",
}
# the peers' pinned releases, each in its own venv; torch first: its CPU wheel lies on this machine's disk,
# and optillm's unpinned torch would otherwise pull a multi-GB CUDA build
PEER_PACKAGES = {
    "optillm": ("torch==2.13.0", "optillm==0.4.0"),
    "its_hub": ("its-hub[iaas]==1.2.0",),
}
TOOL_PEER = {"optillm": "optillm", "its_hub": "its_hub", "its_hub_pf": "its_hub"}
SERVED_MODEL = "smollm2"  # the name clients send to the llama.cpp server (it serves one model, any name)
# testtime's sampling beyond temperature (policy.llamacpp / policy.openai_compat send these)
MATCHED_SAMPLING = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "n_predict", "max_tokens")


class Missing(Exception):
    """A peer could not be installed or started here: its row says why."""


# -- what every tool is asked, and the one grader -----------------------------------------------------------


def user_turn(question: str, prompt: str) -> str:
    """The chat's only message: testtime's zero-shot user turn (its instruction, a blank line, the question)
    or the bare question."""
    if prompt == "question":
        return question
    from testtime.policy.prompts import INSTRUCTION

    return f"{INSTRUCTION}\n\n{question}"


def vote(texts: Sequence[str], kind: str, extraction: str) -> int | None:
    """The index of the sample the majority vote returns (testtime's: final answers under ``extraction``,
    math-equivalent answers grouped, ties to the answer seen first), None when no sample states one."""
    from testtime.extraction import extract_answers
    from testtime.search.selection import MAJORITY, Pool, answer_groups, group_index

    answers = extract_answers(list(texts), extraction)
    groups = answer_groups(answers, kind)
    return Pool.of(group_index(groups, len(answers))).choose(MAJORITY)


def grade_replies(replies: Sequence[str | None], problems: Sequence[Any], extraction: str
                  ) -> list[tuple[str | None, bool]]:
    """(extracted answer, correct) per reply; a missing reply (an error) is unanswered and wrong."""
    from testtime.grading import grade_outputs

    idx = [i for i, r in enumerate(replies) if r is not None]
    graded = grade_outputs([(replies[i], problems[i].answer, problems[i].kind) for i in idx], extraction)
    out: list[tuple[str | None, bool]] = [(None, False)] * len(replies)
    for i, g in zip(idx, graded, strict=True):
        out[i] = g
    return out


@dataclass
class Reply:
    """One question's answer from one tool, as its client saw it."""

    text: str | None = None
    reported_tokens: int | None = None  # the tool's usage.completion_tokens (None: it sent no usage)
    error: str | None = None
    samples: list[str] | None = None  # the raw floor's N choice texts (the bench votes over them)


@dataclass
class ToolResult:
    tool: str
    wall_s: float
    replies: list[Reply]
    generated: int | None  # completion tokens generated, the engine's own count (see the module docstring)
    generated_by: str  # how `generated` was counted
    retokenized: int | None = None  # the sample texts the bench saw, re-tokenized (None: it saw none)
    sent: list[dict[str, Any]] = field(default_factory=list)  # distinct sampling settings the tool sent
    notes: list[str] = field(default_factory=list)  # what the tool could not do
    version: str | None = None
    batches: dict[str, float] | None = None  # testtime serve: engine runs (batches) and their mean size


def row(res: ToolResult, graded: list[tuple[str | None, bool]], floor_wall: float | None) -> dict[str, Any]:
    """The table row and JSON record of one tool."""
    counts = [r.reported_tokens for r in res.replies if r.error is None and r.reported_tokens is not None]
    reported = sum(counts) if counts else None  # None: no reply carried usage (not zero tokens)
    missing_usage = sum(1 for r in res.replies if r.error is None and r.reported_tokens is None)
    correct = sum(ok for _, ok in graded)
    n = len(res.replies)
    return {
        "tool": res.tool, "label": LABELS[res.tool], "version": res.version,
        "wall_s": round(res.wall_s, 2),
        "vs_floor": round(res.wall_s / floor_wall, 3) if floor_wall else None,
        "generated_tokens": res.generated, "generated_by": res.generated_by,
        "retokenized_tokens": res.retokenized,
        "reported_tokens": reported, "missing_usage": missing_usage,
        # generated / reported: how many times the tool's usage undercounts what it made the engine generate
        "undercount": round(res.generated / reported, 2) if res.generated and reported else None,
        "correct": correct, "questions": n, "accuracy": round(correct / n, 4) if n else None,
        "errors": sum(1 for r in res.replies if r.error is not None),
        "error_examples": sorted({r.error for r in res.replies if r.error})[:3],
        "unanswered": sum(1 for (a, _), r in zip(graded, res.replies, strict=True) if r.error is None and a is None),
        "sent": res.sent, "notes": res.notes, "batches": res.batches,
        "answers": [a for a, _ in graded],
    }


def sent_text(sent: list[dict[str, Any]]) -> str:
    """The sampling settings in one cell: 't=0.7 top_k=-1 top_p=1 min_p=0 n=8' (several: joined by ' | ')."""
    def one(d: dict[str, Any]) -> str:
        return " ".join(f"{k}={d[k]:g}" if isinstance(d[k], float) else f"{k}={d[k]}" for k in d)

    return " | ".join(one(d) for d in sent) or "?"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The printed comparison (markdown)."""
    lines = ["| tool | wall s | / floor | tokens generated | tokens reported | accuracy | errors | sent |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['vs_floor']:.2f}x" if r["vs_floor"] is not None else "-"
        gen = f"{r['generated_tokens']:,}" if r["generated_tokens"] is not None else "?"
        rep = f"{r['reported_tokens']:,}" if r["reported_tokens"] is not None else "none"
        if r["missing_usage"]:
            rep += f" ({r['missing_usage']} without usage)"
        version = f" {r['version']}" if r["version"] else ""
        lines.append(f"| {r['label']}{version} | {r['wall_s']:.1f} | {ratio} | {gen} | {rep} | "
                     f"{r['correct']}/{r['questions']} | {r['errors']} | {sent_text(r['sent'])} |")
    return "\n".join(lines)


def prometheus_value(text: str, name: str) -> float | None:
    """The value of an unlabelled Prometheus sample ``name`` (llama.cpp writes ``llamacpp:name``)."""
    m = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+([-+0-9.eE]+|nan)\s*$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def distinct_sampling(slots: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct sampling settings of the slots that ran a task (llama.cpp's ``/slots`` entries)."""
    seen: list[dict[str, Any]] = []
    for s in slots:
        params = s.get("params") or {}
        if not s.get("id_task", -1) >= 0 and not params.get("n_predict"):
            continue
        d = {k: params[k] for k in SAMPLING_KEYS if k in params}
        if d and d not in seen:
            seen.append(d)
    return seen


# -- processes ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> None:
    import httpx

    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))[:200]} exited {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-1500:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{url} not up after {timeout_s:.0f} s: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.2)


class Proc:
    """A subprocess on a loopback port, its output in a log file; stopped (SIGTERM, then SIGKILL) on close."""

    def __init__(self, cmd: Sequence[str], health: str, log: Path, env: dict[str, str] | None = None,
                 port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        args = [str(c).replace("{port}", str(self.port)) for c in cmd]
        with log.open("w") as fh:
            self.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                         start_new_session=True)
        try:
            wait_http(self.url + health, self.proc, log)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def llama_server(tmp: Path, args: argparse.Namespace, name: str) -> Proc:
    """A fresh llama.cpp server (empty caches) in its own process (``--inner llama-server``)."""
    cmd = [sys.executable, __file__, "--inner", "llama-server", "--port", "{port}", "--slots", str(args.slots),
           "--ctx-per-slot", str(args.ctx_per_slot), "--server-sampling", args.server_sampling]
    return Proc(cmd, "/health", tmp / f"llama-{name}.log")


def inner_llama_server(args: argparse.Namespace) -> None:
    """Runs in the server's own process until SIGTERM."""
    import xllamacpp

    from testtime.backends.llamacpp import server_params
    from testtime.policy import resolve_model

    # the embedded backend's threads and context per slot (server_params); the rest is llama.cpp's server
    p = server_params(resolve_model(None), args.slots, args.ctx_per_slot, None, False)
    p.hostnames, p.port = ["127.0.0.1"], args.port
    p.endpoint_metrics = True  # tokens_predicted_total: every sample of every request, children included
    p.endpoint_slots = True  # each slot's last task's sampling settings
    if args.server_sampling == "matched":
        p.sampling.top_k, p.sampling.top_p, p.sampling.min_p = (MATCHED_SAMPLING[k] for k in ("top_k", "top_p",
                                                                                               "min_p"))
    server = xllamacpp.Server(p)
    print(f"listening {server.listening_address}", flush=True)
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        time.sleep(0.2)
    del server


def server_counts(url: str) -> tuple[int | None, list[dict[str, Any]]]:
    """(tokens llama.cpp generated since it started, distinct sampling settings its slots ran)."""
    import httpx

    metrics = httpx.get(url + "/metrics", timeout=30).text
    total = prometheus_value(metrics, "llamacpp:tokens_predicted_total")
    slots = httpx.get(url + "/slots", timeout=30).json()
    return (None if total is None else int(total)), distinct_sampling(slots if isinstance(slots, list) else [])


def retokenize(url: str, texts: Sequence[str]) -> int:
    """Tokens in the texts by the model's own tokenizer (the server's /tokenize, no special tokens)."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        return sum(len(http.post("/tokenize", json={"content": t, "add_special": False}).json()["tokens"])
                   for t in texts if t)


# -- driving a tool -----------------------------------------------------------------------------------------


async def drive(ask: Callable[[Any], Any], problems: Sequence[Any], concurrency: int) -> tuple[list[Reply], float]:
    """``ask(problem)`` for every problem, ``concurrency`` in flight; (replies in order, wall seconds)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Any) -> Reply:
        async with gate:
            try:
                return await ask(p)
            except Exception as e:  # one failed request is a row's error, not the run's end
                return Reply(error=f"{type(e).__name__}: {str(e)[:200]}")

    t0 = time.perf_counter()
    replies = await asyncio.gather(*(one(p) for p in problems))
    return list(replies), time.perf_counter() - t0


def sdk(url: str) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=url + "/v1", api_key=os.environ.get("OPENAI_API_KEY", "none"), max_retries=0,
                       timeout=7200)


def messages_of(p: Any, args: argparse.Namespace) -> list[dict[str, str]]:
    return [{"role": "user", "content": user_turn(p.question, args.prompt)}]


def usage_tokens(resp: Any) -> int | None:
    u = getattr(resp, "usage", None)
    return None if u is None or u.completion_tokens is None else int(u.completion_tokens)


def chat_tool(url: str, model: str, args: argparse.Namespace, extra: dict[str, Any] | None = None,
              **fields: Any) -> Callable[[Any], Any]:
    """A tool that answers one chat request with one reply (every tool but the raw floor)."""
    client = sdk(url)

    async def ask(p: Any) -> Reply:
        r = await client.chat.completions.create(model=model, messages=messages_of(p, args),
                                                 temperature=args.temperature, max_tokens=args.max_tokens,
                                                 extra_body=extra, **fields)
        return Reply(r.choices[0].message.content, usage_tokens(r))

    return ask


def run_raw(tmp: Path, problems: list[Any], args: argparse.Namespace) -> ToolResult:
    srv = llama_server(tmp, args, "raw")
    try:
        client = sdk(srv.url)

        async def ask(p: Any) -> Reply:
            r = await client.chat.completions.create(
                model=SERVED_MODEL, messages=messages_of(p, args), n=args.n, temperature=args.temperature,
                max_tokens=args.max_tokens, extra_body=dict(MATCHED_SAMPLING))
            texts = [c.message.content or "" for c in sorted(r.choices, key=lambda c: c.index)]
            if len(texts) != args.n:
                return Reply(error=f"{len(texts)} choices for n={args.n}", reported_tokens=usage_tokens(r))
            best = vote(texts, p.kind, args.extraction)
            return Reply(texts[0 if best is None else best], usage_tokens(r), samples=texts)

        replies, wall = asyncio.run(drive(ask, problems, args.concurrency))
        generated, sent = server_counts(srv.url)
        texts = [t for r in replies for t in r.samples or []]
        notes = ["llama.cpp's usage.completion_tokens counts the first of the n choices only"]
        return ToolResult("raw", wall, replies, generated, "llama.cpp /metrics", retokenize(srv.url, texts),
                          [{**d, "n": args.n} for d in sent], notes, xllamacpp_version())
    finally:
        srv.close()


def store_texts(out: Path) -> tuple[int, list[str]]:
    """(generated tokens testtime stored, every stored sample's text) of a fresh serve store."""
    import sqlite3

    db = sqlite3.connect(str(out / "testtime.sqlite"))
    try:
        rows = db.execute("SELECT generated_tokens, text FROM generations").fetchall()
    finally:
        db.close()
    return sum(r[0] for r in rows), [r[1] for r in rows]


def serve_batches(url: str) -> dict[str, float] | None:
    """How many engine runs (cross-request batches) testtime serve made, and their mean size (its /metrics)."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    count, total = (prometheus_value(text, f"testtime_batch_size_{k}") for k in ("count", "sum"))
    if not count or total is None:
        return None
    return {"batches": int(count), "mean_size": round(total / count, 2)}


def testtime_serve(tmp: Path, name: str, *backend: str) -> Proc:
    exe = Path(sys.executable).with_name("testtime")
    cmd = [str(exe), "serve", "--port", "{port}", "--out", str(tmp / name), "--deadline-s", "86400", *backend]
    return Proc(cmd, "/health", tmp / f"testtime-{name}.log")


def tts_body(args: argparse.Namespace) -> dict[str, Any]:
    return {"tts": {"strategy": "majority", "budget": args.n}}


def testtime_version() -> str:
    from importlib.metadata import version

    return version("testtime")


def xllamacpp_version() -> str:
    from importlib.metadata import version

    return f"llama.cpp (xllamacpp {version('xllamacpp')})"


def run_proxy(tmp: Path, problems: list[Any], args: argparse.Namespace) -> ToolResult:
    srv = llama_server(tmp, args, "proxy")
    try:
        tt = testtime_serve(tmp, "proxy", "--backend", "openai", "--base-url", srv.url, "--model", SERVED_MODEL)
        try:
            replies, wall = asyncio.run(drive(chat_tool(tt.url, "testtime", args, tts_body(args)), problems,
                                              args.concurrency))
            batches = serve_batches(tt.url)
        finally:
            tt.close()
        generated, sent = server_counts(srv.url)
        stored, texts = store_texts(tmp / "proxy")
        notes = [] if stored == generated else [f"testtime stored {stored:,} generated tokens, llama.cpp counted "
                                                f"{generated:,}"]
        return ToolResult("proxy", wall, replies, generated, "llama.cpp /metrics", retokenize(srv.url, texts), sent,
                          notes, testtime_version(), batches)
    finally:
        srv.close()


def embedded_sent() -> list[dict[str, Any]]:
    """What the in-process llama.cpp backend sends for a sampled request (its own request body)."""
    from types import SimpleNamespace

    from testtime.policy.base import GenerationRequest, SamplingParams
    from testtime.policy.llamacpp import LlamaCppPolicy
    from testtime.serve.settings import ServeConfig

    cfg = ServeConfig()
    req = GenerationRequest("", 8, 0, SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                                     top_p=cfg.top_p))
    body = LlamaCppPolicy._body(SimpleNamespace(turn_stops=()), req, 0, 8)  # type: ignore[arg-type]
    return [{k: body[k] for k in ("temperature", "top_k", "top_p", "min_p") if k in body}]


def run_embedded(tmp: Path, problems: list[Any], args: argparse.Namespace) -> ToolResult:
    tt = testtime_serve(tmp, "embedded")
    try:
        replies, wall = asyncio.run(drive(chat_tool(tt.url, "testtime", args, tts_body(args)), problems,
                                          args.concurrency))
        batches = serve_batches(tt.url)
    finally:
        tt.close()
    stored, texts = store_texts(tmp / "embedded")
    srv = llama_server(tmp, args, "tokenizer")  # only its tokenizer: the texts' cross-check count
    try:
        retok = retokenize(srv.url, texts)
    finally:
        srv.close()
    sent = [{**d, "temperature": args.temperature, "n": args.n} for d in embedded_sent()]
    return ToolResult("embedded", wall, replies, stored, "testtime's store (llama.cpp per-token entries)", retok,
                      sent, [], testtime_version(), batches)


# -- the peers ----------------------------------------------------------------------------------------------


def peer_python(name: str) -> Path:
    """The peer's venv python, installing its pinned packages the first time (``bench/.peers/<name>``)."""
    venv = PEERS_DIR / name
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    want = " ".join(PEER_PACKAGES[name])
    if py.exists() and stamp.is_file() and stamp.read_text().strip() == want:
        return py
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log = venv.with_suffix(".log")
    print(f"installing {want} into {venv.relative_to(ROOT)} (once; log {log.relative_to(ROOT)})", flush=True)
    with log.open("w") as fh:
        steps = [[sys.executable, "-m", "venv", "--clear", str(venv)]]
        steps += [[str(py), "-m", "pip", "install", "--quiet", pkg] for pkg in PEER_PACKAGES[name]]
        for cmd in steps:
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise Missing(f"{' '.join(cmd[-1:])} failed to install: {' | '.join(tail)}")
    stamp.write_text(want + "\n")
    return py


def peer_version(py: Path, dist: str) -> str:
    got = subprocess.run([str(py), "-c", f"from importlib.metadata import version; print(version({dist!r}))"],
                         capture_output=True, text=True)
    return got.stdout.strip() or "?"


def run_peer_proxy(tmp: Path, problems: list[Any], args: argparse.Namespace, name: str, dist: str,
                   command: Callable[[Path, str], list[Any]], health: str, extra: dict[str, Any],
                   env: dict[str, str] | None = None, configure: Callable[[str, str], None] | None = None
                   ) -> ToolResult:
    """A peer run as a proxy in front of a fresh llama.cpp server: `command(python, server url)` starts it,
    `configure(proxy url, server url)` (if given) sets it up, then every question is asked through it."""
    py = peer_python(name)
    srv = llama_server(tmp, args, name)
    try:
        px = Proc(command(py, srv.url), health, tmp / f"{name}.log", env=env)
        try:
            if configure is not None:
                configure(px.url, srv.url)
            ask = chat_tool(px.url, SERVED_MODEL, args, extra)
            replies, wall = asyncio.run(drive(ask, problems, args.concurrency))
        finally:
            px.close()
        generated, sent = server_counts(srv.url)
        return ToolResult(name, wall, replies, generated, "llama.cpp /metrics", None, sent,
                          peer_notes(replies, generated, args), f"{name} {peer_version(py, dist)}")
    finally:
        srv.close()


def run_optillm(tmp: Path, problems: list[Any], args: argparse.Namespace) -> ToolResult:
    return run_peer_proxy(
        tmp, problems, args, "optillm", "optillm",
        lambda py, url: [py.with_name("optillm"), "--base-url", url + "/v1", "--port", "{port}",
                         "--approach", "majority_voting", "--host", "127.0.0.1"],
        "/health", {"k": args.n}, env={"OPENAI_API_KEY": "none", "OPTILLM_API_KEY": ""})


def peer_notes(replies: list[Reply], generated: int | None, args: argparse.Namespace) -> list[str]:
    """What a peer's replies show it could not do."""
    notes = []
    errors = [r for r in replies if r.error]
    if errors:
        notes.append(f"{len(errors)} failed requests (first: {errors[0].error})")
    answered = [r for r in replies if r.error is None]
    if answered and all(r.reported_tokens is None for r in answered):
        notes.append("no usage in its replies")
    reported = sum(r.reported_tokens or 0 for r in answered)
    if generated and reported and generated / reported > 1.5:
        notes.append(f"usage undercounts the tokens generated {generated / reported:.1f}x")
    if generated is not None and answered:
        per_answer = generated / len(answered)
        notes.append(f"{per_answer:.0f} tokens generated per answer for budget {args.n}")
    return notes


def run_its_hub(tmp: Path, problems: list[Any], args: argparse.Namespace) -> ToolResult:
    import httpx

    def configure(proxy: str, server: str) -> None:
        config = {"endpoint": server + "/v1", "api_key": "none", "model": SERVED_MODEL,
                  "alg": "self-consistency", "budget": args.n, "temperature": args.temperature,
                  "regex_patterns": [ANSWER_REGEX]}
        r = httpx.post(proxy + "/configure", json=config, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"its-iaas /configure: {r.status_code} {r.text[:300]}")

    return run_peer_proxy(
        tmp, problems, args, "its_hub", "its_hub",
        lambda py, url: [py.with_name("its-iaas"), "--host", "127.0.0.1", "--port", "{port}"],
        "/docs", {"budget": args.n}, configure=configure)


# the final number its_hub's self-consistency votes over (its projection regex), as testtime's prompt asks
ANSWER_REGEX = r"[Tt]he (?:final )?answer is:?\s*\$?(-?[\d,]*\.?\d+)"


def run_its_hub_pf(tmp: Path, problems: list[Any], args: argparse.Namespace) -> ToolResult:
    from testtime.reward import load_scorer
    from testtime.reward.http import serve_scorer

    py = peer_python("its_hub")
    srv = llama_server(tmp, args, "its_hub_pf")
    scorer_http, scorer_url = serve_scorer(load_scorer("arith-check"))
    try:
        job = {"endpoint": srv.url + "/v1", "model": SERVED_MODEL, "budget": args.n, "temperature": args.temperature,
               "max_tokens": args.max_tokens, "concurrency": args.concurrency, "prm_url": scorer_url,
               "prm_model": "arith-check", "questions": [user_turn(p.question, args.prompt) for p in problems]}
        done = subprocess.run([str(py), str(Path(__file__).with_name("peers_its_hub_pf.py"))],
                              input=json.dumps(job), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"its_hub particle filtering failed: {done.stderr.strip()[-1500:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        replies = [Reply(r.get("text"), r.get("completion_tokens"), r.get("error")) for r in out["replies"]]
        generated, sent = server_counts(srv.url)
        return ToolResult("its_hub_pf", out["wall_s"], replies, generated, "llama.cpp /metrics", None, sent,
                          [*out.get("notes", []), *peer_notes(replies, generated, args)],
                          f"its_hub {peer_version(py, 'its_hub')}")
    finally:
        scorer_http.shutdown()
        scorer_http.server_close()
        srv.close()


RUNNERS: dict[str, Callable[[Path, list[Any], argparse.Namespace], ToolResult]] = {
    "raw": run_raw, "proxy": run_proxy, "embedded": run_embedded, "optillm": run_optillm,
    "its_hub": run_its_hub, "its_hub_pf": run_its_hub_pf,
}


def parse_only(value: str) -> list[str]:
    tools = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        raise argparse.ArgumentTypeError(f"unknown tool {', '.join(unknown) or '(none)'} (tools: {', '.join(TOOLS)})")
    return tools


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=30, help="arith questions (load_dataset('arith', limit=...))")
    ap.add_argument("--n", type=int, default=8, help="samples per question (budget / k)")
    ap.add_argument("--concurrency", type=int, default=30, help="requests in flight, the same for every tool")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=384, help="per sample (testtime's default)")
    ap.add_argument("--slots", type=int, default=16, help="the llama.cpp server's parallel slots")
    ap.add_argument("--ctx-per-slot", type=int, default=4096)
    ap.add_argument("--prompt", choices=("instruction", "question"), default="instruction",
                    help="the user turn: testtime's zero-shot instruction + the question, or the bare question")
    ap.add_argument("--extraction", choices=("strict", "fallback"), default="strict",
                    help="the one grader's answer extraction (strict: markers only, testtime serve's default)")
    ap.add_argument("--server-sampling", choices=("matched", "stock"), default="matched",
                    help="the llama.cpp server's own sampling defaults: testtime's, or llama.cpp's")
    ap.add_argument("--only", type=parse_only, default=list(TOOLS), help=f"tools, in order ({','.join(TOOLS)})")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "peers" / "peers.json")
    ap.add_argument("--inner", choices=("llama-server",), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        inner_llama_server(args)
        return {}
    from testtime.datasets import load_dataset

    problems = load_dataset("arith", limit=args.limit)
    report: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("inner", "port", "out")},
        "prompt_example": messages_of(problems[0], args) if problems else None,
        "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "tools": {},
    }
    rows: list[dict[str, Any]] = []
    floor: float | None = None
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp_:
        tmp = Path(tmp_)
        for tool in args.only:
            print(f"{LABELS[tool]}: running", flush=True)
            try:
                res = RUNNERS[tool](tmp, problems, args)
            except Missing as e:
                print(f"{LABELS[tool]}: skipped, {e}", flush=True)
                report["tools"][tool] = {"skipped": str(e)}
                continue
            except Exception as e:  # one tool's failure does not hide the others' rows
                print(f"{LABELS[tool]}: FAILED: {type(e).__name__}: {str(e)[-1500:]}", flush=True)
                report["tools"][tool] = {"failed": f"{type(e).__name__}: {str(e)[-1500:]}"}
                continue
            if tool == "raw":
                floor = res.wall_s
            graded = grade_replies([r.text for r in res.replies], problems, args.extraction)
            rows.append(row(res, graded, floor))
            report["tools"][tool] = {**rows[-1], "replies": [asdict(r) for r in res.replies]}
            print(f"{LABELS[tool]}: {res.wall_s:.1f} s, {rows[-1]['correct']}/{len(problems)} correct, "
                  f"{rows[-1]['errors']} errors", flush=True)
    report["loadavg_end"] = os.getloadavg()
    report["table"] = table(rows)
    print(f"\n{len(problems)} arith questions x {args.n} samples, majority vote, temperature {args.temperature}, "
          f"{args.concurrency} concurrent requests, llama.cpp {args.slots} slots ({os.cpu_count()} CPUs, load "
          f"{report['loadavg_start'][0]:.2f} at start)\n")
    print(report["table"])
    for r in rows:
        for note in r["notes"]:
            print(f"- {r['label']}: {note}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
