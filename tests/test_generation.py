"""CachedGenerator: replay stored samples, generate only missing index ranges, commit each chunk first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import testtime
from fakes import Call, ScriptedPolicy, SimulatedCrash, last_user_turn, solution_text
from testtime.policy.base import GenerationRequest, Policy, SamplingParams
from testtime.replay import CachedGenerator, missing_runs
from testtime.store import Store, generation_key

SRC = str(Path(testtime.__file__).resolve().parent.parent)
TESTS = str(Path(__file__).resolve().parent)

P = SamplingParams(max_tokens=64, temperature=0.7)


def texts(comps) -> list[str]:
    return [c.text for c in comps]


# --- the fake itself ----------------------------------------------------------------------------


def test_fake_is_a_policy_and_deterministic():
    a, b = ScriptedPolicy(), ScriptedPolicy()
    assert isinstance(a, Policy)
    whole = a.generate([GenerationRequest("prompt", 6, 3, P)])[0]
    tail = b.generate([GenerationRequest("prompt", 2, 3, P, first_index=4)])[0]
    assert texts(whole[4:]) == texts(tail)
    assert len(set(texts(whole))) == 6  # each sample is distinguishable
    assert whole[0].cached_prompt_tokens == 0 and whole[1].cached_prompt_tokens == whole[1].prompt_tokens
    assert all(c.generated_tokens == len(c.text.split()) for c in whole)


def test_fake_reports_chunks_like_the_backend():
    seen = []
    pol = ScriptedPolicy(chunk_size=3)
    out = pol.generate(
        [GenerationRequest("a", 7, 0, P), GenerationRequest("b", 2, 0, P, first_index=5)],
        on_chunk=lambda ri, first, comps: seen.append((ri, first, len(comps))),
    )
    assert seen == [(0, 0, 3), (0, 3, 3), (0, 6, 1), (1, 5, 2)]
    assert [len(x) for x in out] == [7, 2]


def test_fake_script_answers_by_question_in_last_user_turn():
    pol = ScriptedPolicy({"What is 2 + 2?": ["4", None]})
    prompt = pol.render_chat(
        [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "The answer is 2."},
         {"role": "user", "content": "What is 2 + 2?"}]
    )
    comps = pol.generate([GenerationRequest(prompt, 3, 0, P)])[0]
    assert comps[0].text == solution_text("4", " (sample 0)")
    assert "answer" not in comps[1].text
    assert comps[2].text == solution_text("4", " (sample 2)")
    # a few-shot turn that names the question does not count: only the last user turn does
    other = pol.render_chat([{"role": "user", "content": "What is 2 + 2?"}, {"role": "user", "content": "Else"}])
    assert last_user_turn(other) == "Else\n"
    by_last_turn = ScriptedPolicy({"What is 2 + 2?": ["4"], "Else": ["7"]})
    assert {by_last_turn.answer_for(other, 0, i) for i in range(3)} == {"7"}


# --- missing_runs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "indices, runs",
    [
        ([], []),
        ([0], [(0, 1)]),
        ([0, 1, 2, 3], [(0, 4)]),
        ([4, 5, 6, 7], [(4, 4)]),
        ([0, 2, 4], [(0, 1), (2, 1), (4, 1)]),
        ([1, 2, 5, 6, 7, 9], [(1, 2), (5, 3), (9, 1)]),
        ([3, 4, 5, 10, 11], [(3, 3), (10, 2)]),
    ],
)
def test_missing_runs_are_contiguous(indices, runs):
    assert missing_runs(indices) == runs
    # the runs cover exactly the indices
    assert [i for first, count in runs for i in range(first, first + count)] == indices


# --- CachedGenerator ----------------------------------------------------------------------------


def test_without_a_store_everything_goes_to_the_backend():
    pol = ScriptedPolicy()
    gen = CachedGenerator(pol, None)
    first = gen.generate([GenerationRequest("p", 3, 1, P)])
    second = gen.generate([GenerationRequest("p", 3, 1, P)])
    assert texts(first[0]) == texts(second[0])
    assert pol.n_generated == 6 and not any(c.from_store for c in second[0])


def test_first_call_generates_and_stores(tmp_path):
    pol = ScriptedPolicy()
    with Store(tmp_path) as store:
        out = CachedGenerator(pol, store).generate([GenerationRequest("p", 4, 11, P)])
        assert store.count_generations() == 4
        key2 = generation_key(pol.model_id, "p", P.to_dict(), 11, 2)
        assert store.get_generations([key2])[key2].text == out[0][2].text
    assert pol.calls == [[Call("p", 4, 11, 0, 0.7)]]
    assert not any(c.from_store for c in out[0])


def test_n4_then_n8_generates_only_indices_4_to_7(tmp_path):
    pol = ScriptedPolicy()
    reference = ScriptedPolicy().generate([GenerationRequest("p", 8, 5, P)])[0]
    with Store(tmp_path) as store:
        gen = CachedGenerator(pol, store)
        four = gen.generate([GenerationRequest("p", 4, 5, P)])[0]
        assert pol.indices_generated() == [0, 1, 2, 3]
        eight = gen.generate([GenerationRequest("p", 8, 5, P)])[0]
        assert store.count_generations() == 8
    assert pol.calls[1] == [Call("p", 4, 5, 4, 0.7)]  # one request, first_index=4, n=4
    assert pol.indices_generated() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert [c.from_store for c in eight] == [True] * 4 + [False] * 4
    assert texts(eight[:4]) == texts(four)
    assert texts(eight) == texts(reference)  # order and content as one uninterrupted call
    # token accounting survives the store
    assert [(c.prompt_tokens, c.cached_prompt_tokens, c.generated_tokens) for c in eight] == [
        (c.prompt_tokens, c.cached_prompt_tokens, c.generated_tokens) for c in reference
    ]


def test_fully_stored_request_does_not_call_the_backend(tmp_path):
    pol = ScriptedPolicy()
    with Store(tmp_path) as store:
        gen = CachedGenerator(pol, store)
        gen.generate([GenerationRequest("p", 5, 0, P)])
        again = gen.generate([GenerationRequest("p", 5, 0, P), GenerationRequest("p", 3, 0, P)])
    assert len(pol.calls) == 1 and pol.n_generated == 5
    assert all(c.from_store for comps in again for c in comps)
    assert texts(again[1]) == texts(again[0][:3])


def test_a_gap_in_the_middle_is_filled_by_its_own_request(tmp_path):
    pol = ScriptedPolicy()
    with Store(tmp_path) as store:
        gen = CachedGenerator(pol, store)
        gen.generate([GenerationRequest("p", 2, 0, P)])  # 0, 1
        gen.generate([GenerationRequest("p", 2, 0, P, first_index=5)])  # 5, 6
        out = gen.generate([GenerationRequest("p", 8, 0, P)])[0]
    assert pol.calls[2] == [Call("p", 3, 0, 2, 0.7), Call("p", 1, 0, 7, 0.7)]
    assert [c.from_store for c in out] == [True, True, False, False, False, True, True, False]
    assert texts(out) == texts(ScriptedPolicy().generate([GenerationRequest("p", 8, 0, P)])[0])


def test_params_seed_and_model_are_part_of_the_cache_identity(tmp_path):
    with Store(tmp_path) as store:
        pol = ScriptedPolicy()
        gen = CachedGenerator(pol, store)
        gen.generate([GenerationRequest("p", 2, 0, P)])
        gen.generate([GenerationRequest("p", 2, 1, P)])  # another seed
        gen.generate([GenerationRequest("p", 2, 0, SamplingParams(max_tokens=64, temperature=0.0))])
        gen.generate([GenerationRequest("q", 2, 0, P)])  # another prompt
        assert pol.n_generated == 8
        other = ScriptedPolicy(model_id="another-model")
        CachedGenerator(other, store).generate([GenerationRequest("p", 2, 0, P)])
        assert other.n_generated == 2
        assert store.count_generations() == 10


def test_many_requests_go_in_one_backend_call_in_request_order(tmp_path):
    pol = ScriptedPolicy(chunk_size=2)
    reqs = [GenerationRequest(f"prompt {i}", 3, 100 + i, P) for i in range(5)]
    with Store(tmp_path) as store:
        gen = CachedGenerator(pol, store)
        gen.generate(reqs[1:2])  # one request already stored
        out = gen.generate(reqs)
    assert len(pol.calls) == 2
    assert [c.prompt for c in pol.calls[1]] == ["prompt 0", "prompt 2", "prompt 3", "prompt 4"]
    expect = ScriptedPolicy().generate(reqs)
    assert [texts(x) for x in out] == [texts(x) for x in expect]
    assert [all(c.from_store for c in x) for x in out] == [False, True, False, False, False]


def test_crash_mid_call_keeps_finished_chunks_and_retry_generates_the_rest(tmp_path):
    reqs = [GenerationRequest("a", 6, 0, P), GenerationRequest("b", 4, 9, P)]
    crashing = ScriptedPolicy(chunk_size=2, crash_after=5)
    with Store(tmp_path) as store:
        with pytest.raises(SimulatedCrash):
            CachedGenerator(crashing, store).generate(reqs)
        # chunks (a,0-1) and (a,2-3) finished and were committed; sample a/4 was lost with its chunk
        assert crashing.n_generated == 5
        assert store.count_generations() == 4
        retry = ScriptedPolicy(chunk_size=2)
        out = CachedGenerator(retry, store).generate(reqs)
        assert store.count_generations() == 10
    assert retry.calls == [[Call("a", 2, 0, 4, 0.7), Call("b", 4, 9, 0, 0.7)]]
    assert retry.n_generated == 6
    assert [c.from_store for c in out[0]] == [True] * 4 + [False] * 2
    assert [texts(x) for x in out] == [texts(x) for x in ScriptedPolicy().generate(reqs)]


def test_sigkill_mid_call_keeps_committed_chunks(tmp_path):
    child = textwrap.dedent(
        """
        import sys
        from fakes import ScriptedPolicy
        from testtime.replay import CachedGenerator
        from testtime.policy.base import GenerationRequest, SamplingParams
        from testtime.store import Store
        store = Store(sys.argv[1])
        policy = ScriptedPolicy(chunk_size=3, crash_after=7, crash_with="sigkill")
        CachedGenerator(policy, store).generate(
            [GenerationRequest("p", 10, 4, SamplingParams(max_tokens=64, temperature=0.7))]
        )
        print("not reached", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, TESTS])}
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout
    pol = ScriptedPolicy(chunk_size=3)
    with Store(tmp_path) as store:
        assert store.count_generations() == 6  # two chunks of 3 committed; the third died at sample 7
        out = CachedGenerator(pol, store).generate([GenerationRequest("p", 10, 4, P)])[0]
    assert pol.calls == [[Call("p", 4, 4, 6, 0.7)]]
    assert [c.from_store for c in out] == [True] * 6 + [False] * 4
    assert texts(out) == texts(ScriptedPolicy().generate([GenerationRequest("p", 10, 4, P)])[0])
