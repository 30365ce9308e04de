"""The vLLM PRM backend against a fake ``vllm`` module (vLLM itself needs a GPU and is not installed).

The fake mirrors the object shapes vLLM returns: ``LLM.encode(prompts, pooling_params, *, use_tqdm,
pooling_task)`` gives one ``PoolingRequestOutput`` per prompt, in order, whose ``.outputs.data`` holds
one row per prompt token (ALL pooling). Two API generations are modelled: the current one (runner /
pooler_config / token_classify / use_activation, raw logits when use_activation=False) and the 0.10 one
(task="reward" / override_pooler_config / "encode", softmax probabilities).
"""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from testtime.backends import vllm as bv
from testtime.reward import vllm as vb
from testtime.reward.base import RewardError, ScoreRequest
from testtime.reward.neural import Encoded, Readout, rewards_from

TAG = 7  # the fake format's step-tag token
POS, NEG = 11, 12  # label-token ids


# -- a tiny format + tokenizer: question words and step words become ids, one TAG after each step ------


class FakeTokenizer:
    vocab = {POS: "▁+", NEG: "▁-", TAG: "ки"}

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.vocab[i]


@dataclass
class FakeFormat:
    name: str = "fake"
    kind: str = "two_class"

    def readout(self, tokenizer) -> Readout:
        if self.kind == "label_tokens":
            return Readout("label_tokens", token_ids=(POS, NEG))
        return Readout(self.kind)  # type: ignore[arg-type]

    def encode(self, tokenizer, question: str, steps: Sequence[str]) -> Encoded:
        ids, positions = [1], []
        ids += [20 + len(w) for w in question.split()]
        for step in steps:
            ids += [20 + len(w) for w in step.split()]
            positions.append(len(ids))
            ids.append(TAG)
        return Encoded(ids, positions)


def token_logits(ids: Sequence[int], width: int) -> np.ndarray:
    """The fake model: deterministic per-token logits that depend on the token and its position."""
    n = np.arange(len(ids), dtype=np.float64)
    t = np.asarray(ids, dtype=np.float64)
    cols = [np.sin(0.7 * n + 0.1 * t), np.cos(0.3 * n - 0.2 * t)][:width]
    return np.stack(cols, axis=1) * 3.0


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# -- the fake vllm module ------------------------------------------------------------------------------


def make_fake_vllm(version: str = "0.33.0", api: str = "new", width: int = 2, *, mangle_ids: bool = False):
    mod = types.ModuleType("vllm")
    mod.__version__ = version
    log: dict = {"init": [], "encode": []}
    mod.log = log

    if api == "new":

        @dataclass
        class EngineArgs:
            model: str = ""
            runner: str = "auto"
            convert: str = "auto"
            pooler_config: object = None
            hf_overrides: object = None
            gpu_memory_utilization: float = 0.9

        @dataclass
        class PoolerConfig:
            task: str | None = None
            pooling_type: str | None = None
            step_tag_id: int | None = None
            returned_token_ids: list | None = None

        @dataclass
        class PoolingParams:
            truncate_prompt_tokens: int | None = None
            use_activation: bool | None = None

        tasks = ("embed", "classify", "token_embed", "token_classify")
    else:

        @dataclass
        class EngineArgs:
            model: str = ""
            task: str = "auto"
            override_pooler_config: object = None
            hf_overrides: object = None
            gpu_memory_utilization: float = 0.9

        @dataclass
        class PoolerConfig:
            pooling_type: str | None = None
            normalize: bool | None = None
            softmax: bool | None = None
            step_tag_id: int | None = None
            returned_token_ids: list | None = None

        @dataclass
        class PoolingParams:
            dimensions: int | None = None

        tasks = ("encode", "embed", "classify", "score")

    @dataclass
    class PoolingOutput:
        data: object

    @dataclass
    class PoolingRequestOutput:
        request_id: str
        outputs: PoolingOutput
        prompt_token_ids: list[int]
        finished: bool = True

    class LLM:
        def __init__(self, model: str, **kwargs) -> None:
            log["init"].append({"model": model, **kwargs})

        def encode(self, prompts, pooling_params=None, *, use_tqdm=True, lora_request=None, pooling_task=None):
            log["encode"].append({"prompts": prompts, "pooling_params": pooling_params, "pooling_task": pooling_task,
                                  "use_tqdm": use_tqdm})
            raw_out = api == "new" and pooling_params is not None and pooling_params.use_activation is False
            outs = []
            for k, prompt in enumerate(prompts):
                ids = list(prompt["prompt_token_ids"])
                logits = token_logits(ids, width).astype(np.float32)
                data = logits if raw_out else (softmax(logits) if width > 1 else 1 / (1 + np.exp(-logits)))
                echoed = ids[1:] if mangle_ids else ids
                outs.append(PoolingRequestOutput(str(k), PoolingOutput(data), echoed))
            return outs

    config = types.ModuleType("vllm.config")
    config.PoolerConfig = PoolerConfig
    inputs = types.ModuleType("vllm.inputs")

    def TokensPrompt(**kw):  # a TypedDict in vLLM: calling it makes a plain dict
        return dict(kw)

    inputs.TokensPrompt = TokensPrompt
    tasks_mod = types.ModuleType("vllm.tasks")
    tasks_mod.POOLING_TASKS = tasks
    mod.LLM, mod.EngineArgs, mod.PoolingParams = LLM, EngineArgs, PoolingParams
    mod.config, mod.inputs, mod.tasks = config, inputs, tasks_mod
    return mod


