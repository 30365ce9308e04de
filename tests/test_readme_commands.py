"""Every command README.md or a docs page shows is run: a documented command that crashes is the worst bug a
newcomer meets.

The fenced shell blocks of README.md and of every page of the documentation site (docs/*.md, in mkdocs.yml's
nav order; tests/test_docs.py checks the nav lists every page) are parsed (``\\`` continuations joined,
``# comments`` dropped, ``&&`` and ``;`` split into commands). Each command is one of:

- a ``testtime`` command (``.venv/bin/testtime ...`` or ``testtime ...``): run for real by
  ``test_readme_block`` (integration), one test per README block, its commands in README order in one tmp
  working directory, so the block's relative paths (``runs/...``, the default ``--out runs``) land there and
  later commands read what earlier ones wrote (reruns replay from that store). It is shrunk by ``shrink``,
  a handful of generic rewrites listed there (``--limit 2``, budgets capped at 4, ...);
- on ``SKIP`` (it cannot run on this machine: a GPU, a remote server, a missing checkpoint), keyed by a
  distinctive substring, with its reason;
- out of scope by its program (``OUT_OF_SCOPE``: ``make``, ``pip``, ``python bench/...``), with the reason.

``test_every_readme_command_is_run_or_listed`` fails when a README command is none of these, and
``test_skip_list_does_not_rot`` when a ``SKIP`` / ``CHECKS`` entry matches no README command. Inputs the README
assumes exist (``my.jsonl``, ``shots.jsonl``, ``pairs.jsonl``, a store to check) are written by ``prepare``.
Each command must exit 0; with ``--json`` its last stdout line must be JSON carrying the keys the README
documents for it (``json_keys``), and ``CHECKS`` adds what the README promises of particular commands (the
files they write, the datasets ``data list`` names, replay from the store).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TESTTIME = Path(sys.executable).with_name("testtime")  # the venv's console script, i.e. .venv/bin/testtime

LIMIT = 2  # problems per command
CAP = 4  # samples / budget / n_max at most (a multiple of the README's beam width M = 4)
TIMEOUT_S = 420  # one command at most; the whole README runs in a few minutes on 2 cores

# -- parsing -------------------------------------------------------------------------------------------


@dataclass
class Command:
    argv: list[str]
    text: str  # the command as the README writes it (one logical line, continuations joined)
    section: str  # the heading above its block
    block: int  # which fenced block (0-based, counted over README.md and then the docs pages)
    source: str = "README.md"  # the file that shows it


@dataclass
class Block:
    index: int
    section: str
    commands: list[Command] = field(default_factory=list)
    source: str = "README.md"

    @property
    def id(self) -> str:
        where = Path(self.source).stem.lower() + "-" + self.section.lower()
        return f"{self.index:02d}-" + re.sub(r"[^a-z0-9]+", "-", where).strip("-")[:48]


SEPARATORS = {"&&", ";"}
UNSUPPORTED = {"|", "||", "&", ">", ">>", "<", "(", ")"}  # a README line using these needs a new rule here


def split_commands(line: str) -> list[list[str]]:
    """One logical shell line -> its commands (split at ``&&`` and ``;``), each as argv; ``# comments`` dropped."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    tokens = list(lex)
    bad = [t for t in tokens if t in UNSUPPORTED]
    assert not bad, f"README line uses shell syntax this test does not model ({bad}): {line}"
    commands, current = [], []
    for t in tokens:
        if t in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(t)
    commands.append(current)
    return [c for c in commands if c]


