"""Reward models (process verifiers): score every step of many solutions in one batched call.

``load_scorer(spec)`` builds one from a spec string ``KIND[@VERSION][:TARGET][?key=value&...]``:

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

A scorer's ``name`` is also a spec when it is ``KIND@VERSION`` (``arith-check@v2``, ``probe@DIGEST``), as
calibrated tables and sweeps record it: ``KIND@VERSION`` builds that kind and checks that the scorer built
carries the same version (a ``ConfigError`` naming the version it has, if not). Options a name spells in
parentheses after the version (``arith-check@v2(neutral=0.25,exact=False)``) are options, as after ``?``.
Only the kind may carry a version: an ``@`` in a target (``hf:/m/prm@v2``, ``http:http://u@host``) is the
target's.

Kinds are backends, not model names: which published format a checkpoint needs is detected from its
config and tokenizer (reward/formats.py), or given with ``?format=``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from testtime.errors import ConfigError
from testtime.reward.arith_check import ArithCheck, check_step, evaluate, extract_statements
from testtime.reward.base import BatchScorer, RewardError, RewardModel, Scored, ScoreRequest, check_scored
from testtime.reward.judge import Judge
from testtime.reward.oracle import Oracle

KINDS = ("arith-check", "judge", "oracle", "hf", "vllm", "http", "probe")


class ScorerSpec(NamedTuple):
    """A parsed ``--prm`` spec: ``KIND[@VERSION][:TARGET][?options]``."""

    kind: str
    target: str | None
    options: dict[str, str]
    version: str | None = None  # the version the spec asks the scorer to have (its name's ``KIND@VERSION``)


# the kind part of a spec (before the first ':'): KIND, or KIND@VERSION with the name's options in parentheses
_KIND_RE = re.compile(r"(?P<kind>[^@()]*?)\s*(?:@(?P<version>[^@()\s]+)(?:\((?P<opts>[^()]*)\))?)?")
_VERSION_RE = re.compile(r"[^@()\s:?\[\]]+")


def parse_spec(spec: str) -> ScorerSpec:
    """'hf:/m/prm?format=qwen-prm' -> ('hf', '/m/prm', {'format': 'qwen-prm'}, None);
    'arith-check@v2' -> ('arith-check', None, {}, 'v2'). Errors are ``ConfigError("prm", spec, ...)``."""
    head, _, query = spec.partition("?")
    kind, sep, target = head.partition(":")  # only the kind may carry a version: '@' in a target is the target's
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    m = _KIND_RE.fullmatch(kind.strip())
    if m is None:
        raise ConfigError("prm", spec, "expected KIND[@VERSION][:TARGET][?options] (e.g. arith-check@v2)")
    for pair in filter(None, (p.strip() for p in (m["opts"] or "").split(","))):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError("prm", spec, f"option {pair!r} in the name's parentheses: expected key=value")
        if key.strip() in options:
            raise ConfigError("prm", spec, f"option {key.strip()!r} given twice")
        options[key.strip()] = value.strip()
    return ScorerSpec(m["kind"].strip(), target if sep else None, options, m["version"])


def scorer_version(name: str, kind: str) -> str | None:
    """The version a scorer's name carries after ``KIND@`` ('arith-check@v2(neutral=1.0,...)' -> 'v2')."""
    if not name.startswith(f"{kind}@"):
        return None
    m = _VERSION_RE.match(name, len(kind) + 1)
    return m.group(0) if m else None


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
    """Build the scorer a ``--prm`` spec names (see the module docstring); errors name the option.

    ``KIND@VERSION`` (a scorer's recorded name) builds ``KIND`` and checks the built scorer's version."""
    kind, target, raw, version = parse_spec(spec)
    scorer = _build(spec, kind, target, {k: _as_value(v) for k, v in raw.items()}, policy)
    if version is not None:
        have = scorer_version(scorer.name, kind)
        if have != version:
            close = getattr(scorer, "close", None)
            if close is not None:
                close()
            has = f"is version {have}" if have is not None else "carries no version"
            raise ConfigError("prm", spec, f"asks for {kind} version {version}, but the scorer built here {has} "
                              f"({scorer.name})")
    return scorer


def _build(spec: str, kind: str, target: str | None, opts: dict[str, Any], policy: Any) -> RewardModel:
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
    "ScoreRequest", "ScorerSpec", "check_scored", "check_step", "evaluate", "extract_statements", "load_scorer",
    "parse_spec", "scorer_version",
]
