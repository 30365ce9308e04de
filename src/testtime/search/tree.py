"""Step-level search trees, advanced for many problems at once.

Every tree search (beam, DVTS, REBASE) is the same loop over depths:

1. ``expand``: every (node, k) the strategies want expanded, for every problem, goes to the policy
   in ONE batched call (k samples of the node's prefix, stopping at the end of a step), then every
   new child of every problem goes to the scorer in ONE call;
2. a pure, per-problem ``choose`` decides which children to keep and how many samples each gets.

Continuations are sent as the exact text prefix (prompt + the path's steps), so the backend's
prefix cache (llama.cpp's slot KV, vLLM's automatic prefix caching) serves the shared part; the
tokens it evaluated vs served from cache are counted per problem.

A child's sampler seed is a hash of its problem seed and its parent's path text, so the same
prefix always gets the same samples: reruns replay from the store, and a bigger budget extends a
smaller one wherever their trees coincide.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

from testtime.extraction import extract_answer
from testtime.policy.base import STEP_STOP, GenerationRequest, SamplingParams
from testtime.reward.base import RewardModel, ScoreRequest
from testtime.search.base import ScoredOptions, SearchContext, compute_of
from testtime.search.selection import AGGREGATIONS, aggregate
from testtime.settings import UNLESS_DEFAULT, option
from testtime.types import Candidate, Completion, Compute, Node, Problem


@dataclass
class Tree:
    problem: Problem
    prompt: str
    seed: int
    nodes: list[Node] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)  # every generation, for compute
    prm_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(0, None, 0, kept=True))

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def path(self, node: Node) -> list[Node]:
        out = []
        cur: Node | None = node
        while cur is not None and cur.parent is not None:
            out.append(cur)
            cur = self.nodes[cur.parent]
        return out[::-1]

    def steps(self, node: Node) -> list[str]:
        return [n.step for n in self.path(node)]

    def prefix(self, node: Node) -> str:
        """What the policy continues: the prompt and the path's steps, byte for byte."""
        return self.prompt + "".join(self.steps(node))

    def child_seed(self, node: Node, stream: int = 0) -> int:
        """The sampler seed of a node's children. ``stream`` > 0 gives an independent search of the same
        tree (a DVTS subtree) its own samples where its path coincides with another's; stream 0 is the
        seed every search used before streams existed, so stored samples replay."""
        salt = f"{stream}\x00" if stream else ""
        h = hashlib.sha256(f"{self.seed}\x00{salt}{''.join(self.steps(node))}".encode()).digest()
        return int.from_bytes(h[:4], "little") & 0x3FFFFFFF

    def candidate(self, node: Node) -> Candidate:
        path = self.path(node)
        return Candidate(
            steps=[n.step for n in path],
            answer=node.answer,
            finish_reason=node.finish or "length",  # type: ignore[arg-type]
            generated_tokens=sum(n.tokens for n in path),
        )

    def compute(self, policy_params: int, prm_params: int) -> Compute:
        c = compute_of(self.completions, policy_params)
        c.prm_tokens = self.prm_tokens
        c.prm_flops = 2.0 * prm_params * self.prm_tokens
        return c


# When a path ends, besides EOS, max depth and the token cap: ``answer``: at a step from which an answer can be
# extracted ("The answer is ...", a complete \boxed{...}); ``boxed``: only at a step containing \boxed (the
# authors' rule: prose like "the answer is positive, so ..." does not end a path).
TERMINATE_ON: tuple[str, ...] = ("answer", "boxed")


@dataclass(frozen=True)
class TreeOptions(ScoredOptions):
    """Options of every tree search: width M, per-step sampling and termination, how nodes are ranked."""

    # checked by ScoredOptions.__post_init__ from these declarations
    m: int = option(4, "tree searches: beam width / DVTS subtree width M (N must be a multiple)", ge=1)
    max_depth: int = option(40, "tree searches: steps per path at most (a path ends there)", ge=1)
    step_max_tokens: int = option(256, "tree searches: max tokens per step (a longer step is truncated and dropped)",
                                  ge=1)
    rank_by: str = option("last", "tree searches: the aggregation of path rewards that ranks nodes (the paper: "
                                  "the newest step's)", choices=AGGREGATIONS)
    terminate_on: str = option(
        "answer", "tree searches: a path ends (besides EOS / max depth) at a step stating an answer (answer) or "
                  "only at a step writing \\boxed (boxed: the paper's)", choices=TERMINATE_ON, identity=UNLESS_DEFAULT)


