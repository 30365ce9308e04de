"""A deterministic stand-in for a policy backend: no model, exact token counts, scriptable answers.

`ScriptedPolicy` implements the `Policy` protocol the way the llama.cpp backend does: a request for
samples [first_index, first_index + n) of a prompt is served in chunks of `chunk_size`, each chunk is
reported through `on_chunk(request_index, first_sample_index, completions)` as it finishes, and sample
i of a prompt is a pure function of (prompt, seed + i) -- so asking for the tail of a group reproduces
the tail of the whole group.

With ``confidences`` (question needle -> per-sample values, cycled) a sample carries a Confidence whose
lowest-group value is the scripted one, as a backend with log-probabilities would report.

Texts are "Step 1: ...\\n\\nThe answer is A." with A taken from a script (the problem's question found
in the last user turn -> one answer per sample index, cycled; None = a solution without an answer) or,
for prompts the script does not name, from a hash. Tokens are whitespace-separated words.

For tests of what is (not) regenerated it records every call and every generated sample, and it can
crash after K samples: `crash_with="raise"` raises `SimulatedCrash`; `"sigkill"` kills the process.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from testtime.policy.base import ChunkCallback, GenerationRequest
from testtime.types import Completion, Confidence

USER = "<|user|>\n"
ASSISTANT = "<|assistant|>\n"


class SimulatedCrash(RuntimeError):
    """Raised by ScriptedPolicy when told to fail after K samples."""


@dataclass(frozen=True)
class Call:
    """One (sub-)request as the backend received it."""

    prompt: str
    n: int
    seed: int
    first_index: int
    temperature: float


def words(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def last_user_turn(prompt: str) -> str:
    """The text of the final user message in a prompt rendered by `ScriptedPolicy.render_chat`."""
    tail = prompt.rsplit(USER, 1)[-1]
    return tail.split(ASSISTANT, 1)[0]


def solution_text(answer: str | None, tag: str = "") -> str:
    """The text the fake writes for a sample with this final answer (None: no marked answer)."""
    first = f"Step 1: I work it out carefully{tag}.\n\n"
    if answer is None:
        return first + "Step 2: I am not sure how to finish."
    return first + f"The answer is {answer}."


class ScriptedPolicy:
    model_id = "scripted-fake-v1"

    def __init__(
        self,
        script: Mapping[str, Sequence[str | None]] | None = None,
        *,
        n_params: int = 1_000,
        chunk_size: int = 4,
        crash_after: int | None = None,
        crash_with: str = "raise",
        model_id: str | None = None,
        confidences: Mapping[str, Sequence[float]] | None = None,
    ):
        self.script = dict(script or {})
        # question needle -> each sample's confidence (cycled), reported like a backend with logprobs
        self.confidences = dict(confidences or {})
        self.n_params = n_params
        self.chunk_size = chunk_size
        self.crash_after = crash_after
        self.crash_with = crash_with
        if model_id is not None:
            self.model_id = model_id
        self.calls: list[list[Call]] = []  # one entry per generate() call
        self.generated: list[tuple[str, int, int]] = []  # (prompt, seed, sample index) per sample
        self.closed = False

    # -- protocol ---------------------------------------------------------------------------------

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
        return "".join(parts) + ASSISTANT

    def generate(
        self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None = None
    ) -> list[list[Completion]]:
        self.calls.append(
            [Call(r.prompt, r.n, r.seed, r.first_index, r.params.temperature) for r in requests]
        )
        results: list[list[Completion]] = [[] for _ in requests]
        for ri, req in enumerate(requests):
            start, end = req.first_index, req.first_index + req.n
            while start < end:
                count = min(self.chunk_size, end - start)
                chunk = [self._sample(req, i) for i in range(start, start + count)]
                if on_chunk is not None:
                    on_chunk(ri, start, chunk)
                results[ri].extend(chunk)
                start += count
        return results

    def close(self) -> None:
        self.closed = True

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def n_generated(self) -> int:
        return len(self.generated)

    def indices_generated(self, prompt: str | None = None) -> list[int]:
        return [i for p, _s, i in self.generated if prompt is None or p == prompt]

    def answer_for(self, prompt: str, seed: int, index: int) -> str | None:
        turn = last_user_turn(prompt)
        for needle, answers in self.script.items():
            if needle in turn:
                return answers[index % len(answers)]
        digest = hashlib.sha256(f"{prompt}\x00{seed + index}".encode()).digest()
        return str(digest[0] % 20)

    def text_for(self, prompt: str, seed: int, index: int) -> str:
        # the tag makes every sample's text distinct, so tests can tell samples apart
        return solution_text(self.answer_for(prompt, seed, index), tag=f" (sample {seed + index})")

    def _sample(self, req: GenerationRequest, index: int) -> Completion:
        if self.crash_after is not None and self.n_generated >= self.crash_after:
            if self.crash_with == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise SimulatedCrash(f"simulated crash after {self.n_generated} samples")
        self.generated.append((req.prompt, req.seed, index))
        text = self.text_for(req.prompt, req.seed, index)
        prompt_tokens = words(req.prompt)
        return Completion(
            text=text,
            finish_reason="eos",
            prompt_tokens=prompt_tokens,
            # like llama.cpp: the first sample evaluates the prompt, its siblings reuse that KV
            cached_prompt_tokens=0 if index == 0 else prompt_tokens,
            generated_tokens=words(text),
            stop=None,
            confidence=self.confidence_for(req.prompt, index),
        )

    def confidence_for(self, prompt: str, index: int) -> Confidence | None:
        turn = last_user_turn(prompt)
        for needle, values in self.confidences.items():
            if needle in turn:
                c = float(values[index % len(values)])
                return Confidence(mean=c + 1.0, lowest_group=c, tail=c + 0.5, tokens=8)
        return None
