"""The scorer contract, store caching, the oracle, the judge's probability math, and --prm specs."""

from __future__ import annotations

import math
import sys

import pytest

from testtime.errors import ConfigError
from testtime.policy.base import NextTokenLogprobs
from testtime.replay import CachedScorer
from testtime.reward import ArithCheck, Judge, Oracle, load_scorer, parse_spec
from testtime.reward.base import BatchScorer, RewardError, Scored, ScoreRequest, check_scored
from testtime.reward.judge import yes_probability
from testtime.search.selection import aggregate
from testtime.store import Store, reward_key


class CountingScorer(BatchScorer):
    name = "counting"
    n_params = 7

    def __init__(self, outcome_only: bool = False):
        self.outcome_only = outcome_only
        self.batches: list[list[ScoreRequest]] = []

    def score_batch(self, requests):
        self.batches.append(list(requests))
        return [Scored([len(s) / 100 for s in r.steps], tokens=len(r.steps)) for r in requests]


def req(q: str, *steps: str, ref: str | None = None) -> ScoreRequest:
    return ScoreRequest(q, tuple(steps), ref)


def test_cached_scorer_scores_only_what_is_missing(tmp_path):
    inner = CountingScorer()
    with Store(tmp_path) as store:
        cached = CachedScorer(inner, store)
        a, b, c = req("q", "one", "three"), req("q", "xx"), req("p", "four")
        first = cached.score_batch([a, b, a])  # duplicate scored once
        assert [len(x) for x in inner.batches] == [2]
        assert first[0].rewards == first[2].rewards == [0.03, 0.05] and first[1].rewards == [0.02]
        assert not any(s.from_store for s in first)
        second = cached.score_batch([c, b, a])
        assert [r.question for r in inner.batches[1]] == ["p"]  # only the new solution reached the scorer
        assert [s.from_store for s in second] == [False, True, True]
        assert second[2].rewards == [0.03, 0.05] and second[2].tokens == 2
        assert store.count_rewards() == 3
    with Store(tmp_path) as store:  # committed: a new process replays it
        again = CachedScorer(CountingScorer(), store).score_batch([a])
        assert again[0].from_store and again[0].rewards == [0.03, 0.05]


def test_cache_keys_ignore_the_reference_except_for_outcome_scorers(tmp_path):
    with Store(tmp_path) as store:
        prm = CountingScorer()
        CachedScorer(prm, store).score_batch([req("q", "s", ref="1")])
        CachedScorer(prm, store).score_batch([req("q", "s", ref="2")])
        assert len(prm.batches) == 1
        outcome = CountingScorer(outcome_only=True)
        outcome.name = "outcome"
        CachedScorer(outcome, store).score_batch([req("q", "s", ref="1")])
        CachedScorer(outcome, store).score_batch([req("q", "s", ref="2")])
        assert len(outcome.batches) == 2
    assert reward_key("a", "q", ["s"]) != reward_key("b", "q", ["s"])


def test_check_scored_rejects_bad_output():
    r = [req("q", "a", "b")]
    with pytest.raises(RewardError, match="2 steps but got 1"):
        check_scored("x", r, [Scored([0.5])])
    with pytest.raises(RewardError, match="not a number"):
        check_scored("x", r, [Scored([0.5, math.nan])])
    with pytest.raises(RewardError, match="1 results for 2"):
        check_scored("x", r * 2, [Scored([0.5, 0.5])])
    assert check_scored("x", [req("q")], [Scored([])])[0].rewards == []


def test_aggregate_refuses_nan_and_handles_empty():
    with pytest.raises(ValueError, match="NaN"):
        aggregate([0.2, math.nan, 0.9], "min")
    assert aggregate([], "prod") == 0.0


def test_oracle_uses_math_equivalence():
    o = Oracle()
    out = o.score_batch([
        ScoreRequest("q", ("2 / 4 = 1/2", "The answer is $\\frac{1}{2}$."), "0.5", "math"),
        ScoreRequest("q", ("The answer is 3.",), "4", "arith"),
        ScoreRequest("q", ("no answer here",), "4", "arith"),
    ])
    assert [s.rewards for s in out] == [[1.0, 1.0], [0.0], [0.0]]
    assert o.outcome_only
    with pytest.raises(RewardError, match="reference"):
        o.score_batch([req("q", "The answer is 3.")])


class FakeJudgePolicy:
    model_id = "fake-judge"
    n_params = 100

    def __init__(self, answers: dict[str, dict[str, float]]):
        self.answers = answers  # step text -> top logprobs when asked about it
        self.calls: list[list[str]] = []

    def render_chat(self, messages):
        return "<u>" + messages[0]["content"] + "<a>"

    def next_token_logprobs(self, prompts, top_k=20):
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            last = p.split("Step ")[-1].split(": ", 1)[1].split("\n")[0]  # the step asked about
            top = self.answers.get(last, {"The": -0.1})
            out.append(NextTokenLogprobs(top, prompt_tokens=50, cached_prompt_tokens=30))
        return out


