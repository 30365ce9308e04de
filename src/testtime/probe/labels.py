"""Monte-Carlo step labels from the policy's own rollouts (Math-Shepherd style), batched and stored.

For each problem the policy samples full solutions (the same store keys as majority voting, so later
Best-of-N / majority runs replay them). For every step k of a solution except the last, k rollouts
continue the prefix ``prompt + steps[:k]``; the step's soft label is the fraction of rollouts that reach
the reference answer, its hard label whether any does. The last step's label is the solution's own
correctness (it states the answer, so a rollout from it would only repeat it).

Every rollout of every problem in a chunk goes to the policy in one batched call through the store:
identical prefixes (common on easy problems) share one request, a prefix's rollout seeds depend only on
(problem seed, prefix text), and a killed labelling run resumes from what was committed.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testtime.errors import ConfigError
from testtime.extraction import extract_answer
from testtime.grading import grade_many
from testtime.policy.base import GenerationRequest
from testtime.search.base import SearchContext, split_steps
from testtime.search.sampling import sample_solutions
from testtime.types import Problem


@dataclass(frozen=True)
class LabelConfig:
    solutions: int = 4  # sampled solutions per problem
    rollouts: int = 4  # completions per step prefix
    chunk: int = 16  # problems per batched backend call

    def __post_init__(self) -> None:
        for name in ("solutions", "rollouts", "chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")


@dataclass
class LabeledSolution:
    """One sampled solution with a label per step."""

    problem_id: str
    question: str
    reference: str
    kind: str
    level: Any
    sample_index: int
    steps: list[str]
    soft: list[float]  # fraction of rollouts from each step prefix that reach the reference answer
    hard: list[int]  # 1 if any rollout does
    rollouts: list[int]  # rollouts behind each label (0 for the last step: labelled by the solution itself)
    correct: bool
    finish_reason: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabeledSolution:
        return cls(**d)


@dataclass
class LabelStats:
    problems: int = 0
    solutions: int = 0
    steps: int = 0
    positive_hard: float = 0.0  # share of steps with hard label 1
    mean_soft: float = 0.0
    solution_accuracy: float = 0.0
    rollouts: int = 0
    rollout_tokens: int = 0
    new_generations: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_cached: int = 0
    by_level: dict[str, dict[str, float]] = field(default_factory=dict)
    by_position: dict[str, dict[str, float]] = field(default_factory=dict)  # "1", "2", ..., "last"


def rollout_seed(problem_seed: int, prefix: str) -> int:
    h = hashlib.sha256(f"{problem_seed}\x00rollout\x00{prefix}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x3FFFFFFF


def step_labels(verdicts: Sequence[bool]) -> tuple[float, int]:
    """(soft, hard) label of one step prefix from its rollouts' verdicts."""
    if not verdicts:
        raise ValueError("a step label needs at least one rollout")
    hits = sum(bool(v) for v in verdicts)
    return hits / len(verdicts), int(hits > 0)


def _label_chunk(problems: list[Problem], ctx: SearchContext, cfg: LabelConfig) -> tuple[list[LabeledSolution], _Spent]:
    sols = sample_solutions(problems, ctx, cfg.solutions, ctx.temperature)
    params = ctx.sampling()
    # one request per distinct (problem, prefix); solutions of a problem that share a prefix share its rollouts
    requests: list[GenerationRequest] = []
    origin: list[tuple[Problem, str]] = []  # per request: its problem and the prefix it continues
    where: dict[tuple[str, str], int] = {}
    plans: list[tuple[Problem, int, Any, list[str], list[int]]] = []
    for problem, comps in zip(problems, sols, strict=True):
        prompt = ctx.prompt_for(problem)
        seed = ctx.problem_seed(problem)
        for i, comp in enumerate(comps):
            steps = split_steps(comp.text)
            slots: list[int] = []
            for k in range(1, len(steps)):
                prefix = "".join(steps[:k])
                key = (problem.id, prefix)
                if key not in where:
                    where[key] = len(requests)
                    seed_k = rollout_seed(seed, prefix)
                    requests.append(GenerationRequest(prompt + prefix, cfg.rollouts, seed_k, params))
                    origin.append((problem, prefix))
                slots.append(where[key])
            plans.append((problem, i, comp, steps, slots))
    outputs = ctx.generator.generate(requests) if requests else []
    # grade every rollout and every solution of the chunk in one batch per answer kind
    pairs: list[tuple[str | None, str]] = []
    for (problem, prefix), outs in zip(origin, outputs, strict=True):
        pairs.extend((extract_answer(prefix + o.text), problem.answer) for o in outs)
    for problem, _i, comp, _steps, _slots in plans:
        pairs.append((extract_answer(comp.text), problem.answer))
    kinds = {p.kind for p in problems}
    if len(kinds) != 1:
        raise ValueError(f"labelling mixes answer kinds {sorted(kinds)}: label one dataset at a time")
    verdicts = grade_many(pairs, kind=kinds.pop())
    per_request = [verdicts[j * cfg.rollouts : (j + 1) * cfg.rollouts] for j in range(len(requests))]
    solution_ok = verdicts[len(requests) * cfg.rollouts :]
    labeled: list[LabeledSolution] = []
    for (problem, i, comp, steps, slots), ok in zip(plans, solution_ok, strict=True):
        soft, hard, counts = [], [], []
        for j in slots:
            s, h = step_labels(per_request[j])
            soft.append(s)
            hard.append(h)
            counts.append(cfg.rollouts)
        if steps:
            soft.append(float(ok))
            hard.append(int(ok))
            counts.append(0)
        labeled.append(LabeledSolution(problem.id, problem.question, problem.answer, problem.kind,
                                       problem.meta.get("level"), i, steps, soft, hard, counts, bool(ok),
                                       comp.finish_reason))
    fresh = [c for outs in (*outputs, *sols) for c in outs if not c.from_store]
    spent = _Spent(rollouts=len(requests) * cfg.rollouts,
                   rollout_tokens=sum(o.generated_tokens for outs in outputs for o in outs),
                   new_generations=len(fresh),
                   prompt_tokens_evaluated=sum(c.prompt_tokens - c.cached_prompt_tokens for c in fresh),
                   prompt_tokens_cached=sum(c.cached_prompt_tokens for c in fresh))
    return labeled, spent


