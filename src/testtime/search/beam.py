"""PRM-guided tree searches: beam search, DVTS and REBASE, all problems advanced together.

Budget N means N step samples at the first depth, in every one of them:

* **beam** (Liu et al. 2025): sample N first steps; keep N/M of them by PRM; expand each kept one into M
  children; repeat. Which finished paths count is ``beam_finish``:

  - ``authors`` (the authors' code, built on OpenR): at each depth finished and unfinished children are
    ranked together for the N/M slots left (N/M minus the paths already finished); a finished child
    counts only when it wins a slot, and only the unfinished winners are expanded, so a depth draws
    fewer samples as paths finish. The search stops once N/M paths have finished and returns those.
  - ``sal`` (search-and-learn): every finished child joins the final pool whatever its score; the N/M
    best *unfinished* children are kept, so every depth draws N samples; the search stops once N paths
    have finished (or none is left), and all finished paths are candidates.
* **dvts** (diverse verifier tree search): N/M independent subtrees, each a beam of width M that keeps
  only its own best node per depth. A subtree's first M steps are its own share of the root's N samples
  (duplicates pruned within the subtree only) and its deeper samples its own seed stream, so subtrees
  never compete, merge or prune each other.
* **rebase** (reward-balanced search, Wu et al. 2024): at each depth the remaining width
  (N minus paths finished so far) is shared among all live nodes in proportion to
  softmax(reward / T), so good nodes get many children and bad ones none, without a fixed beam.
  Chosen over MCTS because it needs no sequential rollouts: every depth is one batched call, which
  is what makes tree search affordable on one CPU or GPU (and it matched or beat MCTS at equal
  compute in its paper).

The seam for a new tree search: subclass ``TreeSearch`` and define ``choose`` (which of a depth's scored
children to keep or finish, and which to expand with how many samples), plus ``start`` when it keeps
state or starts differently. The loop, the batched calls and the trace are shared.

All of them end like Best-of-N: every finished path is a candidate, and every aggregation x selection
pair over them is reported (the chosen one by --aggregation / --selection).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from testtime.errors import ConfigError
from testtime.reward.base import RewardModel
from testtime.search.base import SearchContext, Strategy, changed_options, labelled, scored_trace
from testtime.search.tree import Tree, TreeOptions, Work, expand, rank_score, top_k
from testtime.settings import UNLESS_DEFAULT, option
from testtime.types import Node, Problem, Trace


def balanced_allocation(weights: list[float], total: int) -> list[int]:
    """Split `total` into integers proportional to `weights` (largest remainder; ties to the earlier)."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    s = sum(weights)
    shares = [w / s * total for w in weights] if s > 0 else [total / len(weights)] * len(weights)
    alloc = [math.floor(x) for x in shares]
    order = sorted(range(len(weights)), key=lambda i: (-(shares[i] - alloc[i]), i))
    for i in order[: total - sum(alloc)]:
        alloc[i] += 1
    return alloc


def softmax(xs: list[float], temperature: float) -> list[float]:
    m = max(xs)
    e = [math.exp((x - m) / temperature) for x in xs]
    z = sum(e)
    return [v / z for v in e]


