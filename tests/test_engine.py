"""engine.run end to end with a scripted policy: metrics, per-level table, compute, replay, run ids."""

from __future__ import annotations

import dataclasses

import pytest

from fakes import ScriptedPolicy, words
from testtime import engine
from testtime.datasets import load_dataset
from testtime.policy.prompts import PromptConfig
from testtime.replay import CachedGenerator
from testtime.search.base import SearchContext, split_steps
from testtime.store import Store
from testtime.types import Scoring, Trace

N_PARAMS = 1_000_003

# arith, limit 6: levels 1, 2, 3, 4, 5, 1 with answers 9, 5, 84, 1107, 85, 14 (checked below).
SCRIPT_ANSWERS = [
    ["9", "9", "9", "9"],  # all right: chosen right, pass@1 1, pass@n 1
    ["5", "4", "4", "5"],  # 2-2 tie, "5" first: chosen right, pass@1 .5
    ["1", "2", "84", "1"],  # majority "1" wrong, one sample right: pass@1 .25, pass@n 1
    [None, None, "3", None],  # only one answer and it is wrong: chosen "3", pass@1 0, pass@n 0
    [None, None, None, None],  # no answers: chosen None
    ["14.0", "14", "$14$", "15"],  # forms of 14 share a group: chosen "14.0" right, pass@1 .75
]
EXPECT_CHOSEN = ["9", "5", "1", "3", None, "14.0"]
EXPECT_CORRECT = [True, True, False, False, False, True]
EXPECT_PASS1 = [1.0, 0.5, 0.25, 0.0, 0.0, 0.75]
EXPECT_ANY = [True, True, True, False, False, True]


@pytest.fixture(scope="module")
def problems():
    ps = load_dataset("arith", limit=6)
    assert [p.answer for p in ps] == ["9", "5", "84", "1107", "85", "14"]
    assert [p.level for p in ps] == [1, 2, 3, 4, 5, 1]
    return ps


def scripted(problems, **kw) -> ScriptedPolicy:
    return ScriptedPolicy({p.question: a for p, a in zip(problems, SCRIPT_ANSWERS, strict=True)},
                          n_params=N_PARAMS, **kw)


def config(tmp_path, **kw) -> engine.RunConfig:
    # strict: the fake's unmarked samples ("Step 2: I am not sure", tagged "(sample 12)") would give the fallback
    # policy a number to read; these tests are about the engine, test_extraction_corpus about the policies
    base = dict(dataset="arith", strategy="majority", n=4, limit=6, out=str(tmp_path / "runs"), max_tokens=64,
                extraction="strict")
    return engine.RunConfig(**{**base, **kw})


def prompt_words(problems, policy, fewshot=3) -> list[int]:
    ctx = SearchContext(CachedGenerator(policy, None), prompt=PromptConfig(fewshot=fewshot))
    return [words(ctx.prompt_for(p)) for p in problems]


def test_metrics_for_scripted_answers(tmp_path, problems):
    res = engine.run(config(tmp_path), scripted(problems))
    assert [r.trace.answer for r in res.results] == EXPECT_CHOSEN
    assert [r.trace.correct for r in res.results] == EXPECT_CORRECT
    assert [r.pass1 for r in res.results] == EXPECT_PASS1
    assert [any(r.sample_correct) for r in res.results] == EXPECT_ANY
    # candidates are graded one by one (None answers are wrong; "14.0"/"$14$" right for 14)
    assert res.results[5].sample_correct == [True, True, True, False]
    assert [c.correct for c in res.results[5].trace.candidates] == [True, True, True, False]
    assert res.results[3].sample_correct == [False, False, False, False]
    assert res.results[1].trace.meta["votes"] == [2, 2]
    assert res.results[4].trace.meta["votes"] == []
    s = res.summary()
    assert s["n_problems"] == 6 and s["n"] == 4 and s["strategy"] == "majority"
    assert s["accuracy"] == pytest.approx(3 / 6)
    assert s["pass@1"] == pytest.approx((1 + 0.5 + 0.25 + 0 + 0 + 0.75) / 6)
    assert s["pass@n"] == pytest.approx(4 / 6)


