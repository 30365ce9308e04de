"""Synthetic PRM checkpoints and tokenizers, built locally: no model hub, no downloads.

Tests, benchmarks and GPU checks need checkpoints laid out exactly as each published PRM family ships
them (config architectures, safetensors key names, tokenizer special tokens and chat template), but
must never fetch one. This module builds them:

* ``build_tokenizer(family)``: a small BPE tokenizer trained in-process with ``tokenizers`` on a
  built-in corpus, carrying the family's real special tokens and chat template (Llama-3.1's and
  Qwen2.5's templates are written out below), so token ids and read positions can be checked exactly.
* ``build_random_prm(path, family, ...)``: that tokenizer + a config + random safetensors weights with
  the family's real key names, loadable by ``load_hf_prm(path)`` with its format detected. Weights are
  streamed to disk one tensor at a time (shapes come from the model class built on the meta device),
  so a 7B-shaped checkpoint never needs the whole model in memory.
* ``SHAPES``: named model shapes, from "tiny" (unit tests) to the real Qwen2.5-7B numbers (GPU checks).

Families are the format names of ``reward/formats.py``, plus ``generic``: a plain Qwen2.5 chat LM that
no detection can place, for tests of explicit formats.

torch, transformers and tokenizers are imported only inside the builders.
"""

from __future__ import annotations

import json
import math
import string
import struct
import sys
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

FAMILIES = ("math-shepherd", "rlhflow", "qwen-prm", "skywork", "generic")

# Keyword arguments of build_random_prm. "tiny" is its default; the Qwen2.5 rows are the published
# configs (Qwen/Qwen2.5-1.5B-Instruct and Qwen/Qwen2.5-7B-Instruct config.json). The 7B PRMs built on
# Qwen2.5(-Math)-7B have the same weight shapes (their rope theta / context length may differ, which
# changes no tensor).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=32,
        max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
    ),
    "small": dict(
        hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024,
        max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960,
        vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, intermediate_size=18944,
        vocab_size=152064, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    ),
}

# meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json chat_template (RLHFlow's PRMs keep it).
LLAMA31_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""  # noqa: E501

# Qwen/Qwen2.5-7B-Instruct tokenizer_config.json chat_template (the Qwen2.5 family's ChatML template).
QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # noqa: E501

CORPUS = [
    "Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins with 4.",
    "Step 1: 16 - 3 = 13 eggs are left. ки\nStep 2: 13 - 4 = 9 eggs are left. ки",
    "She sells 9 eggs for $2 each, so she makes 9 * 2 = 18 dollars. The answer is 18 ки",
    "+ - + - ки ки What is 2 + 3? Add the numbers: 2 + 3 = 5. So the answer is \\boxed{5}.",
    "system user assistant Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
    "Please reason step by step, and put your final answer within \\boxed{}.\n\n",
]


# -- tokenizers -------------------------------------------------------------------------------------


def _train(tk: Any, specials: list[str], alphabet: list[str], vocab: int) -> None:
    from tokenizers import trainers

    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tk.train_from_iterator(CORPUS * 10, trainer)


