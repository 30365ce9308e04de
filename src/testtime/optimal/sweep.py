"""Sweeps: every strategy x budget x problem of a recipe, as per-problem cells, resumable through the store.

A cell is one (problem, config, budget) with the expected accuracy of that config on that problem, and
the tokens and FLOPs it cost. Configs are a strategy with its hyperparameters and an answer selection:
``cot``, ``majority``, ``best_of_n/prm_min_vote``, ``beam(m=4)/prm_last_max``, ...

* CoT: one greedy run (budget 1).
* Pooled strategies (majority, best_of_n): ONE run at n_max; the cell at N <= n_max is the expected
  accuracy of N samples drawn from that pool without replacement (exact over all subsets when there
  are few, else ``subsamples`` random ones), for every aggregation x selection at once. Its cost is
  N/n_max of the pool's.
* Tree strategies: one run per budget (a multiple of M); every aggregation x selection of its
  finished paths is a config.

Every run goes through an executor (``testtime.execution``: this process, or Ray actors) with its own
store keys, so a killed sweep resumes where it was and a rerun recomputes nothing. The oracle difficulty
of a problem is its pass@1 over the pool.

A problem whose remote calls failed in any run (``engine`` records it as failed) is left out of the
sweep -- no cells, no difficulty -- and listed in ``failed`` with the error; rerunning the sweep retries it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from testtime import engine
from testtime.datasets import load_dataset
from testtime.errors import ConfigError
from testtime.optimal.artifact import read_artifact
from testtime.optimal.metrics import selection_subset_scores, subsample_curves
from testtime.optimal.recipe import Recipe, StrategySpec
from testtime.search import Majority, Pool, Strategy
from testtime.search.base import confidences_of
from testtime.search.selection import MAJORITY, SELECTIONS
from testtime.types import Problem

SWEEP_VERSION = 1


@dataclass
class Cell:
    problem_id: str
    config: str  # e.g. "best_of_n/prm_min_vote", "beam(m=4)/prm_last_max", "majority", "cot"
    strategy: str
    m: int | None
    selection: str | None
    budget: int
    accuracy: float  # expected over subsets for pooled configs; 0/1 otherwise
    tokens: float  # generated tokens (policy)
    flops: float  # policy + PRM, cache-aware (what the run did)
    flops_uncached: float | None = None  # policy + PRM, every sample paying its whole prompt (None: older sweeps)
    # a sweep over several sampling seeds: this cell's accuracy under each seed, in the recipe's seed order
    # (accuracy, tokens and FLOPs are then their means); None with one seed
    seed_accuracies: list[float] | None = None


@dataclass
class ProblemInfo:
    id: str
    level: Any
    pass1: float  # oracle difficulty: mean correctness over the n_max pool
    # The selector's probe, recomputed exactly from the pool's first probe_n samples (same seeds):
    agreement: float  # largest answer group / probe_n
    probe_score: float | None  # mean over the probe's candidates of their min step reward (None: no PRM)
    # whether the PRM's pick among the probe's candidates (prm_min_max) states the majority answer (None: no PRM)
    prm_agrees: float | None = None
    kind: str = ""  # the problem's answer kind (math, number, ...): part of what a table was calibrated on


@dataclass
class SweepResult:
    recipe: dict[str, Any]
    policy: str
    prm: str | None
    oracle_prm: bool
    problems: list[ProblemInfo]
    cells: list[Cell]
    run_ids: list[str]
    wall_s: float
    version: int = SWEEP_VERSION
    trees: dict[str, Any] = field(default_factory=dict)  # problem -> the tree run whose tree the report shows
    failed: dict[str, str] = field(default_factory=dict)  # problem -> "run: error" (left out of cells)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SweepResult:
        d = read_artifact(path, str(path), SWEEP_VERSION, "run `testtime sweep` first")
        d["problems"] = [ProblemInfo(**p) for p in d["problems"]]
        d["cells"] = [Cell(**c) for c in d["cells"]]
        return cls(**d)

    def configs(self) -> list[str]:
        return sorted({c.config for c in self.cells})

    @classmethod
    def merge(cls, sweeps: list[SweepResult]) -> SweepResult:
        """Several sweeps of one policy and PRM as one (e.g. more problems of the bin a first sweep left thin):
        problems and cells side by side, the first sweep's recipe (holdout, bins, probe) for calibration."""
        if not sweeps:
            raise ValueError("merge needs at least one sweep")
        first = sweeps[0]
        for sw in sweeps[1:]:
            if (sw.policy, sw.prm) != (first.policy, first.prm):
                raise ConfigError("sweep", sw.recipe.get("name"), f"policy / PRM ({sw.policy}, {sw.prm}) differ from "
                                  f"the first sweep's ({first.policy}, {first.prm}): one table is for one of each")
        ids = [p.id for sw in sweeps for p in sw.problems]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ConfigError("sweep", ", ".join(dup[:5]), "problems in more than one sweep")
        recipe = dict(first.recipe, name="+".join(str(sw.recipe.get("name")) for sw in sweeps))
        return cls(recipe, first.policy, first.prm, first.oracle_prm, [p for sw in sweeps for p in sw.problems],
                   [c for sw in sweeps for c in sw.cells], [r for sw in sweeps for r in sw.run_ids],
                   sum(sw.wall_s for sw in sweeps), trees={k: v for sw in sweeps for k, v in sw.trees.items()},
                   failed={k: v for sw in sweeps for k, v in sw.failed.items()})


