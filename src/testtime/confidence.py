"""The policy's confidence in its own sample, from per-token top-k log-probabilities (DeepConf).

DeepConf (arXiv 2508.15260) scores a token by minus the mean log-probability of its top-k candidates
(high when the next-token distribution is peaked) and a sample by summaries of those scores: the mean,
the lowest mean over a sliding window ("group"), and the mean over the last tokens ("tail"). The paper's
windows are 2048 tokens over long reasoning traces; testtime's solutions are a few hundred tokens, so
the windows here are short enough that a sample has several of them.

Backends call ``summarize(token_confidences)`` once per sample; only the summary is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from testtime.types import Confidence

TOP_K = 5  # log-probabilities per token the backends ask for
GROUP = 16  # tokens per sliding window of the lowest-group confidence
TAIL = 32  # tokens at the end that make up the tail confidence


def token_confidence(top_logprobs: Iterable[float]) -> float:
    """Minus the mean of a token's top-k log-probabilities (DeepConf's token confidence)."""
    lps = [float(x) for x in top_logprobs]
    if not lps:
        raise ValueError("a token's confidence needs at least one log-probability")
    return -sum(lps) / len(lps)


def summarize(confidences: Sequence[float], group: int = GROUP, tail: int = TAIL) -> Confidence | None:
    """A sample's confidence summaries from its tokens' confidences (None for an empty sample)."""
    n = len(confidences)
    if n == 0:
        return None
    w = min(group, n)
    window = sum(confidences[:w])
    lowest = window
    for i in range(w, n):  # slide the window one token at a time
        window += confidences[i] - confidences[i - w]
        lowest = min(lowest, window)
    t = min(tail, n)
    return Confidence(mean=sum(confidences) / n, lowest_group=lowest / w, tail=sum(confidences[n - t:]) / t,
                      tokens=n)