@dataclass
class TreeSearch(Strategy):
    """The loop every tree search shares; a subclass defines ``choose`` (and ``start`` when it keeps state)."""

    budget: int = 16
    Options = TreeOptions
    needs_scorer = True
    is_tree = True

    @classmethod
    def check_budget(cls, n: int, options: TreeOptions) -> None:
        if n < options.m or n % options.m:
            raise ConfigError(("n", "m"), (n, options.m), "N must be a positive multiple of M")

    @classmethod
    def sweep_budgets(cls, budgets: Sequence[int], options: TreeOptions) -> list[int]:
        return sorted({b for b in budgets if b >= options.m and b % options.m == 0})

    @classmethod
    def label(cls, options: TreeOptions) -> str:
        return f"{cls.name}(m={options.m})"

    @property
    def width(self) -> int:  # M
        return self.options.m

    @abstractmethod
    def choose(self, tree: Tree, state: dict, children: list[Node], done: list[Node]) -> list[tuple[Tree, Node, int]]:
        """After a depth's children are scored (all of this problem's children of that depth, pruned ones
        marked): the (tree, node, k) items -- or ``Work`` items -- to expand next; finished paths go into
        `done` (per problem). The one thing each tree search defines."""

    def start(self, tree: Tree) -> tuple[dict, list[tuple[Tree, Node, int]]]:
        """This problem's search state and its first expansions (default: N samples of the root)."""
        return {}, [(tree, tree.root, self.budget)]

    def run(self, problems: list[Problem], ctx: SearchContext) -> list[Trace]:
        scorer = ctx.require_scorer(self.name)
        trees = [Tree(p, ctx.prompt_for(p), ctx.problem_seed(p)) for p in problems]
        done: list[list[Node]] = [[] for _ in trees]
        states, work = [], []
        for t in trees:
            state, items = self.start(t)
            states.append(state)
            work.extend(items)
        index = {id(t): i for i, t in enumerate(trees)}
        while work:
            children = expand(work, ctx, scorer, self.options)  # one policy + one scorer call
            by_tree: dict[int, list[Node]] = {}
            for (tree, *_), kids in zip(work, children, strict=True):
                by_tree.setdefault(index[id(tree)], []).extend(kids)
            work = []
            for ti, kids in by_tree.items():
                work.extend(self.choose(trees[ti], states[ti], kids, done[ti]))
        finals = [d or self._fallback(t) for t, d in zip(trees, done, strict=True)]
        # A step's own answer (node.answer) only ends its path; each final path's answer is read from its
        # whole text under the run's extraction policy, for every problem in one batch.
        answers = iter(ctx.answers(["".join(t.steps(n)) for t, fs in zip(trees, finals, strict=True) for n in fs]))
        return [self._trace(t, fs, [next(answers) for _ in fs], len(d), ctx, scorer)
                for t, fs, d in zip(trees, finals, done, strict=True)]

    def _trace(self, tree: Tree, finals: list[Node], answers: list[str | None], finished: int, ctx: SearchContext,
               scorer: RewardModel) -> Trace:
        for n in finals:
            n.kept = True
        cands = [tree.candidate(n) for n in finals]
        for cand, answer in zip(cands, answers, strict=True):
            cand.answer = answer
        compute = tree.compute(ctx.n_params, scorer.n_params)
        return scored_trace(tree.problem, self, cands, [n.path_rewards for n in finals], scorer, compute,
                            grouping=ctx.answer_grouping, tree=tree.nodes,
                            meta={"width": self.width, "finished": finished})

    def _fallback(self, tree: Tree) -> list[Node]:
        """Nothing finished (every path truncated or pruned): the best scored node stands in."""
        scored = [n for n in tree.nodes if n.parent is not None and n.pruned != "truncated" and n.path_rewards]
        return top_k(scored, 1, self.options)


def _viable(children: list[Node]) -> list[Node]:
    return [c for c in children if c.pruned is None]


BEAM_FINISH: tuple[str, ...] = ("sal", "authors")


@dataclass(frozen=True)
class BeamOptions(TreeOptions):
    # which finished paths count and when the search stops: see the module docstring
    beam_finish: str = option(
        "sal", "beam: sal = every finished path counts, N at full width; authors = finished and unfinished ranked "
               "together, N/M paths returned (the paper's)", choices=BEAM_FINISH, identity=UNLESS_DEFAULT)