def sweep_path(recipe: Recipe) -> Path:
    return Path(recipe.out) / f"sweep-{recipe.name}.json"


def config_name(cls: type[Strategy], options: Any, selection: str | None) -> str:
    """A cell's config: the strategy's label, and for PRM-scored strategies the selection that chose the
    answer ("cot", "majority", "best_of_n/prm_min_vote", "beam(m=4)/prm_last_max")."""
    label = cls.label(options)
    if selection and not cls.needs_scorer and SELECTIONS[selection].uses_confidence:
        return selection  # a PRM-free vote over the policy's confidence: a family of its own
    return f"{label}/{selection}" if cls.needs_scorer and selection else label


def n_runs(recipe: Recipe) -> int:
    """Engine runs in the whole sweep: plan x seeds x datasets."""
    return len(plan(recipe)) * len(recipe.seeds or [0]) * len(recipe.datasets or [0])


def pool_spec(recipe: Recipe) -> StrategySpec:
    """The strategy whose N_max pool gives every pooled curve and the difficulty: the recipe's first pooled
    PRM-scored strategy (its pool is scored), else majority voting."""
    for spec in recipe.strategies:
        if spec.cls.pooled and spec.cls.needs_scorer:
            return StrategySpec(name=spec.name)
    return StrategySpec(name=Majority.name)


def plan(recipe: Recipe) -> list[tuple[StrategySpec, int]]:
    """The engine runs a sweep needs per (dataset, seed), in order: (strategy, N). The pool comes first;
    pooled strategies need no run of their own."""
    runs: list[tuple[StrategySpec, int]] = [(pool_spec(recipe), recipe.n_max)]
    for spec in recipe.strategies:
        if not spec.cls.pooled:
            runs.extend((spec, b) for b in spec.cls.sweep_budgets(recipe.budgets or [], spec.options))
    return runs


def _pool_cells(
    recipe: Recipe, spec: StrategySpec, result: engine.RunResult, seed: int
) -> tuple[list[Cell], list[ProblemInfo]]:
    cells: list[Cell] = []
    infos: list[ProblemInfo] = []
    ks = sorted(set(recipe.budgets or []))
    for r in result.results:
        if r.failed:
            continue
        t = r.trace
        correct = [bool(c.correct) for c in t.candidates]
        n = len(correct)
        rewards = t.scoring.rewards if t.scoring is not None else None
        # the strategy grouped the pool by math equivalence once; subsets reuse its groups
        pool = Pool.of(t.answer_groups or [None] * n, rewards, confidences_of(t.candidates))
        per_sample_tokens = t.compute.generated_tokens / max(1, n)
        per_sample_flops = t.compute.flops / max(1, n)
        policy_flops = t.compute.policy_flops / max(1, n)  # majority needs no PRM: it is not charged one
        per_sample_full = t.compute.flops_uncached / max(1, n)
        policy_full = t.compute.policy_flops_uncached / max(1, n)
        # every selection of one subset in one pass, the same subsets for every selection
        curves = subsample_curves(n, [k for k in ks if k <= n], selection_subset_scores(pool, correct),
                                  samples=recipe.subsamples, seed=seed)
        for sel in pool.selections():
            cls = spec.cls if sel.uses_scores else Majority
            named = None if sel is MAJORITY else sel.name  # majority's own answer needs no selection name
            config = config_name(cls, cls.Options(), named)
            for k, acc in curves[sel.name].items():
                flops = (per_sample_flops if sel.uses_scores else policy_flops) * k
                full = (per_sample_full if sel.uses_scores else policy_full) * k
                cells.append(Cell(r.problem.id, config, cls.name, None, named, k, acc, per_sample_tokens * k, flops,
                                  full))
        probe = min(recipe.difficulty.probe_n, n)
        f = probe_features(list(pool.group_of)[:probe], rewards[:probe] if rewards is not None else None)
        infos.append(ProblemInfo(r.problem.id, r.problem.level, sum(correct) / max(1, n), f.agreement, f.score,
                                 f.prm_agrees, r.problem.kind))
    return cells, infos


