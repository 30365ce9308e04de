"""Every recipe under recipes/ loads; the paper's recipes (recipes/paper/) match Liu et al. 2025's grid.

Nothing here runs a model. Each YAML file is loaded with ``load_recipe`` and checked: its PRM spec parses
and names a known backend and format; for the paper's recipes, the policy and PRM are the paper's checkpoints,
the strategies and budgets are the paper's grid, the prompts and the step cap are the authors', the bundled
dataset is complete, the sweep plans the expected engine runs, and the engines fit on 80 GB GPUs. The commands
in the README's "Reproducing the paper" section and in recipes/paper/README.md are parsed and checked the same
way. Negative tests break one field at a time and expect the checks to fail.
"""

from __future__ import annotations

import functools
import inspect
import re
import shlex
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from testtime.config import RunConfig
from testtime.datasets import load_dataset
from testtime.optimal.recipe import Recipe, load_recipe
from testtime.optimal.sweep import n_runs, plan, sweep_path
from testtime.policy.prompts import PromptConfig, build_messages
from testtime.reward import KINDS, load_scorer, parse_spec
from testtime.reward.formats import FORMATS
from testtime.reward.hf import load_hf_prm
from testtime.reward.vllm import load_vllm_prm

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
PAPER_DIR = RECIPES / "paper"
ALL_RECIPES = sorted(RECIPES.rglob("*.yaml"))
PAPER_RECIPES = sorted(PAPER_DIR.glob("*.yaml"))

# The paper's policies (all Instruct): id -> (file slug, parameters in billions, tensor_parallel_size on 80 GB GPUs)
POLICIES: dict[str, tuple[str, float, int]] = {
    "meta-llama/Llama-3.2-1B-Instruct": ("llama3.2-1b", 1.24, 1),
    "meta-llama/Llama-3.2-3B-Instruct": ("llama3.2-3b", 3.21, 1),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama3.1-8b", 8.03, 1),
    "Qwen/Qwen2.5-0.5B-Instruct": ("qwen2.5-0.5b", 0.49, 1),
    "Qwen/Qwen2.5-1.5B-Instruct": ("qwen2.5-1.5b", 1.54, 1),
    "Qwen/Qwen2.5-3B-Instruct": ("qwen2.5-3b", 3.09, 1),
    "Qwen/Qwen2.5-7B-Instruct": ("qwen2.5-7b", 7.62, 1),
    "Qwen/Qwen2.5-14B-Instruct": ("qwen2.5-14b", 14.7, 1),
    "Qwen/Qwen2.5-32B-Instruct": ("qwen2.5-32b", 32.8, 2),
    "Qwen/Qwen2.5-72B-Instruct": ("qwen2.5-72b", 72.7, 4),
}
# The paper's PRMs: id -> (testtime input format, parameters in billions)
PRMS: dict[str, tuple[str, float]] = {
    "peiyi9979/math-shepherd-mistral-7b-prm": ("math-shepherd", 7.24),
    "RLHFlow/Llama3.1-8B-PRM-Mistral-Data": ("rlhflow", 8.03),
    "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data": ("rlhflow", 8.03),
    "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B": ("skywork", 1.54),
    "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B": ("skywork", 7.62),
    "Qwen/Qwen2.5-Math-PRM-7B": ("qwen-prm", 7.07),
    "Qwen/Qwen2.5-Math-PRM-72B": ("qwen-prm", 72.7),
}
DATASETS = {"math500": 500, "aime24": 30}
BUDGETS = [1, 2, 4, 16, 64, 256]  # the paper's figures start at 2^0: pooled curves there cost nothing extra
TREE_BUDGETS = [4, 16, 64, 256]  # tree searches: the multiples of M
STRATEGIES = ["cot", "majority", "best_of_n", "beam", "dvts"]
M = 4  # beam width / DVTS subtree width
EXPECTED_PLAN = [("best_of_n", 256), ("cot", 1), *[("beam", b) for b in TREE_BUDGETS],
                 *[("dvts", b) for b in TREE_BUDGETS]]
# The authors' procedure (their code, built on OpenR): beam search ranks finished and unfinished paths together
# and returns N/M; a path ends at EOS, at a step writing \boxed, or at depth 40.
# Their votes count normalized answer strings, a missing answer among them.
BEAM_FINISH, TERMINATE_ON, ANSWER_GROUPING = "authors", "boxed", "string"
TEMPERATURE, MAX_TOKENS, MAX_DEPTH = 0.7, 8192, 40
STEP_MAX_TOKENS = 2048  # the authors' max_new_tokens per tree-search step (run.sh, beam_search)
PROMPT_ROOM = 1024  # max_model_len beyond the longest generation, for the prompt

