"""vLLM policy backend: one offline ``vllm.LLM`` with automatic prefix caching (GPU, ``[vllm]`` extra).

Decisions, and why:

- One ``LLM.generate`` call per ``generate``: every sample of every prompt of every problem goes in at
  once, so vLLM's scheduler batches all of it (the engine already hands us a whole depth of work).
- Seeds. vLLM seeds one generator per request, and the n children of an ``n > 1`` request draw from
  it in turn, so child i's text would depend on how the group was split. The seed contract (sample i is
  drawn with ``seed + i``, so a request for samples [k, n) reproduces the tail of one for [0, n)) is kept
  by making every sample its own ``n=1`` request with ``seed=(seed + i) mod 2**31`` (the wrap the other
  backends use). The repeated prompt costs almost nothing: automatic prefix caching (always on) serves
  its KV blocks to every sibling, and to later calls whose prompts share a prefix (few-shot examples,
  tree-search paths).
- Prompts go in as token ids, tokenised here once per distinct prompt text (not once per sample, as
  vLLM would for n text prompts). The special tokens rule is vLLM's own chat path: a prompt rendered by
  a chat template that already starts with the BOS text is tokenised without adding another.
- Token counts: ``prompt_tokens`` is the exact number of ids sent; ``cached_prompt_tokens`` is what the
  engine says it served from its prefix cache for that sample's own request
  (``RequestOutput.num_cached_tokens``, 0 when the vLLM release does not report it), for every sample,
  siblings included. Assuming siblings hit the cache is wrong on a real engine: only full KV blocks are
  cached (128 tokens on the CPU build, 16 on CUDA), so a prompt shorter than a block is never served
  from the cache, and siblings scheduled in one step can all miss it. ``generated_tokens`` is
  ``len(CompletionOutput.token_ids)``.
- Finish reasons: ``length`` -> "length"; ``stop`` with a string ``stop_reason`` -> "stop" (the string
  that matched, not included in the text); ``stop_reason`` None (EOS) or an int (a stop token id) -> "eos".
- ``model_id`` names the weights: model name or folder name, dtype, quantization, revision, and for a
  local folder (or the hub snapshot vLLM loaded) a short hash of its config.json and weight file names and
  sizes, so two checkpoints under one path never share store keys. ``n_params`` comes from the
  checkpoint's safetensors headers, else is estimated from the loaded model config.
"""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Any

from testtime.backends.vllm import count_params, import_vllm, require_gpu
from testtime.confidence import TOP_K, summarize, token_confidence
from testtime.policy.base import ChunkCallback, GenerationRequest, SamplingParams
from testtime.policy.prompts import prompt_token_ids, tokenizer_chat
from testtime.types import Completion, Confidence

_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def checkpoint_fingerprint(root: Path) -> str:
    """Short hash of a checkpoint folder's config.json and its weight files' names and sizes (no weights read)."""
    h = hashlib.sha256()
    config = root / "config.json"
    if config.exists():
        h.update(config.read_bytes())
    for f in sorted({f for pattern in _WEIGHT_GLOBS for f in root.glob(pattern)}):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:10]


def _cached_snapshot(model: str, revision: str | None, cache_dir: str | None) -> Path | None:
    """The local snapshot folder of a hub model vLLM has loaded (no network); None when not found."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(model, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                 allow_patterns=["config.json", *_WEIGHT_GLOBS])
    except Exception:
        return None
    return Path(path) if Path(path).is_dir() else None


def model_identity(model: str, dtype: str = "auto", quantization: str | None = None,
                   revision: str | None = None, download_dir: str | None = None) -> str:
    """The store-key identity of a vLLM policy's weights (see the module docstring)."""
    opts = f"dtype={dtype}" + (f",quant={quantization}" if quantization else "")
    root = Path(model).expanduser()
    if root.is_dir():
        return f"vllm:{root.resolve().name}[{opts}]@{checkpoint_fingerprint(root)}"
    name = model + (f"@{revision}" if revision else "")
    snapshot = _cached_snapshot(model, revision, download_dir)
    return f"vllm:{name}[{opts}]" + (f"@{checkpoint_fingerprint(snapshot)}" if snapshot else "")


