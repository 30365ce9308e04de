"""The three probe jobs as library calls (the CLI's `testtime prm label | train | eval` wrap them).

label: Monte-Carlo step labels for a dataset slice -> labels JSONL + summary.
train: features for every labelled step (cached in the store) -> a trained head -> a probe artifact.
eval:  any PRM against held-out Monte-Carlo labels (step AUROC) and as a Best-of-N verifier vs majority
       (``eval_configs`` -> ``held_out`` -> ``evaluate_prm``, which returns a ``PrmEvaluation``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from testtime import engine
from testtime import settings as S
from testtime.engine import RunConfig, RunResult
from testtime.errors import ConfigError
from testtime.policy.prompts import PromptConfig
from testtime.probe.features import CachedFeatures, FeatureExtractor, extractor_for
from testtime.probe.head import ProbeArtifact
from testtime.probe.labels import LabelConfig, LabeledSolution, label_problems, read_labels, write_labels
from testtime.probe.metrics import auroc, auroc_ci, grouped_auroc
from testtime.probe.train import TrainConfig, TrainData, train_head
from testtime.replay import CachedGenerator, CachedScorer
from testtime.reward.base import RewardModel, ScoreRequest
from testtime.search import BestOfN, Majority
from testtime.search.base import SearchContext
from testtime.search.selection import CONFIDENCE_RULES, MAJORITY, RULES, selection_of
from testtime.store import Store
from testtime.types import Problem


@dataclass(frozen=True)
class PolicyRef:
    """Which policy made the labels: how to reopen it, and its fingerprint."""

    backend: str  # llamacpp | hf | vllm | openai
    model: str  # embedded name / GGUF path / HF id or folder
    model_id: str

    @property
    def feature_backend(self) -> str:
        # llama.cpp policies are read by llama.cpp; every other backend's weights by transformers
        return "llamacpp" if self.backend == "llamacpp" else "hf"


@dataclass(frozen=True)
class SamplingSetup:
    """How the probe's solutions are sampled: a run's settings of the same names (testtime.settings)."""

    seed: int = S.SEED.field()
    max_tokens: int = S.MAX_TOKENS.field()
    temperature: float = S.TEMPERATURE.field()
    fewshot: int = S.FEWSHOT.field()
    top_p: float = S.TOP_P.field()  # last: callers pass the four fields before it by position

    def __post_init__(self) -> None:
        S.check_declared(self)  # the same ranges as a run's (ConfigError names the field)

    def identity(self) -> dict[str, Any]:
        """What decides the samples, each setting as its declaration says (top_p left out at 1.0, so labels
        files written before it was settable keep their paths)."""
        return S.identity_of(asdict(self), S.declared(type(self)))

    def context(self, policy: Any, store: Store) -> SearchContext:
        return SearchContext(generator=CachedGenerator(policy, store), prompt=PromptConfig(fewshot=self.fewshot),
                             max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                             seed=self.seed)


def question_digest(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()[:16]


def labels_path(
    out: Path, dataset: str, seed: int, n: int, cfg: LabelConfig, setup: SamplingSetup, model_id: str
) -> Path:
    ident = json.dumps([dataset, seed, n, asdict(cfg), setup.identity(), model_id], sort_keys=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:8]
    return out / "labels" / f"{dataset.replace('/', '_').replace(':', '_')}-seed{seed}-n{n}-{digest}.jsonl"


def run_label(
    problems: list[Problem], policy: Any, ref: PolicyRef, out: Path, dataset: str, cfg: LabelConfig,
    setup: SamplingSetup, on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, list[LabeledSolution], dict[str, Any]]:
    t0 = time.perf_counter()
    store = Store(out)
    try:
        labeled, stats = label_problems(problems, setup.context(policy, store), cfg, on_progress)
    finally:
        store.close()
    wall = time.perf_counter() - t0
    meta = {
        "dataset": dataset, "problems": len(problems), "policy": asdict(ref), "label": asdict(cfg),
        "sampling": asdict(setup), "stats": asdict(stats), "wall_s": wall, "store": str(out),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = labels_path(out, dataset, setup.seed, len(problems), cfg, setup, ref.model_id)
    write_labels(path, labeled, meta)
    return path, labeled, meta


def step_arrays(labeled: Sequence[LabeledSolution], feats: Sequence[tuple[np.ndarray, int]]) -> TrainData:
    xs, soft, hard, groups = [], [], [], []
    for s, (x, _tokens) in zip(labeled, feats, strict=True):
        if x.shape[0] != len(s.steps):
            raise ValueError(f"features for {s.problem_id} sample {s.sample_index}: {x.shape[0]} rows, "
                             f"{len(s.steps)} steps")
        xs.append(x)
        soft.extend(s.soft)
        hard.extend(s.hard)
        groups.extend([s.problem_id] * len(s.steps))
    return TrainData(np.concatenate(xs).astype(np.float32), np.asarray(soft, np.float32),
                     np.asarray(hard, np.int64), groups)


def requests_of(labeled: Sequence[LabeledSolution]) -> list[ScoreRequest]:
    return [ScoreRequest(s.question, tuple(s.steps), s.reference, s.kind) for s in labeled if s.steps]


def run_train(
    label_files: Sequence[Path], out: Path, cfg: TrainConfig, store_dir: Path | None = None,
    extractor: FeatureExtractor | None = None,
) -> tuple[ProbeArtifact, dict[str, Any]]:
    """Features (cached) for every labelled step, a trained head, the artifact written to `out`."""
    t0 = time.perf_counter()
    labeled: list[LabeledSolution] = []
    metas: list[dict[str, Any]] = []
    for f in label_files:
        rows, meta = read_labels(Path(f))
        labeled.extend(s for s in rows if s.steps)
        metas.append(meta)
    if not labeled:
        raise ValueError("no labelled steps in " + ", ".join(map(str, label_files)))
    policies = {json.dumps(m.get("policy"), sort_keys=True) for m in metas}
    if len(policies) != 1 or not metas[0].get("policy"):
        raise ValueError("labels files come from different (or unnamed) policies: train one probe per policy")
    ref = PolicyRef(**metas[0]["policy"])
    own = extractor is None
    ex = extractor or extractor_for(ref.feature_backend, ref.model)
    store = Store(store_dir or metas[0].get("store") or out.parent)
    try:
        t_feat = time.perf_counter()
        feats = CachedFeatures(ex, store).features(requests_of(labeled))
        feat_s = time.perf_counter() - t_feat
        data = step_arrays(labeled, feats)
        head, metrics = train_head(data, cfg)
    finally:
        store.close()
        if own:
            ex.close()
    questions = sorted({question_digest(s.question) for s in labeled})
    artifact = ProbeArtifact(
        head=head,
        policy=asdict(ref),
        features={"extractor": ex.name, "backend": ref.feature_backend, "dim": int(data.x.shape[1]),
                  "layer": "final-norm" if ref.feature_backend == "llamacpp" else "hidden_states[-1]",
                  "position": "last non-whitespace token of each step",
                  "context": "policy chat template, instruction + question (zero-shot), then the steps"},
        training={
            "labels": [{"file": Path(f).name, "dataset": m.get("dataset"), "problems": m.get("problems"),
                        "label": m.get("label"), "stats": {k: v for k, v in (m.get("stats") or {}).items()
                                                           if k not in ("by_position",)}}
                       for f, m in zip(label_files, metas, strict=True)],
            "steps": int(len(data.soft)),
            "train_question_digests": questions,
            "feature_seconds": round(feat_s, 1),
            "wall_s": round(time.perf_counter() - t0, 1),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        metrics=metrics,
    )
    artifact.save(out)
    return artifact, metrics


# -- evaluation -------------------------------------------------------------------------------------------


def step_auroc(labeled: Sequence[LabeledSolution], rewards: Sequence[Sequence[float]]) -> dict[str, Any]:
    """AUROC of step rewards against hard Monte-Carlo labels: every step, intermediate steps only (the
    last step's label is the outcome), within problems only (what Best-of-N needs), and per level."""
    every_s, every_y, every_g, mid_s, mid_y, mid_g = [], [], [], [], [], []
    by_level: dict[str, tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for s, r in zip(labeled, rewards, strict=True):
        for k, (x, y) in enumerate(zip(r, s.hard, strict=True)):
            every_s.append(x)
            every_y.append(y)
            every_g.append(s.problem_id)
            by_level[str(s.level)][0].append(x)
            by_level[str(s.level)][1].append(y)
            if k < len(s.steps) - 1:
                mid_s.append(x)
                mid_y.append(y)
                mid_g.append(s.problem_id)

    def ci(sc: list[float], ys: list[int], gs: list[str], within: bool = False) -> list[float] | None:
        iv = auroc_ci(sc, ys, gs, within_group=within) if ys else None  # bootstrap over problems, 95%
        return None if iv is None else iv.as_list()

    return {
        "auroc": auroc(every_s, every_y), "auroc_intermediate": auroc(mid_s, mid_y),
        "auroc_within_problem": grouped_auroc(every_s, every_y, every_g),
        "steps": len(every_y), "positive_rate": float(np.mean(every_y)) if every_y else None,
        "auroc_by_level": {k: auroc(v[0], v[1]) for k, v in sorted(by_level.items())},
        "auroc_ci": ci(every_s, every_y, every_g), "auroc_intermediate_ci": ci(mid_s, mid_y, mid_g),
        "auroc_within_problem_ci": ci(every_s, every_y, every_g, within=True),
    }


def score_labeled(scorer: RewardModel, labeled: Sequence[LabeledSolution], store: Store) -> list[list[float]]:
    """Every labelled solution scored in one batched call through the store."""
    scored = CachedScorer(scorer, store).score_batch(requests_of(labeled))
    return [s.rewards for s in scored]


def exclude_seen(problems: list[Problem], digests: Sequence[str]) -> tuple[list[Problem], int]:
    """Drop problems whose question a probe was trained on (small arith levels repeat questions)."""
    seen = set(digests)
    kept = [p for p in problems if question_digest(p.question) not in seen]
    return kept, len(problems) - len(kept)


# Best-of-N against majority: the rules that read the PRM (majority would ignore it)
EVAL_SELECTIONS = tuple(rule for rule in RULES if rule != MAJORITY.rule and rule not in CONFIDENCE_RULES)


def eval_configs(
    prm: str, dataset: str, *, n: int = 8, aggregation: str = "min", selection: str = "prm_max",
    limit: int | None = None, levels: list[int] | None = None, seed: int = 1, model: str | None = None,
    out: str | Path = "runs/probe", setup: SamplingSetup | None = None,
) -> tuple[RunConfig, RunConfig]:
    """The Best-of-N run the PRM chooses answers in and the majority run it is compared with, validated
    (``ConfigError`` names the field)."""
    if selection not in EVAL_SELECTIONS:
        raise ConfigError("selection", selection, f"expected {' or '.join(EVAL_SELECTIONS)}")
    setup = setup or SamplingSetup(seed=seed)
    common: dict[str, Any] = dict(dataset=dataset, n=n, limit=limit, levels=levels or None, seed=seed, model=model,
                                  out=str(out), max_tokens=setup.max_tokens, temperature=setup.temperature,
                                  top_p=setup.top_p, fewshot=setup.fewshot)
    bon = RunConfig(strategy=BestOfN.name, prm=prm, aggregation=aggregation, selection=selection, **common)
    return bon, RunConfig(strategy=Majority.name, **common)


def held_out(problems: list[Problem], prm: str, exclude_from: Path | None = None
             ) -> tuple[list[Problem], int, Path | None]:
    """(the problems the probe was not trained on, how many were dropped, the artifact that said so).

    The artifact is `exclude_from`, else the ``--prm`` probe's own (none for other scorers); errors are
    ``ConfigError`` naming ``exclude_from`` (or ``prm``)."""
    from testtime.probe.scorer import probe_path
    from testtime.reward import parse_spec

    kind, target = parse_spec(prm)[:2]
    if exclude_from is None and kind == "probe":
        try:
            exclude_from = probe_path(target)
        except ValueError as e:
            raise ConfigError("prm", prm, str(e)) from None
    if exclude_from is None:
        return problems, 0, None
    try:
        digests = ProbeArtifact.load(exclude_from).training.get("train_question_digests", [])
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError("exclude_from", exclude_from, str(e)) from None
    kept, excluded = exclude_seen(problems, digests)
    if not kept:
        raise ConfigError("exclude_from", exclude_from, "every selected problem was in the probe's training set")
    return kept, excluded, exclude_from


@dataclass
class PrmEvaluation:
    """A PRM against held-out Monte-Carlo labels (step AUROC) and as a Best-of-N verifier vs majority."""

    prm: str
    dataset: str
    n: int
    pair: str  # the selection (aggregation x rule) that gives the Best-of-N answer, e.g. "prm_min_max"
    problems: int
    excluded: int  # problems left out because the probe was trained on them
    labels: Path
    label_stats: dict[str, Any]
    aurocs: dict[str, Any]  # step_auroc's: auroc, auroc_intermediate, auroc_within_problem, steps, ...
    bon: RunResult
    majority: RunResult
    oracle_upper_bound: bool  # the scorer reads the reference answer: its numbers are upper bounds
    wall_s: float

    def summary(self) -> dict[str, Any]:
        """The JSON `testtime prm eval --json` prints (keys as they always were)."""
        n = self.n
        bon_s, maj_s = self.bon.summary(), self.majority.summary()
        return {
            "prm": self.prm, "scorer": bon_s.get("prm"), "dataset": self.dataset, "problems": self.problems,
            "excluded_seen_in_training": self.excluded, "labels": str(self.labels), **self.aurocs,
            "label_stats": {k: self.label_stats[k] for k in ("solutions", "steps", "positive_hard", "mean_soft")},
            "n": n, "pair": self.pair, f"bon@{n}": bon_s["accuracy"], f"majority@{n}": maj_s["accuracy"],
            f"pass@{n}": bon_s["pass@n"],
            "bon_by_level": {str(k): v["accuracy"] for k, v in self.bon.by_level().items()},
            "majority_by_level": {str(k): v["accuracy"] for k, v in self.majority.by_level().items()},
            "bon_selections": bon_s.get("selections") or {},
            **_bon_vs_majority(self.bon, self.majority),
            "oracle_upper_bound": self.oracle_upper_bound,
            "wall_s": self.wall_s,
        }


def _bon_vs_majority(bon: RunResult, majority: RunResult) -> dict[str, Any]:
    """Accuracy intervals of both runs (bootstrap over problems, stratified by level) and their paired
    comparison on the same problems (difference interval, McNemar's exact test)."""
    from testtime import stats

    ids = [r.problem.id for r in bon.results]
    maj = {r.problem.id: float(bool(r.trace.correct)) for r in majority.results}
    if not ids or set(ids) != set(maj):
        return {}
    b = [float(bool(r.trace.correct)) for r in bon.results]
    m = [maj[i] for i in ids]
    levels = [str(r.problem.level) for r in bon.results]
    pc = stats.compare_paired(b, m, levels)
    return {"bon_ci": stats.mean_ci(b, levels).as_list(), "majority_ci": stats.mean_ci(m, levels).as_list(),
            "bon_minus_majority": {"difference": pc.difference.estimate, "ci": pc.difference.as_list(),
                                   "p_value": pc.test.p_value, "better": pc.test.better, "worse": pc.test.worse,
                                   "significant": pc.significant}}


def evaluate_prm(
    problems: list[Problem], policy: Any, ref: PolicyRef, scorer: RewardModel, configs: tuple[RunConfig, RunConfig],
    label_cfg: LabelConfig, setup: SamplingSetup, *, excluded: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> PrmEvaluation:
    """Label the problems with Monte-Carlo rollouts (stored, resumable), score every labelled step with
    `scorer` (the spec ``configs[0].prm`` names, built by the caller over `policy`), and run Best-of-N and
    majority (``eval_configs``) on the same problems. `policy` and `scorer` are left open;
    ``on_progress(done, total)`` while labelling."""
    t0 = time.perf_counter()
    bon_cfg, maj_cfg = configs
    out = Path(bon_cfg.out)
    labels_file, labeled, meta = run_label(problems, policy, ref, out, bon_cfg.dataset, label_cfg, setup,
                                           on_progress)
    labeled = [s for s in labeled if s.steps]
    store = Store(out)
    try:
        rewards = score_labeled(scorer, labeled, store)
    finally:
        store.close()
    aurocs = step_auroc(labeled, rewards)
    bon = engine.run(bon_cfg, policy, problems, scorer=scorer)
    maj = engine.run(maj_cfg, policy, problems)
    pair = selection_of(bon_cfg.aggregation, bon_cfg.selection).name  # the BoN run reports this pair's answer
    return PrmEvaluation(
        prm=bon_cfg.prm or "", dataset=bon_cfg.dataset, n=bon_cfg.n, pair=pair, problems=len(problems),
        excluded=excluded, labels=labels_file, label_stats=meta["stats"], aurocs=aurocs, bon=bon, majority=maj,
        oracle_upper_bound=bool(scorer.outcome_only), wall_s=time.perf_counter() - t0,
    )
