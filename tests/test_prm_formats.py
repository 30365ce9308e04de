"""PRM input formats against the authors' published procedures, on small tokenizers built here.

The tokenizers are trained in-process with the ``tokenizers`` library and carry each family's real
special tokens and chat template (Llama-3.1's and Qwen2.5's, written out below), so the exact token
ids and read positions can be checked without downloading anything. test_hf_prm.py reuses them.
"""

from __future__ import annotations

import string
from functools import cache

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from testtime.reward.base import RewardError  # noqa: E402
from testtime.reward.formats import (  # noqa: E402
    FORMATS,
    QWEN_PRM_SYSTEM,
    GenericFormat,
    detect_format,
    get_format,
)

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

QUESTION = "What is 2 + 3?"
SOLUTIONS = [
    ["Add the numbers: 2 + 3 = 5.", "So the answer is \\boxed{5}."],
    ["2 + 3 = 6.", "Check: 6 - 3 = 3.", "The answer is 6."],
    ["The answer is 5."],
    ["Janet has 16 eggs.\nShe eats 3.", "16 - 3 = 13 eggs", "13 - 4 = 9", "9 * 2 = 18", "The answer is 18"],
]

_BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()


def _train(tk: Tokenizer, specials: list[str], alphabet: list[str], vocab: int) -> None:
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tk.train_from_iterator(CORPUS * 10, trainer)


@cache
def mistral_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE like Mistral's (math-shepherd): Metaspace, BOS added, no chat template."""
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
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@cache
def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE like Llama-3.1's (RLHFlow): BOS added by the post-processor, Llama-3.1 template."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    _train(tk, specials, _BYTE_ALPHABET, 500)
    bos = ("<|begin_of_text|>", tk.token_to_id("<|begin_of_text|>"))
    tk.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[bos]),
        ]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = LLAMA31_TEMPLATE
    return tok


def qwen_tokenizer(extra_0: bool = True, bos: str | None = None) -> PreTrainedTokenizerFast:
    """Byte-level BPE like Qwen2.5's: no BOS added, ChatML template; Qwen2.5-Math-PRM adds <extra_0>."""
    tk = Tokenizer.from_str(_qwen_json(extra_0))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=bos)
    tok.chat_template = QWEN25_TEMPLATE
    return tok


@cache
def _qwen_json(extra_0: bool) -> str:
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    _train(tk, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], _BYTE_ALPHABET, 500)
    if extra_0:
        tk.add_special_tokens([AddedToken("<extra_0>", special=True, normalized=False)])
    return tk.to_str()


# --- Math-Shepherd -----------------------------------------------------------------------------


def test_math_shepherd_text_tags_and_labels_follow_the_readme():
    tok = mistral_tokenizer()
    fmt = get_format("math-shepherd")
    steps = ["Step 1: 2 + 3 = 5.", "Step 2: The answer is 5."]
    enc = fmt.encode(tok, QUESTION, steps)
    # The README's input: f"{question} {output}", output = "step ки\nstep ки", encoded with BOS.
    assert enc.input_ids == tok.encode(f"{QUESTION} Step 1: 2 + 3 = 5. ки\nStep 2: The answer is 5. ки")
    assert enc.input_ids[0] == tok.bos_token_id
    tag_id = tok.encode("ки")[-1]
    assert tok.convert_ids_to_tokens(tag_id) == "▁ки"
    assert [enc.input_ids[p] for p in enc.positions] == [tag_id, tag_id]
    assert enc.positions[-1] == len(enc.input_ids) - 1
    # candidate_tokens = tokenizer.encode(f"{good_token} {bad_token}")[1:]
    readout = fmt.readout(tok)
    assert readout.kind == "label_tokens"
    assert readout.token_ids == tuple(tok.encode("+ -")[1:])
    assert tok.convert_ids_to_tokens(list(readout.token_ids)) == ["▁+", "▁-"]


