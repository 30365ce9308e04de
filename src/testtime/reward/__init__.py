"""Reward models (process verifiers): score every step of many solutions in one batched call.

``load_scorer(spec)`` builds one from a spec string ``KIND[:TARGET][?key=value&...]``:

=================  ===========================================================================
``arith-check``    exact arithmetic verifier (CPU, no model); options ``neutral``, ``exact``
``judge``          LLM-as-judge over the run's policy; ``judge:MODEL`` over another GGUF / embedded model
``oracle``         outcome reward from the reference answer (upper bounds only, never a default)
``hf:PATH``        a published PRM checkpoint via transformers (``[hf]`` extra); option ``format``
``vllm:PATH``      the same via vLLM reward pooling (``[vllm]`` extra)
``http:URL[,URL]`` a remote scorer (``protocol=testtime`` or ``vllm-pooling``)
``probe[:PATH]``   a probe head over the policy's hidden states (``testtime prm train``); bare
                   ``probe`` is the one shipped for the embedded default policy
=================  ===========================================================================

Kinds are backends, not model names: which published format a checkpoint needs is detected from its
config and tokenizer (reward/formats.py), or given with ``?format=``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from testtime.errors import ConfigError
from testtime.reward.arith_check import ArithCheck, check_step, evaluate, extract_statements
from testtime.reward.base import BatchScorer, RewardError, RewardModel, Scored, ScoreRequest, check_scored
from testtime.reward.judge import Judge
from testtime.reward.oracle import Oracle

KINDS = ("arith-check", "judge", "oracle", "hf", "vllm", "http", "probe")


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """'hf:/m/prm?format=qwen-prm' -> ('hf', '/m/prm', {'format': 'qwen-prm'})."""
    head, _, query = spec.partition("?")
    kind, sep, target = head.partition(":")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return kind.strip(), (target if sep else None), options


def _as_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def load_scorer(spec: str, policy: Any = None) -> RewardModel:
    """Build the scorer a ``--prm`` spec names (see the module docstring); errors name the option."""
    kind, target, raw = parse_spec(spec)
    opts = {k: _as_value(v) for k, v in raw.items()}
    try:
        if kind == "arith-check":
            return ArithCheck(**opts)
        if kind == "oracle":
            return Oracle()
        if kind == "judge":
            if target:
                from testtime.policy import load_policy

                return Judge(load_policy(target), owns_policy=True, **opts)
            if policy is None:
                raise ValueError("judge needs a policy (the run's, or judge:MODEL)")
            return Judge(policy, **opts)
        if kind == "probe":
            from testtime.probe.scorer import load_probe

            return load_probe(target, policy, **opts)
        if kind in ("hf", "vllm", "http") and not target:
            raise ValueError(f"{kind} needs a target: {kind}:PATH_OR_URL")
        if kind == "hf":
            from testtime.reward.hf import load_hf_prm

            return load_hf_prm(target, **opts)  # type: ignore[arg-type]
        if kind == "vllm":
            from testtime.reward.vllm import load_vllm_prm

            return load_vllm_prm(target, **opts)  # type: ignore[arg-type]
        if kind == "http":
            from testtime.reward.http import load_http_prm

            return load_http_prm(target, **opts)  # type: ignore[arg-type]
    except TypeError as e:  # an unknown ?option= for this kind
        raise ConfigError("prm", spec, str(e)) from None
    raise ConfigError("prm", spec, f"unknown scorer kind {kind!r} (valid: {', '.join(KINDS)})")


__all__ = [
    "ArithCheck", "BatchScorer", "Judge", "Oracle", "RewardError", "RewardModel", "Scored",
    "ScoreRequest", "check_scored", "check_step", "evaluate", "extract_statements", "load_scorer", "parse_spec",
]