def test_yes_probability():
    top = {"Yes": math.log(0.6), "No": math.log(0.2), "The": -1}
    assert yes_probability(top, ["yes"], ["no"]) == pytest.approx(0.75)
    # spellings with spaces and case are pooled
    p = yes_probability({" yes": math.log(0.1), "Yes": math.log(0.1), " NO": math.log(0.2)}, ["yes"], ["no"])
    assert p == pytest.approx(0.5)
    assert yes_probability({"The": -0.1}, ["yes"], ["no"]) is None


def test_judge_batches_every_step_and_reads_yes():
    pol = FakeJudgePolicy({"2 + 2 = 4.": {"Yes": math.log(0.9), "No": math.log(0.1)},
                           "4 * 3 = 13.": {"Yes": math.log(0.2), "No": math.log(0.6)}})
    j = Judge(pol, neutral=0.4)
    out = j.score_batch([req("Q1", "2 + 2 = 4.", "4 * 3 = 13."), req("Q2", "something")])
    assert len(pol.calls) == 1 and len(pol.calls[0]) == 3  # one call for all steps of all solutions
    assert out[0].rewards == pytest.approx([0.9, 0.25])
    assert out[1].rewards == [0.4] and j.misses == 1
    assert out[0].tokens == 2 * (50 - 30 + 1)
    # the prompt for step k+1 extends the one for step k up to the question about the step (prefix reuse)
    p1, p2 = pol.calls[0][0], pol.calls[0][1]
    assert p2.startswith(p1.split("\n\nIs step")[0]) and "Is step 2 correct?" in p2
    assert j.name == "judge:fake-judge" and j.n_params == 100


def test_judge_needs_logprobs():
    with pytest.raises(ValueError, match="log-probabilities"):
        Judge(object())


def test_parse_and_load_specs():
    spec = parse_spec("hf:/m/prm?format=qwen-prm&device=cpu")
    assert spec == ("hf", "/m/prm", {"format": "qwen-prm", "device": "cpu"}, None)
    assert parse_spec("arith-check") == ("arith-check", None, {}, None)
    a = load_scorer("arith-check?neutral=0.25&exact=true")
    assert isinstance(a, ArithCheck) and a.neutral == 0.25 and a.exact and a.name != "arith-check@v2"
    assert a.name.startswith("arith-check@v2(")
    assert load_scorer("arith-check").name == "arith-check@v2"
    with pytest.raises(ValueError, match="unknown scorer kind 'nope'"):
        load_scorer("nope")
    with pytest.raises(ConfigError, match="^prm arith-check\\?bogus=1: "):
        load_scorer("arith-check?bogus=1")
    with pytest.raises(ValueError, match="needs a policy"):
        load_scorer("judge")
    with pytest.raises(ValueError, match="hf needs a target"):
        load_scorer("hf")
    with pytest.raises(ValueError, match="neutral"):
        load_scorer("arith-check?neutral=2")
    assert isinstance(load_scorer("judge", FakeJudgePolicy({})), Judge)


@pytest.mark.parametrize("spec, parsed", [
    ("arith-check@v2", ("arith-check", None, {}, "v2")),
    ("arith-check@v2?neutral=0.25", ("arith-check", None, {"neutral": "0.25"}, "v2")),
    ("probe@3f2a9c:smollm2-135m", ("probe", "smollm2-135m", {}, "3f2a9c")),
    # an '@' in a target is the target's, never a version
    ("hf:/models/prm@v2?format=qwen-prm", ("hf", "/models/prm@v2", {"format": "qwen-prm"}, None)),
    ("http:http://user@host:8000/score", ("http", "http://user@host:8000/score", {}, None)),
    ("judge:/m/policy@main.gguf", ("judge", "/m/policy@main.gguf", {}, None)),
    ("vllm@v1:/m/prm@v2", ("vllm", "/m/prm@v2", {}, "v1")),
    # a name's options in parentheses are options (every ArithCheck name is a spec)
    ("arith-check@v2(neutral=0.25,exact=True)", ("arith-check", None, {"neutral": "0.25", "exact": "True"}, "v2")),
])
def test_parse_versioned_specs(spec, parsed):
    assert parse_spec(spec) == parsed
    assert parse_spec(spec).version == parsed[3]