@dataclass
class BeamSearch(TreeSearch):
    name = "beam"
    from_paper = True  # one of Liu et al. 2025's strategies
    Options = BeamOptions

    @classmethod
    def label(cls, options: BeamOptions) -> str:
        # the default keeps the label (and the config names of sweeps and tables) it had before the option
        extra = "" if options.beam_finish == "sal" else f",finish={options.beam_finish}"
        return f"{cls.name}(m={options.m}{extra})"

    @property
    def slots(self) -> int:  # N/M: the beam, and the paths the authors' search returns
        return self.budget // self.width

    def choose(self, tree, state, children, done):
        if self.options.beam_finish == "authors":
            return self._choose_authors(tree, children, done)
        viable = _viable(children)
        done.extend(c for c in viable if c.terminal)
        active = [c for c in viable if not c.terminal]
        if len(done) >= self.budget or not active:
            for c in active:
                c.pruned = "rank"
            return []
        keep = top_k(active, self.slots, self.options)
        kept_ids = {k.id for k in keep}
        for c in active:
            c.kept = c.id in kept_ids
            if not c.kept:
                c.pruned = "rank"
        return [(tree, k, self.width) for k in keep]

    def _choose_authors(self, tree: Tree, children: list[Node], done: list[Node]) -> list[tuple[Tree, Node, int]]:
        viable = _viable(children)
        keep = top_k(viable, self.slots - len(done), self.options)  # finished and unfinished compete
        kept_ids = {k.id for k in keep}
        for c in viable:
            c.kept = c.id in kept_ids
            if not c.kept:
                c.pruned = "rank"
        done.extend(k for k in keep if k.terminal)
        if len(done) >= self.slots:
            return []
        return [(tree, k, self.width) for k in keep if not k.terminal]


@dataclass
class DVTS(TreeSearch):
    name = "dvts"
    from_paper = True  # one of Liu et al. 2025's strategies
    version = 2  # 2: subtrees de-duplicate and seed independently (before: one shared first request)

    @property
    def subtrees(self) -> int:
        return self.budget // self.width

    def start(self, tree):
        # subtree j: root samples [j*M, (j+1)*M), the samples one request of N draws (so they replay)
        state = {"subtree_of": {}, "first": True}
        return state, [Work(tree, tree.root, self.width, first=j * self.width) for j in range(self.subtrees)]

    def choose(self, tree, state, children, done):
        groups: dict[int, list[Node]] = {}
        if state["first"]:  # the root's children, request j's M of them subtree j's
            state["first"] = False
            for i, c in enumerate(children):
                groups.setdefault(i // self.width, []).append(c)
        else:  # every expanded node belongs to one subtree; its M children do too
            for c in children:
                groups.setdefault(state["subtree_of"][c.parent], []).append(c)
        work = []
        for sub, kids in sorted(groups.items()):
            for c in kids:
                state["subtree_of"][c.id] = sub
            viable = _viable(kids)
            best = top_k(viable, 1, self.options)
            for c in viable:
                if not best or c.id != best[0].id:
                    c.pruned = "rank"
            if not best:
                continue  # the subtree died (all children truncated / duplicate)
            b = best[0]
            b.kept = True
            if b.terminal:
                done.append(b)
            else:  # its own seed stream: a subtree that reaches another's prefix still samples its own steps
                work.append(Work(tree, b, self.width, stream=sub))
        return work


@dataclass(frozen=True)
class RebaseOptions(TreeOptions):
    softmax_temperature: float = option(
        0.1, "rebase / particle_filter: softmax temperature over step rewards in [0, 1], lower = greedier", gt=0.0,
        identity=UNLESS_DEFAULT)


@dataclass
class Rebase(TreeSearch):
    name = "rebase"
    from_paper = False  # not in Liu et al. 2025 (Wu et al. 2024)
    Options = RebaseOptions

    @classmethod
    def label(cls, options: RebaseOptions) -> str:
        return labelled(cls.name, [f"m={options.m}", *changed_options(options, ["softmax_temperature"])])

    def start(self, tree):
        return {"width": self.budget}, [(tree, tree.root, self.budget)]

    def allocate(self, weights: list[float], width: int, tree: Tree, depth: int) -> list[int]:
        """How many children each live node gets out of the remaining `width` (REBASE: deterministic,
        proportional to the weights)."""
        return balanced_allocation(weights, width)

    def choose(self, tree, state, children, done):
        viable = _viable(children)
        finished = [c for c in viable if c.terminal]
        done.extend(finished)
        state["width"] -= len(finished)
        active = [c for c in viable if not c.terminal]
        if state["width"] <= 0 or not active:
            for c in active:
                c.pruned = "rank"
            return []
        weights = softmax([rank_score(c, self.options) for c in active], self.options.softmax_temperature)
        alloc = self.allocate(weights, state["width"], tree, active[0].depth)
        work = []
        for c, k in zip(active, alloc, strict=True):
            c.kept = k > 0
            if k > 0:
                work.append((tree, c, k))
            else:
                c.pruned = "rank"
        return work