def parse_blocks(markdown: str, source: str = "README.md", first: int = 0) -> list[Block]:
    """The shell code blocks (```bash / sh / shell / console; indented ones too) of one file, in its order,
    numbered from ``first``."""
    blocks: list[Block] = []
    section, fence, body, index = "", None, [], first
    for raw in markdown.splitlines():
        line = raw.strip()
        if fence is None:
            if m := re.match(r"(`{3,})\s*(\w*)", line):
                fence, lang, body = m.group(1), m.group(2), []
            elif m := re.match(r"#+\s+(.*)", raw):
                section = m.group(1).strip()
            continue
        if line.startswith(fence):
            if lang in ("bash", "sh", "shell", "console"):
                block = Block(index, section, source=source)
                text = "\n".join(body).replace("\\\n", " ")
                for logical in text.splitlines():
                    logical = logical.strip()
                    if logical.startswith("$ "):
                        logical = logical[2:]
                    if not logical or logical.startswith("#"):
                        continue
                    for argv in split_commands(logical):
                        block.commands.append(Command(argv, " ".join(argv), section, index, source))
                blocks.append(block)
            index += 1
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{source}: an unclosed code fence"
    return blocks


# README.md, then the documentation pages in their site order (mkdocs.yml's nav, which tests/test_docs.py checks
# lists every page): one newcomer reading top to bottom, one working directory.
DOCS = ROOT / "docs"


def doc_files() -> list[Path]:
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    return [README, *(DOCS / page for entry in nav for page in entry.values())]


def readme_blocks() -> list[Block]:
    """The shell blocks of README.md and every docs page, numbered across them in reading order."""
    blocks: list[Block] = []
    for path in doc_files():
        first = max((b.index for b in blocks), default=-1) + 1
        blocks += parse_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)), first)
    return blocks


def is_testtime(argv: list[str]) -> bool:
    return Path(argv[0]).name == "testtime"


# -- what is not run, and why --------------------------------------------------------------------------

# Commands that cannot run on this machine, keyed by a substring distinctive of the command (matched
# against the argv joined by spaces). Every entry must match at least one README command.
SKIP: dict[str, str] = {
    "--base-url http://10.0.0.5:8000": "a remote OpenAI-compatible server at 10.0.0.5/.6 (none here; "
                                       "tests/test_integration_server.py drives the openai backend locally)",
    "hf:/models/Qwen2.5-Math-PRM-7B": "a 7B PRM checkpoint in /models, absent here (no model hub)",
    "device=cuda": "a CUDA GPU and a PRM checkpoint in /models",
    "recipes/paper/llama3.2-1b-math500.yaml": "a vLLM sweep on an 80 GB GPU (tests/test_recipes_paper.py checks "
                                              "the recipe and the command)",
    "runs/paper/llama3.2-1b-math500/sweep-paper-llama3.2-1b-math500.json":
        "reports the vLLM sweep of the command before it (checked by tests/test_recipes_paper.py)",
}

# Programs other than testtime, with why this test does not run them. A README command whose program is in
# neither list fails test_every_readme_command_is_run_or_listed.
OUT_OF_SCOPE: dict[str, str] = {
    "make": "make targets build the venv and run long jobs (demo, sweep-demo: 55 min, probe: 70 min) or the "
            "suite itself; not a testtime command",
    "pip": "installs packages (no network here); the venv has the extras",
    "python bench/": "benchmarks, minutes each; bench/gpu_check.py --shape tiny is run by tests/test_gpu_check.py",
    ".venv/bin/mkdocs": "the documentation site: `build --strict` is run by tests/test_docs.py; `serve` is that "
                        "build behind a local web server",
    "curl": "sent by this test itself (httpx) to the `testtime serve` started just before it in the same block",
}


def out_of_scope(argv: list[str]) -> str | None:
    text = " ".join(argv)
    return next((why for prog, why in OUT_OF_SCOPE.items() if text == prog or text.startswith(prog + " ")
                 or (prog.endswith("/") and text.startswith(prog))), None)


def skip_reason(cmd: Command) -> str | None:
    hits = [why for key, why in SKIP.items() if key in cmd.text]
    assert len(hits) <= 1, f"{cmd.text}: several SKIP entries match"
    return hits[0] if hits else None


def runnable(block: Block) -> list[Command]:
    return [c for c in block.commands if is_testtime(c.argv) and skip_reason(c) is None]


# -- shrinking a command -------------------------------------------------------------------------------


