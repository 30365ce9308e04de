"""Published PRM input formats: how each PRM family turns (question, steps) into tokens and read positions.

Each format reproduces its authors' published inference code, because a PRM scored on a layout it
was not trained on returns plausible-looking but wrong numbers:

* ``math-shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm, README snippet): plain text
  ``f"{question} {output}"`` where ``output`` is ``"{step} ки\\n{step} ки\\n...{step} ки"``, tokenized
  with ``tokenizer.encode`` (BOS added); read at every token equal to ``encode("ки")[-1]``; reward =
  softmax over the logits of ``encode("+ -")[1:]`` (the space-prefixed "+", "-"), P("+"). A tokenizer
  without SentencePiece's dummy prefix gets the same space-prefixed pair (``MathShepherdFormat.readout``).
* ``rlhflow`` (RLHFlow/RLHF-Reward-Modeling ``math-rm/prm_evaluate.py``): a multi-turn chat through the
  tokenizer's chat template: the first user turn is ``question + " " + step1``, later user turns one
  (stripped) step each, each assistant turn ``"+"``. The authors read ``logits[:, -3]`` of each prefix
  conversation, i.e. the position just before each assistant label; reward = P("+") over
  ``(encode("+")[-1], encode("-")[-1])``. ``apply_chat_template(tokenize=True)`` adds no special tokens,
  so the template's own ``<|begin_of_text|>`` is the only BOS.
* ``skywork`` (SkyworkAI/skywork-o1-prm-inference ``prepare_input``): ``encode(bos + question + "\\n")``
  then each step tokenized on its own, followed by the id of ``encode("\\n")[-1]``; reward = sigmoid of
  the value head at those step-tag tokens (their ``reward_flags``). The authors split the response on
  "\\n", so a step's own newlines would make extra steps: they are replaced by spaces here.
* ``qwen-prm`` (Qwen2.5-Math-PRM model card): system "Please reason step by step, and put your final
  answer within \\boxed{}.", user = question, assistant = ``"<extra_0>".join(steps) + "<extra_0>"``,
  rendered with ``tokenize=False, add_generation_prompt=False`` then ``tokenizer.encode``; read at each
  ``<extra_0>``; reward = softmax of the 2-class head, class 1.
* ``generic``: a configurable step tag / label pair, plain or chat (see ``GenericFormat``).

``detect_format`` names a format only when the checkpoint's config and tokenizer leave no doubt.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testtime.reward.base import RewardError
from testtime.reward.neural import Encoded, PRMFormat, Readout

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def _ids(tokenizer: Any, text: str, *, special: bool = True) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=special))


def _last_id(tokenizer: Any, text: str) -> int:
    """The id the authors use for a tag or label: the last token of ``encode(text)``."""
    ids = _ids(tokenizer, text)
    if not ids:
        raise RewardError(f"tokenizer encodes {text!r} to no tokens")
    return ids[-1]


def _positions_of(ids: Sequence[int], token_id: int) -> list[int]:
    return [i for i, t in enumerate(ids) if t == token_id]


def _check_count(fmt: str, found: int, steps: int, what: str) -> None:
    if found != steps:
        raise RewardError(
            f"{fmt} format: found {found} {what} for {steps} steps (the tag did not survive tokenization "
            "as one token per step; check the tokenizer matches the checkpoint)"
        )


def _chat_encode(fmt: str, tokenizer: Any, messages: list[dict[str, str]], label: str, label_id: int) -> Encoded:
    """Token ids of a rendered chat whose assistant turns are all ``label``, read just before each label.

    The label's character offsets are found by rendering the chat with unique sentinels in place of
    the labels (so a label-like character inside a step can never be mistaken for one), then mapped
    to tokens through the tokenizer's offset mapping. The result is checked against the chat rendered
    with the real labels and against the label's token id, so a template or tokenizer that merges the
    label with its neighbours raises instead of reading the wrong position.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise RewardError(f"{fmt} format needs a tokenizer with a chat template")
    marked, sentinels = [], []
    for m in messages:
        if m["role"] == "assistant":
            sentinels.append(f"\x02testtime-label-{len(sentinels)}\x03")
            marked.append({"role": "assistant", "content": sentinels[-1]})
        else:
            marked.append(m)
    rendered = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=False)
    text, offsets, cursor = "", [], 0
    for s in sentinels:
        at = rendered.find(s, cursor)
        if at < 0 or rendered.count(s) != 1:
            raise RewardError(f"{fmt} format: the chat template does not render assistant turns verbatim")
        text += rendered[cursor:at]
        offsets.append(len(text))
        text += label
        cursor = at + len(s)
    text += rendered[cursor:]
    if text != tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False):
        raise RewardError(f"{fmt} format: the chat template renders the label {label!r} differently")
    # As apply_chat_template(tokenize=True): the template carries its own BOS, add none.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    starts = [s for s, _ in spans]
    positions = []
    for off in offsets:
        i = bisect.bisect_right(starts, off) - 1
        if i < 1 or not spans[i][0] <= off < spans[i][1] or ids[i] != label_id:
            raise RewardError(
                f"{fmt} format: the label {label!r} at character {off} is not the single token {label_id}"
            )
        positions.append(i - 1)  # a causal LM predicts the label from the token before it
    return Encoded(ids, positions)