def test_per_level_table(tmp_path, problems):
    res = engine.run(config(tmp_path), scripted(problems))
    table = res.by_level()
    assert list(table) == [1, 2, 3, 4, 5]
    assert table[1]["n_problems"] == 2
    assert table[1]["accuracy"] == pytest.approx(1.0)
    assert table[1]["pass@1"] == pytest.approx((1.0 + 0.75) / 2)
    assert [table[lv]["accuracy"] for lv in (2, 3, 4, 5)] == [1.0, 0.0, 0.0, 0.0]
    assert [table[lv]["pass@1"] for lv in (2, 3, 4, 5)] == [0.5, 0.25, 0.0, 0.0]
    gen = [r.trace.compute.generated_tokens for r in res.results]
    assert table[1]["mean_generated_tokens"] == pytest.approx((gen[0] + gen[5]) / 2)
    assert table[3]["flops"] == pytest.approx(res.results[2].trace.compute.flops)
    assert sum(row["flops"] for row in table.values()) == pytest.approx(res.compute.flops)


def test_compute_totals(tmp_path, problems):
    policy = scripted(problems)
    res = engine.run(config(tmp_path), policy)
    n = 4
    pw = prompt_words(problems, policy)
    gen_per_problem = [sum(words(c.text) for c in r.trace.candidates) for r in res.results]
    # split_steps keeps the text, so the candidate texts are the completions' texts
    assert all(gen_per_problem)
    for r, p, g in zip(res.results, pw, gen_per_problem, strict=True):
        c = r.trace.compute
        assert c.generated_tokens == g == sum(cand.generated_tokens for cand in r.trace.candidates)
        assert c.prompt_tokens == n * p
        assert c.cached_prompt_tokens == (n - 1) * p  # siblings reuse the first sample's prompt KV
        assert c.policy_flops == pytest.approx(2 * N_PARAMS * (n * p - (n - 1) * p + g))
        assert c.prm_flops == 0.0
    s = res.summary()
    assert s["generated_tokens"] == sum(gen_per_problem)
    assert s["prompt_tokens"] == n * sum(pw)
    assert s["cached_prompt_tokens"] == (n - 1) * sum(pw)
    assert s["flops"] == pytest.approx(2 * N_PARAMS * (sum(pw) + sum(gen_per_problem)))
    assert s["mean_generated_tokens"] == pytest.approx(sum(gen_per_problem) / 6)
    assert s["new_generations"] == 24 and s["cached_generations"] == 0
    assert policy.n_generated == 24


def test_batches_across_problems_and_reports_progress(tmp_path, problems):
    policy = scripted(problems)
    progress = []
    engine.run(config(tmp_path, batch_sequences=8), policy, on_progress=lambda d, t: progress.append((d, t)))
    # 8 sequences per call / 4 samples per problem = 2 problems per backend call
    assert [len(call) for call in policy.calls] == [2, 2, 2]
    assert [c.n for call in policy.calls for c in call] == [4] * 6
    assert progress == [(0, 6), (2, 6), (4, 6), (6, 6)]