def _command_options() -> dict[tuple[str, ...], set[str]]:
    """testtime's (sub)commands -> the options each takes, read from the typer app itself."""
    import typer

    from testtime.cli import app

    out: dict[tuple[str, ...], set[str]] = {}

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))
        else:
            out[path] = {o for p in cmd.params for o in p.opts}

    walk(typer.main.get_command(app), ())
    return out


def subcommand(argv: list[str], options: dict[tuple[str, ...], set[str]]) -> tuple[str, ...]:
    for k in (2, 1):
        if tuple(argv[1:1 + k]) in options:
            return tuple(argv[1:1 + k])
    raise AssertionError(f"{' '.join(argv)}: not a testtime command")


@dataclass
class Shrunk:
    argv: list[str]
    renamed: dict[str, str]  # text that later commands of the block must read differently (file names)


def shrink(argv: list[str], options: dict[tuple[str, ...], set[str]], renamed: dict[str, str] | None = None,
           port: int | None = None, cwd: Path | None = None) -> Shrunk:
    """A README testtime command made cheap, by these rewrites only:

    1. the program is this venv's testtime (the README's ``.venv/bin/testtime`` or ``testtime``);
    2. a literal ``...`` (the README's "your run's options") is dropped;
    3. ``--limit N`` and a sweep's ``--set limit=N`` become 2; a command whose subcommand takes ``--limit``
       (a sweep: ``--set limit``) and gives none gets it;
    4. ``--n``, ``--budget``, ``--n-max`` and a sweep's ``--set n_max=`` are capped at 4, a sweep's
       ``--set budgets=[...]`` keeps its budgets up to 4 (a recipe's own budgets are left alone: a command
       that sets ``n_max`` below them fails here as it fails as written); ``--m`` at the capped ``--n``;
       a sampling ``run`` (any strategy but ``cot`` and ``optimal``) without ``--n`` gets ``--n 4``;
    5. file names that carry a shrunk limit (``prm label`` writes ``...-n150-...jsonl`` for ``--limit 150``)
       are renamed in the block's later commands, and a glob is expanded as the shell would (cwd-relative);
    6. ``serve`` gets ``--port`` a free port (README: 8000), and URLs on 127.0.0.1:8000 point at it.
    Relative paths (``--out``, ``runs/...``) stay: the test runs the block in a tmp working directory.
    """
    renamed = dict(renamed or {})
    sub = subcommand(argv, options)
    takes = options[sub]
    out = [str(TESTTIME)]
    rest = [a for a in argv[1:] if a != "..."]
    for old, new in renamed.items():
        rest = [a.replace(old, new) for a in rest]
    has_limit = False
    i = 0
    while i < len(rest):
        a = rest[i]
        value = rest[i + 1] if i + 1 < len(rest) else None
        if a in ("--limit", "--n", "--budget", "--n-max", "--m") and value is not None and value.isdigit():
            n = int(value)
            if a == "--limit":
                has_limit = True
                new = min(n, LIMIT)
                if new != n:
                    renamed[f"-n{n}-"] = f"-n{new}-"
            elif a == "--m":
                new = min(n, CAP)
            else:
                new = min(n, CAP)
            out += [a, str(new)]
            i += 2
            continue
        if a == "--set" and value is not None and (m := re.fullmatch(r"(limit|n_max)=(\d+)", value)):
            has_limit |= m.group(1) == "limit"
            out += [a, f"{m.group(1)}={min(int(m.group(2)), LIMIT if m.group(1) == 'limit' else CAP)}"]
            i += 2
            continue
        if a == "--set" and value is not None and (m := re.fullmatch(r"budgets=\[([\d,\s]*)\]", value)):
            kept = [b for b in (int(x) for x in m.group(1).split(",") if x.strip()) if b <= CAP]
            out += [a, f"budgets={kept}"]
            i += 2
            continue
        if port is not None:
            a = a.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        if any(c in a for c in "*?[") and "/" in a and not a.startswith(("-", "{", "[")):
            matches = sorted(glob.glob(a, root_dir=cwd))
            out += matches or [a]
        else:
            out.append(a)
        i += 1
    # --m at most the (capped) --n: beam width M must divide N
    if "--m" in out and "--n" in out:
        im, in_ = out.index("--m") + 1, out.index("--n") + 1
        out[im] = str(min(int(out[im]), int(out[in_])))
    if sub == ("run",) and "--n" not in out and option(out, "--strategy") not in ("cot", "optimal"):
        out += ["--n", str(CAP)]  # a sampling run's default N is 8
    if not has_limit:
        if sub == ("sweep",):
            out += ["--set", f"limit={LIMIT}"]
        elif "--limit" in takes:
            out += ["--limit", str(LIMIT)]
    if sub == ("serve",) and port is not None and "--port" not in out:
        out += ["--port", str(port)]
    return Shrunk(out, renamed)


