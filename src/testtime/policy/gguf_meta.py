"""What testtime needs to know about a GGUF file, read from its metadata (no weights loaded)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Control tokens that end a turn in common chat formats; llama.cpp treats them as end-of-generation too.
_EOG_TEXTS = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "</s>"}
_CONTROL = 3  # llama.cpp token type


@dataclass(frozen=True)
class GGUFInfo:
    path: str
    name: str
    architecture: str
    n_params: int
    context_length: int
    chat_template: str | None
    bos_text: str
    eos_text: str
    eog_ids: frozenset[int]
    model_id: str
    # tokens a sliding-window attention layer sees (Gemma 3: 512); None: every layer attends to everything
    sliding_window: int | None = None


def _file_fingerprint(path: Path) -> str:
    """Name + size + hash of the first and last MiB: cheap, and changes with the weights."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > (2 << 20):
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return f"{path.name}:{size}:{h.hexdigest()[:16]}"


def read_gguf_info(path: str | Path) -> GGUFInfo:
    import gguf  # local: the reader is only needed when a model is opened

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF model file not found")
    reader = gguf.GGUFReader(str(path))

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = field("general.architecture", "unknown")
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token_text(i: int | None) -> str:
        if i is None or tokens is None or i < 0 or i >= len(tokens.data):
            return ""
        return bytes(tokens.parts[tokens.data[i]]).decode("utf-8", errors="replace")

    eog: set[int] = set()
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        v = field(key)
        if v is not None:
            eog.add(int(v))
    types = reader.fields.get("tokenizer.ggml.token_type")
    if types is not None and tokens is not None:
        ttype = np.array([types.parts[i][0] for i in types.data])
        for i in np.nonzero(ttype == _CONTROL)[0]:
            if token_text(int(i)) in _EOG_TEXTS:
                eog.add(int(i))
    n_params = int(sum(int(np.prod(t.shape)) for t in reader.tensors))
    return GGUFInfo(
        path=str(path),
        name=str(field("general.name", path.stem)),
        architecture=str(arch),
        n_params=n_params,
        context_length=int(field(f"{arch}.context_length", 2048)),
        chat_template=field("tokenizer.chat_template"),
        bos_text=token_text(field("tokenizer.ggml.bos_token_id")),
        eos_text=token_text(field("tokenizer.ggml.eos_token_id")),
        eog_ids=frozenset(eog),
        model_id=_file_fingerprint(path),
        sliding_window=int(field(f"{arch}.attention.sliding_window", 0)) or None,
    )
