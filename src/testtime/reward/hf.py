"""Transformers backend for neural PRMs: load a local checkpoint, score through ``TokenPRM``.

The model class follows the format's readout, and never runs checkpoint code (no trust_remote_code):

* ``label_tokens`` (Math-Shepherd, RLHFlow, generic): ``AutoModelForCausalLM``. Only the two label rows
  of the LM head are applied, and only at the read positions, so scoring never materialises
  vocabulary-sized logits for the whole sequence.
* ``two_class`` (Qwen2.5-Math-PRM): the base ``AutoModel`` (Qwen2Model) plus the authors' score head
  ``score.0`` Linear(h, h) -> ReLU -> ``score.2`` Linear(h, 2), read from the checkpoint's safetensors
  (the keys of ``Qwen2ForProcessRewardModel``, as vLLM loads them).
* ``value_head`` (Skywork-o1-Open-PRM): the base model plus ``v_head.summary`` Linear(h, 1) on the last
  hidden state (their ``PRM_MODEL`` / ``Qwen2ForPrmModel`` value head).

torch and transformers are imported only when a model is loaded (the ``hf`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testtime.backends.hf import fingerprint, from_pretrained, import_hf, quiet, torch_dtype
from testtime.reward.formats import detect_format, get_format
from testtime.reward.neural import Encoded, PRMFormat, Readout, TokenPRM


def _weight_files(root: Path) -> dict[str, Path]:
    """Weight name -> safetensors file, for single-file and sharded checkpoints ({} if none)."""
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: root / file for name, file in weight_map.items()}
    single = root / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    return {}


def _read_tensors(root: Path, files: dict[str, Path], names: Sequence[str], what: str) -> dict[str, Any]:
    from safetensors import safe_open

    missing = [n for n in names if n not in files]
    if missing:
        raise ValueError(f"{root}: no {', '.join(missing)} in the checkpoint's safetensors (the {what} head)")
    out = {}
    for name in names:
        with safe_open(str(files[name]), framework="pt") as f:
            out[name] = f.get_tensor(name)
    return out


def _build_head(torch: Any, readout: Readout, root: Path, files: dict[str, Path], hidden: int) -> Any:
    """The Qwen PRM score head or the Skywork value head, read from the checkpoint's safetensors."""
    nn = torch.nn
    if readout.kind == "two_class":
        names = ["score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"]
        t = _read_tensors(root, files, names, "Qwen2.5-Math-PRM score")
        head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, t["score.2.weight"].shape[0]))
        if head[2].out_features != 2:
            raise ValueError(f"{root}: score head has {head[2].out_features} classes, expected 2")
        head.load_state_dict({k.removeprefix("score."): v for k, v in t.items()})
        return head
    names = ["v_head.summary.weight", "v_head.summary.bias"]
    t = _read_tensors(root, files, names, "Skywork value")
    head = nn.Linear(hidden, 1)
    head.load_state_dict({"weight": t[names[0]].reshape(1, hidden), "bias": t[names[1]].reshape(1)})
    return head


