"""The transformers PRM backend on tiny checkpoints built here, one per published PRM family.

Each checkpoint is saved the way its family ships (config architectures, safetensors key names,
sharded or not) and loaded with ``load_hf_prm``; rewards are compared with a per-solution reference
that follows the authors' published inference code (unbatched, full logits).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
)

from test_prm_formats import (  # noqa: E402
    QUESTION,
    SOLUTIONS,
    llama3_tokenizer,
    mistral_tokenizer,
    qwen_tokenizer,
)
from testtime.reward.base import ScoreRequest  # noqa: E402
from testtime.reward.hf import MissingExtraError, load_hf_prm  # noqa: E402

TINY = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)
HIDDEN = TINY["hidden_size"]


def _save_safetensors(root: Path, tensors: dict, shards: int) -> None:
    """model.safetensors, or ``shards`` files plus model.safetensors.index.json (heads in the last)."""
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    if shards == 1:
        save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
        return
    names = sorted(tensors, key=lambda k: (k.startswith(("score.", "v_head.")), k))
    size = math.ceil(len(names) / shards)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s * size : (s + 1) * size]
        save_file({n: tensors[n] for n in part}, str(root / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())}}
    (root / "model.safetensors.index.json").write_text(json.dumps({**index, "weight_map": weight_map}))


def build_causal(root: Path, tokenizer, config_cls, model_cls, seed: int = 0):
    torch.manual_seed(seed)
    model = model_cls(config_cls(vocab_size=len(tokenizer), **TINY)).eval()
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return model


def build_qwen_prm(root: Path, tokenizer, shards: int = 1, seed: int = 1, head: bool = True):
    """A Qwen2ForProcessRewardModel checkpoint: model.* weights + score.0 / score.2, remote-code config."""
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), architectures=["Qwen2ForProcessRewardModel"], **TINY)
    base = Qwen2Model(config).eval()
    score = torch.nn.Sequential(torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 2)).eval()
    root.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(root)
    raw = json.loads((root / "config.json").read_text())
    raw["auto_map"] = {
        "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
        "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
    }
    (root / "config.json").write_text(json.dumps(raw))
    tensors = {f"model.{k}": v for k, v in base.state_dict().items()}
    if head:
        tensors |= {f"score.{k}": v for k, v in score.state_dict().items()}
    _save_safetensors(root, tensors, shards)
    tokenizer.save_pretrained(root)
    return base, score


def build_skywork(root: Path, tokenizer, shards: int = 2, seed: int = 2):
    """Skywork's layout: their PRM_MODEL wraps a causal LM, so model.* + lm_head + v_head.summary."""
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), architectures=["Qwen2ForPrmModel"], **TINY)
    causal = Qwen2ForCausalLM(config).eval()
    v_head = torch.nn.Linear(HIDDEN, 1).eval()
    root.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(root)
    tensors = dict(causal.state_dict()) | {f"v_head.summary.{k}": v for k, v in v_head.state_dict().items()}
    _save_safetensors(root, tensors, shards)
    tokenizer.save_pretrained(root)
    return causal, v_head


# --- the authors' procedures, one solution at a time, full logits --------------------------------


def ref_math_shepherd(model, tok, question, steps):
    candidate_tokens = tok.encode("+ -")[1:]
    step_tag_id = tok.encode("ки")[-1]
    output = "\n".join(f"{s} ки" for s in steps)
    input_id = torch.tensor([tok.encode(f"{question} {output}")])
    with torch.no_grad():
        logits = model(input_id).logits[:, :, candidate_tokens]
        scores = logits.softmax(dim=-1)[:, :, 0]
        return scores[input_id == step_tag_id].tolist()


def ref_rlhflow(model, tok, question, steps):
    candidate_tokens = [tok.encode("+")[-1], tok.encode("-")[-1]]
    conversation, out = [], []
    for k, step in enumerate(steps):
        text = question + " " + step.strip() if k == 0 else step.strip()
        conversation += [{"content": text, "role": "user"}, {"content": "+", "role": "assistant"}]
        input_ids = tok.apply_chat_template(conversation, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids).logits[:, -3, candidate_tokens]
        out.append(logits.softmax(dim=-1)[0, 0].item())
    return out