def params_from_config(config: Any) -> int:
    """Parameter estimate of a decoder-only transformer from its HF config (gated MLP); 0 if unknown."""
    h = getattr(config, "hidden_size", None)
    layers = getattr(config, "num_hidden_layers", None)
    vocab = getattr(config, "vocab_size", None)
    if not (h and layers and vocab):
        return 0
    heads = getattr(config, "num_attention_heads", None) or 1
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    inter = getattr(config, "intermediate_size", None) or 4 * h
    attn = 2 * h * heads * head_dim + 2 * h * kv * head_dim  # q, o + k, v
    per_layer = attn + 3 * h * inter + 2 * h  # gate/up/down + two norms
    embed = vocab * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return int(layers * per_layer + embed + h)


def _model_config(llm: Any) -> Any:
    """The engine's hf config (``hf_text_config`` for multimodal models); None if not reachable."""
    for owner in (llm, getattr(llm, "llm_engine", None)):
        mc = getattr(owner, "model_config", None)
        if mc is None and owner is not None and callable(getattr(owner, "get_model_config", None)):
            try:
                mc = owner.get_model_config()
            except Exception:
                mc = None
        if mc is not None:
            return getattr(mc, "hf_text_config", None) or getattr(mc, "hf_config", None)
    return None


def sample_confidence(logprobs: Any) -> Confidence | None:
    """A sample's confidence from vLLM's per-token {token id: Logprob} dicts (the sampled token is added
    when it is not among the top k, so the k best are taken); None without log-probabilities."""
    if not logprobs:
        return None
    tops = [sorted((lp.logprob for lp in (d or {}).values()), reverse=True)[:TOP_K] for d in logprobs]
    if not all(tops):
        return None
    return summarize([token_confidence(t) for t in tops])


