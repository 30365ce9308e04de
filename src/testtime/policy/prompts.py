"""Prompt building: chat template from the model, few-shot examples as earlier turns.

SmolLM2 zero-shot ignores the requested answer format in 30-60% of samples; three worked examples of
the same level as earlier chat turns, each ending "The answer is N.", bring compliance to ~100%.
A base model (no chat template) gets the same examples as plain text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.sandbox

from testtime.types import Problem

INSTRUCTION = (
    "Solve the problem step by step. Write one step per paragraph and finish with "
    '"The answer is N." where N is the final answer.'
)

# How clients ask a served model (``testtime serve``, chat): the question alone as the user turn, no worked
# examples, and the answer instruction as the system turn (the server adds it to a chat that has none). A
# sweep made this way (recipe ``prompt: chat``) calibrates tables for the questions clients send.
CHAT_PROMPT: dict[str, Any] = {"fewshot": 0, "system": INSTRUCTION, "instruction": ""}
PROMPT_MODES: dict[str, dict[str, Any]] = {"chat": CHAT_PROMPT}


@dataclass(frozen=True)
class PromptConfig:
    fewshot: int = 3  # worked examples shown before the question (0 = zero-shot)
    instruction: str = INSTRUCTION
    system: str | None = None  # None keeps the template's own default system turn
    # a user's few-shot file (datasets.FewshotSet) used instead of the built-in examples; None: built-in
    examples: Any = None


def render_jinja_chat(template: str, bos: str, eos: str) -> Callable[[list[dict[str, str]]], str]:
    """Compile a GGUF/HF chat template once; returns a renderer with add_generation_prompt=True."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg: str) -> None:
        raise jinja2.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    compiled = env.from_string(template)

    def render(messages: list[dict[str, str]]) -> str:
        return compiled.render(messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos)

    return render


def plain_chat(messages: list[dict[str, str]]) -> str:
    """Fallback for base models: 'Question: ... / Answer: ...' blocks."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"].strip() + "\n\n")
        elif m["role"] == "user":
            parts.append(f"Question: {m['content'].strip()}\nAnswer:\n")
        else:
            parts.append(m["content"].strip() + "\n\n\n")
    return "".join(parts)


def _user_turn(instruction: str, question: str) -> str:
    return f"{instruction}\n\n{question}" if instruction else question


def build_messages(
    problem: Problem, examples: list[tuple[str, str]], config: PromptConfig
) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if config.system is not None:
        messages.append({"role": "system", "content": config.system})
    for question, solution in examples[: config.fewshot]:
        messages.append({"role": "user", "content": _user_turn(config.instruction, question)})
        messages.append({"role": "assistant", "content": solution})
    messages.append({"role": "user", "content": _user_turn(config.instruction, problem.question)})
    return messages


def tokenizer_chat(tokenizer: Any) -> Callable[[list[dict[str, str]]], str]:
    """A renderer from an HF tokenizer's chat template (generation prompt added), else `plain_chat`."""
    if getattr(tokenizer, "chat_template", None) is None:
        return plain_chat

    def render(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render


def prompt_token_ids(tokenizer: Any, text: str) -> list[int]:
    """A prompt's ids as the model sees them: the tokenizer's special tokens (BOS) are added unless the
    text already starts with the BOS text (a rendered chat template wrote it)."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=add_special)]

