"""The transformers backends on real weights: SmolLM2 from the shipped GGUF, dequantized by transformers into
a checkpoint folder once per venv (``testing.vllm_model``), against llama.cpp on the same GGUF (policy) and
against transformers run directly on the same folder (PRM, one checkpoint per published format).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from testtime.datasets import load_dataset
from testtime.grading import grade_answers
from testtime.policy import GenerationRequest, SamplingParams, load_policy
from testtime.replay import CachedGenerator
from testtime.reward.base import RewardError
from testtime.reward.formats import QWEN_PRM_SYSTEM, get_format
from testtime.reward.hf import load_hf_prm
from testtime.search.base import SearchContext
from testtime.search.sampling import CoT
from testtime.testing.vllm_model import QWEN_PRM_SEP, build_backbone_prm, default_dir, embedded_hf_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hf_policy():
    policy = load_policy(str(embedded_hf_model()), backend="hf", dtype="float32")
    yield policy
    policy.close()


def test_sampling_obeys_the_seed_contract(hf_policy):
    params = SamplingParams(max_tokens=24, temperature=0.8, stop=("\n\n",))
    prompt = hf_policy.render_chat([{"role": "user", "content": "What is 12 + 7? Think step by step."}])
    [whole] = hf_policy.generate([GenerationRequest(prompt, n=4, seed=11, params=params)])
    [tail] = hf_policy.generate([GenerationRequest(prompt, n=2, seed=11, params=params, first_index=2)])
    [again] = hf_policy.generate([GenerationRequest(prompt, n=4, seed=11, params=params)])
    assert [c.text for c in tail] == [c.text for c in whole[2:]]  # samples [2, 4) are the tail of [0, 4)
    assert [c.text for c in again] == [c.text for c in whole]  # same seed, same text
    assert len({c.text for c in whole}) > 1  # and the samples do differ


# --- greedy CoT against llama.cpp ------------------------------------------------------------------

N_PROBLEMS = 30  # arith levels 1-5, six problems each
# llama.cpp's longest CoT on these 30 is 84 tokens, and every one ends at EOS well before 128.
MAX_TOKENS = 128
# Measured 2026-12-08 over five llama.cpp runs: 24, 22, 23, 24, 23 of 30 final answers agree (transformers gave
# the same 30 answers in three runs; llama.cpp's greedy text moves with how its parallel sequences share a batch:
# one problem came out 11, 13 and 1 in three runs). Accuracy vs gold: transformers 7/30, llama.cpp 8/30 (two runs),
# all six level-1 problems right in both. llama.cpp runs the Q4_1 blocks, transformers their dequantized
# (bf16-stored, float32-run) weights, so long chains drift apart: the floor sits two below the lowest, 22.
AGREEMENT_FLOOR = 20


def _cot(policy, problems):
    """The CLI's ``run --strategy cot``: the default few-shot prompt, greedy, the run's answer extraction."""
    return CoT().run(problems, SearchContext(CachedGenerator(policy, None), max_tokens=MAX_TOKENS))


def test_greedy_cot_agrees_with_llama_cpp(hf_policy, smollm2):
    problems = load_dataset("arith", limit=N_PROBLEMS)
    assert len(problems) == N_PROBLEMS
    hf, llama = _cot(hf_policy, problems), _cot(smollm2, problems)
    hf_ok = grade_answers([(t.answer, p.answer, p.kind) for t, p in zip(hf, problems, strict=True)])
    llama_ok = grade_answers([(t.answer, p.answer, p.kind) for t, p in zip(llama, problems, strict=True)])
    agree = sum(a.answer == b.answer for a, b in zip(hf, llama, strict=True))
    summary = f"agree {agree}/{N_PROBLEMS}, accuracy hf {sum(hf_ok)} llama.cpp {sum(llama_ok)}"
    assert agree >= AGREEMENT_FLOOR, summary
    level1 = [k for k, p in enumerate(problems) if p.meta["level"] == 1]
    assert all(hf_ok[k] for k in level1), summary  # single-digit sums: SmolLM2 solves them
    assert all(t.candidates[0].text.strip() and t.answer is not None for t in hf), summary
    # The problems of one level share their few-shot turns: the batch prefilled that prefix once per level.
    prompt = sum(t.compute.prompt_tokens for t in hf)
    cached = sum(t.compute.cached_prompt_tokens for t in hf)
    assert cached > 0.6 * prompt, (prompt, cached)


# --- the HF PRM on the SmolLM2 backbone, one checkpoint per published format ---------------------

QUESTION = "Tom has 12 apples and buys 7 more. How many apples does he have?"
SOLUTIONS = [
    ["Step 1: 12 + 7 = 19.", "The answer is 19."],
    ["Step 1: Tom starts with 12 apples.\nHe buys 7 more.", "Step 2: 12 + 7 = 18.", "The answer is 18."],
]
# Math-Shepherd's layout is "step ки\nstep ки": its steps hold no newlines or blank edges.
FLAT = [[s.replace("\n", " ") for s in sol] for sol in SOLUTIONS]
FORMAT_CASES = {  # case -> (format name, options, checkpoint family)
    "math-shepherd": ("math-shepherd", {}, "label"),
    "rlhflow": ("rlhflow", {}, "label"),
    "generic": ("generic", {}, "label"),
    "generic-chat": ("generic", {"chat": True, "system": "Check each step."}, "label"),
    "qwen-prm": ("qwen-prm", {}, "qwen-prm"),
    "skywork": ("skywork", {}, "skywork"),
}


def _skywork_checkpoint(label, out):
    """Skywork-o1-Open-PRM's layout on the SmolLM2 backbone: the causal LM's weights plus a random
    ``v_head.summary`` Linear(h, 1) in a second shard (their checkpoints are sharded), with an index."""
    out.mkdir()
    for f in label.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, out / f.name)
    (out / "model-00001-of-00002.safetensors").symlink_to((label / "model.safetensors").resolve())
    with safe_open(str(label / "model.safetensors"), framework="pt") as f:
        backbone = list(f.keys())
    hidden = json.loads((label / "config.json").read_text())["hidden_size"]
    gen = torch.Generator().manual_seed(3)
    head = {
        "v_head.summary.weight": torch.randn(1, hidden, generator=gen) / hidden**0.5,
        "v_head.summary.bias": torch.full((1,), 0.1),
    }
    save_file(head, str(out / "model-00002-of-00002.safetensors"))
    weight_map = dict.fromkeys(backbone, "model-00001-of-00002.safetensors")
    weight_map |= dict.fromkeys(head, "model-00002-of-00002.safetensors")
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out, head


@pytest.fixture(scope="module")
def prm_checkpoints(tmp_path_factory):
    """family -> (folder, tokenizer loaded from it, the reference modules run directly in the test)."""
    base = embedded_hf_model()
    label = build_backbone_prm(base, default_dir("smollm2-prm-label"), "label")
    qwen = build_backbone_prm(base, default_dir("smollm2-prm-qwen-prm"), "qwen-prm")
    skywork, v_head = _skywork_checkpoint(label, tmp_path_factory.mktemp("prm") / "smollm2-skywork")
    lm = AutoModelForCausalLM.from_pretrained(label, dtype=torch.float32).eval()
    value = torch.nn.Linear(lm.config.hidden_size, 1)
    value.load_state_dict({"weight": v_head["v_head.summary.weight"], "bias": v_head["v_head.summary.bias"]})
    qwen_base = AutoModel.from_pretrained(qwen, dtype=torch.float32).eval()
    with safe_open(str(qwen / "model.safetensors"), framework="pt") as f:
        score_w = {k.removeprefix("score."): f.get_tensor(k) for k in f.keys() if k.startswith("score.")}
    h = qwen_base.config.hidden_size
    score = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))
    score.load_state_dict(score_w)
    return {
        "label": (label, AutoTokenizer.from_pretrained(label), lm),
        "qwen-prm": (qwen, AutoTokenizer.from_pretrained(qwen), (qwen_base, score.eval())),
        "skywork": (skywork, AutoTokenizer.from_pretrained(skywork), (lm, value.eval())),
    }


def _chat_ids(tok, messages, **kw):
    out = tok.apply_chat_template(messages, tokenize=True, **kw)
    return list(out["input_ids"] if isinstance(out, Mapping) else out)


def _p_first(logits):
    return logits.softmax(-1)[..., 0].tolist()


# The references follow each family's published inference code, one solution at a time and with full
# logits, except where that code leans on its own tokenizer's layout (said at each place).


@torch.no_grad()
def ref_tag_labels(lm, tok, question, steps, tag, plus, minus):
    """Math-Shepherd's README (and generic plain): f"{question} {output}", read at every tag token.
    Their labels are ``encode("+ -")[1:]``, which on Mistral's SentencePiece is the space-prefixed pair;
    here the same tokens are taken as they follow the tag: ``encode("ки +")[-1]``."""
    ids = tok.encode(f"{question} " + "\n".join(f"{s} {tag}" for s in steps))
    tag_id = tok.encode(tag)[-1]
    logits = lm(torch.tensor([ids])).logits[0]
    return _p_first(logits[[i for i, t in enumerate(ids) if t == tag_id]][:, [plus, minus]])


@torch.no_grad()
def ref_label_chat(lm, tok, question, steps, system=None):
    """RLHFlow's prm_evaluate.py: the conversation up to each step, its last assistant "+" predicted.
    They read ``logits[:, -3]``, the token before the label on Llama-3 ("+<|eot_id|>" ends the chat);
    SmolLM2's turn ends "+<|im_end|>\\n", so the read position is taken as the last token of the
    generation prompt that opens that assistant turn."""
    plus, minus = tok.encode("+")[-1], tok.encode("-")[-1]
    conversation = [{"role": "system", "content": system}] if system else []
    out = []
    for k, step in enumerate(steps):
        conversation.append({"role": "user", "content": f"{question} {step.strip()}" if k == 0 else step.strip()})
        opened = _chat_ids(tok, conversation, add_generation_prompt=True)
        conversation.append({"role": "assistant", "content": "+"})
        ids = _chat_ids(tok, conversation)
        assert ids[: len(opened)] == opened and ids[len(opened)] == plus
        assert ids[-3] == plus  # the authors' -3 would read the label itself here
        logits = lm(torch.tensor([ids])).logits[0, len(opened) - 1, [plus, minus]]
        out += _p_first(logits[None])
    return out


@torch.no_grad()
def ref_qwen_prm(base, score, tok, question, steps):
    """The Qwen2.5-Math-PRM model card: system, question, steps joined by <extra_0>; class 1 at each."""
    messages = [
        {"role": "system", "content": QWEN_PRM_SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": QWEN_PRM_SEP.join(steps) + QWEN_PRM_SEP},
    ]
    ids = torch.tensor([tok.encode(tok.apply_chat_template(messages, tokenize=False))])
    probs = score(base(input_ids=ids).last_hidden_state).softmax(-1)[0]
    return probs[ids[0] == tok.encode(QWEN_PRM_SEP)[0]][:, 1].tolist()


@torch.no_grad()
def ref_skywork(lm, value, tok, question, steps):
    """Skywork's prepare_input + derive_step_rewards: sigmoid of the value head at each "\\n" tag."""
    ids = tok.encode(tok.bos_token + question + "\n")
    tag, flags = tok.encode("\n")[-1], []
    for step in "\n".join(s.replace("\n", " ") for s in steps).split("\n"):
        ids += tok.encode(step) + [tag]
        flags.append(len(ids) - 1)
    hidden = lm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    return torch.sigmoid(value(hidden[flags]).squeeze(-1)).tolist()


