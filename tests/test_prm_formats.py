"""PRM input formats against the authors' published procedures, on small tokenizers built locally.

``testtime.testing.synthetic.build_tokenizer`` trains each family's tokenizer in-process with the
``tokenizers`` library and gives it the family's real special tokens and chat template (Llama-3.1's and
Qwen2.5's), so the exact token ids and read positions can be checked without downloading anything.
"""

from __future__ import annotations

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from testtime.reward.base import RewardError  # noqa: E402
from testtime.reward.formats import (  # noqa: E402
    FORMATS,
    QWEN_PRM_SYSTEM,
    GenericFormat,
    detect_format,
    get_format,
)
from testtime.testing.synthetic import build_tokenizer  # noqa: E402

QUESTION = "What is 2 + 3?"
SOLUTIONS = [
    ["Add the numbers: 2 + 3 = 5.", "So the answer is \\boxed{5}."],
    ["2 + 3 = 6.", "Check: 6 - 3 = 3.", "The answer is 6."],
    ["The answer is 5."],
    ["Janet has 16 eggs.\nShe eats 3.", "16 - 3 = 13 eggs", "13 - 4 = 9", "9 * 2 = 18", "The answer is 18"],
]


# --- Math-Shepherd -----------------------------------------------------------------------------


def test_math_shepherd_text_tags_and_labels_follow_the_readme():
    tok = build_tokenizer("math-shepherd")
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
    tok = build_tokenizer("math-shepherd")
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
    tok = build_tokenizer("rlhflow")
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
    tok = build_tokenizer("rlhflow")
    steps = ["+ + 2 + 3 = 5 +", "+"]
    enc = get_format("rlhflow").encode(tok, "Is 2 + 3 = 5 +?", steps)
    plus = tok.encode("+")[-1]
    assert len(enc.positions) == 2
    assert sum(t == plus for t in enc.input_ids) > 2  # many "+" tokens, only the labels are read
    assert enc.positions[-1] == len(enc.input_ids) - 3


def test_chat_format_raises_when_the_label_is_not_one_token():
    tok = build_tokenizer("rlhflow")
    fmt = GenericFormat(chat=True, positive="Janet's", negative="-")
    assert len(tok.encode("Janet's", add_special_tokens=False)) > 1
    with pytest.raises(RewardError, match="is not the single token"):
        fmt.encode(tok, QUESTION, ["a", "b"])


def test_chat_format_needs_a_chat_template():
    with pytest.raises(RewardError, match="chat template"):
        get_format("rlhflow").encode(build_tokenizer("math-shepherd"), QUESTION, ["a"])


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
    tok = build_tokenizer("skywork")
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
    tok = build_tokenizer("skywork")
    enc = get_format("skywork").encode(tok, QUESTION, ["Add: 2 + 3", "= 5"])
    prompt = tok.encode("<|endoftext|>" + QUESTION + "\n")
    nl = tok.encode("\n")[-1]
    assert enc.input_ids == prompt + tok.encode("Add: 2 + 3") + [nl] + tok.encode("= 5") + [nl]


# --- Qwen2.5-Math-PRM --------------------------------------------------------------------------


@pytest.mark.parametrize("steps", SOLUTIONS)
def test_qwen_prm_follows_the_model_card(steps):
    tok = build_tokenizer("qwen-prm")
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
        get_format("qwen-prm").encode(build_tokenizer("generic"), QUESTION, ["a"])


def test_qwen_prm_removes_separators_inside_steps():
    enc = get_format("qwen-prm").encode(build_tokenizer("qwen-prm"), "Q<extra_0>", ["a<extra_0>b", "c"])
    assert len(enc.positions) == 2


# --- generic -----------------------------------------------------------------------------------


def test_generic_plain_reads_at_the_configured_tag():
    tok = build_tokenizer("rlhflow")
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
    tok = build_tokenizer("rlhflow")
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
        get_format("generic", positive="a+", negative="b+").readout(build_tokenizer("rlhflow"))


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
    assert detect_format(build_tokenizer("math-shepherd"), {"architectures": ["MistralForCausalLM"]}) == "math-shepherd"
    assert detect_format(build_tokenizer("rlhflow"), {"architectures": ["LlamaForCausalLM"]}) == "rlhflow"
    assert detect_format(build_tokenizer("qwen-prm"), {"architectures": ["Qwen2ForProcessRewardModel"]}) == "qwen-prm"
    sky = build_tokenizer("skywork")
    assert detect_format(sky, {"architectures": ["Qwen2ForPrmModel"]}) == "skywork"
    weights = ["model.embed_tokens.weight", "v_head.summary.weight", "v_head.summary.bias"]
    assert detect_format(sky, {"architectures": ["Qwen2ForCausalLM"]}, weights) == "skywork"


def test_detect_format_returns_none_when_ambiguous():
    qwen = build_tokenizer("qwen-prm")
    # A chat causal LM with a ChatML template: a label-token PRM, but which labels and layout?
    assert detect_format(qwen, {"architectures": ["Qwen2ForCausalLM"]}) is None
    # A process-reward head without the <extra_0> token it is read at.
    assert detect_format(build_tokenizer("generic"), {"architectures": ["Qwen2ForProcessRewardModel"]}) is None
    # Two families' evidence at once.
    assert detect_format(qwen, {"architectures": ["Qwen2ForProcessRewardModel"]}, ["v_head.summary.weight"]) is None
    # The name alone never decides.
    named = {"architectures": ["Qwen2ForCausalLM"], "_name_or_path": "peiyi9979/math-shepherd-mistral-7b-prm"}
    assert detect_format(qwen, named) is None
    mistral = build_tokenizer("math-shepherd")
    assert detect_format(mistral, None) is None
    assert detect_format(mistral, {"architectures": ["MistralForSequenceClassification"]}) is None
