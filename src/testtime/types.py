"""The data model shared by every layer: problems, completions, traces and compute."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

FinishReason = Literal["stop", "eos", "length"]

# A solution is a list of steps; a step is text that ends at a blank line ("\n\n").
Steps = list[str]


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer.

    `kind` selects how answers are compared (math, aime, amc, gsm8k, arith, number);
    `meta` holds level, subject, source and any other dataset fields kept for reports.
    """

    id: str
    question: str
    answer: str
    kind: str = "math"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def level(self) -> Any | None:
        return self.meta.get("level")


@dataclass(frozen=True)
class Confidence:
    """How sure the policy was while writing one sample (DeepConf, arXiv 2508.15260), from its per-token
    top-k log-probabilities. A token's confidence is minus the mean log-probability of its top-k candidates:
    high when the distribution is peaked. Summaries (``testtime.confidence.summarize``):"""

    mean: float  # over every generated token
    lowest_group: float  # the lowest mean over a sliding window of tokens (the weakest stretch)
    tail: float  # the mean over the last tokens (where the answer is written)
    tokens: int  # tokens with log-probabilities behind these figures


@dataclass
class Completion:
    """One sampled continuation of a prompt, with exact token accounting."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int  # tokens of the prompt, as the backend saw them
    cached_prompt_tokens: int  # of those, served from the KV / prefix cache
    generated_tokens: int
    stop: str | None = None  # the stop string that ended it, if any
    from_store: bool = False  # True when replayed from the store, not generated now
    confidence: Confidence | None = None  # None: the backend gave no log-probabilities


@dataclass
class Compute:
    """Compute spent, split by who spent it. FLOPs = 2 x params x tokens (forward pass)."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    prm_tokens: int = 0
    policy_flops: float = 0.0
    prm_flops: float = 0.0
    new_generations: int = 0
    cached_generations: int = 0

    @property
    def flops(self) -> float:
        """What the run did (cache-aware): prompt tokens served from the prefix cache cost nothing."""
        return self.policy_flops + self.prm_flops

    @property
    def policy_flops_uncached(self) -> float:
        """The policy's FLOPs as papers count them: every sample pays its whole prompt, 2 x params x (prompt +
        generated) tokens. Scaled from ``policy_flops`` (2 x params x evaluated tokens), so it needs no
        parameter count and holds for records written before it existed."""
        evaluated = self.prompt_tokens - self.cached_prompt_tokens + self.generated_tokens
        return self.policy_flops * (self.prompt_tokens + self.generated_tokens) / evaluated if evaluated > 0 else 0.0

    @property
    def flops_uncached(self) -> float:
        """Cache-independent FLOPs: the policy's as above; the PRM's as they are (each scoring call's tokens
        are its whole input: no prefix cache is counted for scorers)."""
        return self.policy_flops_uncached + self.prm_flops

    def add(self, other: Compute) -> Compute:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__dataclass_fields__}
        d["flops"] = self.flops
        d["flops_uncached"] = self.flops_uncached
        return d


@dataclass
class Candidate:
    """A finished (or abandoned) solution a strategy produced."""

    steps: Steps
    answer: str | None  # extracted final answer, None when none was found
    finish_reason: FinishReason
    generated_tokens: int
    correct: bool | None = None  # graded against the reference when known
    confidence: Confidence | None = None  # its sample's, where the backend gave log-probabilities

    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass
class Node:
    """One step in a search tree (the root, id 0, is the prompt itself and has no step).

    The same object from the search to the store's nodes table and back to the report's tree viewer."""

    id: int
    parent: int | None
    depth: int
    step: str = ""  # the step text exactly as generated, with its "\n\n" when it stopped at one
    reward: float | None = None  # the PRM's reward for this step (given the path before it)
    path_rewards: list[float] = field(default_factory=list)  # rewards of every step on the path
    tokens: int = 0  # generated tokens of this step
    finish: str = ""  # stop | eos | length
    answer: str | None = None
    terminal: bool = False  # the path ends here (EOS, an answer, or max depth)
    kept: bool = False  # chosen to be expanded, or a finished path that reached selection
    pruned: str | None = None  # why not: "duplicate", "truncated", "rank"


@dataclass
class Scoring:
    """How a PRM-scored trace chose its answer: who scored, every candidate's step rewards, which selection."""

    scorer: str  # the scorer's name (its identity in store keys and reports)
    oracle: bool  # an outcome scorer that read the reference: results are upper bounds
    rewards: list[list[float]]  # per candidate, one reward per step
    selection: str  # the reported answer's selection (a search.selection.SELECTIONS key)
    rewards_from_store: int = 0


@dataclass
class Trace:
    """What a strategy returns for one problem: every candidate, the choice, the compute.

    The typed fields are the contract between search, engine, sweeps and reports; ``meta`` holds only
    free-form extras a strategy wants recorded (vote counts, widths)."""

    problem_id: str
    strategy: str
    budget: int
    candidates: list[Candidate]
    answer: str | None
    correct: bool | None = None
    compute: Compute = field(default_factory=Compute)
    # candidate -> index of its answer group (math-equivalence, formed once per pool); None: no answer
    answer_groups: list[int | None] | None = None
    scoring: Scoring | None = None  # PRM-scored traces only
    # every selection's answer (name -> answer) and, once graded, whether it is correct
    selections: dict[str, str | None] = field(default_factory=dict)
    selections_correct: dict[str, bool] = field(default_factory=dict)
    tree: list[Node] | None = None  # tree searches: every node, pruned ones included
    error: str | None = None  # set when the problem failed (its remote calls gave up): counted as wrong
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def record(self) -> dict[str, Any]:
        """A JSON-able dict without the tree (the store keeps trees as rows of their own)."""
        d = asdict(replace(self, tree=None))
        d.pop("tree")
        return d

    @classmethod
    def from_record(cls, record: dict[str, Any], tree: list[Node] | None = None) -> Trace:
        """A trace as ``record`` wrote it (or as testtime wrote it before these fields were typed, when
        they lived in ``meta``), with its tree. Compute counts every generation as replayed from the
        store, as a rerun of it would."""
        d = dict(record)
        meta = dict(d.pop("meta", None) or {})
        d["candidates"] = [Candidate(**{**c, "confidence": Confidence(**c["confidence"]) if c.get("confidence")
                                        else None}) for c in d["candidates"]]
        compute = Compute(**{k: v for k, v in d["compute"].items() if k not in ("flops", "flops_uncached")})
        compute.cached_generations += compute.new_generations
        compute.new_generations = 0
        d["compute"] = compute
        _legacy_fields(d, meta)
        if d.get("scoring") is not None:
            d["scoring"] = Scoring(**d["scoring"])
        return cls(**d, tree=tree or None, meta=meta)


def _legacy_fields(d: dict[str, Any], meta: dict[str, Any]) -> None:
    """Typed fields of a record written when they were keys of ``meta``, moved to their fields."""
    for key in ("answer_groups", "selections", "selections_correct"):
        if key in meta:
            d.setdefault(key, meta.pop(key))
    if meta.pop("failed", False):
        d.setdefault("error", meta.pop("error", "failed"))
    if "scorer" in meta and d.get("scoring") is None:
        d["scoring"] = {"scorer": meta.pop("scorer"), "oracle": bool(meta.pop("oracle", False)),
                        "rewards": meta.pop("rewards", []), "selection": meta.pop("selection", ""),
                        "rewards_from_store": meta.pop("rewards_from_store", 0)}
