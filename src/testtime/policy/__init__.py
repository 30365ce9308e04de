"""Policy models: the protocol, prompt building, and backends (llama.cpp is the CPU default)."""

from testtime.errors import ConfigError
from testtime.policy.base import STEP_STOP, GenerationRequest, Policy, SamplingParams
from testtime.policy.models import DEFAULT_MODEL, list_models, resolve_model

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "STEP_STOP",
    "GenerationRequest",
    "Policy",
    "SamplingParams",
    "list_models",
    "load_policy",
    "resolve_model",
]


BACKENDS = ("llamacpp", "vllm", "hf", "openai")


def load_policy(model: str | None = None, backend: str = "llamacpp", **kwargs) -> Policy:
    """Open a policy backend.

    - llamacpp: `model` is a GGUF path or an embedded model name (CPU default);
    - vllm: `model` is an HF model id or local path, served by an offline vLLM engine (GPU, `[vllm]` extra);
    - hf: `model` is an HF model id or local path, run with transformers (`[hf]` extra);
    - openai: `model` is the served model name and `base_urls` (a URL or a list) is required.
    """
    if backend == "llamacpp":
        from testtime.policy.llamacpp import LlamaCppPolicy

        return LlamaCppPolicy(resolve_model(model), **kwargs)
    if backend == "vllm":
        from testtime.policy.vllm import VLLMPolicy

        if not model:
            raise ConfigError("model", message="backend vllm needs one (an HF model id or a local checkpoint folder)")
        return VLLMPolicy(model, **kwargs)
    if backend == "hf":
        from testtime.policy.hf import HFPolicy

        if not model:
            raise ConfigError("model", message="backend hf needs one (an HF model id or a local checkpoint folder)")
        return HFPolicy(model, **kwargs)
    if backend == "openai":
        from testtime.policy.openai_compat import OpenAICompatPolicy

        if not model or "base_urls" not in kwargs:
            raise ConfigError(("model", "base_urls"), message="backend openai needs the served model name and URLs")
        return OpenAICompatPolicy(kwargs.pop("base_urls"), model, **kwargs)
    raise ConfigError("backend", backend, f"unknown policy backend (available: {', '.join(BACKENDS)})")