class _HFForward:
    """Runs a right-padded batch and returns only the numbers at the read positions."""

    def __init__(self, torch: Any, base: Any, head: Any, device: Any, pad_id: int, config: Any) -> None:
        """``head``: a module on the last hidden state, or (label tokens) the LM's output embedding,
        of which only the two label rows are used."""
        self.torch, self.base, self.head, self.device, self.pad_id = torch, base, head, device, pad_id
        # Logit transforms some causal LMs apply after the head (none of the published PRM families do).
        self.logit_scale = getattr(config, "logit_scale", None)
        self.softcap = getattr(config, "final_logit_softcapping", None)

    def _label_logits(self, h: Any, readout: Readout) -> Any:
        ids = self.torch.tensor(list(readout.token_ids), device=h.device)
        weight = self.head.weight.index_select(0, ids).float()
        bias = getattr(self.head, "bias", None)
        bias = bias.index_select(0, ids).float() if bias is not None else None
        logits = self.torch.nn.functional.linear(h, weight, bias)
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        if self.softcap is not None:
            logits = self.torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def __call__(self, batch: Sequence[Encoded], readout: Readout) -> list[np.ndarray]:
        torch = self.torch
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
            mask[i, : len(e.input_ids)] = 1
        rows = torch.tensor([i for i, e in enumerate(batch) for _ in e.positions], dtype=torch.long)
        cols = torch.tensor([p for e in batch for p in e.positions], dtype=torch.long)
        with torch.inference_mode():
            out = self.base(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
            # Only the read positions go through the head, upcast to float32 as Skywork's ValueHead
            # does: a few (positions x hidden) products, so full precision costs nothing.
            picked = out.last_hidden_state[rows.to(self.device), cols.to(self.device)].float()
            raw = self._label_logits(picked, readout) if readout.kind == "label_tokens" else self.head(picked)
            raw = raw.float().cpu().numpy()
        counts = np.cumsum([len(e.positions) for e in batch])[:-1]
        return [np.ascontiguousarray(r, dtype=np.float32) for r in np.split(raw, counts)]

    def close(self) -> None:
        cuda = self.device.type == "cuda"
        self.base = self.head = None
        if cuda:
            self.torch.cuda.empty_cache()


def load_hf_prm(
    path: str,
    format: str | PRMFormat | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_batch_tokens: int | None = None,
    max_batch_size: int | None = None,
    name: str | None = None,
    *,
    format_options: Mapping[str, Any] | None = None,
) -> TokenPRM:
    """A PRM from a local transformers checkpoint directory, scoring in its authors' published format.

    ``format``: a name from ``reward.formats.FORMATS`` (built with ``format_options``, e.g.
    ``{"chat": True}`` for ``generic``) or a format object; None detects it from the checkpoint and
    fails when that is ambiguous. ``device`` defaults to cuda when available, else cpu;
    ``dtype`` to bfloat16 on GPU and float32 on CPU. Batch limits default to 32768 tokens / 64 rows on
    GPU and 2048 tokens / 8 rows on CPU, where big padded batches are slower than small ones
    (bench/prm_throughput.py: one 32-row batch ran at 0.78x of one solution per call; 8-row batches at 1.11x).
    The name defaults to the directory name plus a fingerprint of its config and weight files, so the
    store never mixes rewards of two checkpoints that share a directory name.
    """
    torch, transformers = import_hf()
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{path}: not a local checkpoint directory")
    with quiet(transformers):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)
    files = _weight_files(root)
    if format is None:
        format = detect_format(tokenizer, config, files)
        if format is None:
            raise ValueError(
                f"{path}: cannot tell which PRM format this checkpoint uses; pass format= one of "
                "generic, math-shepherd, qwen-prm, rlhflow, skywork"
            )
    fmt = get_format(format, **dict(format_options or {})) if isinstance(format, str) else format
    readout = fmt.readout(tokenizer)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tdtype = torch_dtype(torch, dtype, dev)

    if readout.kind == "label_tokens":
        model = from_pretrained(transformers.AutoModelForCausalLM, path, transformers, tdtype).to(dev)
        base, head, modules = model.base_model, model.get_output_embeddings(), [model]
    else:
        base = from_pretrained(transformers.AutoModel, path, transformers, tdtype).to(dev)
        head = _build_head(torch, readout, root, files, base.config.hidden_size).to(dev).eval()
        modules = [base, head]
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    forward = _HFForward(torch, base, head, dev, pad_id, config)
    n_params = sum(p.numel() for m in modules for p in m.parameters())
    on_gpu = dev.type != "cpu"
    return TokenPRM(
        name or f"{root.name}[{fmt.name}]@{fingerprint(root)}",
        fmt,
        tokenizer,
        forward,
        n_params=n_params,
        max_batch_tokens=max_batch_tokens or (32768 if on_gpu else 2048),
        max_batch_size=max_batch_size or (64 if on_gpu else 8),
        close=forward.close,
    )