@cache
def _tokenizer_json(kind: str) -> str:
    """The trained tokenizer, serialized: training is the slow part, and a string is safe to share
    (every ``build_tokenizer`` call gets its own tokenizer object to mutate)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if kind == "mistral":
        # SentencePiece-style BPE like Mistral's: Metaspace, BOS added by the post-processor.
        tk = Tokenizer(models.BPE(unk_token="<unk>"))
        # Newlines stay single tokens (Mistral spells them as the byte <0x0A>), never merged into a word.
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split("\n", behavior="isolated"),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
            ]
        )
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        _train(tk, ["<unk>", "<s>", "</s>"], list(string.printable) + list("ки"), 300)
        bos = ("<s>", tk.token_to_id("<s>"))
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
        return tk.to_str()
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if kind == "llama3":
        # Byte-level BPE like Llama-3.1's, whose post-processor adds <|begin_of_text|>.
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        _train(tk, specials, alphabet, 500)
        bos = ("<|begin_of_text|>", tk.token_to_id("<|begin_of_text|>"))
        tk.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[bos]),
            ]
        )
        return tk.to_str()
    # Byte-level BPE like Qwen2.5's: no BOS added; Qwen2.5-Math-PRM adds the <extra_0> step separator.
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    _train(tk, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], alphabet, 500)
    if kind == "qwen-extra0":
        tk.add_special_tokens([AddedToken("<extra_0>", special=True, normalized=False)])
    return tk.to_str()


def build_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A small tokenizer with ``family``'s real special tokens and chat template (a fresh object per call).

    * ``math-shepherd``: Mistral / Llama-2 style SentencePiece BPE, BOS ``<s>``, a single "▁ки" token,
      no chat template;
    * ``rlhflow``: Llama-3.1 byte-level BPE, ``<|begin_of_text|>`` added, the Llama-3.1 chat template;
    * ``qwen-prm``: Qwen2.5 byte-level BPE with the ChatML template and the ``<extra_0>`` token;
    * ``skywork``: the same without ``<extra_0>``, with BOS ``<|endoftext|>`` (the authors' code
      prepends ``tokenizer.bos_token``);
    * ``generic``: the plain Qwen2.5 tokenizer (no BOS, no ``<extra_0>``).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    def make(kind: str, **specials: str | None) -> PreTrainedTokenizerFast:
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(kind)), **specials)

    if family == "math-shepherd":
        return make("mistral", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if family == "rlhflow":
        tok = make("llama3", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
        tok.chat_template = LLAMA31_TEMPLATE
        return tok
    if family in ("qwen-prm", "skywork", "generic"):
        bos = "<|endoftext|>" if family == "skywork" else None
        kind = "qwen-extra0" if family == "qwen-prm" else "qwen"
        tok = make(kind, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=bos)
        tok.chat_template = QWEN25_TEMPLATE
        return tok
    raise ValueError(f"unknown family {family!r}; valid families: {', '.join(FAMILIES)}")


# -- safetensors ------------------------------------------------------------------------------------

_ST_CODES = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}
_HEAD_PREFIXES = ("score.", "v_head.")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")

Spec = tuple[tuple[int, ...], str]  # (shape, dtype name)


def _dtype_name(dtype: Any) -> str:
    from testtime.backends.hf import DTYPES

    name = DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of bfloat16, float16, float32")
    return name


def _write_file(file: Path, entries: list[tuple[str, Spec]], produce: Callable[[str], Any]) -> int:
    """One safetensors file, written tensor by tensor (only one tensor in memory at a time).

    The header is known from the specs alone: 8-byte little-endian header length, the JSON header
    (padded with spaces so the data starts 8-byte aligned, as the safetensors library writes it),
    then the raw little-endian bytes in header order. Returns the data size in bytes.
    """
    import torch

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, dt) in entries:
        code, itemsize = _ST_CODES[dt]
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, (shape, dt) in entries:
            t = produce(name)
            if tuple(t.shape) != shape or _dtype_name(t.dtype) != dt:
                raise ValueError(f"{name}: got {tuple(t.shape)} {t.dtype}, expected {shape} {dt}")
            flat = t.detach().to("cpu").contiguous().reshape(-1)
            f.write(flat.view(torch.uint8).numpy().data)
    return offset


def _write_weights(root: Path, specs: Mapping[str, Spec], produce: Callable[[str], Any], shards: int) -> None:
    """model.safetensors, or ``shards`` files and model.safetensors.index.json, replacing any old ones."""
    if sys.byteorder != "little":  # raw tensor bytes are written as they lie in memory
        raise RuntimeError("safetensors are little-endian; this machine is not")
    if not 1 <= shards <= len(specs):
        raise ValueError(f"shards must be between 1 and the number of tensors ({len(specs)}), got {shards}")
    root.mkdir(parents=True, exist_ok=True)
    for pattern in _WEIGHT_FILES:  # a stale index would shadow a new single file when loading
        for old in root.glob(pattern):
            old.unlink()
    # Heads last: the published PRMs keep score.* / v_head.* in their last shard.
    names = sorted(specs, key=lambda n: (n.startswith(_HEAD_PREFIXES), n))
    if shards == 1:
        _write_file(root / "model.safetensors", [(n, specs[n]) for n in names], produce)
        return
    weight_map, total = {}, 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s * len(names) // shards : (s + 1) * len(names) // shards]
        total += _write_file(root / fname, [(n, specs[n]) for n in part], produce)
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def save_safetensors(root: str | Path, tensors: Mapping[str, Any], shards: int = 1) -> None:
    """Write ``tensors`` (name -> torch tensor) as a checkpoint's weights, as ``build_random_prm`` lays
    them out: one file, or ``shards`` files plus an index, heads in the last; old weight files go."""
    specs = {n: (tuple(t.shape), _dtype_name(t.dtype)) for n, t in tensors.items()}
    _write_weights(Path(root), specs, tensors.__getitem__, shards)


# -- random checkpoints -----------------------------------------------------------------------------

# family -> (config class, the transformers class whose weights are stored, config architectures)
_MODELS = {
    "math-shepherd": ("MistralConfig", "MistralForCausalLM", "MistralForCausalLM"),
    "rlhflow": ("LlamaConfig", "LlamaForCausalLM", "LlamaForCausalLM"),
    "qwen-prm": ("Qwen2Config", "Qwen2Model", "Qwen2ForProcessRewardModel"),
    "skywork": ("Qwen2Config", "Qwen2ForCausalLM", "Qwen2ForPrmModel"),
    "generic": ("Qwen2Config", "Qwen2ForCausalLM", "Qwen2ForCausalLM"),
}
# Qwen2ForProcessRewardModel's remote code, named as the published checkpoint names it (never run).
_QWEN_PRM_AUTO_MAP = {
    "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
    "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
}


def _config(
    family: str,
    tokenizer: Any,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int | None,
    vocab_size: int | None,
    max_position_embeddings: int,
    rope_theta: float,
    rms_norm_eps: float,
    tie_word_embeddings: bool,
    dtype: str,
) -> Any:
    import transformers

    if family not in _MODELS:
        raise ValueError(f"unknown family {family!r}; valid families: {', '.join(FAMILIES)}")
    if hidden_size % num_heads or num_heads % num_kv_heads or (hidden_size // num_heads) % 2:
        raise ValueError(
            f"hidden_size {hidden_size}, num_heads {num_heads}, num_kv_heads {num_kv_heads}: heads must divide "
            "the hidden size into even head dims, and kv heads must divide the heads"
        )
    vocab = len(tokenizer) if vocab_size is None else vocab_size
    if vocab < len(tokenizer):
        raise ValueError(f"vocab_size {vocab} is smaller than the {family} tokenizer's {len(tokenizer)} tokens")
    config_cls, _, arch = _MODELS[family]
    return getattr(transformers, config_cls)(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
        rms_norm_eps=rms_norm_eps,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        architectures=[arch],
        dtype=dtype,
    )


def _specs(family: str, config: Any, dtype: str) -> dict[str, Spec]:
    """Every stored tensor's name, shape and dtype, from the model class built on the meta device."""
    import torch
    import transformers

    from testtime.backends.hf import quiet

    with quiet(transformers), torch.device("meta"):
        model = getattr(transformers, _MODELS[family][1])(config)
    prefix = "model." if family == "qwen-prm" else ""  # Qwen2ForProcessRewardModel holds a Qwen2Model
    specs: dict[str, Spec] = {}
    seen: set[int] = set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:  # a tied lm_head is stored once, as the embedding (as save_pretrained does)
            seen.add(id(t))
            specs[prefix + name] = (tuple(t.shape), dtype)
    h = config.hidden_size
    if family == "qwen-prm":  # score.0 Linear(h, h) -> ReLU -> score.2 Linear(h, 2)
        heads = {"score.0.weight": (h, h), "score.0.bias": (h,), "score.2.weight": (2, h), "score.2.bias": (2,)}
    elif family == "skywork":  # their ValueHead: v_head.summary Linear(h, 1)
        heads = {"v_head.summary.weight": (1, h), "v_head.summary.bias": (1,)}
    else:
        heads = {}
    return specs | {n: (s, dtype) for n, s in heads.items()}