@dataclass(frozen=True)
class ProbeFeatures:
    """What the selector's cheap probe (its first probe_n samples, scored when there is a PRM) says of a problem."""

    agreement: float  # largest answer group / samples
    score: float | None  # mean over samples of their min step reward (None without a PRM)
    prm_agrees: float | None  # 1.0 when the PRM's pick (prm_min_max) states the majority answer (None without a PRM)


PROBE_SELECTION = SELECTIONS["prm_min_max"]


def probe_features(group_of: Sequence[int | None], rewards: Sequence[Sequence[float]] | None) -> ProbeFeatures:
    """The difficulty probe's features from its samples. Sweeps and the selector both use this, so the
    predictor and the shift check see the same features they were fitted on."""
    counts = Counter(g for g in group_of if g is not None)
    agreement = max(counts.values(), default=0) / max(1, len(group_of))
    if not rewards:
        return ProbeFeatures(agreement, None, None)
    score = sum(min(r) if r else 0.0 for r in rewards) / len(rewards)
    pool = Pool.of(group_of, rewards)
    maj, prm = pool.choose(MAJORITY), pool.choose(PROBE_SELECTION)
    agrees = float(maj is not None and prm is not None and pool.group_of[maj] == pool.group_of[prm])
    return ProbeFeatures(agreement, score, agrees)


def _run_cells(spec: StrategySpec, result: engine.RunResult) -> list[Cell]:
    """One cell per selection a run reported (PRM-scored strategies), or one for its answer (CoT)."""
    cells = []
    m = getattr(spec.options, "m", None) if spec.cls.is_tree else None
    for r in result.results:
        if r.failed:
            continue
        t = r.trace
        verdicts: dict[str | None, bool] = (dict(t.selections_correct) if spec.cls.needs_scorer
                                            else {None: bool(t.correct)})
        for key, ok in verdicts.items():
            cells.append(Cell(r.problem.id, config_name(spec.cls, spec.options, key), spec.name, m, key, t.budget,
                              float(bool(ok)), t.compute.generated_tokens, t.compute.flops, t.compute.flops_uncached))
    return cells


def merge_seeds(tagged: Sequence[tuple[int, Cell]], seeds: Sequence[int]) -> list[Cell]:
    """One cell per (problem, config, budget): the cells of several sampling seeds averaged (accuracy, tokens,
    FLOPs), each seed's accuracy kept for the seed-to-seed spread. Every consumer (calibration, evaluation,
    report) then sees one cell per problem, so no seed silently replaces another."""
    if len(seeds) < 2:
        return [c for _s, c in tagged]
    by_key: dict[tuple[str, str, int], dict[int, Cell]] = {}
    for seed, c in tagged:
        by_key.setdefault((c.problem_id, c.config, c.budget), {})[seed] = c
    out = []
    for per_seed in by_key.values():
        cs = list(per_seed.values())
        first = cs[0]
        uncached = [c.flops_uncached for c in cs]
        out.append(replace(
            first, accuracy=_mean([c.accuracy for c in cs]), tokens=_mean([c.tokens for c in cs]),
            flops=_mean([c.flops for c in cs]), flops_uncached=None if None in uncached else _mean(uncached),
            # the spread needs every seed: a cell some seed lacks has none (its mean is still over those it has)
            seed_accuracies=[per_seed[s].accuracy for s in seeds] if len(per_seed) == len(seeds) else None))
    return out


