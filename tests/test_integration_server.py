"""The OpenAI-compatible backend against a real server: llama.cpp's HTTP server (xllamacpp) with the
embedded SmolLM2, started on loopback inside the test, compared with the in-process llama.cpp backend.

Exactness. Both sides run the same llama.cpp server code with the same settings -- one slot, one thread,
unified KV cache, prompt caching -- and receive the same requests in the same order (one sample per
request, one request at a time), so the server sees exactly what the in-process engine sees. Measured
(and asserted): every sample text, answer, verdict and token count is identical. The settings matter:
with several slots requests are batched in arrival order and llama.cpp's results depend on that batch
and KV-cache state. (With n > 1 per request llama.cpp's ``usage`` counts only the first choice; the
OpenAI backend counts each sample's tokens from the ``logprobs`` it asks for instead.)
"""

from __future__ import annotations

import gc
import json
import socket
import urllib.parse

import pytest

from testtime import engine
from testtime.datasets import load_dataset
from testtime.policy import load_policy, resolve_model

pytestmark = pytest.mark.integration

PROBLEMS = load_dataset("arith", limit=6)
SLOTS, CTX, THREADS = 1, 1024, 1


@pytest.fixture(scope="module")
def llama_server():
    """llama.cpp's OpenAI-compatible server on 127.0.0.1 (a free port), stopped when the module ends."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(resolve_model(None))
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.n_parallel = SLOTS
    p.n_ctx = SLOTS * CTX
    p.n_batch = 2048
    p.cpuparams.n_threads = THREADS
    p.cpuparams_batch.n_threads = THREADS
    p.kv_unified = True
    p.cache_prompt = True
    p.warmup = False
    p.verbosity = -1
    p.log_json = False
    server = xllamacpp.Server(p)
    url = server.listening_address
    assert urllib.parse.urlsplit(url).hostname == "127.0.0.1"
    yield {"url": url, "server": server}
    del server
    gc.collect()


def _open(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((parts.hostname, parts.port)) == 0


def config(out, **kw) -> engine.RunConfig:
    base = dict(dataset="arith", strategy="majority", n=4, limit=6, out=str(out), max_tokens=48)
    return engine.RunConfig(**{**base, **kw})


def test_majority_through_the_server_matches_the_in_process_backend(llama_server, tmp_path):
    local_policy = load_policy(None, slots=SLOTS, ctx_per_slot=CTX, threads=THREADS)
    info = local_policy.info
    turn = [{"role": "user", "content": "x"}]
    expected_prompt = local_policy.render_chat(turn)
    try:
        local = engine.run(config(tmp_path / "local"), local_policy, PROBLEMS)
    finally:
        local_policy.close()
    served = load_policy("smollm2", backend="openai", base_urls=[llama_server["url"]], chat_template=info.chat_template,
                         bos_text=info.bos_text, eos_text=info.eos_text, n_params=info.n_params,
                         max_concurrency=SLOTS, max_n_per_request=1, retries=2, backoff_s=0.2)
    try:
        assert served.render_chat(turn) == expected_prompt  # the same prompt text goes to the server
        remote = engine.run(config(tmp_path / "served"), served, PROBLEMS)
    finally:
        served.close()
    rs, ls = remote.summary(), local.summary()
    assert rs["failed"] == 0 and rs["new_generations"] == ls["new_generations"] == 24
    for a, b in zip(local.results, remote.results, strict=True):
        assert [c.text for c in a.trace.candidates] == [c.text for c in b.trace.candidates], a.problem.id
        assert [c.finish_reason for c in a.trace.candidates] == [c.finish_reason for c in b.trace.candidates]
        assert [c.generated_tokens for c in a.trace.candidates] == [c.generated_tokens for c in b.trace.candidates]
        assert (a.trace.answer, a.trace.correct, a.sample_correct) == (b.trace.answer, b.trace.correct,
                                                                     b.sample_correct)
    for key in ("accuracy", "pass@1", "pass@n", "generated_tokens", "prompt_tokens", "cached_prompt_tokens", "flops"):
        assert rs[key] == ls[key], key
    assert ls["accuracy"] > 0  # level 1 problems are solved


def test_cli_backend_openai_against_the_server(llama_server, tmp_path):
    from typer.testing import CliRunner

    from testtime.cli import app

    # a one-slot llama.cpp server takes n=1 per request only (HTTP 400 otherwise)
    args = ["run", "--backend", "openai", "--model", "smollm2", "--base-url", llama_server["url"], "--limit", "2",
            "--n", "2", "--max-tokens", "32", "--policy-option", "max_n_per_request=1", "--out", str(tmp_path),
            "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout.strip().splitlines()[-1])
    assert s["n_problems"] == 2 and s["failed"] == 0 and s["new_generations"] == 4 and s["generated_tokens"] > 0


def test_a_server_that_went_away_is_recorded_per_problem(tmp_path):
    """A server that went away (its port refuses connections) fails every problem, after one request's
    retries (then the circuit breaker), and the run still finishes with each failure recorded. The port is one
    the OS just handed out and nothing listens on (starting and at once destroying an xllamacpp server for this
    deadlocked once in its destructor)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert not _open(url)
    served = load_policy("smollm2", backend="openai", base_urls=url, retries=1, backoff_s=0.0, timeout_s=5.0)
    try:
        res = engine.run(config(tmp_path, limit=2), served, PROBLEMS[:2])
    finally:
        served.close()
    s = res.summary()
    assert s["failed"] == 2 and s["accuracy"] == 0.0
    # the first request spent its 2 attempts and opened the server's circuit breaker; after that (the
    # engine's per-problem reruns included) requests fail at once, and every problem's record says why
    for e in s["failures"].values():
        assert f"circuit open for {url}" in e and "no answer in all its 2 attempts" in e, e
        assert "connection error: ConnectError" in e, e