def test_math_shepherd_strips_tags_inside_text_so_counts_match():
    tok = mistral_tokenizer()
    enc = get_format("math-shepherd").encode(tok, "Q ки?", ["a ки b", "ки", "c"])
    assert len(enc.positions) == 3
    assert enc.input_ids == tok.encode("Q ? a  b ки\n ки\nc ки")


class _NoTagTokenizer:
    """Duck-typed tokenizer that loses the tag: every text encodes to the same ids."""

    bos_token = "<s>"
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [1, 5, 6, 7] if add_special_tokens else [5, 6, 7]


def test_math_shepherd_raises_when_tag_positions_do_not_match_steps():
    with pytest.raises(RewardError, match=r"found 1 'ки' tags for 2 steps"):
        get_format("math-shepherd").encode(_NoTagTokenizer(), QUESTION, ["a", "b"])


# --- RLHFlow -----------------------------------------------------------------------------------


def _rlhflow_conversation(question, steps):
    conv = []
    for k, step in enumerate(steps):
        conv.append({"role": "user", "content": question + " " + step.strip() if k == 0 else step.strip()})
        conv.append({"role": "assistant", "content": "+"})
    return conv


@pytest.mark.parametrize("steps", SOLUTIONS[:3])
def test_rlhflow_reads_the_position_before_each_assistant_label(steps):
    tok = llama3_tokenizer()
    fmt = get_format("rlhflow")
    enc = fmt.encode(tok, QUESTION, steps)
    # The authors' tokenization: apply_chat_template(conversation) adds no special tokens: one BOS.
    expected = tok.apply_chat_template(_rlhflow_conversation(QUESTION, steps))["input_ids"]
    assert enc.input_ids == list(expected)
    assert enc.input_ids.count(tok.bos_token_id) == 1
    plus = tok.encode("+")[-1]
    assert fmt.readout(tok).token_ids == (plus, tok.encode("-")[-1])
    assert [enc.input_ids[p + 1] for p in enc.positions] == [plus] * len(steps)
    assert tok.convert_ids_to_tokens([enc.input_ids[p] for p in enc.positions]) == ["Ċ"] * len(steps)
    # prm_evaluate.py reads logits[:, -3] of each prefix conversation: the same token positions.
    for k in range(len(steps)):
        prefix = tok.apply_chat_template(_rlhflow_conversation(QUESTION, steps[: k + 1]))["input_ids"]
        assert enc.positions[k] == len(prefix) - 3
        assert list(prefix) == enc.input_ids[: len(prefix)]


def test_rlhflow_is_not_fooled_by_labels_inside_steps():
    tok = llama3_tokenizer()
    steps = ["+ + 2 + 3 = 5 +", "+"]
    enc = get_format("rlhflow").encode(tok, "Is 2 + 3 = 5 +?", steps)
    plus = tok.encode("+")[-1]
    assert len(enc.positions) == 2
    assert sum(t == plus for t in enc.input_ids) > 2  # many "+" tokens, only the labels are read
    assert enc.positions[-1] == len(enc.input_ids) - 3


def test_chat_format_raises_when_the_label_is_not_one_token():
    tok = llama3_tokenizer()
    fmt = GenericFormat(chat=True, positive="Janet's", negative="-")
    assert len(tok.encode("Janet's", add_special_tokens=False)) > 1
    with pytest.raises(RewardError, match="is not the single token"):
        fmt.encode(tok, QUESTION, ["a", "b"])


def test_chat_format_needs_a_chat_template():
    with pytest.raises(RewardError, match="chat template"):
        get_format("rlhflow").encode(mistral_tokenizer(), QUESTION, ["a"])


# --- Skywork -----------------------------------------------------------------------------------