# The authors' prompts: a system turn per family (evaluate.py's cot_prompt_dict, picked by the policy's name;
# base_env.py's build_query_str makes it the system turn), then the question alone as the user turn
# (MATH/prompt.py: PROBLEM_FORMAT_STR = "{question}"). Llama's is Meta's official MATH prompt.
LLAMA_SYSTEM = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\nProvide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\nUse this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SYSTEM = {"meta-llama/": LLAMA_SYSTEM, "Qwen/": QWEN_SYSTEM}  # policy id prefix -> the authors' system turn

GPU_GB = 80.0
GPU0_MAX = 0.92  # the policy's and the PRM's shares of GPU 0 together
WEIGHTS_MAX = 0.85  # bf16 weights per GPU at most this much of an engine's share (the rest: KV cache, activations)
VLLM_POLICY_KEYS = {"tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "max_num_seqs",
                    "enable_prefix_caching"}
VLLM_ENGINE_KEYS = {"tensor_parallel_size", "max_model_len", "dtype", "max_num_seqs", "enforce_eager",
                    "hf_overrides", "trust_remote_code", "revision", "download_dir", "quantization"}


def _params(fn: Any) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and k != "path"}


# -- checks --------------------------------------------------------------------------------------------


def check_prm_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """A scorer spec names a known kind, valid options and, for model PRMs, a known input format."""
    kind, target, opts = parse_spec(spec)[:3]
    assert kind in KINDS, f"{spec}: unknown scorer kind {kind!r}"
    if kind in ("arith-check", "oracle"):
        scorer = load_scorer(spec)  # no model behind these: build it for real
        getattr(scorer, "close", lambda: None)()
    elif kind in ("hf", "vllm"):
        assert target, f"{spec}: {kind} needs a checkpoint"
        fmt = opts.get("format")
        if fmt is None:  # only a local checkpoint can be inspected for its format
            assert Path(target).is_dir(), f"{spec}: give ?format= (one of {', '.join(sorted(FORMATS))})"
        else:
            assert fmt in FORMATS, f"{spec}: unknown PRM format {fmt!r}"
        allowed = set(_params(load_vllm_prm if kind == "vllm" else load_hf_prm))
        if kind == "vllm":
            allowed |= VLLM_ENGINE_KEYS
        unknown = set(opts) - allowed
        assert not unknown, f"{spec}: unknown options {sorted(unknown)}"
    elif kind == "http":
        assert target and all(u.startswith(("http://", "https://")) for u in target.split(",")), spec
    return kind, target, opts


def paper_prm(spec: str) -> tuple[str, str, dict[str, str]]:
    """(kind, PRM id, options) of a paper PRM spec; the format must be the one that PRM was trained with."""
    kind, target, opts = check_prm_spec(spec)
    assert kind in ("vllm", "hf"), f"{spec}: the paper's PRMs run on the vllm or hf backend"
    assert target is not None
    if kind == "vllm":
        prm_id = target  # a model id: vLLM fetches it
    else:  # hf reads a local folder: it must be a download of one of the paper's PRMs
        matches = [i for i in PRMS if i.split("/")[1] == Path(target).name]
        assert matches, f"{spec}: {Path(target).name} is not one of the paper's PRMs"
        prm_id = matches[0]
    assert prm_id in PRMS, f"{spec}: {prm_id} is not one of the paper's PRMs ({', '.join(PRMS)})"
    assert opts.get("format") == PRMS[prm_id][0], f"{spec}: {prm_id} needs format={PRMS[prm_id][0]}"
    return kind, prm_id, opts


def _fits(what: str, params_b: float, tp: int, share: float) -> None:
    per_gpu = 2 * params_b / tp  # bf16
    assert per_gpu <= WEIGHTS_MAX * share * GPU_GB, (
        f"{what}: {per_gpu:.1f} GB of weights per GPU do not fit a {share} share of an {GPU_GB:.0f} GB GPU "
        f"(tensor_parallel_size {tp})")


@functools.cache
def _dataset_size(spec: str, limit: int | None, seed: int, levels: tuple[int, ...] | None) -> int:
    return len(load_dataset(spec, limit=limit, seed=seed, levels=levels))