def test_rerun_replays_from_the_store(tmp_path, problems):
    first_policy = scripted(problems)
    first = engine.run(config(tmp_path), first_policy)
    second_policy = scripted(problems)
    second = engine.run(config(tmp_path), second_policy)
    assert second.run_id == first.run_id
    assert second_policy.n_generated == 0 and second_policy.calls == []
    s1, s2 = first.summary(), second.summary()
    assert s1["new_generations"] == 24
    assert s2["new_generations"] == 0 and s2["cached_generations"] == s1["new_generations"]
    for key in ("accuracy", "pass@1", "pass@n", "generated_tokens", "prompt_tokens", "cached_prompt_tokens",
                "flops", "n_problems"):
        assert s2[key] == s1[key], key
    for a, b in zip(first.results, second.results, strict=True):
        assert a.trace.answer == b.trace.answer and a.trace.correct == b.trace.correct
        assert [c.text for c in a.trace.candidates] == [c.text for c in b.trace.candidates]
        assert a.sample_correct == b.sample_correct
    with Store(tmp_path / "runs") as store:
        runs = store.list_runs()
        assert [r["run_id"] for r in runs] == [first.run_id]
        assert runs[0]["status"] == "done"
        assert runs[0]["summary"]["cached_generations"] == 24
        stored = store.get_results(first.run_id)
        assert store.count_generations() == 24
    assert [t["answer"] for t in stored] == EXPECT_CHOSEN
    assert [t["correct"] for t in stored] == EXPECT_CORRECT


def test_larger_n_reuses_the_smaller_runs_samples(tmp_path, problems):
    engine.run(config(tmp_path, n=4), scripted(problems))
    policy = scripted(problems)
    res = engine.run(config(tmp_path, n=6), policy)
    assert res.summary()["new_generations"] == 12 and res.summary()["cached_generations"] == 24
    assert sorted(set(policy.indices_generated())) == [4, 5]
    assert all(c.first_index == 4 and c.n == 2 for call in policy.calls for c in call)


def test_cot_is_greedy_and_budget_one(tmp_path, problems):
    policy = scripted(problems)
    res = engine.run(config(tmp_path, strategy="cot", n=8), policy)
    assert all(c.n == 1 and c.temperature == 0.0 for call in policy.calls for c in call)
    assert [r.trace.answer for r in res.results] == [a[0] for a in SCRIPT_ANSWERS]
    s = res.summary()
    assert s["n"] == 1
    # first samples: 9 (right), 5 (right), 1, None, None, 14.0 (right)
    assert [r.trace.correct for r in res.results] == [True, True, False, False, False, True]
    assert s["accuracy"] == pytest.approx(3 / 6)
    assert s["pass@1"] == s["accuracy"] == s["pass@n"]


def test_run_id_depends_on_what_decides_results(tmp_path, problems):
    cfg = config(tmp_path)
    rid = engine.run_id_for(cfg.identity("model-a"))
    assert rid.startswith("arith-majority-n4-")
    for change in ({"n": 5}, {"seed": 1}, {"temperature": 0.8}, {"max_tokens": 65}, {"fewshot": 2},
                   {"limit": 5}, {"levels": [1]}, {"dataset": "arith:6"}, {"strategy": "cot"}):
        assert engine.run_id_for(dataclasses.replace(cfg, **change).identity("model-a")) != rid, change
    assert engine.run_id_for(cfg.identity("model-b")) != rid
    for change in ({"out": "elsewhere"}, {"model": "/path/x.gguf"}, {"batch_sequences": 3}):
        assert engine.run_id_for(dataclasses.replace(cfg, **change).identity("model-a")) == rid, change
    # cot ignores n
    cot = dataclasses.replace(cfg, strategy="cot")
    assert engine.run_id_for(cot.identity("m")) == engine.run_id_for(dataclasses.replace(cot, n=32).identity("m"))


def test_run_ids_of_real_runs(tmp_path, problems):
    a = engine.run(config(tmp_path, out=str(tmp_path / "a")), scripted(problems))
    b = engine.run(config(tmp_path, out=str(tmp_path / "b")), scripted(problems))
    c = engine.run(config(tmp_path, out=str(tmp_path / "a"), seed=3), scripted(problems))
    d = engine.run(config(tmp_path, out=str(tmp_path / "a"), temperature=0.2), scripted(problems))
    assert a.run_id == b.run_id
    assert len({a.run_id, c.run_id, d.run_id}) == 3
    assert a.store_path.startswith(str(tmp_path / "a")) and b.store_path.startswith(str(tmp_path / "b"))