class VLLMPolicy:
    """A causal LM served by an offline vLLM engine in this process (CUDA GPU needed).

    Extra keyword arguments go to ``vllm.LLM`` unchanged (``quantization``, ``revision``, ``seed``,
    ``download_dir``, ``trust_remote_code``, ...). ``n_params`` overrides the parameter count used for FLOPs.
    ``allow_cpu`` (default: ``$TESTTIME_VLLM_CPU``) accepts vLLM's CPU build instead of refusing a machine
    without a CUDA GPU: for tests and checks, a GPU is what real work needs.
    """

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        max_num_seqs: int | None = None,
        enable_prefix_caching: bool = True,
        n_params: int | None = None,
        allow_cpu: bool | None = None,
        **engine_kwargs: Any,
    ):
        vllm = import_vllm()  # ImportError naming the extra; refuses an untested vLLM release
        require_gpu(allow_cpu, what="the vLLM policy backend", instead="the default --backend llamacpp")
        self._vllm = vllm
        self.model = model
        kwargs: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "dtype": dtype,
            "enable_prefix_caching": enable_prefix_caching,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        kwargs.update(engine_kwargs)
        self._llm: Any = vllm.LLM(model=model, **kwargs)
        self._tokenizer = self._llm.get_tokenizer()
        # after loading: a hub model is now in the local cache, so its snapshot can be fingerprinted
        self.model_id = model_identity(model, str(kwargs["dtype"]), engine_kwargs.get("quantization"),
                                       engine_kwargs.get("revision"), engine_kwargs.get("download_dir"))
        if n_params is None:
            config = _model_config(self._llm)
            quantized = getattr(config, "quantization_config", None) is not None
            # packed low-bit weights make the safetensors count meaningless: estimate from the config then
            n_params = (0 if quantized else count_params(model)) or params_from_config(config)
        self.n_params = int(n_params)
        self.calls = 0  # LLM.generate calls made

    # -- prompts ------------------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return getattr(self._tokenizer, "chat_template", None) is not None

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return tokenizer_chat(self._tokenizer)(messages)

    def _token_ids(self, text: str) -> list[int]:
        return prompt_token_ids(self._tokenizer, text)

    # -- generation ---------------------------------------------------------------------------------

    def _sampling(self, sp: SamplingParams, seed: int) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            seed=seed % (2**31),
            temperature=sp.temperature,  # 0 is greedy in vLLM
            top_p=sp.top_p,
            top_k=sp.top_k if sp.top_k > 0 else -1,  # -1 is "off" in every supported release
            min_p=0.0,
            repetition_penalty=1.0,
            max_tokens=sp.max_tokens,
            stop=list(sp.stop),
            include_stop_str_in_output=False,
            logprobs=TOP_K,  # per-token top-k: the sample's confidence (testtime.confidence)
        )

    @staticmethod
    def _finish(out: Any) -> tuple[Any, str | None]:
        reason = getattr(out, "finish_reason", None)
        if reason == "length":
            return "length", None
        if reason == "stop":
            matched = getattr(out, "stop_reason", None)
            return ("stop", matched) if isinstance(matched, str) else ("eos", None)
        raise RuntimeError(f"vLLM sample did not finish (finish_reason={reason!r})")

    def generate(
        self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None = None
    ) -> list[list[Completion]]:
        """All samples of all requests in one ``LLM.generate`` call; results in request order.

        ``on_chunk(request_index, first_index, completions)`` runs once per request after the call
        returns (vLLM's offline API hands back everything at once). A request with a sample vLLM did not
        finish is not reported; the others are, and then RuntimeError names the failed ones.
        """
        if self._llm is None:
            raise RuntimeError("this vLLM policy has been closed")
        ids: dict[str, list[int]] = {}
        prompts: list[dict[str, list[int]]] = []
        params: list[Any] = []
        for req in requests:
            if req.prompt not in ids:
                ids[req.prompt] = self._token_ids(req.prompt)
            for i in range(req.first_index, req.first_index + req.n):
                prompts.append({"prompt_token_ids": ids[req.prompt]})  # vLLM's TokensPrompt is a TypedDict
                params.append(self._sampling(req.params, req.seed + i))
        results: list[list[Completion]] = [[] for _ in requests]
        if not prompts:
            return results
        outputs = list(self._llm.generate(prompts, sampling_params=params, use_tqdm=False))
        self.calls += 1
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        failed: list[str] = []
        pos = 0
        for ri, req in enumerate(requests):
            sent = ids[req.prompt]
            try:
                results[ri] = [self._completion(outputs[pos + j], sent) for j in range(req.n)]
            except RuntimeError as err:
                failed.append(f"request {ri} samples [{req.first_index}, {req.first_index + req.n}): {err}")
                results[ri] = []
            pos += req.n
            if on_chunk is not None and results[ri]:
                on_chunk(ri, req.first_index, results[ri])
        if failed:
            raise RuntimeError(f"{len(failed)} vLLM request(s) failed; first: {failed[0]}")
        return results

    def _completion(self, out: Any, sent: list[int]) -> Completion:
        if len(out.outputs) != 1:
            raise RuntimeError(f"vLLM returned {len(out.outputs)} samples for an n=1 request")
        sample = out.outputs[0]
        finish, stop = self._finish(sample)
        echoed = getattr(out, "prompt_token_ids", None)
        prompt_tokens = len(echoed) if echoed is not None else len(sent)
        cached = min(int(getattr(out, "num_cached_tokens", None) or 0), prompt_tokens)
        return Completion(
            text=sample.text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=cached,  # the engine's own figure (see the module docstring)
            generated_tokens=len(sample.token_ids),
            stop=stop,
            confidence=sample_confidence(getattr(sample, "logprobs", None)),
        )

    # -- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine down and free its GPU memory (best effort; never raises)."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if callable(getattr(core, "shutdown", None)):  # V1: stop the engine-core process
            try:
                core.shutdown()
            except Exception:
                pass
        del llm, core
        gc.collect()
        try:
            from vllm.distributed import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:
            try:
                from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

                destroy_model_parallel()
                destroy_distributed_environment()
            except Exception:
                pass
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