@pytest.fixture
def install(monkeypatch):
    """Put a fake vllm in sys.modules and pretend a GPU is visible."""

    def go(**kw) -> types.ModuleType:
        mod = make_fake_vllm(**kw)
        monkeypatch.setitem(sys.modules, "vllm", mod)
        monkeypatch.setitem(sys.modules, "vllm.config", mod.config)
        monkeypatch.setitem(sys.modules, "vllm.inputs", mod.inputs)
        monkeypatch.setitem(sys.modules, "vllm.tasks", mod.tasks)
        monkeypatch.setattr(bv, "gpu_available", lambda: True)
        return mod

    return go


def requests() -> list[ScoreRequest]:
    return [
        ScoreRequest("what is two plus two", ("two plus two", "is four")),
        ScoreRequest("q", ("a single longer step here",)),
        ScoreRequest("empty", ()),
        ScoreRequest("three steps question", ("x", "yy zz", "the answer is 3")),
    ]


def expected_rewards(fmt: FakeFormat, req: ScoreRequest, width: int = 2) -> list[float]:
    enc = fmt.encode(None, req.question, req.steps)
    raw = token_logits(enc.input_ids, width).astype(np.float32).astype(np.float64)[enc.positions]
    return rewards_from(fmt.readout(None), raw)


def load(fmt: FakeFormat, **kw):
    return vb.load_vllm_prm("org/fake-prm", format=fmt, tokenizer=FakeTokenizer(), n_params=1000, **kw)


# -- tests ---------------------------------------------------------------------------------------------


def test_one_encode_call_per_batch_with_token_id_prompts(install):
    mod = install()
    fmt = FakeFormat()
    prm = load(fmt)
    reqs = requests()
    scored = prm.score_batch(reqs)
    assert len(mod.log["encode"]) == 1 and prm.forward_calls == 1
    call = mod.log["encode"][0]
    sent = [p["prompt_token_ids"] for p in call["prompts"]]
    encoded = [fmt.encode(None, r.question, r.steps).input_ids for r in reqs if r.steps]
    assert sorted(sent) == sorted(encoded)  # unchanged ids, the empty solution not sent
    assert call["pooling_task"] == "token_classify" and call["use_tqdm"] is False
    assert call["pooling_params"].use_activation is False
    for req, s in zip(reqs, scored, strict=True):
        assert s.rewards == pytest.approx(expected_rewards(fmt, req), abs=1e-6)
        assert s.tokens == (len(fmt.encode(None, req.question, req.steps).input_ids) if req.steps else 0)


def test_batches_follow_max_batch_size(install):
    mod = install()
    prm = load(FakeFormat(), max_batch_size=2)
    prm.score_batch(requests())
    assert len(mod.log["encode"]) == 2 == prm.forward_calls
    assert [len(c["prompts"]) for c in mod.log["encode"]] == [2, 1]


def test_engine_arguments_current_api(install):
    mod = install()
    load(FakeFormat(), max_model_len=4096, gpu_memory_utilization=0.5)
    init = mod.log["init"][0]
    assert init["model"] == "org/fake-prm" and init["runner"] == "pooling"
    assert init["pooler_config"] == mod.config.PoolerConfig(task="token_classify", pooling_type="ALL")
    assert init["gpu_memory_utilization"] == 0.5 and init["max_model_len"] == 4096
    assert "convert" not in init and "task" not in init and "override_pooler_config" not in init


