"""The blocking side of the server: a batch of jobs (requests' choices with the same settings) through the
engine, in one worker thread, and each job's ``Answer``.

A batch is one ``engine.execute`` run (``auto``: one ``selector.run_optimal`` call), so every request in it
shares the engine's batched backend calls: one policy call and at most one scorer call per depth for all of
them. The run lands in the store like any other run; a job's trace id is ``run_id/problem_id``.

``TrackingPolicy`` sits between the engine and the policy: it reports progress after each backend call (for
streaming), stops a batch whose clients have all gone before the next call, and remembers how many tokens
each request's prompt has (for ``usage.prompt_tokens``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testtime.engine import RunResult, execute
from testtime.execution import LocalExecutor
from testtime.policy.base import ChunkCallback, GenerationRequest, Policy
from testtime.search.selection import SELECTIONS, aggregate
from testtime.serve.plan import Plan
from testtime.serve.settings import AUTO, ServeConfig
from testtime.types import Completion, Compute, Problem, Trace

Progress = Callable[[dict[str, Any]], None]


class Cancelled(RuntimeError):
    """Every client of a batch went away (or ran past its deadline): the batch stops before its next call."""


@dataclass
class Job:
    """One choice of one request, waiting for or in a batch."""

    plan: Plan
    problem: Problem
    index: int  # the choice's index in the response
    on_progress: Progress | None = None  # called from the worker thread
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Answer:
    """What the response says about one choice."""

    text: str
    finish_reason: str  # stop | length
    rule: str  # which rule chose the text
    note: str | None
    candidates: int
    prompt_tokens: int
    cached_prompt_tokens: int
    compute: Compute
    strategy: str
    budget: int
    trace_id: str
    replayed: bool
    wall_s: float
    predicted_bin: str | None = None
    predicted_pass1: float | None = None
    decided_by: str | None = None  # auto: the selector's rule (bin, robust fallback, ...)
    answer: str | None = None  # the extracted final answer, when one was stated
    generated_now: int = 0  # policy tokens generated for this answer now (replayed samples cost nothing)
    why: str | None = None  # auto: why this config, in words (the allocator's marginal gains, or the fallback)
    votes: dict[str, int] | None = None  # answer -> samples stating it, among the candidates (None: no answers)


class TrackingPolicy:
    """The policy as the engine sees it in the server (see the module docstring). Anything else is the
    wrapped policy's (scorers built over the policy reach its internals through here)."""

    def __init__(self, policy: Policy, remember: int = 4096):
        self.inner = policy
        self.model_id = policy.model_id
        self.n_params = policy.n_params
        self.listener: Callable[[int, int], None] | None = None  # (backend calls, samples) so far
        self.should_stop: Callable[[], bool] | None = None
        self.roots: set[str] = set()
        self.generated: dict[str, int] = {}  # root prompt -> tokens generated now (not replayed) this batch
        self._prompt_tokens: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._remember = remember
        self._calls = self._samples = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def begin(self, roots: set[str], listener: Callable[[int, int], None] | None,
              should_stop: Callable[[], bool] | None) -> None:
        self.roots, self.listener, self.should_stop = roots, listener, should_stop
        self.generated = dict.fromkeys(roots, 0)
        self._calls = self._samples = 0

    def end(self) -> None:
        self.roots, self.listener, self.should_stop = set(), None, None

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.inner.render_chat(messages)

    def generate(self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None = None
                 ) -> list[list[Completion]]:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("every client of this batch has gone")
        out = self.inner.generate(requests, on_chunk)
        for req, done in zip(requests, out, strict=True):
            # a tree search extends its request's prompt: the longest root it starts with is its request's
            root = max((r for r in self.roots if req.prompt.startswith(r)), key=len, default=None)
            if root is not None:
                self.generated[root] += sum(c.generated_tokens for c in done)
            if req.prompt in self.roots and done:
                first = done[0]
                # the first sample of a fresh prompt evaluates it; siblings reuse its KV (cached_prompt_tokens)
                self.prompt_tokens_seen(req.prompt, first.prompt_tokens, first.cached_prompt_tokens)
        self._calls += 1
        self._samples += sum(len(d) for d in out)
        if self.listener is not None:
            self.listener(self._calls, self._samples)
        return out

    def prompt_tokens_seen(self, prompt: str, tokens: int | None = None, cached: int = 0) -> tuple[int, int] | None:
        """Record (with ``tokens``) or look up a prompt's (tokens, cached tokens)."""
        if tokens is not None:
            if prompt not in self._prompt_tokens or self._prompt_tokens[prompt][1] > cached:
                self._prompt_tokens[prompt] = (tokens, cached)
            self._prompt_tokens.move_to_end(prompt)
            while len(self._prompt_tokens) > self._remember:
                self._prompt_tokens.popitem(last=False)
            return None
        return self._prompt_tokens.get(prompt)

    def close(self) -> None:
        self.inner.close()


