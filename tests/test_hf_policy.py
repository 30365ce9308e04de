"""The transformers policy backend on tiny random Qwen2 / Llama models built in the test (CPU, seconds).

References are computed here with the raw model, step by step and without a KV cache: greedy decoding
is the argmax of the full forward, and sampling frequencies are compared with softmax(logits / T).
"""

from __future__ import annotations

import math
import sys
from collections import Counter

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from testtime.policy import Policy, load_policy  # noqa: E402
from testtime.policy.base import GenerationRequest, SamplingParams  # noqa: E402
from testtime.policy.hf import HFPolicy, MissingExtraError, _share_groups, sample_uniforms  # noqa: E402
from testtime.replay import CachedGenerator  # noqa: E402
from testtime.store import Store  # noqa: E402
from testtime.testing.synthetic import build_tokenizer  # noqa: E402

PROMPTS = [
    "What is 2 + 3? Let us think step by step.",
    "Hi",
    "Compute 12 * 7 and explain each step of the computation carefully.",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: threads only add spin-waiting on a busy box (7 s vs 0.02 s for 24 steps)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_lm(family: str = "generic", seed: int = 0):
    """A random 2-layer model over the family's synthetic tokenizer. Weights have std 1 (not 0.02),
    so next-token distributions are peaked: greedy paths have clear margins, samples still vary."""
    tok = build_tokenizer(family)
    cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if family == "generic" else (LlamaConfig, LlamaForCausalLM)
    config = cls(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 1.0)
    return model, tok


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


@pytest.fixture(scope="module")
def checkpoint(lm, tmp_path_factory):
    model, tok = lm
    root = tmp_path_factory.mktemp("policy") / "tiny-qwen"
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def policy(checkpoint):
    pol = HFPolicy(str(checkpoint), device="cpu")
    yield pol
    pol.close()


def variant(lm, **kwargs) -> HFPolicy:
    """Another policy over the same weights (other batch bounds, other EOS)."""
    model, tok = lm
    return HFPolicy(model, tokenizer=tok, device="cpu", **kwargs)


def prompt_ids(policy: HFPolicy, prompt: str) -> list[int]:
    return policy.tokenizer(prompt)["input_ids"]


@torch.no_grad()
def greedy_reference(model, ids: list[int], steps: int, eos: set[int]) -> tuple[list[int], bool]:
    """Argmax of a full forward (no cache) per step; stops after an EOS id. -> (ids, ended at EOS)."""
    seq, out = list(ids), []
    for _ in range(steps):
        token = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        out.append(token)
        seq.append(token)
        if token in eos:
            return out, True
    return out, False


@torch.no_grad()
def next_token_probs(model, ids: list[int], temperature: float):
    return torch.softmax(model(torch.tensor([ids])).logits[0, -1].double() / temperature, -1)


def summary(comps) -> list[tuple]:
    return [(c.text, c.finish_reason, c.prompt_tokens, c.generated_tokens, c.stop) for c in comps]


# --- loading and prompts -------------------------------------------------------------------------------


def test_loads_a_checkpoint_folder(policy, checkpoint, lm):
    model, tok = lm
    assert isinstance(policy, Policy)
    assert policy.model_id.startswith("hf:tiny-qwen[float32]@") and len(policy.model_id.split("@")[1]) == 10
    assert policy.n_params == sum(p.numel() for p in model.parameters())
    assert policy.device.type == "cpu" and policy.dtype == torch.float32
    for a, b in zip(policy.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert policy.eos_ids == {tok.eos_token_id}
    assert policy.has_chat_template
    messages = [{"role": "user", "content": "What is 1 + 1?"}]
    assert policy.render_chat(messages) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    via_dispatch = load_policy(str(checkpoint), backend="hf", device="cpu", dtype="float32")
    assert isinstance(via_dispatch, HFPolicy) and via_dispatch.model_id == policy.model_id
    half = HFPolicy(str(checkpoint), device="cpu", dtype="bf16")
    assert half.dtype == torch.bfloat16 and "[bfloat16]" in half.model_id and half.model_id != policy.model_id


def test_bos_is_added_once():
    model, tok = tiny_lm("rlhflow")  # Llama-3.1 style: the tokenizer adds <|begin_of_text|>
    pol = HFPolicy(model, tokenizer=tok, device="cpu", name="tiny-llama")
    assert pol.model_id == "tiny-llama"
    bos = tok.bos_token_id
    plain = pol.token_ids("What is 1 + 1?")
    chat = pol.token_ids(pol.render_chat([{"role": "user", "content": "What is 1 + 1?"}]))
    assert plain[0] == bos and plain.count(bos) == 1
    assert chat[0] == bos and chat.count(bos) == 1  # the template wrote it; no second one
    out = pol.generate([GenerationRequest("What is 1 + 1?", 1, 0, SamplingParams(max_tokens=4, temperature=0))])
    assert out[0][0].prompt_tokens == len(plain)
    ms_model, ms_tok = tiny_lm("math-shepherd")
    no_template = HFPolicy(ms_model, tokenizer=ms_tok, device="cpu")
    assert not no_template.has_chat_template
    assert no_template.render_chat([{"role": "user", "content": "Q"}]) == "Question: Q\nAnswer:\n"


def test_text_is_the_continuation_in_context():
    """SentencePiece-style tokenizers drop the leading space of a text's first token; the sample's
    text is what its tokens add after the prompt, so prompt + text reads as the model wrote it."""
    model, tok = tiny_lm("math-shepherd", seed=3)
    pol = HFPolicy(model, tokenizer=tok, device="cpu")
    prompts = ["The sum is", "Then we add", "We get 12", "So x =", "First, note", "Next", "Hence", "Thus we"]
    reqs = [GenerationRequest(p, 1, 0, SamplingParams(max_tokens=8, temperature=0.0)) for p in prompts]
    out = pol.generate(reqs)
    spaced = 0
    for p, (c,) in zip(prompts, out, strict=True):
        ids = pol.token_ids(p)
        ref, _ = greedy_reference(model, ids, 8, set(pol.eos_ids))
        before = tok.decode(ids, skip_special_tokens=True)
        expected = tok.decode(ids + ref, skip_special_tokens=True)[len(before) :]
        assert c.text == expected
        spaced += tok.convert_ids_to_tokens(ref[0]).startswith("\u2581") and expected.startswith(" ")
        if len(expected.strip()) > 3:  # the stop path detokenises incrementally, in the same context
            stop = expected.strip()[2:4]
            (d,) = pol.generate([GenerationRequest(p, 1, 0, SamplingParams(8, 0.0, stop=(stop,)))])[0]
            assert d.finish_reason == "stop" and d.text == expected[: expected.find(stop)]
    assert spaced >= 1  # some sample starts with a word-initial token: the case this is about


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'testtime\[hf\]'"):
        HFPolicy("/nonexistent")


# --- decoding --------------------------------------------------------------------------------------


def test_greedy_equals_stepwise_argmax_with_exact_counts(policy, lm):
    model, tok = lm
    eos = set(policy.eos_ids)
    budgets = [9, 3, 14]
    reqs = [
        GenerationRequest(p, 1, 0, SamplingParams(max_tokens=m, temperature=0.0))
        for p, m in zip(PROMPTS, budgets, strict=True)
    ]
    out = policy.generate(reqs)
    for req, comps in zip(reqs, out, strict=True):
        ids = prompt_ids(policy, req.prompt)
        ref, ended = greedy_reference(model, ids, req.params.max_tokens, eos)
        (c,) = comps
        assert c.prompt_tokens == len(ids) and c.cached_prompt_tokens == 0
        assert c.generated_tokens == len(ref)
        assert c.finish_reason == ("eos" if ended else "length")
        assert c.text == tok.decode(ref[:-1] if ended else ref, skip_special_tokens=True)
        assert c.stop is None and not c.from_store
    assert [c.generated_tokens for (c,) in out] == budgets  # no EOS on these paths: "length" at exactly max_tokens


def test_left_padding_and_batch_composition_change_nothing(lm):
    """The same samples whether a prompt is decoded alone, left-padded among longer and shorter
    prompts, split over many small batches, or next to rows that finish early (batch compaction)."""
    sampled = SamplingParams(max_tokens=10, temperature=1.0)
    greedy = SamplingParams(max_tokens=10, temperature=0.0)
    reqs = [
        GenerationRequest(PROMPTS[0], 3, 11, sampled),
        GenerationRequest(PROMPTS[1], 2, 5, greedy),
        GenerationRequest(PROMPTS[2], 3, 0, SamplingParams(max_tokens=10, temperature=0.7, top_k=5, top_p=0.9)),
        GenerationRequest(PROMPTS[1], 4, 2, SamplingParams(max_tokens=2, temperature=1.0)),  # finishes early
    ]
    pol = variant(lm)
    together = pol.generate(reqs)
    assert pol.calls == 1  # one decode loop for everything
    alone = [pol.generate([r])[0] for r in reqs]
    small = variant(lm, max_batch_rows=2)
    split = small.generate(reqs)
    assert small.calls == 6
    tight = variant(lm, max_batch_tokens=60)  # the token bound also splits
    by_tokens = tight.generate(reqs)
    assert tight.calls > 1
    for a, b, c, d in zip(together, alone, split, by_tokens, strict=True):
        assert summary(a) == summary(b) == summary(c) == summary(d)
    assert len({c.text for c in together[0]}) == 3  # seeds differ -> samples differ
    assert [c.generated_tokens for c in together[3]] == [2] * 4


SHARED = "Solve the problem step by step, one step per paragraph, and finish with the answer. Problem: "


def _lcp(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_a_shared_prefix_is_prefilled_once_and_changes_nothing(lm):
    """Distinct prompts with a long common prefix (few-shot turns) prefill it once, then their suffixes:
    the samples are those of each prompt decoded alone, and the prefix counts as cached for all but one."""
    prompts = [SHARED + q for q in ("What is 2 + 3?", "Compute 12 * 7.", "What is 2")]  # the last: a prefix
    sampled = SamplingParams(max_tokens=8, temperature=1.0)
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    reqs = [
        GenerationRequest(prompts[0], 2, 3, sampled),
        GenerationRequest(prompts[1], 1, 0, greedy),
        GenerationRequest(prompts[2], 2, 9, sampled),
        GenerationRequest(PROMPTS[1], 1, 0, greedy),  # shares nothing: prefilled on its own
    ]
    pol = variant(lm)
    together = pol.generate(reqs)
    assert pol.calls == 1
    alone = [pol.generate([r])[0] for r in reqs]  # one distinct prompt per call: nothing shared
    for a, b in zip(together, alone, strict=True):
        assert summary(a) == summary(b)
    ids = [prompt_ids(pol, p) for p in prompts]
    shared = min(_lcp(ids[0], ids[1]), _lcp(ids[1], ids[2]), _lcp(ids[0], ids[2]), len(ids[2]) - 1)
    assert shared >= 16
    assert sorted(together[k][0].cached_prompt_tokens for k in range(3)) == [0, shared, shared]
    assert together[0][1].cached_prompt_tokens == len(ids[0])  # a sibling reuses the whole prompt
    assert together[3][0].cached_prompt_tokens == 0
    assert [c.prompt_tokens for c in together[2]] == [len(ids[2])] * 2


def test_share_groups_keep_one_token_of_each_prompt_to_prefill():
    a = list(range(40))
    assert _share_groups([a + [1], a + [2], [7, 8], a], min_shared=16) == [(39, [3, 0, 1])]
    assert _share_groups([a[:10] + [1], a[:10] + [2]], min_shared=16) == []  # too short to be worth it
    # a member that shares little would shrink the group's savings: it stays out
    assert _share_groups([a + [1], a + [2], a[:19] + [50]], min_shared=16) == [(40, [0, 1])]


def test_sample_i_is_drawn_with_seed_plus_i(policy):
    p = SamplingParams(max_tokens=8, temperature=1.0)
    whole = policy.generate([GenerationRequest(PROMPTS[0], 6, 3, p)])[0]
    tail = policy.generate([GenerationRequest(PROMPTS[0], 2, 3, p, first_index=4)])[0]
    single = policy.generate([GenerationRequest(PROMPTS[0], 1, 7, p)])[0]  # seed 7 = 3 + 4
    assert summary(tail) == summary(whole[4:])
    assert summary(single) == summary(whole[4:5])
    assert len({c.text for c in whole}) >= 5
    other_seed = policy.generate([GenerationRequest(PROMPTS[0], 6, 100, p)])[0]
    assert [c.text for c in other_seed] != [c.text for c in whole]


def test_uniform_stream_depends_on_seed_and_step_only():
    u = sample_uniforms([5, 6, 7], 50)
    assert u.shape == (50, 3) and u.dtype.name == "float32"
    assert (u >= 0).all() and (u < 1).all()
    assert (sample_uniforms([7], 50)[:, 0] == u[:, 2]).all()  # no dependence on the other rows
    assert (sample_uniforms([6, 5], 20)[:, 1] == u[:20, 0]).all()  # nor on the step count
    big = sample_uniforms(range(200), 100)
    assert abs(float(big.mean()) - 0.5) < 0.01 and len({float(x) for x in big.ravel()}) > 19_000
    assert (sample_uniforms([-1], 3) == sample_uniforms([2**64 - 1], 3)).all()


def by_text(tok, probs, tokens) -> dict[str, float]:
    """Probability of each first-token text (several byte tokens decode to the same U+FFFD)."""
    out: dict[str, float] = {}
    for t in tokens:
        text = tok.decode([t], skip_special_tokens=True)
        out[text] = out.get(text, 0.0) + float(probs[t])
    return out


def assert_frequencies(counts: Counter, expected: dict[str, float], n: int) -> None:
    """Every text with probability > 2% at its frequency, within 4.5 sigma; nothing unexpected."""
    assert set(counts) <= set(expected)
    for text, p in expected.items():
        if p > 0.02:
            assert abs(counts[text] / n - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-3, (text, counts[text] / n, p)


def test_sampling_follows_the_tempered_distribution(lm):
    model, tok = lm
    pol = variant(lm, max_batch_rows=4096)
    prompt, n = PROMPTS[0], 3000
    probs = next_token_probs(model, prompt_ids(pol, prompt), 0.7)
    out = pol.generate([GenerationRequest(prompt, n, 0, SamplingParams(max_tokens=1, temperature=0.7))])[0]
    expected = by_text(tok, probs, range(len(probs)))
    assert sorted(expected.values())[-2] > 0.05  # not one dominant token: the check has power
    assert_frequencies(Counter(c.text for c in out), expected, n)
    # the same frequencies at temperature 1 would be far off: temperature is applied
    flat = by_text(tok, next_token_probs(model, prompt_ids(pol, prompt), 1.0), range(len(probs)))
    top = max(expected, key=expected.get)
    assert abs(flat[top] - expected[top]) > 0.08


def test_top_k_and_top_p_restrict_the_candidates(lm):
    model, tok = lm
    pol = variant(lm, max_batch_rows=4096)
    prompt, n = PROMPTS[0], 1500
    probs = next_token_probs(model, prompt_ids(pol, prompt), 1.0)
    ranked = torch.argsort(probs, descending=True).tolist()

    def first_tokens(**kw) -> Counter:
        out = pol.generate([GenerationRequest(prompt, n, 1, SamplingParams(max_tokens=1, temperature=1.0, **kw))])
        return Counter(c.text for c in out[0])

    def kept(k: int) -> dict[str, float]:
        p = probs[ranked[:k]] / probs[ranked[:k]].sum()
        return by_text(tok, dict(zip(ranked[:k], p.tolist(), strict=True)), ranked[:k])

    top4 = first_tokens(top_k=4)
    assert set(top4) == set(kept(4))
    assert_frequencies(top4, kept(4), n)
    cum = probs[ranked].cumsum(0)
    assert float(probs[ranked[2]]) > 0.01
    nucleus = first_tokens(top_p=float(cum[2]) - 0.005)  # the smallest set with that mass: the top 3
    assert set(nucleus) == set(kept(3))
    assert_frequencies(nucleus, kept(3), n)
    assert set(first_tokens(top_k=1)) == set(kept(1))  # top_k=1 is greedy
    both = first_tokens(top_k=2, top_p=0.99)  # the tighter of the two wins
    assert set(both) == set(kept(2))


def test_stop_strings_cut_the_text_and_finish_stop(policy, lm):
    model, tok = lm
    ids = prompt_ids(policy, PROMPTS[0])
    ref, _ = greedy_reference(model, ids, 24, set(policy.eos_ids))
    full = tok.decode(ref, skip_special_tokens=True)
    clean = (i for i in range(4, len(full) - 2) if "\ufffd" not in full[i : i + 2])
    pos = next(i for i in clean if full.find(full[i : i + 2]) == i)  # a first occurrence, mid-text
    stop = full[pos : pos + 2]
    later = full[pos + 1 : pos + 4]  # matches after `stop` does: the earliest match wins
    params = SamplingParams(max_tokens=24, temperature=0.0, stop=(later, stop))
    (c,) = policy.generate([GenerationRequest(PROMPTS[0], 1, 0, params)])[0]
    assert c.finish_reason == "stop" and c.stop == stop
    assert c.text == full[:pos]
    needed = next(k for k in range(1, len(ref) + 1) if stop in tok.decode(ref[:k], skip_special_tokens=True))
    assert c.generated_tokens == needed  # the token that completed the stop string is the last one
    # a stop string that never appears: the text is whole
    (d,) = policy.generate([GenerationRequest(PROMPTS[0], 1, 0, SamplingParams(24, 0.0, stop=("@@@@",)))])[0]
    assert (d.text, d.finish_reason, d.generated_tokens, d.stop) == (full, "length", 24, None)


def test_eos_finishes_eos_and_is_counted_not_printed(lm):
    model, tok = lm
    pol = variant(lm)
    ids = prompt_ids(pol, PROMPTS[2])
    ref, _ = greedy_reference(model, ids, 16, set())
    j = next(i for i in range(3, len(ref)) if ref[i] not in ref[:i])
    model.generation_config.eos_token_id = [ref[j], tok.eos_token_id]
    try:
        eos_pol = variant(lm)
        assert eos_pol.eos_ids == {ref[j], tok.eos_token_id}
        sampled = GenerationRequest(PROMPTS[0], 3, 0, SamplingParams(max_tokens=16, temperature=1.0))
        out = eos_pol.generate(
            [GenerationRequest(PROMPTS[2], 1, 0, SamplingParams(max_tokens=16, temperature=0.0)), sampled]
        )
        alone = eos_pol.generate([sampled])[0]
        fixed = eos_pol.generate_fixed([GenerationRequest(PROMPTS[2], 2, 0, SamplingParams(temperature=0.0))], 16)
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    (c,) = out[0]
    assert (c.finish_reason, c.generated_tokens, c.stop) == ("eos", j + 1, None)
    assert c.text == tok.decode(ref[:j], skip_special_tokens=True)
    # the other rows went on after this one left the batch, as they would alone
    assert summary(out[1]) == summary(alone)
    # generate_fixed ignores EOS ids and stop strings: exactly N tokens each
    assert [(f.finish_reason, f.generated_tokens) for f in fixed[0]] == [("length", 16)] * 2
    assert fixed[0][0].text == tok.decode(ref, skip_special_tokens=True)


def test_prompt_and_cached_token_accounting(lm):
    pol = variant(lm, max_batch_rows=4)
    p = SamplingParams(max_tokens=3, temperature=1.0)
    out = pol.generate(
        [
            GenerationRequest(PROMPTS[0], 3, 0, p),
            GenerationRequest(PROMPTS[0], 3, 50, p),  # same prompt, other request: shares the prefill
            GenerationRequest(PROMPTS[1], 1, 0, p),
        ]
    )
    n0, n1 = len(prompt_ids(pol, PROMPTS[0])), len(prompt_ids(pol, PROMPTS[1]))
    assert [c.prompt_tokens for c in out[0] + out[1]] == [n0] * 6 and out[2][0].prompt_tokens == n1
    # batches of 4 rows: [A0 A1 A2 B0] [B1 B2 C0]; each batch prefills each of its prompts once
    assert [c.cached_prompt_tokens for c in out[0]] == [0, n0, n0]
    assert [c.cached_prompt_tokens for c in out[1]] == [n0, 0, n0]
    assert out[2][0].cached_prompt_tokens == 0
    assert all(c.generated_tokens == 3 for r in out for c in r)


def test_on_chunk_covers_every_sample_once_in_request_order(lm):
    pol = variant(lm, max_batch_rows=3)
    p = SamplingParams(max_tokens=4, temperature=1.0)
    reqs = [
        GenerationRequest(PROMPTS[1], 4, 0, p),
        GenerationRequest(PROMPTS[0], 2, 9, p, first_index=5),
        GenerationRequest(PROMPTS[2], 0, 0, p),
    ]
    seen: dict[int, list] = {}

    def on_chunk(ri, first, comps):
        seen.setdefault(ri, []).append((first, comps))

    out = pol.generate(reqs, on_chunk=on_chunk)
    assert [len(r) for r in out] == [4, 2, 0] and 2 not in seen
    for ri, req in enumerate(reqs[:2]):
        pieces = seen[ri]
        firsts = [f for f, _ in pieces]
        assert firsts[0] == req.first_index
        assert all(a + len(ca) == b for (a, ca), (b, _) in zip(pieces, pieces[1:], strict=False))
        assert [c for _, comps in pieces for c in comps] == out[ri]
    assert len(seen[0]) > 1  # the first request was split over batches


def test_store_round_trip(lm, tmp_path):
    pol = variant(lm)
    reqs = [
        GenerationRequest(PROMPTS[0], 3, 1, SamplingParams(max_tokens=6, temperature=1.0, stop=("\n\n",))),
        GenerationRequest(PROMPTS[1], 2, 4, SamplingParams(max_tokens=6, temperature=0.0)),
    ]
    with Store(tmp_path) as store:
        gen = CachedGenerator(pol, store)
        first = gen.generate(reqs)
        calls = pol.calls
        assert store.count_generations() == 5
        second = gen.generate(reqs)
        assert pol.calls == calls  # nothing generated the second time
        more = gen.generate([GenerationRequest(PROMPTS[0], 5, 1, reqs[0].params)])  # only samples 3, 4 are new
    assert all(c.from_store for r in second for c in r) and not any(c.from_store for r in first for c in r)
    assert [summary(r) for r in first] == [summary(r) for r in second]
    fresh = variant(lm).generate([GenerationRequest(PROMPTS[0], 5, 1, reqs[0].params)])[0]
    assert summary(more[0]) == summary(fresh)
    assert [c.from_store for c in more[0]] == [True] * 3 + [False] * 2


@torch.no_grad()
def test_each_sample_carries_its_deepconf_confidence(policy, lm):
    from testtime.confidence import TOP_K, summarize

    model, _tok = lm
    req = GenerationRequest(PROMPTS[0], 1, 0, SamplingParams(max_tokens=6, temperature=0.0))
    (c,) = policy.generate([req])[0]
    seq, confs = prompt_ids(policy, req.prompt), []
    for _ in range(c.generated_tokens):  # the reference: a full forward per token, no cache
        logits = model(torch.tensor([seq])).logits[0, -1].float()
        confs.append(float(-logits.log_softmax(-1).topk(TOP_K).values.mean()))
        seq.append(int(logits.argmax()))
    want = summarize(confs)
    assert c.confidence is not None and c.confidence.tokens == c.generated_tokens == len(confs)
    for field in ("mean", "lowest_group", "tail"):
        assert getattr(c.confidence, field) == pytest.approx(getattr(want, field), abs=1e-3)