def _skywork_prepare_input(problem, response, tokenizer, step_token="\n"):
    """The authors' prepare_input (skywork-o1-prm-inference io_utils), written out for comparison."""
    prompt_ids = tokenizer.encode(tokenizer.bos_token + problem + "\n")
    response_ids, flags = [], [0] * len(prompt_ids)
    step_token_id = tokenizer.encode(step_token)[-1]
    for step in response.split(step_token):
        step_ids = tokenizer.encode(step) if step != "" else []
        step_ids = step_ids + [step_token_id]
        response_ids += step_ids
        flags += [0] * (len(step_ids) - 1) + [1]
    return prompt_ids + response_ids, flags


@pytest.mark.parametrize("steps", SOLUTIONS)
def test_skywork_matches_prepare_input_and_reward_flags(steps):
    tok = qwen_tokenizer(extra_0=False, bos="<|endoftext|>")
    enc = get_format("skywork").encode(tok, QUESTION, steps)
    flat = [s.replace("\n", " ") for s in steps]  # one reward per step: no newline may split a step
    ids, flags = _skywork_prepare_input(QUESTION, "\n".join(flat), tok)
    assert enc.input_ids == ids
    assert enc.positions == [i for i, f in enumerate(flags) if f == 1]
    assert len(enc.positions) == len(steps)
    newline = tok.encode("\n")[-1]
    assert [enc.input_ids[p] for p in enc.positions] == [newline] * len(steps)
    assert enc.input_ids[0] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert get_format("skywork").readout(tok).kind == "value_head"


def test_skywork_segments_are_tokenized_separately():
    tok = qwen_tokenizer(extra_0=False, bos="<|endoftext|>")
    enc = get_format("skywork").encode(tok, QUESTION, ["Add: 2 + 3", "= 5"])
    prompt = tok.encode("<|endoftext|>" + QUESTION + "\n")
    nl = tok.encode("\n")[-1]
    assert enc.input_ids == prompt + tok.encode("Add: 2 + 3") + [nl] + tok.encode("= 5") + [nl]


# --- Qwen2.5-Math-PRM --------------------------------------------------------------------------


