"""Locally built PRM checkpoints (testtime.testing.synthetic): every family loads with its format detected,
vocabularies pad, shapes have the parameter counts their configs imply, and the weight writer produces
files the safetensors library reads back exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from testtime.reward.hf import load_hf_prm  # noqa: E402
from testtime.testing.synthetic import (  # noqa: E402
    FAMILIES,
    SHAPES,
    build_random_prm,
    build_tokenizer,
    checkpoint_shapes,
    save_safetensors,
)

QUESTION = "What is 47 + 19 - 15?"
STEPS = ["Step 1: 47 + 19 = 66.", "Step 2: 66 - 15 = 51.", "The answer is 51."]


def stored(root) -> dict:
    """name -> (shape, dtype) of every tensor in the checkpoint's safetensors files."""
    out = {}
    for file in sorted(root.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for k in f.keys():
                t = f.get_slice(k)
                out[k] = (tuple(t.get_shape()), t.get_dtype())
    return out


def qwen2_params(shape: dict, vocab: int, *, lm_head: bool, head: int = 0) -> int:
    """Parameters of a Qwen2 decoder from its config: q/k/v with biases, o and the SwiGLU MLP without,
    two RMSNorms per layer and a final one; an untied LM head; ``head`` extra (PRM head) parameters."""
    h, layers, i = shape["hidden_size"], shape["num_layers"], shape["intermediate_size"]
    kv = shape["num_kv_heads"] * h // shape["num_heads"]
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    untied = lm_head and not shape["tie_word_embeddings"]
    return vocab * h + layers * layer + h + (vocab * h if untied else 0) + head


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_builds_and_loads_with_its_format_detected(tmp_path, family):
    path = build_random_prm(tmp_path / family, family, seed=3)
    if family == "generic":  # a plain chat LM: no detection may guess its labels
        with pytest.raises(ValueError, match="cannot tell which PRM format"):
            load_hf_prm(str(path))
        prm = load_hf_prm(str(path), format="generic")
    else:
        prm = load_hf_prm(str(path))
        assert prm.format.name == family
    rewards = prm.score(QUESTION, [STEPS, STEPS[:1]])
    assert [len(r) for r in rewards] == [3, 1]
    assert all(0.0 < x < 1.0 for r in rewards for x in r)
    assert len(prm.tokenizer) == len(build_tokenizer(family))


def test_head_key_names_and_config_are_the_published_ones(tmp_path):
    qwen = build_random_prm(tmp_path / "qwen", "qwen-prm")
    names = set(stored(qwen))
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= names
    assert all(n.startswith(("model.", "score.")) for n in names)
    config = json.loads((qwen / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForProcessRewardModel"]
    assert config["auto_map"]["AutoModel"] == "modeling_qwen2_rm.Qwen2ForProcessRewardModel"
    sky = build_random_prm(tmp_path / "sky", "skywork", shards=3)
    index = json.loads((sky / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert index["weight_map"]["v_head.summary.weight"] == files[-1]  # heads in the last shard
    assert {"lm_head.weight", "v_head.summary.weight", "v_head.summary.bias"} <= set(stored(sky))


def test_vocab_padding(tmp_path):
    for family in ("qwen-prm", "rlhflow"):
        n = len(build_tokenizer(family))
        path = build_random_prm(tmp_path / family, family, vocab_size=n + 37)
        shapes = stored(path)
        assert shapes["model.embed_tokens.weight"][0][0] == n + 37
        if family == "rlhflow":
            assert shapes["lm_head.weight"][0][0] == n + 37
        assert json.loads((path / "config.json").read_text())["vocab_size"] == n + 37
        prm = load_hf_prm(str(path))
        assert len(prm.tokenizer) == n  # the tokenizer is unchanged; the extra rows are never read
        assert len(prm.score(QUESTION, [STEPS])[0]) == 3
    with pytest.raises(ValueError, match="smaller than the qwen-prm tokenizer"):
        build_random_prm(tmp_path / "bad", "qwen-prm", vocab_size=10)


def test_small_shape_parameter_count_follows_its_config(tmp_path):
    shape = SHAPES["small"]
    path = build_random_prm(tmp_path, "qwen-prm", **shape)
    vocab = len(build_tokenizer("qwen-prm"))
    h = shape["hidden_size"]
    want = qwen2_params(shape, vocab, lm_head=False, head=(h * h + h) + (2 * h + 2))
    assert sum(torch.Size(s).numel() for s, _ in stored(path).values()) == want
    assert load_hf_prm(str(path)).n_params == want
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (256, 4, 2)


def test_published_shapes_have_the_published_parameter_counts():
    # Nothing is allocated: shapes come from the model classes on the meta device.
    def count(family, name):
        return sum(torch.Size(s).numel() for s in checkpoint_shapes(family, **SHAPES[name]).values())

    # Qwen2.5-7B: 7,615,616,512 parameters (untied LM head); Qwen2.5-1.5B: 1,543,714,304 (tied).
    assert count("generic", "qwen2.5-7b") == qwen2_params(SHAPES["qwen2.5-7b"], 152064, lm_head=True) == 7615616512
    assert count("generic", "qwen2.5-1.5b") == qwen2_params(SHAPES["qwen2.5-1.5b"], 151936, lm_head=True) == 1543714304
    h = SHAPES["qwen2.5-7b"]["hidden_size"]
    assert count("skywork", "qwen2.5-7b") == 7615616512 + h + 1  # + the value head
    assert count("qwen-prm", "qwen2.5-7b") == 7615616512 - 152064 * h + (h * h + h) + (2 * h + 2)  # no LM head


def test_same_seed_same_weights_whatever_the_sharding(tmp_path):
    a = load_file(build_random_prm(tmp_path / "a", "skywork", seed=5) / "model.safetensors")
    sharded = build_random_prm(tmp_path / "b", "skywork", seed=5, shards=2)
    b = {}
    for file in sorted(sharded.glob("model-*.safetensors")):
        b |= load_file(file)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(build_random_prm(tmp_path / "c", "skywork", seed=6) / "model.safetensors")
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    # Rewriting a sharded checkpoint as one file removes the old shards and their index.
    save_safetensors(sharded, a)
    assert sorted(p.name for p in sharded.glob("model*")) == ["model.safetensors"]


def test_bfloat16_checkpoint(tmp_path):
    path = build_random_prm(tmp_path, "qwen-prm", dtype="bfloat16")
    assert {dt for _, dt in stored(path).values()} == {"BF16"}
    assert json.loads((path / "config.json").read_text())["dtype"] == "bfloat16"
    prm = load_hf_prm(str(path), dtype="bfloat16", device="cpu")
    assert len(prm.score(QUESTION, [STEPS])[0]) == 3


def test_save_safetensors_round_trips_through_the_safetensors_library(tmp_path):
    tensors = {
        "a.weight": torch.randn(3, 5),
        "b.bias": torch.randn(7).to(torch.bfloat16),
        "c.half": torch.randn(2, 2, 2).to(torch.float16),
        "d.scalar": torch.tensor(1.5),
        "e.strided": torch.randn(4, 6).t(),  # not contiguous
    }
    save_safetensors(tmp_path, tensors)
    back = load_file(tmp_path / "model.safetensors")
    assert back.keys() == tensors.keys()
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t)
    with pytest.raises(ValueError, match="unsupported dtype"):
        save_safetensors(tmp_path, {"i": torch.arange(3)})
    with pytest.raises(ValueError, match="shards must be between 1 and the number of tensors"):
        save_safetensors(tmp_path, tensors, shards=6)


def test_tokenizers_are_fresh_objects_and_families_are_checked():
    a, b = build_tokenizer("rlhflow"), build_tokenizer("rlhflow")
    a.chat_template = None
    assert b.chat_template and "<|start_header_id|>" in b.chat_template
    assert build_tokenizer("qwen-prm").convert_tokens_to_ids("<extra_0>") is not None
    assert "<extra_0>" not in build_tokenizer("skywork").get_vocab()
    assert build_tokenizer("skywork").bos_token == "<|endoftext|>" and build_tokenizer("generic").bos_token is None
    with pytest.raises(ValueError, match="unknown family 'llama'"):
        build_tokenizer("llama")
    with pytest.raises(ValueError, match="even head dims"):
        build_random_prm("/nonexistent", "qwen-prm", hidden_size=16, num_heads=3)


def test_module_imports_without_torch_or_transformers():
    code = (
        "import sys\n"
        "for m in ('torch', 'transformers', 'tokenizers', 'safetensors'): sys.modules[m] = None\n"
        "from testtime.testing import synthetic\n"
        "print(sorted(synthetic.SHAPES))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "qwen2.5-7b" in out.stdout


def test_tied_embeddings_are_stored_once_and_tied_on_load(tmp_path):
    path = build_random_prm(tmp_path, "rlhflow", tie_word_embeddings=True)
    assert "lm_head.weight" not in stored(path)  # as save_pretrained stores a tied head
    prm = load_hf_prm(str(path))
    assert prm.forward.head.weight.data_ptr() == prm.forward.base.embed_tokens.weight.data_ptr()
    assert len(prm.score(QUESTION, [STEPS])[0]) == 3