def test_old_api_probabilities_are_converted_to_log_space(install):
    mod = install(version="0.10.0", api="old")
    fmt = FakeFormat()
    prm = load(fmt)
    init = mod.log["init"][0]
    assert init["task"] == "reward" and "runner" not in init
    assert init["override_pooler_config"] == mod.config.PoolerConfig(pooling_type="ALL")
    assert init["enable_prefix_caching"] is False
    assert mod.log["encode"] == []  # nothing runs at load time
    reqs = requests()
    scored = prm.score_batch(reqs)
    call = mod.log["encode"][0]
    assert call["pooling_task"] == "encode" and call["pooling_params"] is None
    for req, s in zip(reqs, scored, strict=True):  # softmax probs in, same rewards out
        assert s.rewards == pytest.approx(expected_rewards(fmt, req), abs=1e-5)


def test_label_token_prm_uses_a_classifier_built_from_the_lm_head(install):
    mod = install()
    fmt = FakeFormat(kind="label_tokens")
    prm = load(fmt, hf_overrides={"max_position_embeddings": 8192})
    init = mod.log["init"][0]
    assert init["convert"] == "classify"
    assert init["hf_overrides"] == {
        "classifier_from_token": ["▁+", "▁-"],
        "method": "no_post_processing",
        "num_labels": 2,
        "max_position_embeddings": 8192,  # the caller's overrides merge in
    }
    reqs = requests()
    for req, s in zip(reqs, prm.score_batch(reqs), strict=True):
        assert s.rewards == pytest.approx(expected_rewards(fmt, req), abs=1e-6)


def test_label_token_prm_on_old_vllm_is_refused_clearly(install):
    install(version="0.10.0", api="old")
    with pytest.raises(bv.VLLMUnsupported, match="hf backend") as err:
        load(FakeFormat(kind="label_tokens"))
    assert "16545" in str(err.value) and "\n" not in str(err.value)


def test_value_head_reads_one_value_per_position(install):
    install(width=1)
    fmt = FakeFormat(kind="value_head")
    prm = load(fmt)
    reqs = requests()
    for req, s in zip(reqs, prm.score_batch(reqs), strict=True):
        assert s.rewards == pytest.approx(expected_rewards(fmt, req, width=1), abs=1e-6)


def test_sigmoid_probabilities_convert_back_to_logits():
    logits = np.array([[-3.0], [0.0], [2.5]])
    p = 1 / (1 + np.exp(-logits))
    back = vb.to_log_space(p, "probs")
    assert back == pytest.approx(logits)
    saturated = vb.to_log_space(np.array([[0.0], [1.0]]), "probs")
    assert np.all(np.isfinite(saturated))
    assert rewards_from(Readout("value_head"), saturated) == pytest.approx([0.0, 1.0])


def test_softmax_probabilities_convert_to_log_probs():
    logits = np.array([[2.0, -1.0], [0.5, 0.5], [-4.0, 3.0]])
    logp = vb.to_log_space(softmax(logits), "probs")
    assert rewards_from(Readout("two_class"), logp) == pytest.approx(rewards_from(Readout("two_class"), logits))
    assert np.all(np.isfinite(vb.to_log_space(np.array([[1.0, 0.0]]), "probs")))
    with pytest.raises(RewardError, match="probabilities"):
        vb.to_log_space(np.array([[2.0, -1.0]]), "probs")


def test_auto_detects_probabilities_only_when_rows_are_distributions():
    logits = np.array([[2.0, -1.0], [0.3, 0.2]])
    assert vb.to_log_space(logits, "auto") is logits
    probs = softmax(logits)
    assert vb.to_log_space(probs, "auto") == pytest.approx(np.log(probs))
    single = np.array([[0.2], [0.9]])
    assert vb.to_log_space(single, "auto") is single  # single values: raw reward pooling, no activation


def test_rows_are_read_at_the_read_positions():
    enc = Encoded([5, 6, TAG, 8, TAG], [2, 4])
    data = np.arange(10, dtype=float).reshape(5, 2)
    assert vb.read_rows(data, enc, 2).tolist() == [[4.0, 5.0], [8.0, 9.0]]
    with pytest.raises(RewardError, match="values per token"):
        vb.read_rows(np.zeros((5, 3)), enc, 2)