@dataclass
class _Spent:
    rollouts: int = 0
    rollout_tokens: int = 0
    new_generations: int = 0
    prompt_tokens_evaluated: int = 0  # by the backend, for the generations made now
    prompt_tokens_cached: int = 0  # served from its KV / prefix cache

    def add(self, other: _Spent) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))


def label_problems(
    problems: list[Problem],
    ctx: SearchContext,
    cfg: LabelConfig = LabelConfig(),
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[LabeledSolution], LabelStats]:
    """Label every step of `cfg.solutions` sampled solutions per problem; chunks of problems per call."""
    labeled: list[LabeledSolution] = []
    spent = _Spent()
    for start in range(0, len(problems), cfg.chunk):
        out, chunk_spent = _label_chunk(problems[start : start + cfg.chunk], ctx, cfg)
        labeled.extend(out)
        spent.add(chunk_spent)
        if on_progress:
            on_progress(min(start + cfg.chunk, len(problems)), len(problems))
    stats = label_stats(labeled)
    for k, v in asdict(spent).items():
        setattr(stats, k, v)
    return labeled, stats


def label_stats(labeled: Sequence[LabeledSolution]) -> LabelStats:
    """Counts, label balance, and mean labels per difficulty level and per step position."""

    def summary(rows: list[tuple[float, int]]) -> dict[str, float]:
        n = len(rows)
        return {"steps": n, "mean_soft": sum(s for s, _ in rows) / n if n else 0.0,
                "positive_hard": sum(h for _, h in rows) / n if n else 0.0}

    every: list[tuple[float, int]] = []
    by_level: dict[str, list[tuple[float, int]]] = defaultdict(list)
    by_pos: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for s in labeled:
        for k, pair in enumerate(zip(s.soft, s.hard, strict=True)):
            every.append(pair)
            by_level[str(s.level)].append(pair)
            by_pos["last" if k == len(s.steps) - 1 else str(k + 1)].append(pair)
    overall = summary(every)
    n_sol = len(labeled)
    return LabelStats(
        problems=len({s.problem_id for s in labeled}),
        solutions=n_sol,
        steps=len(every),
        positive_hard=overall["positive_hard"],
        mean_soft=overall["mean_soft"],
        solution_accuracy=sum(s.correct for s in labeled) / n_sol if n_sol else 0.0,
        by_level={k: summary(v) for k, v in sorted(by_level.items())},
        by_position={k: summary(v) for k, v in sorted(by_pos.items(), key=_position_order)},
    )


def _position_order(item: tuple[str, Any]) -> tuple[bool, str]:
    return item[0] == "last", item[0].zfill(4)


def write_labels(path: Path, labeled: Sequence[LabeledSolution], meta: dict[str, Any]) -> Path:
    """Labels as JSONL (one solution per line) and a ``.summary.json`` beside them (config, policy, stats)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(s.to_json() + "\n" for s in labeled))
    tmp.replace(path)
    summary_path(path).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def summary_path(labels: Path) -> Path:
    return labels.with_name(labels.name.removesuffix(".jsonl") + ".summary.json")


def read_labels(path: Path) -> tuple[list[LabeledSolution], dict[str, Any]]:
    """Read a labels file; a bad line is reported with its file and line number."""
    if not path.is_file():
        raise ValueError(f"{path}: no such labels file (make one with `testtime prm label`)")
    out: list[LabeledSolution] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            s = LabeledSolution.from_dict(d)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n}: not JSON ({e.msg})") from None
        except TypeError as e:
            raise ValueError(f"{path} line {n}: not a labelled solution ({e})") from None
        if not (len(s.steps) == len(s.soft) == len(s.hard)):
            raise ValueError(f"{path} line {n}: field soft/hard: {len(s.soft)}/{len(s.hard)} labels "
                             f"for {len(s.steps)} steps")
        out.append(s)
    meta_file = summary_path(path)
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return out, meta