def _reference(case, refs, tok, question, steps):
    name, options, _ = FORMAT_CASES[case]
    if case == "math-shepherd":
        return ref_tag_labels(refs, tok, question, steps, "ки", tok.encode("ки +")[-1], tok.encode("ки -")[-1])
    if case == "generic":  # labels tokenized on their own (GenericFormat's documented rule)
        return ref_tag_labels(refs, tok, question, steps, "ки", tok.encode("+")[-1], tok.encode("-")[-1])
    if case in ("rlhflow", "generic-chat"):
        return ref_label_chat(refs, tok, question, steps, options.get("system"))
    if case == "qwen-prm":
        return ref_qwen_prm(*refs, tok, question, steps)
    return ref_skywork(*refs, tok, question, steps)


@pytest.mark.parametrize("case", list(FORMAT_CASES))
def test_prm_scores_equal_transformers_on_the_same_weights(prm_checkpoints, case):
    name, options, family = FORMAT_CASES[case]
    path, tok, refs = prm_checkpoints[family]
    solutions = FLAT if name in ("math-shepherd", "generic") else SOLUTIONS
    prm = load_hf_prm(str(path), format=name, format_options=options, dtype="float32", device="cpu")
    try:
        got = prm.score(QUESTION, solutions)
    finally:
        prm.close()
    for steps, rewards in zip(solutions, got, strict=True):
        want = _reference(case, refs, tok, QUESTION, steps)
        assert len(rewards) == len(steps) == len(want)
        assert rewards == pytest.approx(want, abs=2e-4), case
        assert all(0.0 < r < 1.0 for r in rewards)
    # real weights, real steps: the rewards are not one constant
    assert len({round(r, 4) for rs in got for r in rs}) > 1, got