def checkpoint_shapes(family: str, *, vocab_size: int | None = None, **shape: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor ``build_random_prm`` would write (nothing is allocated): for
    parameter counts and memory planning of a shape, e.g. ``checkpoint_shapes("qwen-prm", **SHAPES["qwen2.5-7b"])``."""
    config = _config(family, build_tokenizer(family), vocab_size=vocab_size, dtype="float32", **_shape_args(shape))
    return {n: s for n, (s, _) in _specs(family, config, "float32").items()}


def _shape_args(shape: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(shape) - set(SHAPES["tiny"]) - {"vocab_size"}
    if unknown:
        raise TypeError(f"unknown shape arguments: {', '.join(sorted(unknown))}")
    return {**SHAPES["tiny"], "intermediate_size": None, **shape}


def build_random_prm(
    path: str | Path,
    family: str,
    *,
    hidden_size: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int | None = None,
    vocab_size: int | None = None,
    max_position_embeddings: int = 512,
    rope_theta: float = 10000.0,
    rms_norm_eps: float = 1e-6,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    shards: int = 1,
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """A random-weight checkpoint of ``family`` in ``path``: tokenizer, config and safetensors weights
    under the family's real key names, loadable by ``load_hf_prm(path)`` with the format detected.

    The defaults are the "tiny" shape; pass a named one with ``**SHAPES[name]``. ``intermediate_size``
    defaults to twice the hidden size; ``vocab_size`` to the tokenizer's size, and a larger one pads
    the embedding (and LM head) as real checkpoints do (Qwen2.5-7B: 152064 rows). Weights are drawn
    tensor by tensor from one generator seeded with ``seed`` on ``device`` ("cuda" draws a 7B shape in
    seconds; values then differ from a CPU draw), so memory holds one tensor at a time. Returns ``path``.
    """
    import torch

    key = _dtype_name(dtype)
    tokenizer = build_tokenizer(family)
    config = _config(
        family,
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
        rms_norm_eps=rms_norm_eps,
        tie_word_embeddings=tie_word_embeddings,
        dtype=key,
    )
    specs = _specs(family, config, key)
    generator = torch.Generator(device=device).manual_seed(seed)
    std = config.initializer_range

    def produce(name: str) -> Any:
        # transformers' initialisation scale (normal, std 0.02), but norm weights around 1 and biases
        # non-zero, so a loader that drops, swaps or re-initialises any tensor changes the rewards.
        t = torch.empty(specs[name][0], dtype=getattr(torch, key), device=device)
        return t.normal_(1.0 if name.endswith("norm.weight") else 0.0, std, generator=generator)

    root = Path(path)
    _write_weights(root, specs, produce, shards)
    config.save_pretrained(root)
    if family == "qwen-prm":
        raw = json.loads((root / "config.json").read_text())
        (root / "config.json").write_text(json.dumps(raw | {"auto_map": _QWEN_PRM_AUTO_MAP}, indent=2))
    tokenizer.save_pretrained(root)
    return root