def test_seed_changes_problem_seeds_not_the_answers_script(tmp_path, problems):
    p0 = scripted(problems)
    engine.run(config(tmp_path), p0)
    p1 = scripted(problems)
    engine.run(config(tmp_path, seed=1), p1)
    assert p1.n_generated == 24  # another seed: nothing replayed
    seeds0 = [c.seed for call in p0.calls for c in call]
    seeds1 = [c.seed for call in p1.calls for c in call]
    assert len(set(seeds0)) == 6 and not set(seeds0) & set(seeds1)


def test_explicit_problems_override_the_dataset(tmp_path, problems):
    policy = scripted(problems)
    res = engine.run(config(tmp_path, dataset="math500"), policy, problems=problems[:2])
    assert [r.problem.id for r in res.results] == [p.id for p in problems[:2]]
    assert res.run_id.startswith("math500-majority-n4-")


# --- split_steps ------------------------------------------------------------------------------

CONCAT_OK = [
    "Step 1: a.\n\nStep 2: b.\n\nThe answer is 3.",
    "Step 1: a.\n\nThe answer is 3.\n\n",
    "one step only",
    "line one\nline two\n\nnext",
    "",
]
CONCAT_WHITESPACE = [
    "\n\nStep 1: a.",  # starts with a blank line
    "Step 1: a.\n\n\n\nStep 2: b.",  # an empty step between two steps
    "Step 1: a.\n\n  \n\nThe answer is 3.",  # a whitespace-only step
    "Step 1: a.\n\n\n",  # text ending in three newlines
]


@pytest.mark.parametrize("text", CONCAT_OK)
def test_split_steps_concatenates_to_the_text(text):
    steps = split_steps(text)
    assert "".join(steps) == text
    assert all(s.strip() for s in steps)


def test_split_steps_boundaries():
    assert split_steps("A\n\nB\n\nC") == ["A\n\n", "B\n\n", "C"]
    assert split_steps("A\n\nB\n\n") == ["A\n\n", "B\n\n"]
    assert split_steps("") == []


@pytest.mark.parametrize("text", CONCAT_WHITESPACE)
def test_split_steps_concatenates_with_blank_pieces(text):
    assert "".join(split_steps(text)) == text


def test_candidate_text_is_the_completion_text(tmp_path, problems):
    policy = scripted(problems)
    res = engine.run(config(tmp_path), policy)
    for r, p in zip(res.results, problems, strict=True):
        seed = [c.seed for call in policy.calls for c in call if p.question in c.prompt][0]
        prompt = [c.prompt for call in policy.calls for c in call if p.question in c.prompt][0]
        assert [c.text for c in r.trace.candidates] == [policy.text_for(prompt, seed, i) for i in range(4)]


# --- failures in the summary, stored traces back into objects ------------------------------------


def test_summary_always_reports_failures(tmp_path, problems):
    s = engine.run(config(tmp_path), scripted(problems)).summary()
    assert s["failed"] == 0 and s["failures"] == {}


def test_failed_trace_is_wrong_and_graded_as_nothing(problems):
    strategy = engine.RunConfig(strategy="majority", n=4).make_strategy()
    trace = engine.failed_trace(problems[0], strategy, RuntimeError("boom\nsecond line"))
    r = engine.grade_trace(problems[0], trace)
    assert r.failed and r.error == "RuntimeError: boom second line" and r.sample_correct == [] and r.pass1 == 0.0
    assert trace.correct is False and trace.candidates == [] and (trace.strategy, trace.budget) == ("majority", 4)


def test_stored_traces_come_back_as_objects(tmp_path, problems):
    res = engine.run(config(tmp_path), scripted(problems))
    with Store(tmp_path / "runs") as store:
        records = store.get_results(res.run_id)
    for r, rec in zip(res.results, records, strict=True):
        back = Trace.from_record(rec)
        assert back.candidates == r.trace.candidates and back.answer == r.trace.answer
        assert back.correct == r.trace.correct and back.meta == r.trace.meta
        assert back.answer_groups == r.trace.answer_groups and back.selections == r.trace.selections
        # as a rerun would see it: every generation replayed, the same tokens and FLOPs
        c, orig = back.compute, r.trace.compute
        assert c.new_generations == 0 and c.cached_generations == orig.new_generations + orig.cached_generations
        assert (c.generated_tokens, c.prompt_tokens, c.flops) == (orig.generated_tokens, orig.prompt_tokens,
                                                                  orig.flops)