# -- what each command must print or write -------------------------------------------------------------

# `run --json`'s keys as the README lists them under "Using it"; Best-of-N adds the PRM's ("Process reward
# models and Best-of-N"), tree searches their prompt-token split ("Budget semantics and compute accounting").
RUN_KEYS = ["accuracy", "accuracy_ci", "n_problems", "generated_tokens", "prompt_tokens", "cached_prompt_tokens",
            "flops", "wall_s", "new_generations", "cached_generations", "by_level"]
PRM_KEYS = ["selections", "prm", "prm_tokens", "prm_flops", "oracle_upper_bound"]
SELECTION_NAMES = ["majority", "prm_last_max", "prm_min_vote"]  # "accuracy per pair: majority, prm_last_max, ..."
TREE_KEYS = ["prompt_tokens_evaluated", "prompt_tokens_cached"]
TREES = ("beam", "dvts", "rebase", "particle_filter")


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


# `prm eval --json` (README, "Evaluation"): step AUROC pooled, for intermediate steps, within problems and per
# level, then Best-of-N vs majority voting with every aggregation x selection pair.
PRM_EVAL_KEYS = ["auroc", "auroc_intermediate", "auroc_within_problem", "auroc_by_level", "bon_selections",
                 "problems"]
PAIRS = [f"prm_{a}_{s}" for a in ("last", "min", "mean", "prod") for s in ("max", "vote")]


def json_keys(argv: list[str]) -> list[str]:
    """The keys the README documents for this command's --json line."""
    if argv[1:3] == ["prm", "eval"]:
        return PRM_EVAL_KEYS
    if argv[1] != "run":
        return []
    keys = list(RUN_KEYS)
    if option(argv, "--prm"):
        keys += PRM_KEYS
    if option(argv, "--strategy") in TREES:
        keys += TREE_KEYS
    return keys


@dataclass
class Result:
    argv: list[str]
    cwd: Path
    stdout: str
    stderr: str
    returncode: int
    seconds: float
    rerun: Callable[[], Result]

    @property
    def json(self) -> dict[str, Any]:
        lines = self.stdout.strip().splitlines()
        assert lines, f"{self.argv}: --json printed nothing"
        return json.loads(lines[-1])


def _check_replay(r: Result) -> None:  # README: "Rerunning a command recomputes nothing (new_generations: 0)"
    first = r.json
    again = r.rerun().json
    assert first["new_generations"] + first["cached_generations"] == LIMIT * CAP  # majority@4 on 2 problems
    assert again["new_generations"] == 0 and again["cached_generations"] == LIMIT * CAP
    assert again["accuracy"] == first["accuracy"]


def _check_grade(r: Result) -> None:  # pairs.jsonl (see prepare): a whole output stating 48, a wrong pred
    out = r.json
    assert [v["equivalent"] for v in out["verdicts"]] == [True, False]
    assert out["verdicts"][0]["pred"] == "48" and out["verdicts"][0]["from_text"] is True


def _files(*patterns: str) -> Callable[[Result], None]:
    def check(r: Result) -> None:
        for p in patterns:
            assert glob.glob(p, root_dir=r.cwd), f"{' '.join(r.argv[1:])} wrote no {p}"
    return check


