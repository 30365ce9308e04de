"""Sliding-window models keep prefix reuse: the llama.cpp backend reads ``attention.sliding_window`` from
the GGUF and keeps a full-size SWA cache (``swa_full``) for such a model, without which llama.cpp reuses no
prefix of an earlier prompt (bench/swa_cache.py: Gemma 3 270M, 8 arith CoT problems, 0 of 2,602 prompt
tokens cached before, 816 after -- SmolLM2's share on the same problems is 32%)."""

from __future__ import annotations

import pytest

from testtime.policy import GenerationRequest, SamplingParams, load_policy, resolve_model
from testtime.policy.gguf_meta import read_gguf_info

pytestmark = pytest.mark.integration


def gemma_path():
    try:
        return resolve_model("gemma3-270m")
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_sliding_window_is_read_from_the_gguf():
    assert read_gguf_info(gemma_path()).sliding_window == 512
    assert read_gguf_info(resolve_model(None)).sliding_window is None


@pytest.mark.parametrize("swa_full, reused", [(None, True), (False, False)])
def test_a_repeated_prefix_is_served_from_the_cache(swa_full, reused):
    policy = load_policy(str(gemma_path()), slots=1, ctx_per_slot=1024, swa_full=swa_full)
    try:
        assert policy.swa_full is reused  # None: the backend's choice for a sliding-window model
        prefix = "Question: What is 2 + 3?\nAnswer:\n2 + 3 = 5. The answer is 5.\n\n\n" * 12
        params = SamplingParams(max_tokens=4, temperature=0.0)
        policy.generate([GenerationRequest(prefix + "Question: What is 4 + 4?\nAnswer:\n", 1, 0, params)])
        [[c]] = policy.generate([GenerationRequest(prefix + "Question: What is 1 + 6?\nAnswer:\n", 1, 0, params)])
        assert c.prompt_tokens > 200
        assert (c.cached_prompt_tokens > 0.8 * c.prompt_tokens) is reused, (c.cached_prompt_tokens, c.prompt_tokens)
    finally:
        policy.close()
