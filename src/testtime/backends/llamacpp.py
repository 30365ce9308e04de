"""llama.cpp helpers shared by the llama.cpp policy and the probe's llama.cpp features (xllamacpp).

xllamacpp is imported only when a server's settings are built.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet_stderr(enabled: bool):
    """llama.cpp prints its load log on fd 2 from C; silence it unless verbose."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def server_params(model_path: str | Path, slots: int, ctx_per_slot: int, threads: int | None, verbose: bool) -> Any:
    """The llama.cpp server settings every in-process server here shares (threads = all cores by default)."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(model_path)
    p.n_parallel = slots
    p.n_ctx = slots * ctx_per_slot
    n_threads = threads or max(1, os.cpu_count() or 1)
    p.cpuparams.n_threads = n_threads
    p.cpuparams_batch.n_threads = n_threads
    p.warmup = False
    p.verbosity = 1 if verbose else -1
    p.log_json = False
    return p


# -- prefix-aware scheduling ------------------------------------------------------------------------
#
# llama.cpp keeps one cached prompt per slot and reuses its longest common prefix with the next prompt
# that lands in that slot; it shares no KV between slots (children of one n>1 request aside). Requests
# sent all at once scatter over the slots, so a few-shot prefix shared by 30 prompts is evaluated once
# per slot it lands in (measured: 4.2x the distinct prefix tokens for the demo's CoT call). A *lane* is
# a slot fed one request at a time, in sorted prompt order, so each prompt after the first in a lane
# evaluates only what it does not share with the previous one. Few lanes: little repeated prompt work
# but narrow decode batches; many lanes: the reverse. `plan_lanes` opens lanes while the prompt work
# they repeat stays within a budget.


def common_prefix_len(a: str, b: str) -> int:
    """Characters the two strings share from the start."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def distinct_chars(prompts: list[str]) -> int:
    """Characters in the prefix trie of the prompts: the text a perfect cache evaluates once."""
    ordered = sorted(set(prompts))
    return sum(len(p) - common_prefix_len(q, p) for q, p in pairwise(["", *ordered]))


@dataclass(frozen=True)
class LanePlan:
    lanes: list[list[int]]  # indices into the planned prompts; each lane runs in order, in one slot
    distinct_chars: int  # the prompts' prefix-trie size
    planned_chars: int  # what the lanes evaluate from a cold cache (>= distinct_chars)


def plan_lanes(prompts: list[str], max_lanes: int, overhead: float = 0.2) -> LanePlan:
    """Split the prompts, in sorted order, into at most `max_lanes` contiguous lanes.

    Starting from one lane, it makes the cut that repeats the least text (a new lane starts from a cold
    slot, so it re-evaluates the prefix its first prompt shares with the one before the cut), the most
    even one among equals, while the repeated text stays within `overhead` x the distinct text. Cuts
    between prompts that share nothing are free, so unrelated prompts get their own lanes first.
    """
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    ordered = [prompts[i] for i in order]
    shared = [common_prefix_len(a, b) for a, b in pairwise(ordered)]  # shared[k]: k | k+1
    distinct = sum(map(len, ordered)) - sum(shared)
    cuts: list[int] = []  # lane boundaries: a cut at k starts a lane at ordered[k + 1]
    spent = 0
    while len(cuts) + 1 < max_lanes:
        bounds = [-1, *sorted(cuts), len(ordered) - 1]
        best: tuple[int, int, int] | None = None  # (repeated chars, -evenness, cut)
        for lo, hi in pairwise(bounds):  # a lane holds ordered[lo + 1 .. hi]
            for k in range(lo + 1, hi):
                key = (shared[k], -min(k - lo, hi - k), k)
                if best is None or key < best:
                    best = key
        if best is None or spent + best[0] > overhead * distinct:
            break
        spent += best[0]
        cuts.append(best[2])
    bounds = [-1, *sorted(cuts), len(ordered) - 1]
    lanes = [order[lo + 1 : hi + 1] for lo, hi in pairwise(bounds)] if ordered else []
    return LanePlan(lanes, distinct, distinct + spent)


def in_slot(body: dict[str, Any], slot: int | None) -> dict[str, Any]:
    """The request body pinned to one server slot (llama.cpp's `id_slot`); None leaves the choice to it."""
    return body if slot is None else {**body, "id_slot": slot}