def check_paper_recipe(r: Recipe, stem: str | None = None) -> None:
    """Everything a paper recipe must hold; ``stem`` (a shipped file's name) also pins name, out and sizing."""
    assert r.backend == "vllm", f"{r.name}: the paper's policies run on vLLM, not {r.backend}"
    assert r.model in POLICIES, f"{r.name}: {r.model} is not one of the paper's policies"
    slug, params_b, tp_table = POLICIES[r.model]
    assert r.dataset in DATASETS and r.datasets == [r.dataset], f"{r.name}: dataset {r.dataset}"
    assert r.executor == "local"
    if stem is not None:
        assert stem == f"{slug}-{r.dataset}", f"{stem}.yaml holds {r.model} on {r.dataset}"
        assert r.name == f"paper-{stem}" and r.out == f"runs/paper/{stem}", f"{stem}: name {r.name}, out {r.out}"
    # the whole benchmark
    assert r.limit is None and r.levels is None, f"{r.name}: a paper sweep covers all problems"
    size = _dataset_size(r.dataset, r.limit, r.seed, tuple(r.levels) if r.levels else None)
    assert size == DATASETS[r.dataset], f"{r.name}: {size} problems, expected {DATASETS[r.dataset]}"
    # the grid
    assert r.n_max == max(BUDGETS) and r.budgets == BUDGETS, f"{r.name}: budgets {r.budgets}, n_max {r.n_max}"
    names = [s.name for s in r.strategies]
    assert sorted(names) == sorted(STRATEGIES), f"{r.name}: strategies {names}"
    for s in r.strategies:
        if s.cls.is_tree:
            budgets = s.cls.sweep_budgets(r.budgets, s.options)
            assert s.m == M and budgets == TREE_BUDGETS, f"{r.name}: {s.label} runs at {budgets}"
            if s.name == "beam":
                assert s.options.beam_finish == BEAM_FINISH, f"{r.name}: beam_finish {s.options.beam_finish}"
                assert r.run_config(r.dataset, r.seed, s, 16).make_strategy().options.beam_finish == BEAM_FINISH
    assert r.terminate_on == TERMINATE_ON, f"{r.name}: terminate_on {r.terminate_on}"
    assert r.answer_grouping == ANSWER_GROUPING, f"{r.name}: answer_grouping {r.answer_grouping}"
    assert r.run_config(r.dataset, r.seed, r.strategies[0], 1).answer_grouping == ANSWER_GROUPING
    tree = next(s for s in r.strategies if s.cls.is_tree)
    assert r.run_config(r.dataset, r.seed, tree, 16).make_strategy().options.terminate_on == TERMINATE_ON
    assert [(s.name, n) for s, n in plan(r)] == EXPECTED_PLAN, f"{r.name}: plan {plan(r)}"
    assert n_runs(r) == len(EXPECTED_PLAN) and r.seeds == [r.seed]
    # sampling
    assert (r.temperature, r.max_tokens, r.max_depth, r.fewshot) == (TEMPERATURE, MAX_TOKENS, MAX_DEPTH, 0), (
        f"{r.name}: temperature {r.temperature}, max_tokens {r.max_tokens}, max_depth {r.max_depth}, "
        f"fewshot {r.fewshot}")
    assert (r.difficulty.easy, r.difficulty.hard) == (0.5, 0.1)
    # the authors' prompt and step cap
    system = next(s for prefix, s in SYSTEM.items() if r.model.startswith(prefix))
    assert r.system == system, f"{r.name}: the system turn is not the authors' prompt for {r.model}"
    assert r.instruction == "", f"{r.name}: the authors' user turn is the question alone, not {r.instruction!r}"
    assert r.step_max_tokens == STEP_MAX_TOKENS, f"{r.name}: step_max_tokens {r.step_max_tokens}"
    # the policy engine
    po = r.policy_options
    assert set(po) <= VLLM_POLICY_KEYS, f"{r.name}: unknown policy_options {sorted(set(po) - VLLM_POLICY_KEYS)}"
    tp = po.get("tensor_parallel_size", 1)
    assert isinstance(tp, int) and tp >= 1 and tp & (tp - 1) == 0, f"{r.name}: tensor_parallel_size {tp}"
    if stem is not None:
        assert tp == tp_table, f"{r.name}: tensor_parallel_size {tp}, the table says {tp_table}"
    share = po.get("gpu_memory_utilization", _params(load_vllm_prm)["gpu_memory_utilization"].default)
    _fits(f"{r.name} policy {r.model}", params_b, tp, share)
    # a tree path ends once its steps reach max_tokens, so its last step may add up to step_max_tokens more
    room = r.max_tokens + r.step_max_tokens + PROMPT_ROOM
    assert po.get("max_model_len", 0) >= room, f"{r.name}: max_model_len leaves no room for prompts and a last step"
    # the PRM engine, sharing GPU 0
    assert r.prm
    kind, prm_id, opts = paper_prm(r.prm)
    prm_params = PRMS[prm_id][1]
    if kind == "vllm":
        prm_tp = int(opts.get("tensor_parallel_size", 1))
        assert prm_tp & (prm_tp - 1) == 0, f"{r.prm}: tensor_parallel_size {prm_tp}"
        prm_share = float(opts.get("gpu_memory_utilization", _params(load_vllm_prm)["gpu_memory_utilization"].default))
        _fits(f"{r.name} PRM {prm_id}", prm_params, prm_tp, prm_share)
    else:  # transformers: the bf16 weights on one GPU, plus room for a batch
        prm_share = 2 * prm_params / WEIGHTS_MAX / GPU_GB
    assert share + prm_share <= GPU0_MAX, f"{r.name}: GPU 0 holds {share} (policy) + {prm_share:.2f} (PRM)"


