"""Neural PRMs: a published input format + a backend forward, batched by length.

The split keeps each piece small and testable:

* a *format* (``reward/formats.py``) turns (question, steps) into token ids and the positions at
  which each step's reward is read, and says how to read it (a ``Readout``);
* a *forward* (transformers, vLLM, HTTP) runs a batch of encoded solutions and returns only the
  raw numbers at those positions;
* ``rewards_from`` (pure) turns those numbers into rewards exactly as the PRM's authors do.

``TokenPRM`` glues them: encode everything, sort by length, pack batches bounded by tokens and
size, one forward per batch, then restore the caller's order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from testtime.reward.base import BatchScorer, RewardError, Scored, ScoreRequest, check_scored

ReadoutKind = Literal["label_tokens", "two_class", "value_head"]


@dataclass(frozen=True)
class Readout:
    """How a step reward is read from the model's output at a read position.

    * ``label_tokens``: a causal LM; softmax over the logits of ``token_ids = (positive, negative)``
      (Math-Shepherd, RLHFlow, generic); the reward is P(positive).
    * ``two_class``: a token-classification head with 2 outputs; softmax, take ``class_index``
      (Qwen2.5-Math-PRM).
    * ``value_head``: a scalar head; sigmoid (Skywork-o1-Open-PRM).
    """

    kind: ReadoutKind
    token_ids: tuple[int, int] | None = None
    class_index: int = 1

    def __post_init__(self) -> None:
        if self.kind == "label_tokens" and (self.token_ids is None or len(self.token_ids) != 2):
            raise ValueError("label_tokens readout needs token_ids=(positive_id, negative_id)")

    @property
    def width(self) -> int:
        """Numbers a forward returns per read position."""
        return 1 if self.kind == "value_head" else 2


@dataclass(frozen=True)
class Encoded:
    """One solution as the PRM sees it: token ids, and one read position per step."""

    input_ids: list[int]
    positions: list[int]

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        for p in self.positions:
            if not 0 <= p < n:
                raise ValueError(f"read position {p} outside the {n}-token input")


class Forward(Protocol):
    """A backend: for each encoded solution, the raw outputs at its read positions.

    Returns one float array per item, shape ``(len(item.positions), readout.width)``:
    label_tokens -> the logits of ``readout.token_ids`` (positive, negative), in that order;
    two_class -> both class logits; value_head -> the pre-sigmoid value.
    """

    def __call__(self, batch: Sequence[Encoded], readout: Readout) -> list[np.ndarray]: ...


class PRMFormat(Protocol):
    """A published PRM input format (see reward/formats.py). ``tokenizer`` is a HF tokenizer."""

    name: str

    def readout(self, tokenizer: Any) -> Readout: ...

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded: ...


def rewards_from(readout: Readout, raw: np.ndarray) -> list[float]:
    """Step rewards from a forward's raw outputs at the read positions (pure; float64 math)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != readout.width:
        raise RewardError(f"{readout.kind} readout expects shape (steps, {readout.width}), got {raw.shape}")
    if readout.kind == "value_head":
        out = 1.0 / (1.0 + np.exp(-raw[:, 0]))
    else:
        z = raw - raw.max(axis=1, keepdims=True)  # stable 2-way softmax
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        out = p[:, 0] if readout.kind == "label_tokens" else p[:, readout.class_index]
    return [float(x) for x in out]


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Indices grouped into batches: longest first, each batch's padded size (rows x longest row)
    within ``max_batch_tokens`` and at most ``max_batch_size`` rows. A single row longer than the
    token bound still gets a batch of its own (the backend decides whether it fits)."""
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= max_batch_size or (len(current) + 1) * longest > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class TokenPRM(BatchScorer):
    """A neural PRM = format + tokenizer + forward; implements the RewardModel protocol."""

    outcome_only = False

    def __init__(
        self,
        name: str,
        fmt: PRMFormat,
        tokenizer: Any,
        forward: Forward,
        *,
        n_params: int = 0,
        max_batch_tokens: int = 32768,
        max_batch_size: int = 64,
        close: Any = None,
    ) -> None:
        self.name = name
        self.format = fmt
        self.tokenizer = tokenizer
        self.forward = forward
        self.n_params = n_params
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self._readout = fmt.readout(tokenizer)
        self._close = close
        self.forward_calls = 0  # for tests and benchmarks: how many backend calls scoring took

    def encode(self, request: ScoreRequest) -> Encoded:
        return self.format.encode(self.tokenizer, request.question, list(request.steps))

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        out: list[Scored | None] = [None] * len(requests)
        todo: list[int] = []
        encoded: dict[int, Encoded] = {}
        for i, req in enumerate(requests):
            if not req.steps:
                out[i] = Scored([], 0)
                continue
            enc = self.encode(req)
            if len(enc.positions) != len(req.steps):
                raise RewardError(
                    f"PRM {self.name} ({self.format.name}): {len(enc.positions)} read positions "
                    f"for {len(req.steps)} steps"
                )
            encoded[i] = enc
            todo.append(i)
        lengths = [len(encoded[i].input_ids) for i in todo]
        for batch in plan_batches(lengths, self.max_batch_tokens, self.max_batch_size):
            items = [encoded[todo[b]] for b in batch]
            raws = self.forward(items, self._readout)
            self.forward_calls += 1
            if len(raws) != len(items):
                raise RewardError(f"PRM {self.name}: backend returned {len(raws)} results for {len(items)}")
            for b, enc, raw in zip(batch, items, raws, strict=True):
                rewards = rewards_from(self._readout, raw)
                if any(math.isnan(r) for r in rewards):
                    raise RewardError(f"PRM {self.name}: NaN reward (check the backend's dtype / weights)")
                out[todo[b]] = Scored(rewards, len(enc.input_ids))
        return check_scored(self.name, requests, [s for s in out if s is not None])

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None