# README promises of particular commands, keyed (like SKIP) by a substring of the README command.
CHECKS: dict[str, Callable[[Result], None]] = {
    "--dataset arith --limit 40 --strategy majority --n 8 --json": _check_replay,
    "data list": lambda r: [n for n in ("math500", "aime24", "amc23", "gsm8k", "arith") if n not in r.stdout] == [],
    "models": lambda r: "smollm2" in r.stdout.lower(),
    "grade --pairs pairs.jsonl --json": _check_grade,
    "prm label --dataset arith": _files("runs/probe/labels/arith-seed0-n2-*.jsonl"),
    "prm train": _files("runs/probe/my-probe.json"),
    "calibrate runs/sweep-demo/": _files("runs/sweep-demo/table-arith-smollm2-arithcheck.json"),  # "-> table-*.json"
    "report runs/sweep-demo/": _files("runs/sweep-demo/**/report.html", "runs/sweep-demo/**/*.png"),
    "store salvage": _files("runs-ok/testtime.sqlite"),
}


def checks_for(cmd: Command) -> list[Callable[[Result], None]]:
    return [c for key, c in CHECKS.items() if key in cmd.text]


# -- running a block -----------------------------------------------------------------------------------


def prepare(cwd: Path, block: Block) -> None:
    """The inputs the README assumes exist: tiny valid files, and a store for the blocks that only inspect one.
    Idempotent: every block of a session shares one working directory."""
    if not (cwd / "recipes").exists():
        (cwd / "recipes").symlink_to(ROOT / "recipes")
    rows = [("What is 2 + 3?", 5, 1), ("What is 12 - 5?", 7, 2), ("What is 4 + 4?", 8, 1)]
    with (cwd / "my.jsonl").open("w") as f:  # both README forms: dotted fields, and question/answer + a level
        for q, a, level in rows:
            f.write(json.dumps({"question": q, "answer": a, "data": {"q": q, "a": a}, "meta": {"difficulty": level}})
                    + "\n")
    with (cwd / "shots.jsonl").open("w") as f:
        for q, steps, a, level in [("What is 1 + 2?", ["1 + 2 = 3."], 3, 1), ("What is 6 + 1?", ["6 + 1 = 7."], 7, 1),
                                   ("What is 20 - 3?", ["20 - 3 = 17."], 17, 2),
                                   ("What is 9 + 9?", ["9 + 9 = 18."], 18, 2)]:
            f.write(json.dumps({"question": q, "solution": "\n\n".join([*steps, f"The answer is {a}."]),
                                "level": level}) + "\n")
    with (cwd / "pairs.jsonl").open("w") as f:
        f.write(json.dumps({"text": "Area = 6 * 8 = 48.\n\nThe answer is 48.", "ref": "48", "kind": "math"}) + "\n")
        f.write(json.dumps({"pred": "7", "ref": "8", "kind": "number"}) + "\n")
    first = runnable(block)[0]
    if "runs/testtime.sqlite" in first.argv and not (cwd / "runs/testtime.sqlite").exists():
        # the block inspects a store it does not make (run alone, without the blocks above it): fill one
        done = subprocess.run([str(TESTTIME), "run", "--strategy", "majority", "--n", str(CAP), "--limit", str(LIMIT)],
                              cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert done.returncode == 0, done.stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _execute(argv: list[str], cwd: Path) -> Result:
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**os.environ, "COLUMNS": "160"})
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(argv[1:])}: still running after {TIMEOUT_S} s") from e
    return Result(argv, cwd, done.stdout, done.stderr, done.returncode, time.perf_counter() - t0,
                  lambda: _execute(argv, cwd))