def step_params(ctx: SearchContext, settings: TreeOptions) -> SamplingParams:
    return SamplingParams(
        max_tokens=settings.step_max_tokens, temperature=ctx.temperature, top_p=ctx.top_p, stop=(STEP_STOP,)
    )


def writes_boxed(step: str) -> bool:
    """Whether a step writes ``\\boxed``: the authors' end of a path (their stop string), complete or not.
    Not ``extraction.has_boxed``, which asks for a complete, non-empty box: an unfinished ``\\boxed{`` ends
    the authors' path too."""
    return "\\boxed" in step


def _is_terminal(node: Node, path_tokens: int, settings: TreeOptions, max_tokens: int) -> bool:
    """A path ends at EOS, at a step that states a final answer (``terminate_on``), at max depth, or when
    its steps together reach the per-solution token cap (the same cap full-solution strategies get)."""
    states = writes_boxed(node.step) if settings.terminate_on == "boxed" else node.answer is not None
    return node.finish == "eos" or states or node.depth >= settings.max_depth or path_tokens >= max_tokens


class Work(NamedTuple):
    """One expansion: k children of `node`. A plain ``(tree, node, k)`` tuple is one too.

    ``first``: index of the first sample asked for (DVTS subtree j's share of the root's samples starts at
    j x M, so its samples are those one request of N would have drawn); ``stream``: the seed stream
    (``Tree.child_seed``) of an independent search that may reach the same prefix as another."""

    tree: Tree
    node: Node
    k: int
    first: int = 0
    stream: int = 0


def expand(
    work: list[tuple[Tree, Node, int]] | list[Work], ctx: SearchContext, scorer: RewardModel, settings: TreeOptions
) -> list[list[Node]]:
    """Sample k children of each (tree, node, k), all in one policy call; score the new viable ones in
    one scorer call. Returns each item's children (pruned ones included, marked); duplicates are
    pruned among one item's children only (so independent searches never prune each other)."""
    params = step_params(ctx, settings)
    items = [Work(*w) for w in work]
    requests = [GenerationRequest(w.tree.prefix(w.node), w.k, w.tree.child_seed(w.node, w.stream), params,
                                  first_index=w.first) for w in items]
    outputs = ctx.generator.generate(requests) if requests else []
    children: list[list[Node]] = []
    to_score: list[tuple[Tree, Node]] = []
    for (tree, parent, *_), comps in zip(items, outputs, strict=True):
        seen: set[str] = set()
        mine = []
        for c in comps:
            tree.completions.append(c)
            text = c.text + (STEP_STOP if c.finish_reason == "stop" and c.stop == STEP_STOP else "")
            node = Node(len(tree.nodes), parent.id, parent.depth + 1, text, tokens=c.generated_tokens,
                        finish=c.finish_reason, answer=extract_answer(text))
            tree.nodes.append(node)
            mine.append(node)
            if c.finish_reason == "length":
                node.pruned = "truncated"
            elif not text.strip() or text in seen:
                node.pruned = "duplicate"  # an identical sibling (or an empty step) adds nothing
            else:
                seen.add(text)
                path_tokens = sum(n.tokens for n in tree.path(node))
                node.terminal = _is_terminal(node, path_tokens, settings, ctx.max_tokens)
                to_score.append((tree, node))
        children.append(mine)
    requests_s = [
        ScoreRequest(t.problem.question, tuple(s.strip() for s in t.steps(n)), t.problem.answer, t.problem.kind)
        for t, n in to_score
    ]
    scored = scorer.score_batch(requests_s) if requests_s else []
    for (tree, node), s in zip(to_score, scored, strict=True):
        node.path_rewards = list(s.rewards)
        node.reward = s.rewards[-1] if s.rewards else None
        tree.prm_tokens += s.tokens
    return children


def rank_score(node: Node, settings: TreeOptions) -> float:
    return aggregate(node.path_rewards, settings.rank_by)


def top_k(nodes: list[Node], k: int, settings: TreeOptions) -> list[Node]:
    """The k best nodes by rank score; ties go to the earlier node (deterministic)."""
    return sorted(nodes, key=lambda n: (-rank_score(n, settings), n.id))[: max(0, k)]