def test_step_pooled_rows_map_to_step_tags():
    enc = Encoded([5, TAG, 6, TAG, 8, TAG], [1, 5])  # reads the first and the last step tag
    step_rows = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])  # one row per TAG occurrence
    assert vb.read_rows(step_rows, enc, 2, step_tag_id=TAG).tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert vb.read_rows(step_rows, Encoded([5, TAG, 6, TAG, 8, TAG], [1, 3, 5]), 2).tolist() == step_rows.tolist()
    with pytest.raises(RewardError, match="ALL pooling"):
        vb.read_rows(np.zeros((2, 2)), enc, 2)  # neither one row per token nor per tag
    with pytest.raises(RewardError, match="not step tags"):
        vb.read_rows(step_rows, Encoded([5, TAG, 6, TAG, 8, TAG], [1, 2]), 2, step_tag_id=TAG)


def test_changed_prompt_tokens_are_detected(install):
    install(mangle_ids=True)
    prm = load(FakeFormat())
    with pytest.raises(RewardError, match="different prompt tokens"):
        prm.score_batch(requests())


def test_torch_bfloat16_outputs_are_accepted():
    torch = pytest.importorskip("torch")
    t = torch.tensor([[0.5, -1.25], [2.0, 0.0]], dtype=torch.bfloat16)
    assert vb.to_numpy(t).tolist() == [[0.5, -1.25], [2.0, 0.0]]


def test_version_range_check_message(install):
    for bad in ("0.9.2", "0.40.0", "1.2.0", "garbage"):
        install(version=bad)
        with pytest.raises(bv.VLLMUnsupported) as err:
            load(FakeFormat())
        msg = str(err.value)
        assert bad in msg and bv.SUPPORTED_VLLM in msg and "\n" not in msg
    for good in ("0.10.0", "0.11.1rc2.dev5+g1a2b3c", "0.33.0", "0.39.9"):
        assert bv.version_in_range(good), good


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail as if not installed
    with pytest.raises(ImportError) as err:
        vb.load_vllm_prm("org/fake-prm", format=FakeFormat(), tokenizer=FakeTokenizer())
    msg = str(err.value)
    assert "pip install 'testtime[vllm]'" in msg and "\n" not in msg


def test_no_gpu_is_a_clear_error(install, monkeypatch):
    install()
    monkeypatch.setattr(bv, "gpu_available", lambda: False)
    with pytest.raises(bv.VLLMUnsupported, match="CUDA GPU"):
        load(FakeFormat())


def test_module_imports_without_vllm_or_formats():
    # vllm.py must not import vllm or reward.formats at import time (nor must backends/vllm.py import vllm).
    assert "vllm" not in vb.__dict__ and "vllm" not in bv.__dict__
    src = open(vb.__file__).read().split("def resolve_format", 1)[0]
    assert "from testtime.reward.formats" not in src


def test_close_releases_the_engine(install):
    install()
    prm = load(FakeFormat())
    forward = prm.forward
    prm.close()
    assert forward.llm is None
    with pytest.raises(RuntimeError, match="closed"):
        forward([Encoded([1, TAG], [1])], Readout("two_class"))


def test_format_is_detected_when_not_given(install, monkeypatch):
    install()
    seen = {}
    formats = types.ModuleType("testtime.reward.formats")

    def detect_format(tokenizer, config):
        seen["config"] = config
        return "fake"

    def get_format(name, **options):
        seen["name"], seen["options"] = name, options
        return FakeFormat()

    formats.detect_format, formats.get_format = detect_format, get_format
    monkeypatch.setitem(sys.modules, "testtime.reward.formats", formats)
    transformers = types.ModuleType("transformers")
    transformers.AutoConfig = types.SimpleNamespace(from_pretrained=lambda path, **kw: {"path": path})
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    prm = vb.load_vllm_prm("org/fake-prm", tokenizer=FakeTokenizer(), format_options={"step_tag": "ки"})
    assert seen == {"config": {"path": "org/fake-prm"}, "name": "fake", "options": {"step_tag": "ки"}}
    assert prm.name == "org/fake-prm"


def test_count_params_reads_safetensors_headers(tmp_path):
    header = {"a": {"dtype": "F16", "shape": [3, 4], "data_offsets": [0, 24]},
              "b": {"dtype": "F16", "shape": [5], "data_offsets": [24, 34]}, "__metadata__": {"format": "pt"}}
    blob = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(34))
    assert bv.count_params(str(tmp_path)) == 17
    assert bv.count_params(str(tmp_path / "missing")) == 0


def test_plan_is_a_plain_record(install):
    mod = install()
    plan = vb.VLLMAdapter(mod).plan(Readout("two_class"), FakeTokenizer())
    assert dataclasses.is_dataclass(plan) and plan.outputs == "logits" and plan.pooling_task == "token_classify"
