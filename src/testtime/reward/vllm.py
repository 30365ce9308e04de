"""The vLLM PRM backend: one ``LLM.encode`` call per batch, token-id prompts in, per-token rows out.

vLLM's pooling API has moved a lot between releases (``task="reward"`` became ``runner="pooling"``,
``override_pooler_config`` became ``pooler_config``, the ``"encode"`` pooling task split into
``"token_embed"`` / ``"token_classify"``, ``softmax`` became ``use_activation``). All of that is
contained in ``VLLMAdapter``: it detects which API the installed vLLM offers and builds the engine
arguments, the pooling parameters and the ``encode`` call accordingly. Apart from the version-checked
import in ``testtime.backends.vllm``, nothing else in testtime touches vLLM.

How each PRM readout is served (vLLM facts from its docs and sources, see ``docs/models/pooling_models``,
``vllm/config/pooler.py``, ``vllm/pooling_params.py`` and ``model_executor/layers/pooler``):

* ``two_class`` (Qwen2.5-Math-PRM, ``Qwen2ForProcessRewardModel``): a native vLLM pooling model whose
  default pooler is STEP (rows only at its ``step_tag_id``). We override it with ALL pooling so the
  rows come back for every token and our format's own read positions are used.
* ``value_head``: served the same way (ALL pooling, one value per token), when vLLM has a model class
  for the checkpoint.
* ``label_tokens`` (Math-Shepherd, RLHFlow, ...: a causal LM read at two vocabulary entries): vLLM's
  STEP pooling with ``returned_token_ids`` indexes the *hidden states*, not the vocabulary logits, once
  the LM head is dropped for pooling (vllm-project/vllm#16545), so we do not use it. Instead the causal
  LM is converted to a 2-label token classifier whose weights are the LM-head rows of the two label
  tokens (``convert="classify"`` with ``hf_overrides`` ``classifier_from_token`` / ``method:
  "no_post_processing"``, the mechanism vLLM uses for LLM-as-reranker models), then read with the
  ``token_classify`` task and ALL pooling. This needs a vLLM with ``runner``/``convert`` and the
  ``token_classify`` task; on older releases loading such a PRM fails with a clear message (use the
  hf backend there).

Where vLLM lets us, we ask for raw outputs (``use_activation=False``); otherwise the pooler may return
softmax / sigmoid probabilities, which are converted back to log space (softmax is shift-invariant per
row, so log-probabilities of the two classes are as good as logits).
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import numpy as np

from testtime.backends.vllm import (
    VLLMUnsupported,
    check_vllm_version,
    count_params,
    import_transformers,
    import_vllm,
    parse_version,
    require_gpu,
)
from testtime.reward.base import RewardError
from testtime.reward.neural import Encoded, PRMFormat, Readout, TokenPRM

Outputs = Literal["logits", "probs", "auto"]

_TINY = np.finfo(np.float64).tiny
_EPS = np.finfo(np.float64).eps


# -- pure helpers shared with the HTTP pooling backend -------------------------------------------------


def to_numpy(data: Any) -> np.ndarray:
    """A vLLM output tensor (torch, any dtype or device), array or nested list as a float64 array."""
    if hasattr(data, "detach"):  # torch: bf16 has no numpy dtype, so widen on the device first
        data = data.detach().float().cpu().numpy()
    return np.asarray(data, dtype=np.float64)


def read_rows(
    data: np.ndarray,
    enc: Encoded,
    width: int,
    *,
    step_tag_id: int | None = None,
    source: str = "vLLM",
) -> np.ndarray:
    """The rows of a pooled output at ``enc.positions``, shape ``(len(positions), width)``.

    ALL pooling returns one row per prompt token, read at our positions directly. STEP pooling returns
    one row per occurrence of a step-tag token; then each read position must be such an occurrence and
    is mapped to its rank. The tag is ``step_tag_id`` when given, else inferred only when every read
    position holds the same token and the row count equals that token's occurrences.
    """
    ids = enc.input_ids
    if data.ndim == 1:
        data = data.reshape(-1, 1)
    if data.ndim != 2:
        raise RewardError(f"{source}: pooled output has shape {data.shape}, expected (tokens, values)")
    if data.shape[0] == len(ids):
        rows = data[list(enc.positions)]
    else:
        tag = step_tag_id
        if tag is None and enc.positions and len({ids[p] for p in enc.positions}) == 1:
            tag = ids[enc.positions[0]]
        tag_positions = [i for i, t in enumerate(ids) if t == tag] if tag is not None else []
        if tag is None or len(tag_positions) != data.shape[0]:
            raise RewardError(
                f"{source}: {data.shape[0]} pooled rows for a {len(ids)}-token input; expected one row per "
                f"token (serve the model with ALL pooling) or one per step tag (STEP pooling)"
            )
        rank = {p: r for r, p in enumerate(tag_positions)}
        missing = [p for p in enc.positions if p not in rank]
        if missing:
            raise RewardError(f"{source}: STEP-pooled rows only cover step tag {tag}; read positions {missing} "
                              "are not step tags (serve the model with ALL pooling)")
        rows = data[[rank[p] for p in enc.positions]]
    if rows.shape[1] != width:
        raise RewardError(
            f"{source}: {rows.shape[1]} values per token, but this PRM's readout needs {width} "
            "(is the server/engine running the right pooling task and head?)"
        )
    return rows


def looks_like_probs(rows: np.ndarray) -> bool:
    """True when every row is a probability distribution (what a softmax activation returns)."""
    if rows.size == 0 or rows.shape[1] < 2 or not np.all(np.isfinite(rows)):
        return False
    in_range = bool(np.all((rows >= -1e-6) & (rows <= 1 + 1e-6)))
    return in_range and bool(np.all(np.abs(rows.sum(axis=1) - 1.0) <= 1e-3))


def to_log_space(rows: np.ndarray, outputs: Outputs, *, source: str = "vLLM") -> np.ndarray:
    """Raw rows as the Forward contract wants them: logits (or log-probabilities) / pre-sigmoid values.

    ``probs``: two-class rows become log-probabilities; single values become logits (log p - log(1 - p)).
    ``auto``: two-class rows that are distributions are treated as probabilities, anything else (and all
    single values, which vLLM's reward pooling returns without activation) as logits already.
    """
    if outputs == "logits":
        return rows
    if outputs == "auto":
        if rows.shape[1] < 2 or not looks_like_probs(rows):
            return rows
    elif outputs != "probs":
        raise ValueError(f"outputs must be 'logits', 'probs' or 'auto', not {outputs!r}")
    if np.any(~np.isfinite(rows)) or np.any(rows < -1e-6) or np.any(rows > 1 + 1e-6):
        raise RewardError(f"{source}: expected probabilities in [0, 1], got values in "
                          f"[{np.nanmin(rows):.4g}, {np.nanmax(rows):.4g}]")
    # Clip away exact 0 / 1 (float32 saturation): log stays finite and softmax/sigmoid give the same answer.
    if rows.shape[1] == 1:
        p = np.clip(rows, _TINY, 1.0 - _EPS)
        return np.log(p) - np.log1p(-p)
    return np.log(np.clip(rows, _TINY, 1.0))


# -- the adapter ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnginePlan:
    """What to ask vLLM for, and how to read what comes back."""

    llm_kwargs: dict[str, Any]
    pooling_task: str | None
    pooling_params: dict[str, Any] | None  # kwargs for vllm.PoolingParams; None = vLLM's defaults
    outputs: Outputs
    step_tag_id: int | None = None
    notes: list[str] = field(default_factory=list)


def _field_names(obj: Any) -> set[str]:
    """Constructor parameter names of a (pydantic or plain) dataclass or class; empty if unknown."""
    if obj is None:
        return set()
    if dataclasses.is_dataclass(obj):
        return {f.name for f in dataclasses.fields(obj)}
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


class VLLMAdapter:
    """Every version-dependent use of vLLM's pooling API, detected from the installed module.

    Feature detection looks at the constructors' fields (``EngineArgs``, ``PoolerConfig``,
    ``PoolingParams``) and ``vllm.tasks.POOLING_TASKS``; where those are not introspectable it falls back
    on the version number (the releases that introduced each change).
    """

    def __init__(self, vllm: ModuleType) -> None:
        self.vllm = vllm
        self.version = str(getattr(vllm, "__version__", "unknown"))
        check_vllm_version(self.version)
        v = parse_version(self.version) or (0, 0, 0)
        engine = _field_names(getattr(vllm, "EngineArgs", None))
        self.pooler_cls = self._find_pooler_config()
        pooler = _field_names(self.pooler_cls)
        params = _field_names(getattr(vllm, "PoolingParams", None))
        tasks = set(getattr(getattr(vllm, "tasks", None), "POOLING_TASKS", ()) or ())
        # runner/convert replaced task= in 0.10.1; pooler_config replaced override_pooler_config in 0.11;
        # token_classify and use_activation arrived with the pooling-task split (0.11.1).
        self.has_runner = "runner" in engine if engine else v >= (0, 10, 1)
        self.pooler_key = (
            "pooler_config" if ("pooler_config" in engine if engine else v >= (0, 11, 0)) else "override_pooler_config"
        )
        self.pooler_has_task = "task" in pooler
        self.token_task = "token_classify" if ("token_classify" in tasks if tasks else v >= (0, 11, 1)) else "encode"
        self.has_use_activation = "use_activation" in params if params else v >= (0, 11, 1)

    def _find_pooler_config(self) -> Any:
        cls = getattr(self.vllm, "PoolerConfig", None)
        if cls is None:
            config = getattr(self.vllm, "config", None)
            cls = getattr(config, "PoolerConfig", None)
        if cls is None:
            try:
                from vllm.config import PoolerConfig as cls
            except ImportError:
                cls = None
        return cls

    # The plan: engine arguments, pooling task and parameters for one PRM readout.
    def plan(self, readout: Readout, tokenizer: Any) -> EnginePlan:
        kwargs: dict[str, Any] = {"runner": "pooling"} if self.has_runner else {"task": "reward"}
        pooler_kwargs: dict[str, Any] = {"pooling_type": "ALL"}
        if self.pooler_has_task:
            # Newer vLLM refuses an encode() task that differs from the model's configured one.
            pooler_kwargs["task"] = self.token_task
        kwargs[self.pooler_key] = self.pooler_cls(**pooler_kwargs) if self.pooler_cls is not None else pooler_kwargs
        notes: list[str] = []
        if readout.kind == "label_tokens":
            if not (self.has_runner and self.token_task == "token_classify"):
                raise VLLMUnsupported(
                    f"label-token (causal-LM) PRMs need vLLM's token_classify task with convert='classify' "
                    f"(vLLM >= 0.11.1); vLLM {self.version} only offers STEP pooling with returned_token_ids, "
                    "which indexes hidden states rather than vocabulary logits (vllm-project/vllm#16545); "
                    "use the hf backend for this PRM"
                )
            assert readout.token_ids is not None
            pos, neg = (tokenizer.convert_ids_to_tokens(int(t)) for t in readout.token_ids)
            kwargs["convert"] = "classify"
            # The classifier's two rows become the LM-head rows of (positive, negative), in that order.
            kwargs["hf_overrides"] = {
                "classifier_from_token": [pos, neg],
                "method": "no_post_processing",
                "num_labels": 2,
            }
            notes.append("label tokens read through a 2-row classifier built from the LM head")
        if self.token_task == "token_classify" and self.has_use_activation:
            return EnginePlan(kwargs, self.token_task, {"use_activation": False}, "logits", notes=notes)
        # Old API: ALL pooling returned rows only for uncached tokens when a prefix hit the cache (newer
        # releases skip the cache for token tasks themselves), and the reward pooler may or may not apply
        # softmax, so probabilities are detected per batch.
        kwargs.setdefault("enable_prefix_caching", False)
        return EnginePlan(kwargs, self.token_task, None, "auto", notes=notes)

    def make_llm(self, model: str, plan: EnginePlan, **user_kwargs: Any) -> Any:
        """Construct ``vllm.LLM``; the caller's keyword arguments win over the plan's (hf_overrides merge)."""
        kwargs = dict(plan.llm_kwargs)
        overrides = user_kwargs.pop("hf_overrides", None)
        if overrides is not None:
            if isinstance(overrides, Mapping) and isinstance(kwargs.get("hf_overrides"), Mapping):
                kwargs["hf_overrides"] = {**kwargs["hf_overrides"], **overrides}
            else:
                kwargs["hf_overrides"] = overrides
        kwargs.update(user_kwargs)
        return self.vllm.LLM(model=model, **kwargs)

    def tokens_prompt(self, ids: Sequence[int]) -> Any:
        maker = getattr(getattr(self.vllm, "inputs", None), "TokensPrompt", None)
        prompt = {"prompt_token_ids": [int(t) for t in ids]}
        return maker(**prompt) if maker is not None else prompt  # a TypedDict: a plain dict either way

    def encode(self, llm: Any, batch: Sequence[Encoded], plan: EnginePlan) -> list[np.ndarray]:
        """One ``llm.encode`` call for the whole batch; the per-token output of each item, in order."""
        prompts = [self.tokens_prompt(enc.input_ids) for enc in batch]
        kwargs: dict[str, Any] = {"use_tqdm": False}
        if plan.pooling_params is not None:
            kwargs["pooling_params"] = self.vllm.PoolingParams(**plan.pooling_params)
        if plan.pooling_task is not None and _accepts(llm.encode, "pooling_task"):
            kwargs["pooling_task"] = plan.pooling_task
        outputs = llm.encode(prompts, **kwargs)
        if len(outputs) != len(batch):
            raise RewardError(f"vLLM returned {len(outputs)} outputs for {len(batch)} prompts")
        result = []
        for enc, out in zip(batch, outputs, strict=True):
            sent = getattr(out, "prompt_token_ids", None)
            if sent is not None and list(sent) != list(enc.input_ids):
                raise RewardError("vLLM scored different prompt tokens than were sent (tokens were re-processed)")
            result.append(to_numpy(out.outputs.data))
        return result


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class VLLMForward:
    """A ``Forward`` over a vLLM engine: one encode call per batch, rows read at our positions."""

    def __init__(self, llm: Any, adapter: VLLMAdapter, plan: EnginePlan) -> None:
        self.llm = llm
        self.adapter = adapter
        self.plan = plan
        self.calls = 0

    def __call__(self, batch: Sequence[Encoded], readout: Readout) -> list[np.ndarray]:
        if self.llm is None:
            raise RuntimeError("this vLLM PRM has been closed")
        mats = self.adapter.encode(self.llm, batch, self.plan)
        self.calls += 1
        source = f"vLLM {self.adapter.version}"
        out = []
        for enc, mat in zip(batch, mats, strict=True):
            rows = read_rows(mat, enc, readout.width, step_tag_id=self.plan.step_tag_id, source=source)
            out.append(to_log_space(rows, self.plan.outputs, source=source))
        return out

    def close(self) -> None:
        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # best effort: freeing memory must never fail a run
            pass


# -- loading -------------------------------------------------------------------------------------------


def load_vllm_prm(
    path: str,
    format: str | PRMFormat | None = None,
    gpu_memory_utilization: float = 0.9,
    max_batch_tokens: int = 262144,
    *,
    name: str | None = None,
    format_options: Mapping[str, Any] | None = None,
    max_batch_size: int = 1024,
    n_params: int | None = None,
    tokenizer: Any = None,
    allow_cpu: bool | None = None,
    **llm_kwargs: Any,
) -> TokenPRM:
    """Load a PRM checkpoint into vLLM and wrap it as a ``TokenPRM``.

    ``format`` names the PRM's published input format (detected from the tokenizer/config when None).
    vLLM schedules its own micro-batches, so ``max_batch_tokens`` / ``max_batch_size`` only bound how
    much goes into one ``encode`` call. Extra keyword arguments go to ``vllm.LLM`` (``dtype``,
    ``max_model_len``, ``tensor_parallel_size``, ``hf_overrides``, ...) and win over ours. ``tokenizer``
    (a HF tokenizer) skips loading one from ``path``. ``allow_cpu`` (default: ``$TESTTIME_VLLM_CPU``)
    accepts vLLM's CPU build instead of refusing a machine without a CUDA GPU (tests and checks).
    """
    vllm = import_vllm()
    require_gpu(allow_cpu)
    adapter = VLLMAdapter(vllm)
    trust = bool(llm_kwargs.get("trust_remote_code", False))
    if tokenizer is None:
        tokenizer = import_transformers().AutoTokenizer.from_pretrained(path, trust_remote_code=trust)

    def load_config() -> Any:
        return import_transformers().AutoConfig.from_pretrained(path, trust_remote_code=trust)

    fmt = resolve_format(format, format_options, tokenizer, load_config, path)
    readout = fmt.readout(tokenizer)
    plan = adapter.plan(readout, tokenizer)
    llm = adapter.make_llm(path, plan, gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)
    forward = VLLMForward(llm, adapter, plan)
    return TokenPRM(
        name or str(path),
        fmt,
        tokenizer,
        forward,
        n_params=count_params(path) if n_params is None else n_params,
        max_batch_tokens=max_batch_tokens,
        max_batch_size=max_batch_size,
        close=forward.close,
    )


def resolve_format(
    format: str | PRMFormat | None,
    options: Mapping[str, Any] | None,
    tokenizer: Any,
    load_config: Any,
    where: str,
) -> PRMFormat:
    """A PRMFormat from a name, an instance, or detection (formats.py is imported only here)."""
    if format is not None and not isinstance(format, str):
        return format
    from testtime.reward.formats import detect_format, get_format

    if format is None:
        format = detect_format(tokenizer, load_config())
        if format is None:
            raise ValueError(f"could not detect the PRM input format of {where}; pass format=<name>")
    return get_format(format, **dict(options or {}))