def test_math_shepherd_labels_are_the_space_prefixed_pair_on_smollm2(prm_checkpoints):
    _, tok, _ = prm_checkpoints["label"]
    # The README's encode("+ -")[1:] assumes a BOS first and SentencePiece's dummy prefix: on SmolLM2's
    # byte-level BPE it keeps one token, and "+ -" gives an unmatched bare "+" and spaced " -".
    assert tok.encode("+ -")[1:] == [tok.encode(" -")[-1]]
    ids = get_format("math-shepherd").readout(tok).token_ids
    assert tok.convert_ids_to_tokens(list(ids)) == ["Ġ+", "Ġ-"]
    assert ids == (tok.encode("ки +")[-1], tok.encode("ки -")[-1])  # the labels as they follow the tag


def test_step_tag_counts_and_offsets_on_the_real_vocabulary(prm_checkpoints):
    _, tok, _ = prm_checkpoints["label"]
    steps = ["Step 1: 2 + 3 = 5.", "The answer is 5."]
    # SmolLM2 spells "ки" as two tokens, "к" "и"; the tag is read at its last one, "и", one per step
    enc = get_format("math-shepherd").encode(tok, QUESTION, steps)
    assert len(enc.positions) == 2 and {enc.input_ids[p] for p in enc.positions} == {tok.encode("ки")[-1]}
    # ... and "и" also ends plain Russian words: the count check refuses rather than read them as tags
    with pytest.raises(RewardError, match="found 3"):
        get_format("math-shepherd").encode(tok, QUESTION, ["Он читает книги.", "The answer is 5."])
    # a "+" inside a step (the label's own token, unspaced) is not mistaken for an assistant label; the
    # read position precedes each label
    plus = tok.encode("+")[-1]
    for fmt in (get_format("rlhflow"), get_format("generic", chat=True)):
        enc = fmt.encode(tok, QUESTION, ["Step 1: 2+3 = 5.", "The answer is 5."])
        assert len(enc.positions) == 2 and all(enc.input_ids[p + 1] == plus for p in enc.positions)
        assert sum(t == plus for t in enc.input_ids) == 3  # two labels and the step's own "+"
    # a generic tag of several tokens is found by character offsets and read at the token ending it
    enc = get_format("generic", step_tag="<step>").encode(tok, QUESTION, steps)
    assert len(tok.encode(" <step>")) > 1 and len(enc.positions) == 2
    assert all(tok.decode(enc.input_ids[: p + 1]).endswith(" <step>") for p in enc.positions)
    # the Qwen PRM separator was added to the vocabulary as one token; separators inside steps are dropped
    qtok = prm_checkpoints["qwen-prm"][1]
    enc = get_format("qwen-prm").encode(qtok, QUESTION, [f"a {QWEN_PRM_SEP} b", "c"])
    assert len(enc.positions) == 2


def test_skywork_checkpoint_is_detected_from_its_value_head(prm_checkpoints):
    path, _, _ = prm_checkpoints["skywork"]
    prm = load_hf_prm(str(path), dtype="float32", device="cpu")
    try:
        assert prm.format.name == "skywork"
    finally:
        prm.close()