def test_records_written_before_the_fields_were_typed_still_load():
    # a result stored when answer groups, rewards, selections and failures were keys of meta
    old = {
        "problem_id": "p", "strategy": "best_of_n", "budget": 2, "answer": "5", "correct": True,
        "candidates": [{"steps": ["5"], "answer": "5", "finish_reason": "eos", "generated_tokens": 3,
                        "correct": True}] * 2,
        "compute": {"prompt_tokens": 10, "cached_prompt_tokens": 0, "generated_tokens": 6, "prm_tokens": 4,
                    "policy_flops": 1.0, "prm_flops": 2.0, "new_generations": 2, "cached_generations": 0,
                    "flops": 3.0},
        "meta": {"scorer": "arith-check", "oracle": False, "rewards": [[0.5], [0.5]], "selection": "prm_last_max",
                 "selections": {"majority": "5"}, "selections_correct": {"majority": True},
                 "answer_groups": [0, 0], "rewards_from_store": 1, "votes": [2]},
    }
    t = Trace.from_record(old)
    assert t.answer_groups == [0, 0] and t.selections == {"majority": "5"}
    assert t.selections_correct == {"majority": True}
    assert t.scoring == Scoring("arith-check", False, [[0.5], [0.5]], "prm_last_max", 1)
    assert t.meta == {"votes": [2]} and not t.failed
    assert t.compute.cached_generations == 2 and t.compute.new_generations == 0
    failed = Trace.from_record({**old, "candidates": [], "meta": {"failed": True, "error": "X: down"}})
    assert failed.failed and failed.error == "X: down" and failed.meta == {}


def test_prompt_options_enter_identity_only_when_set():
    base = engine.RunConfig(dataset="arith", strategy="majority", n=4)
    same = engine.RunConfig(dataset="arith", strategy="majority", n=4, system=None, instruction=None)
    assert base.identity("m") == same.identity("m") and "system" not in base.identity("m")
    sys_cfg = engine.RunConfig(dataset="arith", strategy="majority", n=4, system="Be brief.")
    assert engine.run_id_for(sys_cfg.identity("m")) != engine.run_id_for(base.identity("m"))
    p = engine.RunConfig(system="Be brief.", instruction="").prompt_config()
    assert p.system == "Be brief." and p.instruction == ""
    assert engine.RunConfig().prompt_config().instruction.startswith("Solve the problem step by step")