@dataclass(frozen=True)
class MathShepherdFormat:
    """Math-Shepherd (peiyi9979/math-shepherd-mistral-7b-prm): plain text with a "ки" tag after each step.

    The authors' policy wrote steps as "Step k: ..."; steps are scored as given, without adding that
    prefix. The tag is removed from the question and steps so that tag tokens and steps correspond.
    """

    name: str = "math-shepherd"
    step_tag: str = "ки"
    positive: str = "+"
    negative: str = "-"

    def readout(self, tokenizer: Any) -> Readout:
        # The authors take encode("+ -")[1:] on Mistral's SentencePiece tokenizer: the BOS dropped, the
        # space-prefixed "▁+" and "▁-" (the dummy prefix spaces the first), i.e. each label as it follows
        # a space mid-text, where the tag stood. A byte-level BPE (SmolLM2, Qwen, Llama-3) adds no dummy
        # prefix: "+ -" gives the bare "+" and the spaced " -", an unmatched pair. The label after the
        # other label and a space is the spaced token for both kinds, and the authors' pair on theirs.
        pos = _ids(tokenizer, f"{self.negative} {self.positive}", special=False)
        neg = _ids(tokenizer, f"{self.positive} {self.negative}", special=False)
        if len(pos) != 2 or len(neg) != 2 or pos[-1] == neg[-1]:
            raise RewardError(f"math-shepherd format: '{self.positive} {self.negative}' is not two label tokens")
        return Readout("label_tokens", token_ids=(pos[-1], neg[-1]))

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        tag = self.step_tag
        output = "\n".join(f"{s.replace(tag, '').strip()} {tag}" for s in steps)
        ids = _ids(tokenizer, f"{question.replace(tag, '')} {output}")
        positions = _positions_of(ids, _last_id(tokenizer, tag))
        _check_count(self.name, len(positions), len(steps), f"{tag!r} tags")
        return Encoded(ids, positions)


@dataclass(frozen=True)
class RLHFlowFormat:
    """RLHFlow (Llama3.1-8B-PRM-*-Data): one user turn per step, an assistant "+" after each."""

    name: str = "rlhflow"
    positive: str = "+"
    negative: str = "-"

    def readout(self, tokenizer: Any) -> Readout:
        ids = (_last_id(tokenizer, self.positive), _last_id(tokenizer, self.negative))
        return Readout("label_tokens", token_ids=ids)

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        messages = _label_chat(question, steps, self.positive, system=None)
        return _chat_encode(self.name, tokenizer, messages, self.positive, _last_id(tokenizer, self.positive))


def _label_chat(question: str, steps: Sequence[str], label: str, system: str | None) -> list[dict[str, str]]:
    """RLHFlow's conversation: question + " " + first step, then one step per user turn (stripped)."""
    messages = [{"role": "system", "content": system}] if system else []
    for k, step in enumerate(steps):
        text = f"{question} {step.strip()}" if k == 0 else step.strip()
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    return messages


@dataclass(frozen=True)
class SkyworkFormat:
    """Skywork-o1-Open-PRM: BOS + question + "\\n", then each step's own tokens and a "\\n" tag token."""

    name: str = "skywork"
    step_tag: str = "\n"

    def readout(self, tokenizer: Any) -> Readout:
        return Readout("value_head")

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        tag = self.step_tag
        # The authors write tokenizer.bos_token + problem; a tokenizer without one gets no BOS here.
        ids = _ids(tokenizer, (tokenizer.bos_token or "") + question + "\n")
        tag_id = _last_id(tokenizer, tag)
        positions = []
        for step in steps:
            # Their prepare_input splits the response on the tag, so a step's own tags would make
            # extra steps: flatten them to spaces. Segments are tokenized one by one, as they do.
            text = step.strip(tag).replace(tag, " ")
            ids += _ids(tokenizer, text) if text else []
            ids.append(tag_id)
            positions.append(len(ids) - 1)
        return Encoded(ids, positions)


@dataclass(frozen=True)
class QwenPRMFormat:
    """Qwen2.5-Math-PRM-7B/-72B and Qwen2.5-Math-7B-PRM800K: chat with <extra_0> after every step."""

    name: str = "qwen-prm"
    step_sep: str = "<extra_0>"
    system: str = QWEN_PRM_SYSTEM

    def readout(self, tokenizer: Any) -> Readout:
        return Readout("two_class", class_index=1)

    def _sep_id(self, tokenizer: Any) -> int:
        ids = _ids(tokenizer, self.step_sep, special=False)
        if len(ids) != 1:
            raise RewardError(f"qwen-prm format: the tokenizer has no {self.step_sep} token")
        return ids[0]

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        sep = self.step_sep
        clean = [s.replace(sep, "") for s in steps]
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": question.replace(sep, "")},
            {"role": "assistant", "content": sep.join(clean) + sep},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = _ids(tokenizer, text)
        positions = _positions_of(ids, self._sep_id(tokenizer))
        _check_count(self.name, len(positions), len(steps), f"{sep} tokens")
        return Encoded(ids, positions)


