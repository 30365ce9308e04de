"""deepconf_online on a scripted two-step policy with per-step confidences: warm-up threshold, early stops,
the confidence vote, one call per step, store replay."""

from __future__ import annotations

import pytest

from fakes import ScriptedPolicy
from testtime import engine
from testtime.errors import ConfigError
from testtime.policy.base import STEP_STOP
from testtime.policy.prompts import PromptConfig
from testtime.replay import CachedGenerator
from testtime.search import strategy_class
from testtime.search.base import SearchContext
from testtime.search.deepconf import DeepConfOnline, DeepConfOptions, threshold
from testtime.types import Completion, Confidence, Problem

# a sample's kind is fixed by its first step: (answer, confidence of step 1, confidence of step 2)
KINDS = {0: ("4", 3.0, 3.0), 1: ("4", 3.5, 3.0), 2: ("9", 0.2, 2.0), 3: ("9", 2.0, 2.5)}


class TwoStepPolicy(ScriptedPolicy):
    """Step 1 "Step one kind=K." (K = (seed + i) % 4; stops at the blank line when asked), then "The answer
    is A."; each step reports its own confidence."""

    def _sample(self, req, index):
        self.generated.append((req.prompt, req.seed, index))
        body = req.prompt.split("<|assistant|>\n", 1)[1]
        if "kind=" in body:
            k = int(body.split("kind=")[1][0])
            text, conf, finish, stop = f"The answer is {KINDS[k][0]}.", KINDS[k][2], "eos", None
        else:
            k = (req.seed + index) % 4
            text, conf = f"Step one kind={k}.", KINDS[k][1]
            finish, stop = ("stop", STEP_STOP) if STEP_STOP in req.params.stop else ("eos", None)
            if finish == "eos":  # a full sample: both steps at once, the lower confidence
                text += f"\n\nThe answer is {KINDS[k][0]}."
                conf = min(conf, KINDS[k][2])
        n = len(text.split())
        return Completion(text, finish, len(req.prompt.split()), 0, n, stop=stop,
                          confidence=Confidence(conf, conf, conf, n))


PROBLEM = Problem("p", "What is 2 + 2?", "4", kind="number")


def config(tmp_path, n=12, strategy="deepconf_online"):
    return engine.RunConfig(dataset="arith", strategy=strategy, n=n, out=str(tmp_path), fewshot=0, max_tokens=64)


def test_traits_and_options():
    cls = strategy_class("deepconf_online")
    assert cls is DeepConfOnline and not cls.needs_scorer and not cls.pooled and not cls.is_tree
    for kw, fld in (({"warmup": 0}, "warmup"), ({"keep": 0.0}, "keep"), ({"keep": 1.5}, "keep")):
        with pytest.raises(ConfigError) as e:
            DeepConfOptions(**kw)
        assert e.value.field == fld


def test_threshold_is_the_kept_shares_lowest_confidence():
    assert threshold([3.0, 1.0, 2.0, 4.0], 0.5) == 3.0
    assert threshold([3.0, 1.0, 2.0, 4.0], 0.9) == 1.0  # ceil(0.9 * 4) = 4: the lowest
    assert threshold([3.0, None], 0.5) is None and threshold([], 0.5) is None


def test_low_confidence_samples_stop_after_their_first_step():
    policy = TwoStepPolicy()
    ctx = SearchContext(CachedGenerator(policy, None), prompt=PromptConfig(fewshot=0), max_tokens=64)
    [t] = DeepConfOnline(budget=12, options=DeepConfOptions(warmup=4, keep=0.5)).run([PROBLEM], ctx)
    seed = ctx.problem_seed(PROBLEM)
    warm_conf = [min(KINDS[(seed + i) % 4][1:]) for i in range(4)]  # the warm-up's full samples
    assert t.meta["threshold"] == threshold(warm_conf, 0.5)
    cut = t.meta["threshold"]
    online = t.candidates[4:]
    # every online sample whose first step fell under the threshold was stopped and does not vote
    assert t.meta["stopped"] + len(online) == 8 and t.meta["stopped"] > 0
    assert all(c.confidence.lowest_group >= cut for c in online)
    assert t.answer == "4" and t.selections["confidence_vote"] == "4"
    # warm-up: one call of 4 full samples; then one call per step for all live samples (step 1: 8, step 2: rest)
    assert [sum(r.n for r in call) for call in policy.calls] == [4, 8, 8 - t.meta["stopped"]]
    assert t.compute.generated_tokens == sum(c.generated_tokens for c in t.candidates) + t.meta["stopped_tokens"]


def test_warmup_is_majoritys_samples_and_reruns_replay(tmp_path):
    policy = TwoStepPolicy()
    majority = engine.run(config(tmp_path, 4, "majority"), policy, [PROBLEM])
    before = policy.n_generated
    first = engine.run(config(tmp_path), policy, [PROBLEM])
    assert policy.n_generated - before == 8 + 8 - first.results[0].trace.meta["stopped"]  # no warm-up sample
    assert [c.text for c in first.results[0].trace.candidates[:4]] == [
        c.text for c in majority.results[0].trace.candidates]
    again = engine.run(config(tmp_path), policy, [PROBLEM])
    assert again.summary()["new_generations"] == 0
    assert again.results[0].trace.answer == first.results[0].trace.answer


def test_without_confidences_nothing_stops_and_the_vote_is_majority(tmp_path):
    res = engine.run(config(tmp_path, 6), ScriptedPolicy({"2 + 2": ["4", "4", "5"]}), [PROBLEM])
    t = res.results[0].trace
    assert t.meta["threshold"] is None and t.meta["stopped"] == 0 and len(t.candidates) == 6
    assert t.answer == "4" and "confidence_vote" not in t.selections