@pytest.mark.parametrize("spec, message", [
    ("arith-check@v1", "asks for arith-check version v1, but the scorer built here is version v2 (arith-check@v2)"),
    ("arith-check@v3?exact=true", "but the scorer built here is version v2 (arith-check@v2(neutral=0.5,exact=True))"),
    ("oracle@v2", "asks for oracle version v2, but the scorer built here carries no version (oracle)"),
    ("arith-check@v2@v3", "expected KIND[@VERSION][:TARGET][?options]"),
    ("arith-check@v2(neutral)", "option 'neutral' in the name's parentheses: expected key=value"),
    ("arith-check@v2(neutral=0.3)?neutral=0.4", "option 'neutral' given twice"),
    ("arith-chek@v2", "unknown scorer kind 'arith-chek'"),
])
def test_a_version_that_does_not_match_is_a_one_line_config_error(spec, message):
    with pytest.raises(ConfigError) as e:
        load_scorer(spec)
    assert e.value.field == "prm" and e.value.values == (spec,)
    assert str(e.value).startswith(f"prm {spec}: ") and message in str(e.value) and "\n" not in str(e.value)


def test_judge_names_carry_no_version():
    with pytest.raises(ConfigError, match=r"^prm judge@v1: .* carries no version \(judge:fake-judge\)$"):
        load_scorer("judge@v1", FakeJudgePolicy({}))


@pytest.mark.parametrize("scorer", [ArithCheck(), ArithCheck(neutral=0.25), ArithCheck(neutral=0.0, exact=True)])
def test_a_scorer_name_loads_the_same_scorer(scorer):
    """What a calibrated table records (the scorer's name) is a spec that builds that scorer again."""
    again = load_scorer(scorer.name)
    assert isinstance(again, ArithCheck) and again.name == scorer.name
    assert (again.neutral, again.exact) == (scorer.neutral, scorer.exact)
    req = [ScoreRequest("q", ("1 + 1 = 2.", "1 + 1 = 3.", "The answer is 3."))]
    assert again.score_batch(req)[0].rewards == scorer.score_batch(req)[0].rewards


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_missing_hf_extra_names_the_extra(monkeypatch, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'testtime\[hf\]'"):
        load_scorer(f"hf:{tmp_path}")


def test_judge_scores_a_growing_path_only_once_per_step():
    pol = FakeJudgePolicy({"a = 1.": {"Yes": math.log(0.8), "No": math.log(0.2)}})
    j = Judge(pol)
    first = j.score_batch([req("Q", "a = 1.")])
    second = j.score_batch([req("Q", "a = 1.", "b = 2."), req("Q", "a = 1.", "c = 3.")])
    # the shared first step is not asked again; the two new steps go in one call
    assert [len(c) for c in pol.calls] == [1, 2]
    assert second[0].rewards[0] == first[0].rewards[0] == pytest.approx(0.8)
    assert second[0].tokens == second[1].tokens == 50 - 30 + 1  # only the new step's prompt is charged
    same = j.score_batch([req("Q", "a = 1.", "b = 2."), req("Q", "a = 1.", "b = 2.")])
    assert len(pol.calls) == 2 and [s.tokens for s in same] == [0, 0]


def test_scorer_and_tree_search_bases_are_abstract():
    from testtime.search.beam import TreeSearch

    class NoScore(BatchScorer):
        name = "x"

    with pytest.raises(TypeError, match="score_batch"):
        NoScore()
    with pytest.raises(TypeError, match="choose"):
        TreeSearch()


def test_scorers_declare_the_aggregations_their_rewards_support():
    from testtime.execution import ScorerInfo
    from testtime.reward.base import AGGREGATIONS as DECLARED_DEFAULT
    from testtime.search.selection import AGGREGATIONS, SELECTIONS

    assert DECLARED_DEFAULT == AGGREGATIONS  # one list of aggregations
    check = ArithCheck()
    # its last step ("The answer is N.") states nothing checkable: `last` is neutral for right and wrong alike
    right = check.score(" ", [["Step 1: 2 + 3 = 5.", "The answer is 5."]])[0]
    wrong = check.score(" ", [["Step 1: 2 + 3 = 6.", "The answer is 6."]])[0]
    assert aggregate(right, "last") == aggregate(wrong, "last") == check.neutral
    assert aggregate(right, "mean") > aggregate(wrong, "mean")
    assert "last" not in check.aggregations and check.default_selection == "prm_mean_max"
    # the others keep what every run reported before: all aggregations, prm_last_max
    for scorer in (Oracle(), Judge(FakeJudgePolicy({})), CountingScorer()):
        assert scorer.aggregations == AGGREGATIONS and scorer.default_selection == "prm_last_max"
    for scorer in (check, Oracle()):
        sel = SELECTIONS[scorer.default_selection]
        assert sel.aggregation in scorer.aggregations
        # what the driver and the cached scorer strategies see carry the declaration
        for seen in (ScorerInfo.of(scorer), CachedScorer(scorer, None)):
            assert (seen.aggregations, seen.default_selection) == (scorer.aggregations, scorer.default_selection)