@dataclass(frozen=True)
class GenericFormat:
    """A label-token PRM with its own tag and labels, for checkpoints outside the published families.

    * ``chat=False`` (plain, Math-Shepherd style): ``f"{question} {step1} {tag}\\n{step2} {tag}..."``,
      tokenized with the tokenizer's special tokens; read at the token ending each tag, located by
      character offsets (so a tag spelled with several tokens, or unlike its standalone encoding in
      context, still works); a tag merged with the text after it raises.
    * ``chat=True`` (RLHFlow style): optional ``system`` turn, then user turns (question + " " + first
      step, then one step each) each answered by an assistant turn holding ``positive``; read at the
      token before each assistant label.

    Labels are tokenized on their own (``encode(label)[-1]``): write ``positive=" +"`` if the model
    was trained with space-prefixed labels after the tag. Reward = softmax over (positive, negative)
    logits, P(positive).
    """

    name: str = "generic"
    step_tag: str = "ки"
    positive: str = "+"
    negative: str = "-"
    chat: bool = False
    system: str | None = None

    def readout(self, tokenizer: Any) -> Readout:
        pos, neg = _last_id(tokenizer, self.positive), _last_id(tokenizer, self.negative)
        if pos == neg:
            raise RewardError(f"generic format: labels {self.positive!r} and {self.negative!r} share a token")
        return Readout("label_tokens", token_ids=(pos, neg))

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        if self.chat:
            messages = _label_chat(question, steps, self.positive, self.system)
            return _chat_encode(self.name, tokenizer, messages, self.positive, _last_id(tokenizer, self.positive))
        tag = self.step_tag
        text, ends = f"{question.replace(tag, '')} ", []
        for k, step in enumerate(steps):
            text += ("\n" if k else "") + f"{step.replace(tag, '').strip()} {tag}"
            ends.append(len(text))
        enc = tokenizer(text, return_offsets_mapping=True)
        ids, spans = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        starts = [s for s, _ in spans]
        positions = []
        for end in ends:
            # The token holding the tag's last character, which must not run into the next step.
            i = bisect.bisect_right(starts, end - 1) - 1
            if i < 0 or spans[i][1] != end:
                raise RewardError(f"{self.name} format: the tag {tag!r} ending at {end} merges with its neighbours")
            positions.append(i)
        return Encoded(ids, positions)


FORMATS: dict[str, Callable[..., PRMFormat]] = {
    "generic": GenericFormat,
    "math-shepherd": MathShepherdFormat,
    "qwen-prm": QwenPRMFormat,
    "rlhflow": RLHFlowFormat,
    "skywork": SkyworkFormat,
}


def get_format(name: str, **options: Any) -> PRMFormat:
    """The format called ``name``, built with ``options`` (e.g. ``get_format("generic", chat=True)``)."""
    if name not in FORMATS:
        raise ValueError(f"unknown PRM format {name!r}; valid formats: {', '.join(sorted(FORMATS))}")
    try:
        return FORMATS[name](**options)
    except TypeError as e:
        raise ValueError(f"PRM format {name!r}: bad options {sorted(options)} ({e})") from None


def _architectures(config: Any) -> list[str]:
    if config is None:
        return []
    archs = config.get("architectures") if isinstance(config, Mapping) else getattr(config, "architectures", None)
    return list(archs or [])


def _single_token(tokenizer: Any, text: str) -> bool:
    return len(_ids(tokenizer, text, special=False)) == 1


def detect_format(tokenizer: Any, config: Any, weight_names: Iterable[str] | None = None) -> str | None:
    """The published format a checkpoint uses, or None when its config and tokenizer do not settle it.

    Evidence used: the config's ``architectures``, the checkpoint's weight names when given (a
    ``v_head.*`` value head), the tokenizer's special tokens (``<extra_0>``), its vocabulary (a single
    "ки" token) and its chat template. Never the model's name: a fine-tune keeps its base's name but
    not necessarily its format. Several or no matching families give None, so the caller must ask
    for an explicit format.
    """
    archs = _architectures(config)
    names = set(weight_names or ())
    value_head = any(n.startswith("v_head.") for n in names)
    found = set()
    if "Qwen2ForProcessRewardModel" in archs and _single_token(tokenizer, "<extra_0>"):
        found.add("qwen-prm")
    if "Qwen2ForPrmModel" in archs or value_head:
        found.add("skywork")
    if any(a.endswith("ForCausalLM") for a in archs) and not value_head:
        template = getattr(tokenizer, "chat_template", None) or ""
        if isinstance(template, dict):  # several named templates: look at all of them
            template = "\n".join(map(str, template.values()))
        if "<|start_header_id|>" in template and _single_token(tokenizer, "<|start_header_id|>"):
            found.add("rlhflow")
        elif not template and _single_token(tokenizer, "ки"):
            found.add("math-shepherd")
    return found.pop() if len(found) == 1 else None