def ref_qwen_prm(base, score, tok, question, steps):
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    conversation_str = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = torch.tensor([tok.encode(conversation_str)])
    with torch.no_grad():
        logits = score(base(input_ids=input_ids).last_hidden_state)  # Qwen2ForProcessRewardModel.forward
    token_masks = input_ids == tok.encode("<extra_0>")[0]
    probabilities = logits.softmax(dim=-1) * token_masks.unsqueeze(-1)  # make_step_rewards
    sample = probabilities[0]
    return sample[sample != 0].view(-1, 2)[:, 1].tolist()


def ref_skywork(causal, v_head, tok, question, steps):
    response = "\n".join(s.replace("\n", " ") for s in steps)
    prompt_ids = tok.encode(tok.bos_token + question + "\n")  # prepare_input
    input_ids, flags = list(prompt_ids), [0] * len(prompt_ids)
    step_token_id = tok.encode("\n")[-1]
    for step in response.split("\n"):
        step_ids = (tok.encode(step) if step != "" else []) + [step_token_id]
        input_ids += step_ids
        flags += [0] * (len(step_ids) - 1) + [1]
    with torch.no_grad():  # PRM_MODEL.forward(return_probs=True): v_head on hidden_states[-1], sigmoid
        out = causal(input_ids=torch.tensor([input_ids]), output_hidden_states=True)
        rewards = torch.sigmoid(v_head(out.hidden_states[-1]).squeeze(-1))[0]
    return [rewards[i].item() for i, f in enumerate(flags) if f == 1]  # derive_step_rewards


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (checkpoint dir, its tokenizer as loaded from there, the in-memory reference model)."""
    root = tmp_path_factory.mktemp("prm")
    built = {
        "math-shepherd": build_causal(root / "ms", mistral_tokenizer(), MistralConfig, MistralForCausalLM),
        "rlhflow": build_causal(root / "rl", llama3_tokenizer(), LlamaConfig, LlamaForCausalLM),
        "qwen-prm": build_qwen_prm(root / "qw", qwen_tokenizer()),
        "skywork": build_skywork(root / "sky", qwen_tokenizer(extra_0=False, bos="<|endoftext|>")),
    }
    dirs = {"math-shepherd": "ms", "rlhflow": "rl", "qwen-prm": "qw", "skywork": "sky"}
    # The references tokenize as the authors do, with AutoTokenizer on the checkpoint: transformers
    # may rebuild a family's tokenizer on load (Qwen2Tokenizer imposes Qwen2's digit-splitting).
    return {f: (root / d, AutoTokenizer.from_pretrained(root / d), built[f]) for f, d in dirs.items()}


def _reference(family, models, tok, question, steps):
    if family == "math-shepherd":
        return ref_math_shepherd(models, tok, question, steps)
    if family == "rlhflow":
        return ref_rlhflow(models, tok, question, steps)
    if family == "qwen-prm":
        return ref_qwen_prm(*models, tok, question, steps)
    return ref_skywork(*models, tok, question, steps)


FAMILIES = ["math-shepherd", "rlhflow", "qwen-prm", "skywork"]
# Math-Shepherd's tokenizer has no chat template: its steps must hold no blank edges to match the
# README's "step ки" layout exactly, which is what the format produces after stripping.
MS_SOLUTIONS = [[s.strip() for s in sol] for sol in SOLUTIONS]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_rewards_equal_the_authors_per_solution_reference(checkpoints, family):
    path, tok, models = checkpoints[family]
    prm = load_hf_prm(str(path), format=family)
    assert prm.format.name == family
    solutions = MS_SOLUTIONS if family == "math-shepherd" else SOLUTIONS
    got = prm.score(QUESTION, solutions)
    assert prm.forward_calls == 1  # all four solutions, padded to the longest, in one batch
    for steps, rewards in zip(solutions, got, strict=True):
        want = _reference(family, models, tok, QUESTION, steps)
        assert len(rewards) == len(steps) == len(want)
        np.testing.assert_allclose(rewards, want, rtol=0, atol=1e-5)
    # Different solutions give different rewards: the comparison above is not vacuous.
    assert len({round(r[0], 6) for r in got}) > 1


@pytest.mark.parametrize("family", FAMILIES)
def test_format_is_detected_from_the_checkpoint(checkpoints, family):
    path, _, _ = checkpoints[family]
    assert load_hf_prm(str(path)).format.name == family


def test_batching_limits_give_the_same_rewards(checkpoints):
    path, _, _ = checkpoints["qwen-prm"]
    requests = [ScoreRequest(q, tuple(s)) for q in (QUESTION, "Janet's ducks lay 16 eggs?") for s in SOLUTIONS]
    big = load_hf_prm(str(path), format="qwen-prm")
    small = load_hf_prm(str(path), format="qwen-prm", max_batch_size=2)
    want = [s.rewards for s in big.score_batch(requests)]
    got = small.score_batch(requests)
    assert big.forward_calls == 1
    assert small.forward_calls == math.ceil(len(requests) / 2)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.rewards, w, rtol=0, atol=1e-5)
        assert g.tokens > 0
    tight = load_hf_prm(str(path), format="qwen-prm", max_batch_tokens=1)  # one solution per batch
    assert [s.rewards for s in tight.score_batch(requests[:3])] == [pytest.approx(w, abs=1e-5) for w in want[:3]]
    assert tight.forward_calls == 3


@pytest.mark.parametrize("family", ["rlhflow", "skywork"])
def test_bfloat16_weights_score_close_to_float32(checkpoints, family):
    path, _, _ = checkpoints[family]
    full = load_hf_prm(str(path), format=family).score(QUESTION, SOLUTIONS)
    half = load_hf_prm(str(path), format=family, dtype="bfloat16", device="cpu")
    assert half.forward.base.dtype == torch.bfloat16
    for h, f in zip(half.score(QUESTION, SOLUTIONS), full, strict=True):
        np.testing.assert_allclose(h, f, atol=0.02)


def test_n_params_counts_base_and_head(checkpoints):
    path, _, (base, score) = checkpoints["qwen-prm"]
    prm = load_hf_prm(str(path), format="qwen-prm")
    assert prm.n_params == sum(p.numel() for p in base.parameters()) + sum(p.numel() for p in score.parameters())
    prm.close()
    path, _, model = checkpoints["rlhflow"]
    assert load_hf_prm(str(path)).n_params == sum(p.numel() for p in model.parameters())


# --- models whose rewards are known by construction ----------------------------------------------

READ_REWARD = 0.75  # at the token the format must read; 0.5 anywhere else


def _indicator_hidden(decoder, read_token: int) -> float:
    """Make the last hidden state depend only on the current token: layers add nothing, and only
    ``read_token``'s embedding has a component on dimension 0. Returns that component after the
    final RMSNorm (weight 1)."""
    with torch.no_grad():
        for layer in decoder.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = decoder.embed_tokens.weight
        emb[:, 0] = 0.0
        emb[read_token] = 0.0
        emb[read_token, 0] = 1.0
        decoder.norm.weight.fill_(1.0)
    return 1.0 / math.sqrt(1.0 / HIDDEN + decoder.config.rms_norm_eps)


def _gain(component: float) -> float:
    return math.log(READ_REWARD / (1 - READ_REWARD)) / component  # sigmoid(gain * component) = 0.75


def test_label_token_model_known_by_construction(tmp_path):
    tok = llama3_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), **TINY)).eval()
    read_token = tok.encode("\n", add_special_tokens=False)[0]  # "\n\n" before each assistant label
    component = _indicator_hidden(model.model, read_token)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.encode("+")[-1], 0] = _gain(component)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prm = load_hf_prm(str(tmp_path), format="rlhflow")
    for steps, rewards in zip(SOLUTIONS, prm.score(QUESTION, SOLUTIONS), strict=True):
        assert rewards == pytest.approx([READ_REWARD] * len(steps), abs=1e-5)
    # The same model read at the label itself (a plain tag format) sees 0.5: positions matter.
    plain = load_hf_prm(str(tmp_path), format="generic")
    assert plain.score(QUESTION, [["a", "b"]]) == [pytest.approx([0.5, 0.5], abs=1e-5)]


def test_math_shepherd_tag_model_known_by_construction(tmp_path):
    tok = mistral_tokenizer()
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tok), **TINY)).eval()
    component = _indicator_hidden(model.model, tok.encode("ки")[-1])
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.encode("+ -")[1], 0] = _gain(component)  # the space-prefixed "+"
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    got = load_hf_prm(str(tmp_path), format="math-shepherd").score(QUESTION, MS_SOLUTIONS)
    assert got == [pytest.approx([READ_REWARD] * len(s), abs=1e-5) for s in MS_SOLUTIONS]


def test_qwen_prm_head_known_by_construction(tmp_path):
    tok = qwen_tokenizer()
    base, score = build_qwen_prm(tmp_path, tok)
    component = _indicator_hidden(base, tok.convert_tokens_to_ids("<extra_0>"))
    with torch.no_grad():
        score[0].weight.copy_(torch.eye(HIDDEN))
        score[0].bias.zero_()
        score[2].weight.zero_()
        score[2].bias.zero_()
        score[2].weight[1, 0] = _gain(component)  # class 1 = the step is good
    build_qwen_prm_from(tmp_path, tok, base, score)
    got = load_hf_prm(str(tmp_path), format="qwen-prm").score(QUESTION, SOLUTIONS)
    assert got == [pytest.approx([READ_REWARD] * len(s), abs=1e-5) for s in SOLUTIONS]


def build_qwen_prm_from(root: Path, tok, base, score) -> None:
    tensors = {f"model.{k}": v for k, v in base.state_dict().items()}
    tensors |= {f"score.{k}": v for k, v in score.state_dict().items()}
    (root / "model.safetensors").unlink()
    _save_safetensors(root, tensors, 1)


def test_skywork_value_head_known_by_construction(tmp_path):
    tok = qwen_tokenizer(extra_0=False, bos="<|endoftext|>")
    causal, v_head = build_skywork(tmp_path, tok, shards=1)
    component = _indicator_hidden(causal.model, tok.encode("\n")[-1])
    with torch.no_grad():
        v_head.weight.zero_()
        v_head.bias.zero_()
        v_head.weight[0, 0] = _gain(component)
    tensors = dict(causal.state_dict()) | {f"v_head.summary.{k}": v for k, v in v_head.state_dict().items()}
    (tmp_path / "model.safetensors").unlink()
    _save_safetensors(tmp_path, tensors, 1)
    got = load_hf_prm(str(tmp_path)).score(QUESTION, SOLUTIONS)
    assert got == [pytest.approx([READ_REWARD] * len(s), abs=1e-5) for s in SOLUTIONS]


# --- errors --------------------------------------------------------------------------------------


def test_ambiguous_checkpoint_needs_an_explicit_format(tmp_path):
    tok = qwen_tokenizer(extra_0=False)
    build_causal(tmp_path, tok, Qwen2Config, Qwen2ForCausalLM)
    with pytest.raises(ValueError, match="cannot tell which PRM format.*pass format="):
        load_hf_prm(str(tmp_path))
    prm = load_hf_prm(str(tmp_path), format="generic", dtype="float32", device="cpu")
    assert len(prm.score(QUESTION, [["a", "b"]])[0]) == 2
    chat = load_hf_prm(str(tmp_path), format="generic", format_options={"chat": True, "system": "Judge."})
    assert chat.format.chat and len(chat.score(QUESTION, [["a", "b", "c"]])[0]) == 3
    with pytest.raises(ValueError, match="unknown PRM format 'nope'; valid formats"):
        load_hf_prm(str(tmp_path), format="nope")
    with pytest.raises(ValueError, match="unsupported dtype"):
        load_hf_prm(str(tmp_path), format="generic", dtype="int8")


def test_missing_head_weights_are_reported(tmp_path):
    build_qwen_prm(tmp_path, qwen_tokenizer(), head=False)
    with pytest.raises(ValueError, match=r"no score\.0\.weight.*Qwen2\.5-Math-PRM score head"):
        load_hf_prm(str(tmp_path), format="qwen-prm")


def test_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local checkpoint directory"):
        load_hf_prm(str(tmp_path / "absent"))


def test_missing_extra_gives_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"install the extra: pip install 'testtime\[hf\]'") as err:
        load_hf_prm(str(tmp_path))
    assert isinstance(err.value, MissingExtraError)