@pytest.mark.parametrize("steps", SOLUTIONS)
def test_qwen_prm_follows_the_model_card(steps):
    tok = qwen_tokenizer()
    fmt = get_format("qwen-prm")
    enc = fmt.encode(tok, QUESTION, steps)
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    conversation_str = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert conversation_str.startswith(f"<|im_start|>system\n{QWEN_PRM_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert conversation_str.endswith("<extra_0><|im_end|>\n")
    assert enc.input_ids == tok.encode(conversation_str)
    step_sep_id = tok.encode("<extra_0>")[0]
    assert [i for i, t in enumerate(enc.input_ids) if t == step_sep_id] == enc.positions
    assert len(enc.positions) == len(steps)
    readout = fmt.readout(tok)
    assert (readout.kind, readout.class_index) == ("two_class", 1)


def test_qwen_prm_needs_the_extra_0_token():
    with pytest.raises(RewardError, match="<extra_0>"):
        get_format("qwen-prm").encode(qwen_tokenizer(extra_0=False), QUESTION, ["a"])


def test_qwen_prm_removes_separators_inside_steps():
    enc = get_format("qwen-prm").encode(qwen_tokenizer(), "Q<extra_0>", ["a<extra_0>b", "c"])
    assert len(enc.positions) == 2


# --- generic -----------------------------------------------------------------------------------


def test_generic_plain_reads_at_the_configured_tag():
    tok = llama3_tokenizer()
    fmt = get_format("generic", step_tag="ки", positive="+", negative="-")
    enc = fmt.encode(tok, QUESTION, ["2 + 3 = 5", "answer 5"])
    assert enc.input_ids == tok.encode(f"{QUESTION} 2 + 3 = 5 ки\nanswer 5 ки")
    assert enc.positions[-1] == len(enc.input_ids) - 1
    assert tok.decode(enc.input_ids[: enc.positions[0] + 1]).endswith("2 + 3 = 5 ки")
    assert tok.decode(enc.input_ids[enc.positions[0] + 1 : enc.positions[1] + 1]) == "\nanswer 5 ки"
    assert fmt.readout(tok).token_ids == (tok.encode("+")[-1], tok.encode("-")[-1])


class _OneTokenTokenizer:
    """Duck-typed tokenizer that merges the whole text into one token."""

    def __call__(self, text: str, return_offsets_mapping: bool = False) -> dict:
        return {"input_ids": [9], "offset_mapping": [(0, len(text))]}


def test_generic_plain_raises_when_a_tag_merges_with_the_next_step():
    with pytest.raises(RewardError, match="merges with its neighbours"):
        get_format("generic").encode(_OneTokenTokenizer(), QUESTION, ["a", "b"])


def test_generic_chat_with_system_prompt():
    tok = llama3_tokenizer()
    fmt = get_format("generic", chat=True, system="Judge each step.")
    enc = fmt.encode(tok, QUESTION, ["2 + 3 = 5", "answer 5"])
    conv = [
        {"role": "system", "content": "Judge each step."},
        *_rlhflow_conversation(QUESTION, ["2 + 3 = 5", "answer 5"]),
    ]
    assert enc.input_ids == list(tok.apply_chat_template(conv)["input_ids"])
    assert [enc.input_ids[p + 1] for p in enc.positions] == [tok.encode("+")[-1]] * 2


def test_generic_rejects_labels_sharing_a_token():
    with pytest.raises(RewardError, match="share a token"):
        get_format("generic", positive="a+", negative="b+").readout(llama3_tokenizer())


# --- registry and detection --------------------------------------------------------------------


def test_get_format_names_and_errors():
    assert sorted(FORMATS) == ["generic", "math-shepherd", "qwen-prm", "rlhflow", "skywork"]
    for name in FORMATS:
        assert get_format(name).name == name
    with pytest.raises(ValueError, match="unknown PRM format 'shepherd'; valid formats: generic, math-shepherd"):
        get_format("shepherd")
    with pytest.raises(ValueError, match="bad options"):
        get_format("skywork", chat=True)


def test_detect_format_for_each_family():
    assert detect_format(mistral_tokenizer(), {"architectures": ["MistralForCausalLM"]}) == "math-shepherd"
    assert detect_format(llama3_tokenizer(), {"architectures": ["LlamaForCausalLM"]}) == "rlhflow"
    assert detect_format(qwen_tokenizer(), {"architectures": ["Qwen2ForProcessRewardModel"]}) == "qwen-prm"
    sky = qwen_tokenizer(extra_0=False, bos="<|endoftext|>")
    assert detect_format(sky, {"architectures": ["Qwen2ForPrmModel"]}) == "skywork"
    weights = ["model.embed_tokens.weight", "v_head.summary.weight", "v_head.summary.bias"]
    assert detect_format(sky, {"architectures": ["Qwen2ForCausalLM"]}, weights) == "skywork"


def test_detect_format_returns_none_when_ambiguous():
    qwen = qwen_tokenizer()
    # A chat causal LM with a ChatML template: a label-token PRM, but which labels and layout?
    assert detect_format(qwen, {"architectures": ["Qwen2ForCausalLM"]}) is None
    # A process-reward head without the <extra_0> token it is read at.
    assert detect_format(qwen_tokenizer(extra_0=False), {"architectures": ["Qwen2ForProcessRewardModel"]}) is None
    # Two families' evidence at once.
    assert detect_format(qwen, {"architectures": ["Qwen2ForProcessRewardModel"]}, ["v_head.summary.weight"]) is None
    # The name alone never decides.
    named = {"architectures": ["Qwen2ForCausalLM"], "_name_or_path": "peiyi9979/math-shepherd-mistral-7b-prm"}
    assert detect_format(qwen, named) is None
    assert detect_format(mistral_tokenizer(), None) is None
    assert detect_format(mistral_tokenizer(), {"architectures": ["MistralForSequenceClassification"]}) is None