class RecordingExecutor(LocalExecutor):
    """A local executor that keeps the results of the runs it made (the selector's runs, for ``auto``)."""

    def __init__(self, policy: Any, scorer: Any = None):
        super().__init__(policy, scorer)
        self.runs: list[RunResult] = []

    def run(self, config: Any, problems: list[Problem] | None = None, on_progress: Any = None) -> RunResult:
        result = super().run(config, problems, on_progress)
        self.runs.append(result)
        return result


def apply_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the first stop string (the request's ``stop``), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def pick_candidate(trace: Trace) -> tuple[int, str, str | None]:
    """(candidate index, rule, note): the candidate whose text is the reply.

    With a stated answer: the best-scored candidate stating it (PRM strategies; rule: the selection's name),
    or the first one stating it (rule: majority / cot). With none stated: the best-scored candidate, or the
    first sample without a PRM, and a note saying so."""
    cands = trace.candidates
    scoring = trace.scoring
    scores: list[float] | None = None
    if scoring is not None and len(scoring.rewards) == len(cands):
        sel = SELECTIONS.get(scoring.selection)
        agg = (sel.aggregation if sel is not None else None) or "last"
        scores = [aggregate(r, agg) if r else float("-inf") for r in scoring.rewards]
    if trace.answer is not None:
        stating = [i for i, c in enumerate(cands) if c.answer == trace.answer]
        if trace.answer_groups is not None and not stating:
            groups = trace.answer_groups
            stating = [i for i, c in enumerate(cands) if c.answer is not None and groups[i] is not None
                       and any(groups[j] == groups[i] for j, d in enumerate(cands) if d.answer == trace.answer)]
        if stating:
            best = max(stating, key=lambda i: scores[i]) if scores is not None else stating[0]
            rule = scoring.selection if scoring is not None else ("cot" if trace.strategy == "cot" else "majority")
            return best, rule, None
    note = "no candidate stated an extractable final answer"
    if scores is not None:
        return max(range(len(cands)), key=lambda i: scores[i]), "no_answer_best_score", note
    return 0, "no_answer_first_sample", note


class Solver:
    """Solves batches of jobs on one policy (its scorers, the store); every method runs in the worker thread.

    Not to be confused with a *policy backend* (``testtime.backends``, ``--backend``): the solver runs the
    engine over whichever policy backend the server was started with."""

    def __init__(self, policy: Policy, cfg: ServeConfig, scorer: Any = None):
        self.cfg = cfg
        self.policy = TrackingPolicy(policy)
        self.executor = RecordingExecutor(self.policy, scorer)
        self._table: Any = None

    @property
    def model_id(self) -> str:
        return self.policy.model_id

    def table(self) -> Any:
        """The calibrated table ``auto`` uses (``--table``, or the chat table shipped for the embedded default)."""
        if self._table is None:
            from testtime.optimal.calibrate import Table
            from testtime.optimal.tables import shipped_table

            self._table = Table.load(self.cfg.table or shipped_table(None, self.cfg.prm, prompt="chat"))
        return self._table

    def solve(self, jobs: list[Job]) -> list[Answer | BaseException]:
        """Every job of one batch (all with the same plan settings); per job its answer or its error."""
        t0 = time.perf_counter()
        plan = jobs[0].plan
        unique = list({j.problem.id: j.problem for j in jobs}.values())  # identical seeded requests: once
        roots = {self._root_prompt(p) for p in unique}

        def listener(calls: int, samples: int) -> None:
            for j in jobs:
                if j.on_progress is not None and not j.cancelled.is_set():
                    j.on_progress({"depth": calls, "samples": samples})

        def announce(problem_id: str, event: dict[str, Any]) -> None:
            for j in jobs:
                if j.problem.id == problem_id and j.on_progress is not None and not j.cancelled.is_set():
                    j.on_progress(event)

        self.policy.begin(roots, listener, lambda: all(j.cancelled.is_set() for j in jobs))
        try:
            if plan.strategy == AUTO:
                found = self._auto(plan, unique, announce)
            else:
                res = execute(self.executor, plan.config, unique)
                found = {r.problem.id: (r.trace, f"{res.run_id}/{r.problem.id}", r.trace.compute, {})
                         for r in res.results}
        finally:
            generated = dict(self.policy.generated)
            self.policy.end()
        wall = time.perf_counter() - t0
        # tokens generated now, per root prompt, shared by the problems with that prompt (one request's choices)
        sharing: dict[str, int] = {}
        for p in unique:
            sharing[self._root_prompt(p)] = sharing.get(self._root_prompt(p), 0) + 1
        out: list[Answer | BaseException] = []
        for j in jobs:
            trace, trace_id, compute, extra = found[j.problem.id]
            root = self._root_prompt(j.problem)
            try:
                answer = self._answer(j, trace, trace_id, compute, extra, wall)
                answer.generated_now = round(generated.get(root, 0) / sharing[root])
                out.append(answer)
            except RuntimeError as e:
                out.append(e)
        return out

    def _root_prompt(self, problem: Problem) -> str:
        if "request_prompt" in problem.meta:
            return str(problem.meta["request_prompt"])
        return self.policy.render_chat(list(problem.meta["request_messages"]))

    def _auto(self, plan: Plan, problems: list[Problem],
              announce: Callable[[str, dict[str, Any]], None] | None = None
              ) -> dict[str, tuple[Trace, str, Compute, dict[str, Any]]]:
        """``auto`` by the question-only model and the batch allocator; ``announce(problem_id, {"decided": ...})``
        tells each request its config as soon as it is decided, before any of it runs."""

        from testtime.optimal.allocation import allocation_model
        from testtime.optimal.selector import checked_scorer, run_choices
        from testtime.serve.auto import decide_requests, request_cap, serves_requests

        table = self.table()
        model = allocation_model(table)
        if not serves_requests(model):
            return self._auto_probe(plan, problems)
        assert model is not None
        prm, info = checked_scorer(table, self.executor, None, plan.prm, False)
        decisions = decide_requests(table, model, problems, plan.budget,
                                    request_cap(plan.budget, self.cfg.request_cap, self.cfg.max_budget))
        if announce is not None:
            for pid, d in decisions.items():
                announce(pid, {"decided": {"strategy": d.choice.strategy, "budget": d.choice.budget,
                                           "predicted_bin": d.predicted_bin, "predicted_pass1": d.predicted_pass1,
                                           "decided_by": d.rule, "why": d.why}})
        compute = {p.id: Compute() for p in problems}
        failed: dict[str, str] = {}
        self.executor.runs.clear()
        run_choices(self.executor, plan.config, prm if info else None, problems,
                    {pid: d.choice for pid, d in decisions.items()}, compute, failed, {})
        traces = {r.problem.id: (r.trace, f"{run.run_id}/{r.problem.id}") for run in self.executor.runs
                  for r in run.results}
        out = {}
        for p in problems:
            d = decisions[p.id]
            trace, trace_id = traces[p.id]
            out[p.id] = (trace, trace_id, compute[p.id],
                         {"predicted_bin": d.predicted_bin, "predicted_pass1": d.predicted_pass1, "decided_by": d.rule,
                          "why": d.why, "strategy": d.choice.strategy, "budget": d.choice.budget})
        return out

    def _auto_probe(self, plan: Plan, problems: list[Problem]
                    ) -> dict[str, tuple[Trace, str, Compute, dict[str, Any]]]:
        """``auto`` with a table that has no question-only model: probe each request, bin it, run its bin's
        config (``selector.run_optimal``)."""
        from testtime.optimal.selector import run_optimal

        self.executor.runs.clear()
        res = run_optimal(self.table(), plan.budget, self.executor, None, problems, plan.config, prm=plan.prm)
        traces: dict[str, tuple[Trace, str]] = {}
        for run in self.executor.runs[1:]:  # the first is the probe
            for r in run.results:
                traces[r.problem.id] = (r.trace, f"{run.run_id}/{r.problem.id}")
        out = {}
        for p in problems:
            ch = res.choices.get(p.id)
            extra = {"predicted_bin": res.bins.get(p.id), "predicted_pass1": res.predicted_pass1.get(p.id),
                     "decided_by": res.rules.get(p.id),
                     "strategy": ch.strategy if ch else AUTO, "budget": ch.budget if ch else plan.budget}
            if p.id in traces:
                trace, trace_id = traces[p.id]
            else:  # its probe failed: no config ran
                trace = Trace(p.id, AUTO, plan.budget, [], None, error=res.failed.get(p.id, "probe failed"))
                trace_id = f"{self.executor.runs[0].run_id}/{p.id}" if self.executor.runs else ""
            out[p.id] = (trace, trace_id, res.per_problem_compute.get(p.id, trace.compute), extra)
        return out

    def _answer(self, job: Job, trace: Trace, trace_id: str, compute: Compute, extra: dict[str, Any],
                wall: float) -> Answer:
        if trace.failed or not trace.candidates:
            raise RuntimeError(f"the backend failed on this request: {trace.error or 'no candidates'}")
        i, rule, note = pick_candidate(trace)
        cand = trace.candidates[i]
        text, stopped = apply_stops(cand.text, job.plan.stops)
        finish = "length" if cand.finish_reason == "length" and not stopped else "stop"
        root = self._root_prompt(job.problem)
        seen = self.policy.prompt_tokens_seen(root)
        replayed = compute.new_generations == 0
        if seen is not None:
            prompt_tokens, cached = seen
        else:
            gens = compute.new_generations + compute.cached_generations
            # pooled strategies sample every candidate from the root prompt: its length is exact
            prompt_tokens = compute.prompt_tokens // gens if gens else 0
            cached = prompt_tokens
        if replayed:
            cached = prompt_tokens  # nothing was evaluated: the whole answer came from the store
        votes = Counter(c.answer for c in trace.candidates if c.answer is not None)
        return Answer(text, finish, rule, note, len(trace.candidates), prompt_tokens, cached, compute,
                      extra.get("strategy", trace.strategy), extra.get("budget", trace.budget), trace_id, replayed,
                      wall, extra.get("predicted_bin"), extra.get("predicted_pass1"), extra.get("decided_by"),
                      cand.answer, why=extra.get("why"), votes=dict(votes.most_common()) or None)

    def close(self) -> None:
        self.executor.close()


def store_path(cfg: ServeConfig) -> Path:
    return Path(cfg.out)