def test_empty_instruction_gives_the_question_alone():
    from testtime.policy.prompts import PromptConfig, build_messages
    from testtime.types import Problem

    msgs = build_messages(Problem("p", "What is 1+1?", "2"), [], PromptConfig(fewshot=0, system="S", instruction=""))
    assert msgs == [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 1+1?"}]


# --- a user's few-shot file -----------------------------------------------------------------------

SHOTS = [
    {"question": "Shot one: add 40 and 2.", "solution": "Step 1: 40 + 2 = 42.\n\nThe answer is 42.", "level": 2},
    {"question": "Shot two: add 30 and 3.", "solution": "Step 1: 30 + 3 = 33.\n\nThe answer is 33."},
    {"question": "Shot three: add 20 and 4.", "solution": "Step 1: 20 + 4 = 24.\n\nThe answer is 24."},
]


def write_shots(path, rows=SHOTS) -> str:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("strategy", ["majority", "cot"])
def test_fewshot_file_examples_are_in_every_prompt(tmp_path, problems, strategy):
    from testtime.datasets import fewshot_for

    shots = write_shots(tmp_path / "shots.jsonl")
    policy = scripted(problems)
    res = engine.run(config(tmp_path, strategy=strategy, fewshot=2, fewshot_file=shots), policy)
    assert len(res.results) == len(problems)
    prompts = {c.prompt for call in policy.calls for c in call}
    assert len(prompts) == len(problems)
    builtin = {q for p in problems for q, _ in fewshot_for(p, 3)}
    for prompt in prompts:
        assert prompt.count("<|user|>") == 3  # k=2 examples, then the question
        assert "40 + 2 = 42.\n\nThe answer is 42." in prompt
        assert not any(q in prompt for q in builtin)
    # level 2 problems get the level-2 example first; the others the file's first two
    by_level = {p.level: p for p in problems}
    ctx = SearchContext(CachedGenerator(policy, None), prompt=config(tmp_path, fewshot=2, fewshot_file=shots)
                        .prompt_config())
    assert "Shot three" not in ctx.prompt_for(by_level[2]) and "Shot three" not in ctx.prompt_for(by_level[1])
    one = SearchContext(CachedGenerator(policy, None), prompt=config(tmp_path, fewshot=1, fewshot_file=shots)
                        .prompt_config())
    assert "Shot one" in one.prompt_for(by_level[2]) and "Shot two" not in one.prompt_for(by_level[2])


def test_fewshot_file_identity_is_its_content(tmp_path):
    shots = tmp_path / "shots.jsonl"
    base = engine.RunConfig(dataset="arith", strategy="majority", n=4)
    assert "fewshot_file" not in base.identity("m") and "fewshot_examples" not in base.identity("m")
    assert base.identity("m") == engine.RunConfig(dataset="arith", strategy="majority", n=4,
                                                  fewshot_file=None).identity("m")
    write_shots(shots)
    with_file = engine.RunConfig(dataset="arith", strategy="majority", n=4, fewshot_file=str(shots))
    rid = engine.run_id_for(with_file.identity("m"))
    assert rid != engine.run_id_for(base.identity("m"))
    assert str(shots) not in json_dump(with_file.identity("m"))  # the content decides, not the path
    moved = tmp_path / "elsewhere.jsonl"
    write_shots(moved)
    assert engine.run_id_for(dataclasses.replace(with_file, fewshot_file=str(moved)).identity("m")) == rid
    write_shots(shots, [SHOTS[1], SHOTS[0], SHOTS[2]])  # same path, other content
    assert engine.run_id_for(dataclasses.replace(with_file).identity("m")) != rid
    # zero-shot never reads the examples: the file does not change what runs
    zero = dataclasses.replace(with_file, fewshot=0)
    assert zero.identity("m") == dataclasses.replace(base, fewshot=0).identity("m")


def json_dump(d) -> str:
    import json

    return json.dumps(d, sort_keys=True)


def test_fewshot_file_errors_name_the_field(tmp_path):
    from testtime.errors import ConfigError

    bad = tmp_path / "shots.jsonl"
    bad.write_text('{"question": "q", "solution": "The answer is 1."}\n{"question": "r"}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        engine.RunConfig(fewshot_file=str(bad))
    assert e.value.field == "fewshot_file"
    assert str(e.value) == f"fewshot_file: {bad}:2: field 'solution': missing"


def test_by_level_of_a_jsonl_with_levels(tmp_path):
    import json

    path = tmp_path / "mine.jsonl"
    rows = [{"question": f"Mine {i}: what is {i} + {i}?", "answer": 2 * i, "level": [1, 2, "hard"][i % 3]}
            for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    policy = ScriptedPolicy({r["question"]: [str(r["answer"])] for r in rows})
    res = engine.run(engine.RunConfig(dataset=str(path), strategy="cot", n=1, out=str(tmp_path / "runs")), policy)
    table = res.by_level()
    assert list(table) == [1, 2, "hard"]
    assert all(row["n_problems"] == 2 and row["accuracy"] == 1.0 for row in table.values())
