"""its_hub's particle filtering for bench/peers.py, run by its_hub's own venv python (bench/.peers/its_hub): reads one
job (JSON) on stdin, answers every question with ``ParticleFiltering`` (``budget`` particles) against the llama.cpp
server, and prints one JSON line: per question the reply text (or error), and the wall time.

The PRM is an adapter over testtime's arith-check scorer, served by bench/peers.py over testtime's HTTP scorer
protocol (``POST /score`` with ``{"model", "items": [{"question", "steps"}]}`` -> ``{"rewards": [[...]]}``): the
trajectory's steps are its text split at blank lines (testtime's step delimiter), and the score is the mean of
its step rewards, a value in [0, 1] as its_hub's PRM interface requires (it takes the inverse sigmoid of it).
Only the standard library and its_hub are imported here (this venv has no testtime).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from typing import Any

STEP = "\n\n"  # testtime's step delimiter: a blank line


def score_steps(prm_url: str, model: str, question: str, texts: list[str]) -> list[float]:
    """The mean arith-check reward of each text's steps (a text without steps scores the neutral 0.5)."""
    items = [{"question": question, "steps": [s for s in t.split(STEP) if s.strip()] or [t]} for t in texts]
    req = urllib.request.Request(prm_url.rstrip("/") + "/score", data=json.dumps({"model": model, "items": items})
                                 .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        rewards = json.loads(resp.read())["rewards"]
    return [sum(r) / len(r) if r else 0.5 for r in rewards]


def main() -> None:
    from its_hub.algorithms import ParticleFiltering
    from its_hub.base import AbstractProcessRewardModel
    from its_hub.lms import OpenAICompatibleLanguageModel, StepGeneration

    job = json.loads(sys.stdin.read())

    class ArithCheckPRM(AbstractProcessRewardModel):
        def __init__(self, question: str):
            self.question = question

        async def ascore(self, prompt: str, steps: Any) -> Any:
            texts = [steps] if isinstance(steps, str) else list(steps)
            got = await asyncio.to_thread(score_steps, job["prm_url"], job["prm_model"], self.question, texts)
            return got[0] if isinstance(steps, str) else got

        def score(self, prompt: str, steps: Any) -> Any:
            return asyncio.run(self.ascore(prompt, steps))

    lm = OpenAICompatibleLanguageModel(endpoint=job["endpoint"], api_key="none", model_name=job["model"],
                                       max_tokens=job["max_tokens"], temperature=job["temperature"],
                                       is_async=True)
    sg = StepGeneration(STEP, max_steps=job.get("max_steps", 12), stop_token="answer is",
                        temperature=job["temperature"])
    gate = asyncio.Semaphore(job["concurrency"])

    async def one(question: str) -> dict[str, Any]:
        async with gate:
            try:
                alg = ParticleFiltering(sg, ArithCheckPRM(question))
                res = await alg.ainfer(lm, question, job["budget"], return_response_only=True)
                text = res["content"] if isinstance(res, dict) else str(res)
                return {"text": text, "completion_tokens": None}
            except Exception as e:  # a failed question is its row's error
                return {"error": f"{type(e).__name__}: {str(e)[:200]}"}

    async def run() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(q) for q in job["questions"])))

    t0 = time.perf_counter()
    replies = asyncio.run(run())
    wall = time.perf_counter() - t0
    print(json.dumps({"replies": replies, "wall_s": wall,
                      "notes": ["the library reports no token usage for a particle-filtering answer"]}))


if __name__ == "__main__":
    main()