class Server:
    """`testtime serve` in the background, for the block's curl request."""

    def __init__(self, argv: list[str], cwd: Path, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self.log = (cwd / "serve.log").open("w")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        self.argv = argv

    def wait_healthy(self, timeout_s: float = 180) -> None:
        import httpx

        deadline = time.time() + timeout_s
        while time.time() < deadline:
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.tail()}"
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"serve not healthy after {timeout_s} s: {self.tail()}")

    def tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def send_curl(argv: list[str], port: int) -> dict[str, Any]:
    """The README's curl request (URL, -H headers, -d body), sent with httpx to the test's port; a streamed
    request (``"stream": true``) comes back as its SSE chunks (``{"chunks": [...]}``)."""
    import httpx

    url = next(a for a in argv if a.startswith("http")).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    headers = dict(h.split(": ", 1) for h in (argv[i + 1] for i, a in enumerate(argv) if a == "-H"))
    body = option(argv, "-d")
    if body and json.loads(body).get("stream"):
        with httpx.stream("POST", url, headers=headers, content=body, timeout=TIMEOUT_S) as r:
            assert r.status_code == 200, f"{url}: {r.status_code} {r.read()[:2000]!r}"
            data = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
        assert data and data[-1] == "[DONE]", data[-3:]
        return {"chunks": [json.loads(d) for d in data[:-1]]}
    r = httpx.post(url, headers=headers, content=body, timeout=TIMEOUT_S) if body else httpx.get(url, timeout=60)
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:2000]}"
    return r.json()


