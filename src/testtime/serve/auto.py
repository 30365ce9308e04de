"""``auto`` in the server: each request's config from its question alone, with the batch's budget allocated
across the requests of one batch window.

A batch's requests share one average budget B (their ``reasoning_effort`` or ``tts.budget``). Per request:

1. the one-request shift check (``optimal.shift.request_shift``): are its question's features within the
   ranges the calibration questions spanned, is it in their language, was it asked as they were (system
   turn, earlier turns)? A request that fails gets the table's PRM-free choice at B, and says why;
2. the others get a predicted pass@1 from the table's question-only difficulty model (no sample drawn, so
   an easy question costs one greedy answer, not a probe) and a difficulty bin;
3. the allocator (``optimal.allocate``) spends the batch's total, B reference samples per request, where the
   predicted success curves are steep: hard-looking requests get more, easy ones CoT. No request gets a
   config of more than the per-request cap, so one request cannot take a whole batch's budget.

Pure functions of the table and the requests; the solver runs the configs (``serve.solver``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testtime.optimal.allocation import plan_batch
from testtime.optimal.calibrate import Choice, Table
from testtime.optimal.metrics import absolute_bins
from testtime.optimal.predictor import TEXT_FEATURES, AllocationModel, ProblemFeatures, text_features
from testtime.optimal.shift import FORM_FEATURES, form_features, request_shift
from testtime.types import Problem

QUESTION = "question"  # the predictor kind the server uses: it reads the question, draws nothing


@dataclass
class Decision:
    """What ``auto`` gave one request, and why (the ``tts`` object reports it)."""

    choice: Choice
    rule: str  # decided_by: "bin easy: allocation, cheapest", "prm-free: shift", ...
    why: str
    predicted_pass1: float | None = None
    predicted_bin: str | None = None


def asked_with(problem: Problem) -> dict[str, Any]:
    """The prompt settings a request was asked with, as a sweep names them (``calibrate.PROMPT_KEYS``): a chat
    is zero-shot with its own system turn (joined) and the question as it is; earlier assistant turns count as
    worked examples. A raw completion prompt has no known form (None everywhere: never a calibrated one)."""
    messages = problem.meta.get("request_messages")
    if messages is None:
        return {"fewshot": None, "system": None, "instruction": None}
    system = "\n".join(m["content"] for m in messages if m["role"] == "system") or None
    return {"fewshot": sum(m["role"] == "assistant" for m in messages), "system": system, "instruction": ""}


def serves_requests(model: AllocationModel | None) -> bool:
    """Whether a table's allocation model can decide single requests (a question-only model with the
    calibration ranges; tables made before the chat mode have neither and fall back to the probe selector)."""
    return model is not None and QUESTION in model.models and bool(model.question_ranges)


def request_cap(budget: int, factor: float, max_budget: int) -> int:
    """The most samples one request may get in a batch of average budget `budget`."""
    return max(1, min(max_budget, int(factor * budget)))


def _rule(bin_: str, steps: int) -> str:
    return f"bin {bin_}: allocation, " + ("cheapest" if steps == 0 else f"raised {steps} step(s)")


def decide_requests(table: Table, model: AllocationModel, problems: list[Problem], budget: int, max_n: int
                    ) -> dict[str, Decision]:
    """Each request's config (see the module docstring): the allocation for the in-distribution ones, the
    PRM-free fallback (else the robust one) for the others."""
    names = TEXT_FEATURES + FORM_FEATURES
    reasons = {p.id: request_shift(p.question, asked_with(p), model.question_ranges, model.languages,
                                   table.profile, names, text_features(p.question) + form_features(p.question))
               for p in problems}
    out: dict[str, Decision] = {}
    shifted = [p for p in problems if reasons[p.id]]
    if shifted:
        fallback = table.fallback("prm_free", budget) or table.fallback("robust", budget)
        if fallback is None:
            fallback = Choice("cot", "cot", 1, None, None, 0.0, 0)
        for p in shifted:
            out[p.id] = Decision(fallback, "prm-free: shift",
                                 f"unlike the calibration questions ({'; '.join(reasons[p.id])}): the table's "
                                 f"PRM-free choice {fallback.config}@{fallback.budget}")
    inliers = [p for p in problems if not reasons[p.id]]
    if not inliers:
        return out
    feats = [ProblemFeatures(p.id, p.question) for p in inliers]
    plan, curves, options, _z, _total = plan_batch(model, QUESTION, feats, budget, {}, max_n, model.min_gain)
    pass1 = dict(zip([p.id for p in inliers], model.models[QUESTION].predict(feats).tolist(), strict=True))
    bins = absolute_bins(pass1, easy=table.easy, hard=table.hard)
    for i, (p, d) in enumerate(zip(inliers, plan.decisions, strict=True)):
        curve, option = curves[d.pick], options[i][d.pick]
        choice = Choice(curve.config, curve.strategy, curve.budget, None, curve.selection, option.success, 0)
        why = f"{option.key}, predicted success {option.success:.2f}: {d.why(plan.cutoff_rate)}"
        out[p.id] = Decision(choice, _rule(bins[p.id], d.steps), why, pass1[p.id], bins[p.id])
    return out