# -- every recipe --------------------------------------------------------------------------------------


def _rel(p: Path) -> str:
    return str(p.relative_to(RECIPES))


@pytest.mark.parametrize("path", ALL_RECIPES, ids=_rel)
def test_every_recipe_loads(path: Path):
    r = load_recipe(path)
    assert r.n_max >= max(r.budgets or [1]) and plan(r) and n_runs(r) >= 1
    if r.prm:
        check_prm_spec(r.prm)
    if path.parent == PAPER_DIR:
        check_paper_recipe(r, path.stem)


def test_paper_recipes_cover_every_policy_and_dataset():
    assert len(PAPER_RECIPES) == len(POLICIES) * len(DATASETS)
    seen = {(r.model, r.dataset) for r in map(load_recipe, PAPER_RECIPES)}
    assert seen == set(product(POLICIES, DATASETS))
    assert len({load_recipe(p).name for p in PAPER_RECIPES}) == len(PAPER_RECIPES)  # one sweep file each


@pytest.mark.parametrize("name,size", DATASETS.items())
def test_bundled_benchmarks_are_complete(name: str, size: int):
    problems = load_dataset(name)
    assert len(problems) == size and len({p.id for p in problems}) == size
    assert all(p.question and p.answer is not None for p in problems)


BASE = PAPER_DIR / "llama3.2-1b-math500.yaml"
BAD = [
    "model=meta-llama/Llama-3.2-1B-Instruc",  # a typo in the id
    "model=Qwen/Qwen2.5-1.5B-Instruct",  # a real policy, but not the one the file is named after
    "backend=hf",
    "dataset=gsm8k",
    "limit=100",
    "budgets=[4, 16, 64, 128]",
    "budgets=[4, 16, 64]",
    "budgets=[4, 16, 64, 256]",  # no pooled points below M: no efficiency gain above 64x can be reported
    "budgets=[1, 2, 4, 8, 16, 64, 256]",  # an extra tree run at 8
    "strategies=[cot, majority, best_of_n, {name: beam, m: 4}, {name: dvts, m: 4}]",  # search-and-learn's beam
    "strategies=[cot, majority, best_of_n, {name: beam, m: 4, beam_finish: sal}, {name: dvts, m: 4}]",
    "terminate_on=answer",  # any extractable answer ends a path
    "answer_grouping=math",  # testtime's math-equivalence votes
    "n_max=512",
    "strategies=[cot, majority, best_of_n, {name: beam, m: 2}, {name: dvts, m: 4}]",
    "strategies=[cot, majority, best_of_n, {name: beam, m: 4}]",
    "strategies=[cot, majority, best_of_n, {name: beam, m: 4}, {name: rebase, m: 4}]",
    "temperature=1.0",
    "max_tokens=2048",
    "fewshot=3",
    "name=llama3.2-1b-math500",
    "policy_options.tensor_parallel_size=3",
    "policy_options.gpu_memory_utilization=0.7",  # GPU 0 oversubscribed with the PRM's 0.35
    "policy_options.max_model_len=4096",
    "policy_options.max_model_len=10240",  # no room for a last 2048-token step after 8192 tokens of path
    "step_max_tokens=256",  # testtime's default step cap
    "step_max_tokens=1024",
    "system=null",  # the chat template's default system turn
    "system=Please reason step by step, and put your final answer within \\boxed{}.",  # Qwen's, on Llama
    "instruction=null",  # testtime's own instruction before the question
    "instruction=Solve the following math problem efficiently and clearly.",
    "policy_options.tensor_paralel_size=1",
    "prm=vllm:Qwen/Qwen2.5-Math-PRM-7b?format=qwen-prm&gpu_memory_utilization=0.35",  # id typo
    "prm=vllm:Qwen/Qwen2.5-Math-PRM-7B?format=skywork&gpu_memory_utilization=0.35",  # wrong format
    "prm=vllm:Qwen/Qwen2.5-Math-PRM-7B?format=qwen_prm&gpu_memory_utilization=0.35",  # unknown format
    "prm=vllm:Qwen/Qwen2.5-Math-PRM-7B?gpu_memory_utilization=0.35",  # no format, nothing to inspect
    "prm=vllm:Qwen/Qwen2.5-Math-PRM-7B?format=qwen-prm&gpu_memory_utilizaton=0.35",  # option typo
    "prm=vllm:Qwen/Qwen2.5-Math-PRM-72B?format=qwen-prm&gpu_memory_utilization=0.35",  # 145 GB on one GPU
    "prm=vllm:Qwen/Qwen2.5-Math-PRM-7B?format=qwen-prm",  # vLLM's default share (0.9) on top of the policy's
    "prm=hf:/models/Qwen2.5-Math-PRM-7b?format=qwen-prm",
    "prm=arith-check",
]