def check_chat_completion(reply: dict[str, Any], stream_reasoning: bool = False) -> None:
    """README, Serving: an OpenAI chat completion with usage and the `tts` object; streamed, its chunks carry
    the answer as content deltas and (``--stream-reasoning``) the search's progress as reasoning_content deltas,
    all of them before the first content delta."""
    if "chunks" in reply:
        deltas = [c["choices"][0].get("delta", {}) for c in reply["chunks"] if c.get("choices")]
        kinds = [k for d in deltas for k in ("reasoning_content", "content") if d.get(k)]
        assert "content" in kinds, kinds
        if stream_reasoning:
            first = kinds.index("content")
            assert "reasoning_content" in kinds[:first] and "reasoning_content" not in kinds[first:], kinds
        else:
            assert "reasoning_content" not in kinds, kinds
        assert any("tts" in c for c in reply["chunks"]), "no chunk carried the tts object"
        return
    content = reply["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content.strip()
    usage = reply["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"]
    tts = reply["tts"]
    assert {"strategy", "budget", "trace_id"} <= set(tts), sorted(tts)


def run_block(block: Block, cwd: Path) -> list[tuple[str, float]]:
    options = _command_options()
    prepare(cwd, block)
    renamed: dict[str, str] = {}
    port = _free_port()
    server: Server | None = None
    timings = []
    try:
        for cmd in block.commands:
            if not is_testtime(cmd.argv):
                if cmd.argv[0] == "curl":
                    assert server is not None, "a curl request with no `testtime serve` before it"
                    check_chat_completion(send_curl(cmd.argv, port), "--stream-reasoning" in server.argv)
                continue
            if skip_reason(cmd):
                continue
            shrunk = shrink(cmd.argv, options, renamed, port=port, cwd=cwd)
            renamed = shrunk.renamed
            shown = " ".join(shrunk.argv[1:])
            if shrunk.argv[1] == "serve":
                server = Server(shrunk.argv, cwd, port)
                server.wait_healthy()
                continue
            r = _execute(shrunk.argv, cwd)
            timings.append((shown, r.seconds))
            print(f"{r.seconds:6.1f} s  rc={r.returncode}  testtime {shown}")
            assert r.returncode == 0, (f"{cmd.source} command `{cmd.text}` (run as `testtime {shown}`) exited "
                                       f"{r.returncode}:\n{r.stderr[-3000:]}\n{r.stdout[-1500:]}")
            if "--json" in shrunk.argv:
                out = r.json  # the last line parses
                missing = [k for k in json_keys(shrunk.argv) if k not in out]
                assert not missing, f"`testtime {shown}` --json lacks the documented {missing}"
                if shrunk.argv[1] == "run":
                    assert out["n_problems"] == LIMIT
                if "--prm" in shrunk.argv and shrunk.argv[1] == "run":
                    assert set(SELECTION_NAMES) <= set(out["selections"]), sorted(out["selections"])
                if shrunk.argv[1:3] == ["prm", "eval"]:
                    assert out["problems"] == LIMIT and {"majority", *PAIRS} <= set(out["bon_selections"])
            for check in checks_for(cmd):
                assert check(r) is not False, f"`testtime {shown}`: {check}"
    finally:
        if server is not None:
            rc = server.stop()
            print(f"serve stopped: rc={rc}")
    if server is not None:
        assert rc == 0, f"serve did not shut down cleanly on Ctrl-C (exit {rc}): {server.tail()}"
    return timings


BLOCKS = [b for b in readme_blocks() if runnable(b)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One working directory for the whole README, as a newcomer running it top to bottom in a checkout has:
    every command's default store is ``runs/``, so a block replays the samples an earlier block drew (Best-of-N
    samples what majority voting samples). Each block still makes what it reads itself (``prepare``)."""
    return tmp_path_factory.mktemp("readme")


@pytest.mark.integration
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, workdir: Path):
    """Every runnable testtime command of one README block, in README order, exits 0 and prints what the
    README says it prints."""
    run_block(block, workdir)


def test_documented_json_keys_are_documented():
    """The keys required of --json lines are the README's own words (a renamed key fails here first)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in doc_files())
    for key in [*RUN_KEYS, *PRM_KEYS, *TREE_KEYS, *SELECTION_NAMES]:
        assert f"`{key}`" in text, f"`{key}`: not in README.md or docs/"


# -- unit tests: the parser, the lists, the rewrites ---------------------------------------------------


def test_parser_joins_continuations_drops_comments_and_splits_commands():
    md = "\n".join([
        "# Title", "```bash", ".venv/bin/testtime run --n 8 \\", "    --limit 3 --json   # a comment",
        "# a whole comment line", "", "testtime sweep --config r.yaml && \\", "  testtime report x.json --paper",
        "```", "```python", "testtime run --not-shell", "```", "## Next", "  ```bash",
        "  testtime store check 'a b.sqlite'  # exit 1 if damaged", "  ```",
    ])
    blocks = parse_blocks(md)
    assert [b.index for b in blocks] == [0, 2]  # the python block is not shell
    assert [c.argv for c in blocks[0].commands] == [
        [".venv/bin/testtime", "run", "--n", "8", "--limit", "3", "--json"],
        ["testtime", "sweep", "--config", "r.yaml"], ["testtime", "report", "x.json", "--paper"]]
    assert blocks[0].section == "Title" and blocks[1].section == "Next"
    assert blocks[1].commands[0].argv == ["testtime", "store", "check", "a b.sqlite"]
    with pytest.raises(AssertionError, match="shell syntax"):
        split_commands("testtime run | tee log")


def test_shrink_rewrites_only_what_it_documents():
    options = _command_options()
    s = shrink(split_commands(".venv/bin/testtime run --strategy beam --n 16 --m 4 --limit 30 --json")[0], options)
    assert s.argv == [str(TESTTIME), "run", "--strategy", "beam", "--n", "4", "--m", "4", "--limit", "2", "--json"]
    s = shrink(["testtime", "run", "--strategy", "best_of_n", "--prm", "judge", "--n", "8"], options)
    assert s.argv[-2:] == ["--limit", "2"] and s.argv[s.argv.index("--n") + 1] == "4"
    s = shrink(["testtime", "sweep", "--config", "r.yaml", "--set", "limit=20", "--set", "n_max=8",
                "--set", "name=x"], options)
    assert s.argv[1:] == ["sweep", "--config", "r.yaml", "--set", "limit=2", "--set", "n_max=4", "--set", "name=x"]
    assert shrink(["testtime", "sweep", "--config", "r.yaml"], options).argv[-2:] == ["--set", "limit=2"]
    s = shrink(["testtime", "sweep", "--config", "r.yaml", "--set", "budgets=[1, 2, 4, 8]", "--set", "n_max=8"],
               options)
    assert s.argv[4:] == ["--set", "budgets=[1, 2, 4]", "--set", "n_max=4", "--set", "limit=2"]
    s = shrink(["testtime", "prm", "label", "--limit", "150"], options)
    assert s.renamed == {"-n150-": "-n2-"}
    later = shrink(["testtime", "prm", "train", "--labels", "runs/x-n150-*.jsonl"], options, s.renamed)
    assert later.argv[-1] == "runs/x-n2-*.jsonl"  # no such file here: left to fail as the shell would
    assert "--limit" not in shrink(["testtime", "prm", "train", "--labels", "a.jsonl"], options).argv
    assert shrink(["testtime", "run", "...", "--out", "runs-ok"], options).argv[1:] == [
        "run", "--out", "runs-ok", "--n", "4", "--limit", "2"]
    assert "--n" not in shrink(["testtime", "run", "--strategy", "cot"], options).argv
    s = shrink(["testtime", "serve"], options, port=18123)
    assert s.argv[1:] == ["serve", "--port", "18123"] and "--limit" not in s.argv
    assert shrink(["testtime", "data", "list"], options).argv[1:] == ["data", "list"]


def unlisted(blocks: list[Block]) -> list[str]:
    """Commands that are neither testtime's (run or skipped) nor out of scope by their program."""
    return [c.text for b in blocks for c in b.commands if not is_testtime(c.argv) and out_of_scope(c.argv) is None]


def stale(blocks: list[Block]) -> list[str]:
    """SKIP / CHECKS keys and OUT_OF_SCOPE programs that match no command."""
    texts = [c.text for b in blocks for c in b.commands]
    keys = [k for k in [*SKIP, *CHECKS] if not any(k in t for t in texts)]
    return keys + [p for p in OUT_OF_SCOPE if not any(out_of_scope(t.split()) for t in texts if t.startswith(p))]


def test_the_lists_catch_new_and_vanished_commands():
    md = "```bash\nmake demo\ndocker run testtime\n.venv/bin/testtime data list\n```\n"
    blocks = parse_blocks(md)
    assert unlisted(blocks) == ["docker run testtime"]  # a new kind of command fails until it is listed
    gone = stale(blocks)
    assert "device=cuda" in gone and "curl" in gone and "make" not in gone and "data list" not in gone


def test_every_readme_command_is_run_or_listed():
    blocks = readme_blocks()
    commands = [c for b in blocks for c in b.commands]
    assert len(commands) >= 20, "the README parser finds too few commands"
    assert not unlisted(blocks), f"README / docs commands neither testtime nor in OUT_OF_SCOPE: {unlisted(blocks)}"
    options = _command_options()
    for c in commands:
        if is_testtime(c.argv):
            subcommand(c.argv, options)  # a documented subcommand that does not exist fails here
    run = [c for b in blocks for c in runnable(b)]
    assert len(run) >= 15
    # the run set is exactly the testtime commands not skipped: nothing falls between the lists
    assert {c.text for c in commands if is_testtime(c.argv)} == {c.text for c in run} | {
        c.text for c in commands if skip_reason(c)}


def test_docs_pages_are_scanned_in_nav_order():
    """A command on a docs page is held to the same rules as one in the README: found, attributed, numbered after
    the README's blocks (a page left out of the scan would let its commands rot unseen)."""
    files = doc_files()
    assert files[0] == README and {p.name for p in files[1:]} == {p.name for p in DOCS.glob("*.md")}
    blocks = readme_blocks()
    indices = [b.index for b in blocks]
    assert indices == sorted(set(indices))  # one numbering over all files: unique test ids
    sources = [b.source for b in blocks]
    assert sources[0] == "README.md" and "docs/guide.md" in sources and "docs/serving.md" in sources
    first = sources.index("docs/guide.md")
    assert set(sources[:first]) == {"README.md"}  # the README first, then the pages
    assert any("data list" in c.text for b in blocks if b.source == "docs/guide.md" for c in b.commands)


def test_skip_list_does_not_rot():
    gone = stale(readme_blocks())
    assert not gone, f"these entries match no README / docs command: remove them: {gone}"
