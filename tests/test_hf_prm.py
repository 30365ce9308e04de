"""The transformers PRM backend on tiny random checkpoints, one per published PRM family.

``testtime.testing.synthetic.build_random_prm`` writes each checkpoint the way its family ships (config
architectures, safetensors key names, sharded or not); ``load_hf_prm`` loads it. The reference models
are the families' published classes loaded strictly from the same tensors, and rewards are compared
with a per-solution reference that follows the authors' published inference code (unbatched, full
logits).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from safetensors import safe_open  # noqa: E402
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

from test_prm_formats import QUESTION, SOLUTIONS  # noqa: E402
from testtime.backends.hf import MissingExtraError  # noqa: E402
from testtime.reward.base import ScoreRequest  # noqa: E402
from testtime.reward.hf import load_hf_prm  # noqa: E402
from testtime.testing.synthetic import SHAPES, build_random_prm, build_tokenizer, save_safetensors  # noqa: E402

HIDDEN = SHAPES["tiny"]["hidden_size"]
CAUSAL = {
    "math-shepherd": (MistralConfig, MistralForCausalLM),
    "rlhflow": (LlamaConfig, LlamaForCausalLM),
    "generic": (Qwen2Config, Qwen2ForCausalLM),
}


def read_weights(root: Path) -> dict:
    """Every tensor in the checkpoint's safetensors files (one file or shards)."""
    out = {}
    for file in sorted(root.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            out |= {k: f.get_tensor(k) for k in f.keys()}
    return out


def _strict(module, tensors: dict):
    module.load_state_dict(tensors, strict=True)  # every key present and used: the layout is exact
    return module.eval()


def _part(tensors: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def load_reference(root: Path, family: str):
    """The family's published model classes, loaded strictly from the checkpoint's tensors:
    a causal LM, or (qwen-prm) Qwen2Model + the score head, or (skywork) the causal LM + the value head."""
    w = read_weights(root)
    if family in CAUSAL:
        config_cls, model_cls = CAUSAL[family]
        return _strict(model_cls(config_cls.from_pretrained(root)), w)
    config = Qwen2Config.from_pretrained(root)
    h, nn = config.hidden_size, torch.nn
    if family == "qwen-prm":  # Qwen2ForProcessRewardModel: model.* and score.0 -> ReLU -> score.2
        assert all(k.startswith(("model.", "score.")) for k in w)
        score = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        return _strict(Qwen2Model(config), _part(w, "model.")), _strict(score, _part(w, "score."))
    # Skywork's PRM_MODEL wraps a causal LM: model.* + lm_head + v_head.summary.
    causal = {k: v for k, v in w.items() if not k.startswith("v_head.")}
    return _strict(Qwen2ForCausalLM(config), causal), _strict(nn.Linear(h, 1), _part(w, "v_head.summary."))


def save_reference(root: Path, family: str, models) -> None:
    """Write (possibly edited) reference models back as the checkpoint's weights, same key names."""
    if family == "qwen-prm":
        base, score = models
        tensors = {f"model.{k}": v for k, v in base.state_dict().items()}
        tensors |= {f"score.{k}": v for k, v in score.state_dict().items()}
    elif family == "skywork":
        causal, v_head = models
        tensors = dict(causal.state_dict()) | {f"v_head.summary.{k}": v for k, v in v_head.state_dict().items()}
    else:
        tensors = dict(models.state_dict())
    save_safetensors(root, tensors)


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
    out = {}
    for seed, family in enumerate(FAMILIES):
        # Skywork's published checkpoints are sharded: exercise the index.
        path = build_random_prm(root / family, family, seed=seed, shards=2 if family == "skywork" else 1)
        # The references tokenize as the authors do, with AutoTokenizer on the checkpoint: transformers
        # may rebuild a family's tokenizer on load (Qwen2Tokenizer imposes Qwen2's digit-splitting).
        out[family] = (path, AutoTokenizer.from_pretrained(path), load_reference(path, family))
    return out


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
    tok = build_tokenizer("rlhflow")
    model = load_reference(build_random_prm(tmp_path, "rlhflow"), "rlhflow")
    read_token = tok.encode("\n", add_special_tokens=False)[0]  # "\n\n" before each assistant label
    component = _indicator_hidden(model.model, read_token)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.encode("+")[-1], 0] = _gain(component)
    save_reference(tmp_path, "rlhflow", model)
    prm = load_hf_prm(str(tmp_path), format="rlhflow")
    for steps, rewards in zip(SOLUTIONS, prm.score(QUESTION, SOLUTIONS), strict=True):
        assert rewards == pytest.approx([READ_REWARD] * len(steps), abs=1e-5)
    # The same model read at the label itself (a plain tag format) sees 0.5: positions matter.
    plain = load_hf_prm(str(tmp_path), format="generic")
    assert plain.score(QUESTION, [["a", "b"]]) == [pytest.approx([0.5, 0.5], abs=1e-5)]


def test_math_shepherd_tag_model_known_by_construction(tmp_path):
    tok = build_tokenizer("math-shepherd")
    model = load_reference(build_random_prm(tmp_path, "math-shepherd"), "math-shepherd")
    component = _indicator_hidden(model.model, tok.encode("ки")[-1])
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.encode("+ -")[1], 0] = _gain(component)  # the space-prefixed "+"
    save_reference(tmp_path, "math-shepherd", model)
    got = load_hf_prm(str(tmp_path), format="math-shepherd").score(QUESTION, MS_SOLUTIONS)
    assert got == [pytest.approx([READ_REWARD] * len(s), abs=1e-5) for s in MS_SOLUTIONS]


def test_qwen_prm_head_known_by_construction(tmp_path):
    tok = build_tokenizer("qwen-prm")
    base, score = load_reference(build_random_prm(tmp_path, "qwen-prm"), "qwen-prm")
    component = _indicator_hidden(base, tok.convert_tokens_to_ids("<extra_0>"))
    with torch.no_grad():
        score[0].weight.copy_(torch.eye(HIDDEN))
        score[0].bias.zero_()
        score[2].weight.zero_()
        score[2].bias.zero_()
        score[2].weight[1, 0] = _gain(component)  # class 1 = the step is good
    save_reference(tmp_path, "qwen-prm", (base, score))
    got = load_hf_prm(str(tmp_path), format="qwen-prm").score(QUESTION, SOLUTIONS)
    assert got == [pytest.approx([READ_REWARD] * len(s), abs=1e-5) for s in SOLUTIONS]


def test_skywork_value_head_known_by_construction(tmp_path):
    tok = build_tokenizer("skywork")
    causal, v_head = load_reference(build_random_prm(tmp_path, "skywork"), "skywork")
    component = _indicator_hidden(causal.model, tok.encode("\n")[-1])
    with torch.no_grad():
        v_head.weight.zero_()
        v_head.bias.zero_()
        v_head.weight[0, 0] = _gain(component)
    save_reference(tmp_path, "skywork", (causal, v_head))
    got = load_hf_prm(str(tmp_path)).score(QUESTION, SOLUTIONS)
    assert got == [pytest.approx([READ_REWARD] * len(s), abs=1e-5) for s in SOLUTIONS]


# --- errors --------------------------------------------------------------------------------------


def test_ambiguous_checkpoint_needs_an_explicit_format(tmp_path):
    build_random_prm(tmp_path, "generic")  # a plain Qwen2.5 chat LM: no family's evidence
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
    build_random_prm(tmp_path, "qwen-prm")
    save_safetensors(tmp_path, {k: v for k, v in read_weights(tmp_path).items() if not k.startswith("score.")})
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
