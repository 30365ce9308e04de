"""LLM-as-judge PRM: P("Yes") to "is the last step correct?", read from next-token log-probabilities.

Works over any policy backend that exposes ``next_token_logprobs`` (the llama.cpp default does), so a
CPU-only user has a neural step scorer without any PRM checkpoint. The prompt for step k shows the
question and steps 1..k and asks about step k; the prompt for step k+1 shares all of it but the
question's last line, so the backend's prefix cache serves most of each solution's prompts. All prompts
of a batch go in one ``next_token_logprobs`` call, so the backend can schedule them: the llama.cpp policy
runs one solution's prompts one after another in one slot (a lane) and different solutions side by side.

Reward = P(yes) / (P(yes) + P(no)), each summed over the spellings found in the top-k tokens ("Yes",
" yes", ...). When neither appears in the top k the step gets ``neutral`` and the miss is counted in
``misses`` so a report can say how often the judge had no opinion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from testtime.reward.base import BatchScorer, Scored, ScoreRequest

DEFAULT_TEMPLATE = (
    "Here is a math problem and the first steps of a solution.\n\n"
    "Problem: {question}\n\n"
    "Solution steps:\n{steps}\n\n"
    "Is step {k} correct? Answer Yes or No."
)


def yes_probability(top: dict[str, float], yes: Sequence[str], no: Sequence[str]) -> float | None:
    """P(yes) / (P(yes) + P(no)) from a token -> logprob map; None when neither word is in it."""
    yes_set = {w.lower() for w in yes}
    no_set = {w.lower() for w in no}
    p_yes = sum(math.exp(lp) for tok, lp in top.items() if tok.strip().lower() in yes_set)
    p_no = sum(math.exp(lp) for tok, lp in top.items() if tok.strip().lower() in no_set)
    if p_yes + p_no == 0.0:
        return None
    return p_yes / (p_yes + p_no)


class Judge(BatchScorer):
    outcome_only = False

    def __init__(
        self,
        policy: Any,
        *,
        template: str = DEFAULT_TEMPLATE,
        yes: Sequence[str] = ("yes",),
        no: Sequence[str] = ("no",),
        top_k: int = 20,
        neutral: float = 0.5,
        owns_policy: bool = False,
    ) -> None:
        if not hasattr(policy, "next_token_logprobs"):
            raise ValueError(
                f"judge: the policy backend {type(policy).__name__} does not expose next-token log-probabilities"
            )
        self.policy = policy
        self.template = template
        self.yes, self.no = tuple(yes), tuple(no)
        self.top_k = top_k
        self.neutral = neutral
        self.n_params = int(getattr(policy, "n_params", 0))
        self.name = f"judge:{policy.model_id}"
        self.misses = 0  # steps where neither Yes nor No was in the top k
        # The verdict on step k depends only on steps 1..k, so tree searches, which rescore a growing
        # path at every depth, only ever pay for the newest step: prompt -> reward, bounded in size.
        self._memo: dict[str, float] = {}
        self.memo_limit = 200_000
        self._owns_policy = owns_policy  # judge:MODEL loads its own policy; the run's is not ours to close

    def close(self) -> None:
        if self._owns_policy:
            self.policy.close()
            self._owns_policy = False

    def prompt(self, question: str, steps: Sequence[str], k: int) -> str:
        """The judge prompt about step k (1-based) given steps[:k]."""
        shown = "\n".join(f"Step {i + 1}: {s.strip()}" for i, s in enumerate(steps[:k]))
        text = self.template.format(question=question.strip(), steps=shown, k=k)
        return self.policy.render_chat([{"role": "user", "content": text}])

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        prompts = [[self.prompt(r.question, r.steps, k) for k in range(1, len(r.steps) + 1)] for r in requests]
        values = {p: self._memo[p] for ps in prompts for p in ps if p in self._memo}
        todo = list(dict.fromkeys(p for ps in prompts for p in ps if p not in values))  # unique, in order
        results = self.policy.next_token_logprobs(todo, self.top_k) if todo else []
        tokens: dict[str, int] = {}
        for prompt, res in zip(todo, results, strict=True):
            p = yes_probability(res.top, self.yes, self.no)
            if p is None:
                self.misses += 1
                p = self.neutral
            values[prompt] = p
            # FLOPs count the tokens the judge actually evaluated (cached prefix tokens are free)
            tokens[prompt] = res.prompt_tokens - res.cached_prompt_tokens + 1
        if len(self._memo) + len(todo) > self.memo_limit:
            self._memo.clear()
        self._memo.update((p, values[p]) for p in todo)
        # each prompt's tokens are charged once, to the first solution that needed it
        return [Scored([values[p] for p in ps], sum(tokens.pop(p, 0) for p in ps)) for ps in prompts]