@pytest.mark.parametrize("override", BAD)
def test_a_wrong_paper_recipe_fails_the_checks(override: str):
    check_paper_recipe(load_recipe(BASE), BASE.stem)  # the base passes ...
    with pytest.raises(AssertionError):  # ... and each single change breaks it
        check_paper_recipe(load_recipe(BASE, [override]), BASE.stem)


WRONG_PROMPTS = {  # id -> (recipe, system turn)
    "qwen-with-llama-prompt": ("qwen2.5-7b-math500", LLAMA_SYSTEM),
    "qwen-aime-with-llama-prompt": ("qwen2.5-0.5b-aime24", LLAMA_SYSTEM),
    "llama-with-qwen-prompt": ("llama3.1-8b-math500", QWEN_SYSTEM),
    "llama-trailing-newline": ("llama3.2-1b-math500", LLAMA_SYSTEM + "\n"),
    "llama-doubled-backslash": ("llama3.2-1b-math500", LLAMA_SYSTEM.replace("\\boxed", "\\\\boxed")),
    "qwen-format-braces": ("qwen2.5-7b-math500", QWEN_SYSTEM.replace("{}", "{{}}")),
    "qwen-template-default": ("qwen2.5-7b-math500", None),
}


@pytest.mark.parametrize("stem,system", WRONG_PROMPTS.values(), ids=WRONG_PROMPTS.keys())
def test_a_wrong_prompt_fails_the_checks(stem: str, system: str | None):
    path = PAPER_DIR / f"{stem}.yaml"
    r = load_recipe(path)
    check_paper_recipe(r, stem)
    with pytest.raises(AssertionError, match="system turn"):
        check_paper_recipe(r.model_copy(update={"system": system}), stem)


@pytest.mark.parametrize("path", [p for p in PAPER_RECIPES if p.stem.endswith("-math500")], ids=_rel)
def test_paper_prompt_renders_the_question_once(path: Path):
    r = load_recipe(path)
    problem = load_dataset("math500")[0]
    config = PromptConfig(fewshot=r.fewshot, system=r.system, instruction=r.instruction or "")
    # the engine builds the same prompt from the recipe's fields (an unset instruction would not be "")
    assert r.instruction is not None
    assert RunConfig(fewshot=r.fewshot, system=r.system, instruction=r.instruction).prompt_config() == config
    messages = build_messages(problem, [], config)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == r.system and r.system in SYSTEM.values()
    assert messages[1]["content"] == problem.question  # the question alone, as the authors' user turn
    assert sum(m["content"].count(problem.question) for m in messages) == 1
    # testtime's defaults differ: its instruction before the question, no system turn of the recipe's
    default = build_messages(problem, [], PromptConfig(fewshot=0))
    assert [m["role"] for m in default] == ["user"] and default[0]["content"] != problem.question
    assert default[0]["content"].count(problem.question) == 1


