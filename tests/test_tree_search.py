"""Beam search, DVTS and REBASE on a scripted step policy and a scripted scorer: exact trees."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testtime import engine
from testtime.errors import ConfigError
from testtime.policy.base import STEP_STOP, GenerationRequest
from testtime.policy.prompts import PromptConfig
from testtime.replay import CachedGenerator
from testtime.reward.base import BatchScorer, Scored
from testtime.search.base import SearchContext
from testtime.search.beam import DVTS, BeamOptions, BeamSearch, Rebase, RebaseOptions, balanced_allocation, softmax
from testtime.search.tree import TreeOptions
from testtime.store import Store
from testtime.types import Completion, Problem

ANSWER = "<|assistant|>\n"  # where the prompt ends and the path's steps begin
TAILS = {"answer": " The answer is 7.", "boxed": " So x = \\boxed{7}.",
         "prose": " The discriminant is 9, so the answer is positive, so we take the positive root."}


def path_names(prefix: str) -> list[str]:
    """Step names on the path a prefix continues ("r.1", "r.1.0", ...)."""
    body = prefix.split(ANSWER, 1)[1]
    return [s.split(" ")[0] for s in body.split(STEP_STOP) if s.strip()]


class StepPolicy:
    """Child i of a node named X is step "X.i"; `ends(name)` says how that step ends.

    ends(name) -> None (an ordinary step, stopped at "\\n\\n"), "answer" (the step states the final
    answer), "boxed" (it writes \\boxed{7}), "prose" (it says "the answer is positive, ..." mid-solution),
    "eos" (the model stops without one), "length" (truncated), or "dup" (same text as child 0).
    """

    model_id = "step-fake"
    n_params = 10

    def __init__(self, ends: Callable[[str], str | None] = lambda name: None):
        self.ends = ends
        self.calls: list[list[GenerationRequest]] = []

    def render_chat(self, messages):
        return "<|user|>\n" + messages[-1]["content"] + "\n" + ANSWER

    def generate(self, requests, on_chunk=None):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            names = path_names(r.prompt)
            parent = names[-1] if names else "r"
            comps = []
            for i in range(r.first_index, r.first_index + r.n):
                name = f"{parent}.{i}"
                how = self.ends(name)
                if how == "dup":
                    name = f"{parent}.0"
                text = f"{name} step" + TAILS.get(how or "", "")
                finish = {"eos": "eos", "length": "length"}.get(how or "", "stop")
                comps.append(Completion(text, finish, len(r.prompt.split()), 0, 3,
                                        stop=STEP_STOP if finish == "stop" else None))
            out.append(comps)
        return out

    def close(self):
        pass


class NameScorer(BatchScorer):
    """Reward of the newest step from a table of step names (default 0.5); records every call."""

    name = "name-scorer"
    n_params = 100

    def __init__(self, rewards: dict[str, float]):
        self.rewards = rewards
        self.calls: list[list[tuple[str, ...]]] = []

    def score_batch(self, requests):
        self.calls.append([r.steps for r in requests])
        return [Scored([self.rewards.get(s.split(" ")[0], 0.5) for s in r.steps], tokens=len(r.steps))
                for r in requests]


PROBLEMS = [Problem(f"p{i}", f"question {i}", "7", kind="number") for i in range(3)]


def ctx_for(policy, scorer, store=None, max_tokens=1000) -> SearchContext:
    return SearchContext(CachedGenerator(policy, store), prompt=PromptConfig(fewshot=0), scorer=scorer,
                         max_tokens=max_tokens)


def kept_names(trace, depth: int) -> list[str]:
    return sorted(n.step.split(" ")[0] for n in trace.tree if n.depth == depth and n.kept)


def test_beam_keeps_the_top_n_over_m_and_expands_each_m_times():
    rewards = {"r.0": 0.1, "r.1": 0.9, "r.2": 0.5, "r.3": 0.7, "r.1.0": 0.2, "r.1.1": 0.8, "r.3.0": 0.6, "r.3.1": 0.3}
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 3 else None)
    scorer = NameScorer(rewards)
    [trace] = BeamSearch(budget=4, options=BeamOptions(m=2)).run(PROBLEMS[:1], ctx_for(policy, scorer))
    assert kept_names(trace, 1) == ["r.1", "r.3"]
    assert kept_names(trace, 2) == ["r.1.1", "r.3.0"]
    # depth 3: 4 children, all finished (answers): the finished pool holds N = 4 paths
    assert sorted(c.steps[-1].split(" ")[0] for c in trace.candidates) == ["r.1.1.0", "r.1.1.1", "r.3.0.0", "r.3.0.1"]
    # one policy call per depth; N samples per depth: 4 of the root, then 2 survivors x M=2
    assert [[(path_names(r.prompt)[-1:], r.n) for r in call] for call in policy.calls] == [
        [([], 4)], [(["r.1"], 2), (["r.3"], 2)], [(["r.1.1"], 2), (["r.3.0"], 2)],
    ]
    assert [len(c) for c in scorer.calls] == [4, 4, 4]
    pruned = {n.step.split(" ")[0]: n.pruned for n in trace.tree if n.pruned}
    assert pruned == {"r.0": "rank", "r.2": "rank", "r.1.0": "rank", "r.3.1": "rank"}
    assert trace.answer == "7" and trace.meta["finished"] == 4


def test_beam_advances_every_problem_in_one_call_per_depth():
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 else None)
    scorer = NameScorer({})
    traces = BeamSearch(budget=4, options=BeamOptions(m=2)).run(PROBLEMS, ctx_for(policy, scorer))
    assert len(policy.calls) == 2 and len(scorer.calls) == 2
    assert [len(c) for c in policy.calls] == [3, 6]  # 3 roots; then 3 problems x 2 survivors
    assert [t.problem_id for t in traces] == ["p0", "p1", "p2"]
    # trees are per problem: no problem's node is expanded with another's prompt
    for call in policy.calls[1:]:
        assert {r.prompt.split("question ")[1][0] for r in call} == {"0", "1", "2"}


def test_beam_ties_go_to_the_earlier_node():
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 else None)
    [trace] = BeamSearch(budget=4, options=BeamOptions(m=2)).run(PROBLEMS[:1], ctx_for(policy, NameScorer({})))
    assert kept_names(trace, 1) == ["r.0", "r.1"]  # all rewards 0.5: the first two


def test_termination_rules_and_dropped_steps():
    ends = {"r.0": None, "r.1": "length", "r.2": "dup", "r.3": "eos"}
    policy = StepPolicy(lambda n: ends.get(n, "answer"))
    [trace] = BeamSearch(budget=4, options=BeamOptions(m=2)).run(PROBLEMS[:1], ctx_for(policy, NameScorer({})))
    nodes = {n.id: n for n in trace.tree}
    d1 = [n for n in nodes.values() if n.depth == 1]
    assert [(n.finish, n.terminal, n.pruned) for n in d1] == [
        ("stop", False, None),
        ("length", False, "truncated"),  # truncated steps are dropped
        ("stop", False, "duplicate"),  # an identical sibling (same text as r.0) adds nothing
        ("eos", True, None),  # EOS ends a path (it is a finished candidate)
    ]
    assert all(n.terminal for n in nodes.values() if n.depth == 2)  # answers end paths
    assert trace.meta["finished"] == 3  # r.3 (eos) + the two children of r.0


def test_max_depth_and_path_token_cap_end_paths():
    policy = StepPolicy()  # never answers
    beam = BeamSearch(budget=2, options=BeamOptions(m=2, max_depth=3))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, NameScorer({})))
    assert max(n.depth for n in trace.tree) == 3 and len(policy.calls) == 3
    policy = StepPolicy()
    beam = BeamSearch(budget=2, options=BeamOptions(m=2))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, NameScorer({}), max_tokens=6))
    assert max(n.depth for n in trace.tree) == 2  # 3 tokens per step, cap 6


def test_dvts_subtrees_stay_disjoint():
    rewards = {"r.0": 0.9, "r.1": 0.1, "r.2": 0.2, "r.3": 0.8, "r.0.1": 0.9, "r.3.0": 0.9}
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 3 else None)
    scorer = NameScorer(rewards)
    [trace] = DVTS(budget=4, options=TreeOptions(m=2)).run(PROBLEMS[:1], ctx_for(policy, scorer))
    # subtree 0 = root samples 0-1, subtree 1 = samples 2-3; each keeps its own best only
    assert kept_names(trace, 1) == ["r.0", "r.3"]
    assert kept_names(trace, 2) == ["r.0.1", "r.3.0"]
    finals = sorted(c.steps[-1].split(" ")[0] for c in trace.candidates)
    assert finals == ["r.0.1.0", "r.3.0.0"]  # one finished path per subtree (N/M = 2)
    assert {f.split(".")[1] for f in finals} == {"0", "3"}
    # one root request per subtree: samples [0, 2) and [2, 4) of the root, the ones one request of 4 drew
    assert [[(r.n, r.first_index) for r in call] for call in policy.calls] == [
        [(2, 0), (2, 2)], [(2, 0), (2, 0)], [(2, 0), (2, 0)]]


def test_dvts_never_merges_subtrees_even_when_one_is_much_better():
    # subtree 1's nodes all beat subtree 0's, but subtree 0 still expands its own best node
    rewards = {"r.0": 0.2, "r.1": 0.1, "r.2": 0.95, "r.3": 0.9}
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 else None)
    [trace] = DVTS(budget=4, options=TreeOptions(m=2)).run(PROBLEMS[:1], ctx_for(policy, NameScorer(rewards)))
    assert kept_names(trace, 1) == ["r.0", "r.2"]


def test_rebase_shares_the_remaining_width_by_reward():
    rewards = {"r.0": 0.9, "r.1": 0.1, "r.2": 0.1, "r.3": 0.1}
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 or n == "r.3" else None)
    rebase = Rebase(budget=4, options=RebaseOptions(m=1, softmax_temperature=0.1))
    [trace] = rebase.run(PROBLEMS[:1], ctx_for(policy, NameScorer(rewards)))
    # r.3 finished: width 4 - 1 = 3, softmax(0.9, 0.1, 0.1 / 0.1) gives r.0 nearly all of it
    assert [(path_names(r.prompt)[-1], r.n) for r in policy.calls[1]] == [("r.0", 3)]
    assert trace.meta["finished"] == 4


def test_balanced_allocation_and_softmax():
    assert balanced_allocation([0.5, 0.25, 0.25], 4) == [2, 1, 1]
    assert balanced_allocation([1, 1, 1], 4) == [2, 1, 1]  # remainder to the earliest
    assert balanced_allocation([0.0, 0.0], 3) == [2, 1]
    assert sum(balanced_allocation([0.3, 0.3, 0.4], 7)) == 7
    assert balanced_allocation([1.0], 0) == [0]
    p = softmax([1.0, 0.0], 1.0)
    assert p[0] == pytest.approx(0.7310585786) and sum(p) == pytest.approx(1.0)


def test_n_must_be_a_multiple_of_m():
    with pytest.raises(ConfigError, match="multiple of M") as e:
        BeamSearch(budget=6, options=BeamOptions(m=4))
    assert e.value.fields == ("n", "m") and e.value.values == (6, 4)
    with pytest.raises(ConfigError) as e:
        TreeOptions(rank_by="median")
    assert e.value.field == "rank_by"
    with pytest.raises(ConfigError) as e:
        engine.RunConfig(strategy="dvts", n=8, m=3)
    assert e.value.render(lambda f: f"--{f}") == "--n 8 --m 3: N must be a positive multiple of M"


def test_engine_records_the_tree_and_replays(tmp_path):
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 else None)
    scorer = NameScorer({"r.1": 0.9})
    cfg = engine.RunConfig(dataset="arith", strategy="beam", n=4, m=2, limit=2, out=str(tmp_path), fewshot=0)
    problems = [Problem("a", "question a", "7", kind="number"), Problem("b", "question b", "8", kind="number")]
    first = engine.run(cfg, policy, problems, scorer=scorer)
    s = first.summary()
    assert s["strategy"] == "beam" and s["m"] == 2 and s["accuracy"] == 0.5
    assert s["prompt_tokens_evaluated"] + s["prompt_tokens_cached"] == s["prompt_tokens"]
    with Store(tmp_path) as store:
        tree = store.get_tree(first.run_id, "a")
        assert store.get_problem(first.run_id, "a")["question"] == "question a"
        assert store.get_problem(first.run_id, "nope") == {}
        assert [n.id for n in tree] == list(range(len(tree)))
        assert tree[0].parent is None and all(n.parent is not None for n in tree[1:])
        assert tree == first.results[0].trace.tree  # the same Node objects' fields, end to end
        assert [n.step.split(" ")[0] for n in tree if n.depth == 1 and n.kept] == ["r.0", "r.1"]
        assert "tree" not in store.get_results(first.run_id)[0]  # stored once, as rows
    calls = len(policy.calls)
    again = engine.run(cfg, policy, problems, scorer=scorer)
    assert len(policy.calls) == calls  # every step replays from the store
    assert again.summary()["accuracy"] == 0.5
    assert again.results[0].trace.tree == first.results[0].trace.tree  # resumed with its tree
    assert again.compute.new_generations == 0 and again.compute.cached_generations == first.compute.new_generations


# --- beam_finish: the authors' rule vs search-and-learn's ---------------------------------------------------


def depth_calls(policy) -> list[int]:
    """Samples drawn per depth (one policy call per depth)."""
    return [sum(r.n for r in call) for call in policy.calls]


def finals(trace) -> list[str]:
    return sorted(c.steps[-1].split(" ")[0] for c in trace.candidates)


# N=4, M=4: one slot. Depth 1: r.2 is best and unfinished. Depth 2: r.2.1 finishes (0.8) but the unfinished
# r.2.3 scores higher (0.9). Depth 3: every child states an answer; r.2.3.2 is the best.
SMALL_REWARDS = {"r.2": 0.9, "r.2.1": 0.8, "r.2.3": 0.9, "r.2.3.2": 0.7}
SMALL_ENDS = {"r.2.1": "answer"}


def small_ends(name: str) -> str | None:
    return "answer" if name.count(".") == 3 else SMALL_ENDS.get(name)


def test_authors_beam_n4_m4_returns_the_one_path_that_wins_the_slot():
    policy, scorer = StepPolicy(small_ends), NameScorer(SMALL_REWARDS)
    beam = BeamSearch(budget=4, options=BeamOptions(m=4, beam_finish="authors"))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, scorer))
    # r.2.1 finished but lost the slot to r.2.3: it is not a candidate; depth 3's best alone is returned
    assert finals(trace) == ["r.2.3.2"] and trace.meta["finished"] == 1
    assert depth_calls(policy) == [4, 4, 4]
    nodes = {n.step.split(" ")[0]: n for n in trace.tree if n.parent is not None}
    assert nodes["r.2.1"].terminal and nodes["r.2.1"].pruned == "rank"
    assert [n for n, x in nodes.items() if x.depth == 3 and x.kept] == ["r.2.3.2"]


def test_sal_beam_n4_m4_pools_every_finished_path():
    policy, scorer = StepPolicy(small_ends), NameScorer(SMALL_REWARDS)
    beam = BeamSearch(budget=4, options=BeamOptions(m=4, beam_finish="sal"))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, scorer))
    # r.2.1 joins the pool although it lost; depth 3's 4 finished children bring the pool to 5 >= N
    assert finals(trace) == ["r.2.1", "r.2.3.0", "r.2.3.1", "r.2.3.2", "r.2.3.3"]
    assert depth_calls(policy) == [4, 4, 4]


# N=16, M=4: four slots. Depth 1: r.0 finishes with the best score, r.1 ends (EOS) with a poor one; r.2-r.4
# lead the unfinished, r.5 trails, the rest tie at 0.5. Depth 2: r.2.0 finishes well, r.3.1 poorly, r.4.2
# leads the unfinished. Depth 3: every child states an answer.
BIG_REWARDS = {"r.0": 0.95, "r.1": 0.1, "r.2": 0.9, "r.3": 0.85, "r.4": 0.8, "r.5": 0.3,
               "r.2.0": 0.9, "r.3.1": 0.2, "r.4.2": 0.8, "r.4.2.3": 0.9, "r.2.1.0": 0.7}
BIG_ENDS = {"r.0": "answer", "r.1": "eos", "r.2.0": "answer", "r.3.1": "answer"}


def big_ends(name: str) -> str | None:
    return "answer" if name.count(".") == 3 else BIG_ENDS.get(name)


def test_authors_beam_n16_m4_ranks_finished_and_unfinished_together():
    policy, scorer = StepPolicy(big_ends), NameScorer(BIG_REWARDS)
    beam = BeamSearch(budget=16, options=BeamOptions(m=4, beam_finish="authors"))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, scorer))
    # depth 1: r.0 (finished) wins a slot, r.2-r.4 the other three; r.1 (finished, poor) is dropped.
    # depth 2: 3 slots left: r.2.0 (finished), r.4.2, then r.2.1 (the earliest of the 0.5 ties).
    # depth 3: 2 slots left: r.4.2.3 and r.2.1.0 finish the N/M = 4 paths.
    assert kept_names(trace, 1) == ["r.0", "r.2", "r.3", "r.4"]
    assert kept_names(trace, 2) == ["r.2.0", "r.2.1", "r.4.2"]
    assert finals(trace) == ["r.0", "r.2.0", "r.2.1.0", "r.4.2.3"]
    # generations shrink as paths finish: 16, then 3 x M, then 2 x M
    assert depth_calls(policy) == [16, 12, 8]
    assert [[path_names(r.prompt)[-1] for r in call] for call in policy.calls[1:]] == [
        ["r.2", "r.3", "r.4"], ["r.4.2", "r.2.1"]]  # in rank order
    assert trace.meta["finished"] == 4


def test_sal_beam_n16_m4_keeps_full_width_until_n_paths_finish():
    policy, scorer = StepPolicy(big_ends), NameScorer(BIG_REWARDS)
    beam = BeamSearch(budget=16, options=BeamOptions(m=4, beam_finish="sal"))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, scorer))
    # depth 1: r.0 and r.1 both join the pool (kept as finals); the 4 best unfinished: r.2, r.3, r.4 and r.6
    # (the first 0.5 tie)
    assert kept_names(trace, 1) == ["r.0", "r.1", "r.2", "r.3", "r.4", "r.6"]
    assert [path_names(r.prompt)[-1] for r in policy.calls[1]] == ["r.2", "r.3", "r.4", "r.6"]
    # depth 2: r.2.0 and r.3.1 (poor, still counted) join the pool; expanded: r.4.2 and the first three 0.5 ties
    assert kept_names(trace, 2) == ["r.2.0", "r.2.1", "r.2.2", "r.2.3", "r.3.1", "r.4.2"]
    assert [path_names(r.prompt)[-1] for r in policy.calls[2]] == ["r.4.2", "r.2.1", "r.2.2", "r.2.3"]
    expected = ["r.0", "r.1", "r.2.0", "r.3.1"] + [f"{p}.{i}" for p in ("r.2.1", "r.2.2", "r.2.3", "r.4.2")
                                                   for i in range(4)]
    assert finals(trace) == sorted(expected) and trace.meta["finished"] == 20
    assert depth_calls(policy) == [16, 16, 16]


def test_authors_beam_stops_when_nothing_is_left_to_expand():
    # every first step is truncated but one, which finishes: 1 of N/M = 2 paths, and no call after depth 1
    policy = StepPolicy(lambda n: "answer" if n == "r.0" else "length")
    beam = BeamSearch(budget=4, options=BeamOptions(m=2, beam_finish="authors"))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, NameScorer({})))
    assert finals(trace) == ["r.0"] and depth_calls(policy) == [4]


# --- DVTS: independent subtrees -------------------------------------------------------------------------------


def test_dvts_subtrees_with_identical_first_steps_both_survive():
    # N=8, M=4: subtree 1's first steps (root samples 4-7) all repeat subtree 0's first step "r.0"
    policy = StepPolicy(lambda n: "dup" if n in ("r.4", "r.5", "r.6", "r.7") else
                        ("answer" if n.count(".") == 2 else None))
    scorer = NameScorer({"r.0": 0.9})
    [trace] = DVTS(budget=8, options=TreeOptions(m=4)).run(PROBLEMS[:1], ctx_for(policy, scorer))
    d1 = [n for n in trace.tree if n.depth == 1]
    # duplicates are pruned inside subtree 1 only: its first sample survives, its siblings are duplicates
    assert [(n.step.split(" ")[0], n.pruned) for n in d1[4:]] == [("r.0", None), ("r.0", "duplicate"),
                                                                  ("r.0", "duplicate"), ("r.0", "duplicate")]
    assert kept_names(trace, 1) == ["r.0", "r.0"]
    assert len(trace.candidates) == 2 and trace.meta["finished"] == 2  # N/M finals
    # both subtrees continue the same prefix, each with its own seed stream, in one call
    [second] = policy.calls[1:]
    assert second[0].prompt == second[1].prompt and second[0].seed != second[1].seed


def test_dvts_first_subtree_keeps_the_seeds_of_one_request():
    policy = StepPolicy(lambda n: "answer" if n.count(".") == 2 else None)
    ctx = ctx_for(policy, NameScorer({}))
    [trace] = DVTS(budget=8, options=TreeOptions(m=4)).run(PROBLEMS[:1], ctx)
    first = policy.calls[0]
    assert {r.seed for r in first} == {first[0].seed} and [r.first_index for r in first] == [0, 4]
    # subtree 0 below the root samples with the tree's own seed for the path (stream 0), as a beam would
    tree_seed = ctx.problem_seed(PROBLEMS[0])
    from testtime.search.tree import Tree

    t = Tree(PROBLEMS[0], "", tree_seed)
    assert t.child_seed(t.root) == t.child_seed(t.root, 0) != t.child_seed(t.root, 1)


# --- terminate_on ---------------------------------------------------------------------------------------------


def test_terminate_on_answer_ends_a_path_at_prose_with_a_garbage_answer():
    policy = StepPolicy(lambda n: {"r.0": "prose"}.get(n, "boxed" if n.count(".") == 2 else None))
    beam = BeamSearch(budget=2, options=BeamOptions(m=2, terminate_on="answer"))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, NameScorer({"r.0": 0.9})))
    prose = next(n for n in trace.tree if n.step.startswith("r.0 "))
    assert prose.terminal and prose.answer == "positive, so we take the positive root"
    assert "positive, so we take the positive root" in [c.answer for c in trace.candidates]


def test_terminate_on_boxed_continues_past_prose_and_ends_at_boxed():
    ends = {"r.0": "prose", "r.1": "answer"}
    policy = StepPolicy(lambda n: ends.get(n, "boxed" if n.count(".") == 2 else None))
    beam = BeamSearch(budget=4, options=BeamOptions(m=2, terminate_on="boxed"))
    [trace] = beam.run(PROBLEMS[:1], ctx_for(policy, NameScorer({"r.0": 0.9, "r.1": 0.8})))
    d1 = {n.step.split(" ")[0]: n for n in trace.tree if n.depth == 1}
    # neither the prose nor "The answer is 7." ends a path: both are expanded
    assert not d1["r.0"].terminal and not d1["r.1"].terminal
    assert [path_names(r.prompt)[-1] for r in policy.calls[1]] == ["r.0", "r.1"]
    assert all(n.terminal for n in trace.tree if n.depth == 2)  # each child writes \boxed{7}
    assert {c.answer for c in trace.candidates} == {"7"} and trace.answer == "7"


def test_has_boxed_and_option_validation():
    from testtime.search.tree import writes_boxed

    assert writes_boxed("so x = \\boxed{4}") and writes_boxed("so x = \\boxed{") and not writes_boxed("the answer is 4")
    with pytest.raises(ConfigError) as e:
        TreeOptions(terminate_on="eos")
    assert e.value.field == "terminate_on"
    with pytest.raises(ConfigError) as e:
        BeamOptions(beam_finish="openr")
    assert e.value.field == "beam_finish"
    with pytest.raises(ConfigError) as e:
        engine.RunConfig(strategy="beam", n=8, m=4, beam_finish="both")
    assert e.value.render(lambda f: f"--{f.replace('_', '-')}").startswith("--beam-finish both: unknown")
    with pytest.raises(ConfigError) as e:  # a template config (run --strategy optimal) checks them too
        engine.RunConfig(strategy="majority", n=1, terminate_on="eos")
    assert e.value.field == "terminate_on"


def test_new_options_enter_the_identity_only_when_set_and_only_for_their_strategies():
    base = engine.RunConfig(strategy="beam", n=8, m=4, prm="arith-check").identity("p")
    assert "beam_finish" not in base and "terminate_on" not in base  # defaults keep the old run ids
    authors = engine.RunConfig(strategy="beam", n=8, m=4, prm="arith-check", beam_finish="authors")
    assert authors.identity("p")["beam_finish"] == "authors"
    assert engine.run_id_for(authors.identity("p")) != engine.run_id_for(base)
    boxed = engine.RunConfig(strategy="dvts", n=8, m=4, prm="arith-check", terminate_on="boxed", beam_finish="authors")
    ident = boxed.identity("p")
    assert ident["terminate_on"] == "boxed" and "beam_finish" not in ident  # DVTS has no beam_finish
    assert "terminate_on" not in engine.RunConfig(strategy="best_of_n", n=8, terminate_on="boxed").identity("p")
    assert BeamSearch.label(BeamOptions(m=4)) == "beam(m=4)"
    assert BeamSearch.label(BeamOptions(m=4, beam_finish="authors")) == "beam(m=4,finish=authors)"


def test_a_changed_procedure_gets_a_new_run_id_and_unchanged_ones_keep_theirs():
    # DVTS's subtrees became independent (version 2): results stored by the old procedure must not replay
    dvts = engine.RunConfig(strategy="dvts", n=8, m=4, prm="arith-check").identity("p")
    assert dvts["strategy_version"] == 2
    beam = engine.RunConfig(strategy="beam", n=8, m=4, prm="arith-check").identity("p")
    assert "strategy_version" not in beam
