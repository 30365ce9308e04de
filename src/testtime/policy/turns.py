"""Where a sample's turn ends, shared by the backends that send text to a llama.cpp or OpenAI-style server.

A chat model ends its turn with an end-of-generation token, which every server stops at. A model prompted
in the plain ``Question:/Answer:`` format (``prompts.plain_chat``: a base model, or a server whose chat
template is unknown) has no such token: it writes its answer, then invents the next ``Question:`` turn
until ``max_tokens`` (measured against llama.cpp's server: 154 of 240 samples). Such requests also stop at
the next turn's marker; a sample that ends there has finished its answer, so it is reported as "eos".
"""

from __future__ import annotations

from typing import Any

from testtime.types import FinishReason

# the marker prompts.plain_chat starts every user turn with (after the previous turn's blank lines)
PLAIN_TURN_STOPS: tuple[str, ...] = ("\nQuestion:",)


def request_stops(stops: tuple[str, ...], turn_stops: tuple[str, ...]) -> list[str]:
    """The stop strings a request is sent with: the caller's, then the turn markers it lacks."""
    return [*stops, *(s for s in turn_stops if s not in stops)]


def classify_stop(
    stops: tuple[str, ...], turn_stops: tuple[str, ...], matched: Any = ...
) -> tuple[FinishReason, str | None]:
    """(finish reason, stop string) of a sample the server ended with "stop", not at an end-of-generation
    token it recognised.

    ``matched`` is the stop string the server says matched (vLLM's ``stop_reason``, SGLang's ``matched_stop``),
    or ``...`` when it does not say. A turn marker, or no string at all, is the end of the answer ("eos").
    Without the server's word: with no caller stops it was a turn marker or end-of-generation ("eos"); with
    exactly one it is taken to be that one (a turn marker inside one step is rare); with several, unknown."""
    if matched is not ...:
        if isinstance(matched, str) and matched not in turn_stops:
            return "stop", matched
        return "eos", None
    if not stops:
        return "eos", None
    return "stop", stops[0] if len(stops) == 1 else None