def test_a_72b_policy_on_one_gpu_fails_the_checks():
    path = PAPER_DIR / "qwen2.5-72b-math500.yaml"
    with pytest.raises(AssertionError, match="do not fit"):
        check_paper_recipe(load_recipe(path, ["policy_options.tensor_parallel_size=1"]))


# -- the commands in the READMEs -----------------------------------------------------------------------


def _section(text: str, title: str) -> str:
    """The markdown section whose heading contains ``title``, up to the next heading of its level or above."""
    lines = text.splitlines()
    fenced, heads = False, []  # (line index, level) of real headings, not "# comments" in code blocks
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#+)\s", line)):
            heads.append((i, len(m.group(1))))
    for k, (i, level) in enumerate(heads):
        if title in lines[i]:
            end = next((j for j, lv in heads[k + 1:] if lv <= level), len(lines))
            return "\n".join(lines[i:end])
    raise AssertionError(f"no section {title!r}")


def _commands(markdown: str) -> list[list[list[str]]]:
    """Shell lines in the fenced code blocks, each as its ``&&``-joined commands, each as argv."""
    out = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append([shlex.split(part, comments=True) for part in line.split("&&")])
    return out


def _options(argv: list[str], name: str) -> list[str]:
    values = []
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif a.startswith(name + "="):
            values.append(a.split("=", 1)[1])
    return values


PAPER_RUNS = Path("runs/paper")  # every paper recipe writes below it


@functools.cache
def shipped_sweeps() -> frozenset[Path]:
    recipes = [load_recipe(p) for p in PAPER_RECIPES]
    assert all(Path(r.out).parent == PAPER_RUNS for r in recipes)
    return frozenset(sweep_path(r) for r in recipes) | frozenset(Path(r.out) for r in recipes)


def check_commands(markdown: str) -> list[Recipe]:
    """Every testtime sweep / calibrate / report command: an existing paper recipe, valid overrides,
    and sweep-file paths that are the ones the sweep on the same line writes. Returns the sweeps' recipes."""
    recipes = []
    last: Recipe | None = None  # the latest sweep: a report may follow it on the same or a later line
    for line in _commands(markdown):
        for argv in line:
            if not argv or not argv[0].endswith("testtime"):
                continue
            sub = argv[1]
            if sub == "sweep":
                (config,) = _options(argv, "--config")
                path = ROOT / config
                assert path.is_file() and path.parent == PAPER_DIR, f"{config}: not a recipe in recipes/paper/"
                sets = _options(argv, "--set")
                last = load_recipe(path, sets)
                named = any(s.startswith("name=") for s in sets)
                check_paper_recipe(last, None if named else path.stem)
                recipes.append(last)
            elif sub in ("report", "calibrate"):
                target = Path(next(a for a in argv[2:] if not a.startswith("-")))
                if sub == "report" and "--paper" in argv and target == PAPER_RUNS:
                    continue  # every paper sweep below the folder: one Table 5 row each
                if last is None or target not in (sweep_path(last), Path(last.out)):
                    # a report on its own: the sweep file of one of the shipped recipes
                    assert target in shipped_sweeps(), f"{target} is not what a sweep above or a paper recipe writes"
    return recipes


def test_readme_table5_command():
    section = _section((ROOT / "docs" / "reproducing.md").read_text(), "Reproducing the paper")
    lines = [line for line in _commands(section) if any(argv[1:2] == ["sweep"] for argv in line)]
    assert lines, "the README section shows no testtime sweep command"
    first = lines[0]
    assert [argv[1] for argv in first] == ["sweep", "report"], "the Table 5 command is: sweep && report"
    recipes = check_commands(section)
    assert recipes[0].dataset == "math500"  # Table 5 is on MATH-500


def test_paper_readme_commands_cover_the_prm_grid():
    recipes = check_commands((PAPER_DIR / "README.md").read_text())
    assert len(recipes) >= len(PRMS)
    prms = {paper_prm(r.prm or "")[1] for r in recipes}
    assert prms == set(PRMS)  # every PRM of the paper is one documented command away
    assert len({r.name for r in recipes}) == len(recipes)  # and each writes its own sweep file
