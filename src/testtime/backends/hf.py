"""Transformers helpers shared by the HF policy, the HF PRM and the probe features (the ``hf`` extra).

torch and transformers are imported only when called, never at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


class MissingExtraError(ImportError):
    """The optional dependencies of a backend are not installed."""


def import_hf(what: str = "transformers PRM backend") -> tuple[Any, Any]:
    """``(torch, transformers)``, or MissingExtraError naming ``what`` and the extra to install."""
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingExtraError(
            f"the {what} needs torch and transformers ({e.name or e} is missing); "
            "install the extra: pip install 'testtime[hf]'"
        ) from None
    return torch, transformers


@contextlib.contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """Silence transformers' load report and progress bars: the heads it calls unexpected are ours."""
    log = transformers.utils.logging
    level, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def torch_dtype(torch: Any, dtype: str | None, device: Any) -> Any:
    """The torch dtype a ``dtype`` name asks for; None: bfloat16 on GPU, float32 on CPU."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    key = DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if key is None:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of bfloat16, float16, float32")
    return getattr(torch, key)


def from_pretrained(cls: Any, path: str, transformers: Any, dtype: Any) -> Any:
    """``cls.from_pretrained`` without checkpoint code, quietly; fails if any of the model's weights is missing."""
    with quiet(transformers):
        model, info = cls.from_pretrained(path, dtype=dtype, trust_remote_code=False, output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights of {type(model).__name__}: {missing[:5]}")
    return model.eval()


def fingerprint(root: Path) -> str:
    """Short hash of the config and the weight files' names and sizes (cheap: no weights are read)."""
    h = hashlib.sha256()
    config = root / "config.json"
    if config.exists():
        h.update(config.read_bytes())
    for f in sorted(root.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:10]