def _merge_infos(infos: list[ProblemInfo]) -> list[ProblemInfo]:
    """One ProblemInfo per problem: several seeds' pass@1 and probe features averaged."""
    by_id: dict[str, list[ProblemInfo]] = {}
    for p in infos:
        by_id.setdefault(p.id, []).append(p)
    out = []
    for pid, ps in by_id.items():
        out.append(ProblemInfo(pid, ps[0].level, _mean([p.pass1 for p in ps]), _mean([p.agreement for p in ps]),
                               _mean([p.probe_score for p in ps]), _mean([p.prm_agrees for p in ps]), ps[0].kind))
    return out


def _mean(xs: Sequence[float | None]) -> Any:
    known = [x for x in xs if x is not None]
    return sum(known) / len(known) if known else None


def run_sweep(
    recipe: Recipe,
    policy: Any,
    scorer: Any = None,
    problems: list[Problem] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> SweepResult:
    """Run (or replay from the store) every engine run the recipe needs; write the sweep file.

    `policy` is a policy (run here, with `scorer` for the scored runs, or the recipe's prm loaded over it)
    or an executor (``testtime.execution.open_executor``: it builds the recipe's prm itself).
    `problems` replaces the recipe's datasets (one problem list for every seed). ``on_progress(run index,
    runs, label)`` before each run; ``on_batch(label, problems done, problems)`` after each recorded batch."""
    from testtime.execution import as_executor

    executor = as_executor(policy, scorer)
    try:
        return _run_sweep(recipe, executor, scorer, problems, on_progress, on_batch)
    finally:
        if executor is not policy:
            executor.close()


def _run_sweep(recipe: Recipe, executor: Any, scorer: Any, problems: list[Problem] | None,
               on_progress: Callable[[int, int, str], None] | None,
               on_batch: Callable[[str, int, int], None] | None = None) -> SweepResult:
    t0 = time.perf_counter()
    names = recipe.datasets or [recipe.dataset]
    if problems is not None:
        datasets = [(names[0], problems)]
    else:
        datasets = [(d, load_dataset(d, limit=recipe.limit, seed=recipe.seed, levels=recipe.levels)) for d in names]
    runs = plan(recipe)
    jobs = [(d, ps, seed, spec, n) for d, ps in datasets for seed in recipe.seeds or [recipe.seed] for spec, n in runs]
    tagged: list[tuple[int, Cell]] = []  # (seed, cell): merged per problem once every seed has run
    infos: list[ProblemInfo] = []
    run_ids: list[str] = []
    trees: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for i, (dataset, ps, seed, spec, n) in enumerate(jobs):
        label = f"{dataset} seed {seed} {spec.label}@{n}"
        if on_progress:
            on_progress(i, len(jobs), label)
        report = (lambda done, total, label=label: on_batch(label, done, total)) if on_batch else None
        result = executor.run(recipe.run_config(dataset, seed, spec, n), ps, on_progress=report)
        run_ids.append(result.run_id)
        for r in result.results:
            if r.failed:
                failed.setdefault(r.problem.id, f"{label}: {r.error}")
        if (spec, n) == runs[0]:  # the pool of this (dataset, seed)
            cells_i, infos_i = _pool_cells(recipe, spec, result, seed)
            tagged.extend((seed, c) for c in cells_i)
            infos.extend(infos_i)
        else:
            tagged.extend((seed, c) for c in _run_cells(spec, result))
        if spec.cls.is_tree:  # every problem's tree from the latest tree run (the viewer shows any problem)
            for r in result.results:
                if not r.failed:
                    trees[r.problem.id] = {"run_id": result.run_id, "strategy": f"{spec.label}@{n}"}
    # a problem that failed anywhere has no complete set of configs: it leaves the sweep (and calibration)
    seeds = list(dict.fromkeys(recipe.seeds or [recipe.seed]))
    cells = [c for c in merge_seeds(tagged, seeds) if c.problem_id not in failed]
    infos = _merge_infos([p for p in infos if p.id not in failed])
    trees = {k: v for k, v in trees.items() if k not in failed}
    if on_progress:
        on_progress(len(jobs), len(jobs), "done")
    prm_name, oracle = getattr(scorer, "name", recipe.prm), bool(getattr(scorer, "outcome_only", False))
    if recipe.prm and any(spec.cls.needs_scorer for spec, _n in runs):
        info = executor.scorer_info(recipe.prm)
        prm_name, oracle = info.name, info.outcome_only
    out = SweepResult(recipe.model_dump(), executor.model_id, prm_name, oracle, infos, cells,
                      run_ids, time.perf_counter() - t0, trees=trees, failed=failed)
    out.save(sweep_path(recipe))
    return out
