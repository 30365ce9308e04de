"""transformers policy backend (the ``[hf]`` extra): a causal LM run by our own batched decode loop.

Decisions, and why:

- Batch-first. Every sample of every request of a ``generate`` call becomes one row; rows are packed
  into left-padded batches (at most ``max_batch_rows`` rows and ``max_batch_tokens`` KV-cache tokens,
  rows x (longest prompt + longest max_tokens)), and each batch runs ONE decode loop over a KV cache.
  Rows are ordered by prompt length, so a batch holds prompts of similar length (little padding).
- Prefix reuse inside a batch: each distinct prompt is prefilled once and its KV cache copied to all
  its rows (siblings, or other requests with the same prompt). Distinct prompts that share a long token
  prefix (the few-shot turns of problems of one level, the partial solution of sibling beams) prefill it
  once: the prefix as one sequence, its KV copied to each prompt, then only the suffixes, batched (on
  SmolLM2's few-shot CoT prompts this cuts the prefill about 5x: 30 prompts of ~400 tokens share ~280 per
  level). The first row of a prompt in a batch is charged the prompt, less the shared prefix another
  prompt of the batch already computed; the rest count it as cached (``cached_prompt_tokens``), as the
  llama.cpp backend does.
- The KV cache is written in place into buffers sized for the whole batch (prompt + max_tokens): the
  stock DynamicCache concatenates every layer's keys and values at every step, an O(length) copy per
  token that took half of a decode step's time at 30 rows x 500 tokens (SmolLM2 on CPU).
- Seed contract without per-row generators. Sample i of a request is drawn with seed ``seed + i``: row r
  at decode step t draws one uniform u = hash(seed_r, t) (splitmix64, computed for the whole batch up
  front in numpy) and takes the inverse-CDF token of its own tempered, top-k / top-p filtered
  distribution (``searchsorted`` over the cumulative probabilities, in vocabulary order). Every
  operation is row-wise, so a row's tokens depend only on (prompt, seed + i) and the model: not on the
  other rows, the padding, or how a request was split (up to float rounding of the batched matmuls).
  One uniform per row and step keeps the sampler to a handful of kernels for the whole batch; the
  alternative, Gumbel-max with hashed noise, hashes rows x vocabulary integers every step.
  Temperature 0 is greedy (argmax of the raw logits).
- Finish reasons as the other backends report them: an end-of-generation id (the generation config's
  ``eos_token_id`` and the tokenizer's) -> "eos" (the id is counted in ``generated_tokens``, not put in
  the text); a stop string in the decoded text -> "stop" (text cut before it, ``stop`` = that string);
  ``max_tokens`` -> "length". Stop strings are looked for only in the new text of each step (detokenised
  incrementally, a few tokens at a time). A sample's text is what its tokens add after the prompt's
  last few tokens, so prompt + text reads as the model wrote it (decoded alone, a SentencePiece
  tokenizer would drop the first word's leading space). Rows that finish stop counting at once and leave the batch
  (the KV cache is compacted) once a quarter of it has finished.
- ``model_id``: ``hf:`` + folder (or hub id) name + dtype + a short hash of the config and weight
  files (``backends.hf.fingerprint``), so the store never mixes two checkpoints that share a name.
- ``generate_fixed`` decodes exactly N tokens per sample (no EOS, no stop strings) through the same
  loop, for benchmarks that compare like with like (bench/gpu_check.py).

torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from testtime.backends.hf import MissingExtraError, fingerprint, from_pretrained, import_hf, quiet, torch_dtype
from testtime.confidence import TOP_K, summarize
from testtime.policy.base import ChunkCallback, GenerationRequest, SamplingParams
from testtime.policy.prompts import prompt_token_ids, tokenizer_chat
from testtime.types import Completion

__all__ = ["HFPolicy", "MissingExtraError", "sample_uniforms"]


# -- the per-row random stream ------------------------------------------------------------------------

_U64 = (1 << 64) - 1
_CONTEXT = 5  # prompt ids decoded before the generated ones (vLLM's incremental detokeniser uses 5 too)
MIN_SHARED_PREFIX = 16  # shorter shared prefixes are not worth a separate prefill


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_uniforms(seeds: Sequence[int], steps: int) -> np.ndarray:
    """float32 [steps, rows] uniforms in [0, 1): entry (t, r) is a hash of (seeds[r], t) only.

    24-bit values, so each is exact in float32 and strictly below 1."""
    s = np.array([int(x) & _U64 for x in seeds], dtype=np.uint64)
    t = np.arange(steps, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _mix64(s + np.uint64(0x632BE59BD9B4E019))
        x = _mix64(key[None, :] + (t[:, None] + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))
    return (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


# -- rows and batches ---------------------------------------------------------------------------------


@dataclass
class _Row:
    request: int  # index into the generate call's requests
    sample: int  # sample index (the seed is request seed + sample)
    prompt: int  # index into the distinct prompt id lists
    seed: int
    params: SamplingParams
    # the prompt's last few ids, then the generated ids (EOS included when it ended the row): decoding
    # after that context keeps the first token's leading space (SentencePiece strips it at the start)
    seq: list[int] = field(default_factory=list)
    n_ctx: int = 0
    finish: str | None = None
    stop: str | None = None
    text: str = ""  # detokenised so far (rows with stop strings only)
    prefix_offset: int = 0
    read_offset: int = 0
    confidences: list[float] = field(default_factory=list)  # per generated token (testtime.confidence)

    def start(self, prompt_ids: list[int]) -> None:
        self.seq = list(prompt_ids[-_CONTEXT:])
        self.n_ctx = self.read_offset = len(self.seq)
        self.prefix_offset = 0

    @property
    def generated(self) -> int:
        return len(self.seq) - self.n_ctx


def _plan(rows: list[_Row], lengths: list[int], max_rows: int, max_tokens: int) -> list[list[_Row]]:
    """Consecutive rows (ordered longest prompt first) into batches within both bounds; a row that
    alone exceeds the token bound still gets a batch of its own."""
    batches: list[list[_Row]] = []
    cur: list[_Row] = []
    width = new = 0
    for row in rows:
        w, n = max(width, lengths[row.prompt]), max(new, row.params.max_tokens)
        if cur and (len(cur) >= max_rows or (len(cur) + 1) * (w + n) > max_tokens):
            batches.append(cur)
            cur, w, n = [], lengths[row.prompt], row.params.max_tokens
        cur.append(row)
        width, new = w, n
    if cur:
        batches.append(cur)
    return batches


class HFPolicy:
    """A causal LM from a local checkpoint folder or a hub id, run with transformers (never remote code).

    ``model`` may also be an already built ``PreTrainedModel`` (then pass ``tokenizer``; ``name``
    names it in store keys). ``device`` defaults to cuda when available, else cpu; ``dtype`` to
    bfloat16 on GPU and float32 on CPU. ``max_batch_tokens`` bounds rows x (longest prompt + longest
    max_tokens) per batch, i.e. the KV cache (default 262144 on GPU, 32768 on CPU).
    """

    def __init__(
        self,
        model: Any,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_batch_rows: int = 64,
        max_batch_tokens: int | None = None,
        tokenizer: Any = None,
        name: str | None = None,
    ):
        torch, transformers = import_hf("transformers policy backend")
        self._torch = torch
        if max_batch_rows < 1 or (max_batch_tokens is not None and max_batch_tokens < 1):
            raise ValueError("max_batch_rows and max_batch_tokens must be >= 1")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(model, str | Path):
            path = str(model)
            tdtype = torch_dtype(torch, dtype, dev)
            with quiet(transformers):
                if tokenizer is None or isinstance(tokenizer, str | Path):
                    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer or path))
            lm = from_pretrained(transformers.AutoModelForCausalLM, path, transformers, tdtype).to(dev)
            root = Path(path).expanduser()
            label = root.resolve().name if root.is_dir() else path
            fp = fingerprint(root) if root.is_dir() else _config_fingerprint(lm.config)
        else:
            lm = model.to(dev) if dtype is None else model.to(dev, torch_dtype(torch, dtype, dev))
            lm.eval()
            if tokenizer is None:
                raise ValueError("HFPolicy(model=<a loaded model>) needs tokenizer=")
            if isinstance(tokenizer, str | Path):
                with quiet(transformers):
                    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer))
            label = Path(getattr(lm.config, "name_or_path", "") or type(lm).__name__).name
            fp = _model_fingerprint(torch, lm)
        self.model = lm
        self.tokenizer = tokenizer
        self.device = dev
        self.dtype = next(lm.parameters()).dtype
        self.model_id = name or f"hf:{label}[{str(self.dtype).removeprefix('torch.')}]@{fp}"
        self.n_params = int(sum(p.numel() for p in lm.parameters()))
        self.max_batch_rows = max_batch_rows
        self.max_batch_tokens = max_batch_tokens or (262144 if dev.type == "cuda" else 32768)
        self.eos_ids = _eos_ids(lm, tokenizer)
        self.pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        params = inspect.signature(lm.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5
        self._transformers = transformers
        self._buffer_cls: Any = False  # resolved on first use (_buffer_class)
        self.calls = 0  # decode loops run (batches), for tests and benchmarks

    # -- prompts ------------------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return getattr(self.tokenizer, "chat_template", None) is not None

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return tokenizer_chat(self.tokenizer)(messages)

    def token_ids(self, text: str) -> list[int]:
        """The prompt's ids as the model sees them: the tokenizer's special tokens (BOS) are added
        unless the text already starts with the BOS text (a rendered chat template)."""
        ids = prompt_token_ids(self.tokenizer, text)
        if not ids:
            raise ValueError("empty prompt: the tokenizer gives no tokens and adds no BOS")
        return ids

    def close(self) -> None:
        cuda = self.device.type == "cuda"
        self.model = None
        if cuda:
            self._torch.cuda.empty_cache()

    # -- generation ---------------------------------------------------------------------------------

    def generate(
        self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None = None
    ) -> list[list[Completion]]:
        """Every sample of every request, decoded together in padded batches; results in request order.

        ``on_chunk(request_index, first_index, completions)`` runs once per request and batch, when the
        batch is done (a request split over batches comes back in contiguous pieces)."""
        return self._generate(requests, on_chunk, ignore_eos=False)

    def generate_fixed(self, requests: list[GenerationRequest], new_tokens: int) -> list[list[Completion]]:
        """Exactly ``new_tokens`` tokens per sample, EOS and stop strings ignored: for benchmarks
        (the same batches and decode loop as ``generate``)."""
        if new_tokens < 1:
            raise ValueError("new_tokens must be >= 1")
        fixed = [replace(r, params=replace(r.params, max_tokens=new_tokens, stop=())) for r in requests]
        return self._generate(fixed, None, ignore_eos=True)

    def _generate(
        self, requests: list[GenerationRequest], on_chunk: ChunkCallback | None, *, ignore_eos: bool
    ) -> list[list[Completion]]:
        if self.model is None:
            raise RuntimeError("HFPolicy is closed")
        prompt_index: dict[str, int] = {}
        prompt_ids: list[list[int]] = []
        for req in requests:
            if req.prompt not in prompt_index and req.n > 0:
                prompt_index[req.prompt] = len(prompt_ids)
                prompt_ids.append(self.token_ids(req.prompt))
        lengths = [len(ids) for ids in prompt_ids]
        # Longest prompt first; identical prompts adjacent (one prefill serves them all).
        order = sorted(
            (ri for ri, r in enumerate(requests) if r.n > 0),
            key=lambda ri: (-lengths[prompt_index[requests[ri].prompt]], prompt_index[requests[ri].prompt], ri),
        )
        rows = [
            _Row(ri, i, prompt_index[requests[ri].prompt], requests[ri].seed + i, requests[ri].params)
            for ri in order
            for i in range(requests[ri].first_index, requests[ri].first_index + requests[ri].n)
        ]
        results: list[list[Completion]] = [[] for _ in requests]
        for batch in _plan(rows, lengths, self.max_batch_rows, self.max_batch_tokens):
            comps = self._run_batch(batch, prompt_ids, ignore_eos)
            pieces: dict[int, list[Completion]] = {}
            for row, comp in zip(batch, comps, strict=True):
                pieces.setdefault(row.request, []).append(comp)
            for ri, done in pieces.items():
                results[ri].extend(done)
                if on_chunk is not None:
                    first = requests[ri].first_index + len(results[ri]) - len(done)
                    on_chunk(ri, first, done)
        return results

    # -- one batch ----------------------------------------------------------------------------------

    def _new_cache(self) -> Any:
        cls = self._transformers.DynamicCache
        try:
            return cls(config=self.model.config)
        except TypeError:  # transformers < 4.56
            return cls()

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any, **kw: Any) -> Any:
        kw[self._cache_kw] = cache
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kw).logits

    def _run_batch(self, rows: list[_Row], prompt_ids: list[list[int]], ignore_eos: bool) -> list[Completion]:
        torch = self._torch
        dev = self.device
        self.calls += 1
        # distinct prompts of this batch, in row order
        slot_of: dict[int, int] = {}
        for row in rows:
            slot_of.setdefault(row.prompt, len(slot_of))
        uniq = list(slot_of)
        steps = max(r.params.max_tokens for r in rows)

        for row in rows:
            row.start(prompt_ids[row.prompt])
        # sampler state, one entry per row
        temps = [r.params.temperature for r in rows]
        greedy = [t <= 0 for t in temps]
        top_k = [r.params.top_k if r.params.top_k > 0 else 0 for r in rows]
        top_p = [r.params.top_p if 0 < r.params.top_p < 1 else 1.0 for r in rows]
        sampler = _Sampler(
            torch,
            dev,
            temps=[1.0 if g else t for g, t in zip(greedy, temps, strict=True)],
            greedy=greedy,
            top_k=top_k,
            top_p=top_p,
            uniforms=sample_uniforms([r.seed for r in rows], steps),
        )
        stops = [() if ignore_eos else r.params.stop for r in rows]
        eos = frozenset() if ignore_eos else self.eos_ids
        max_new = [r.params.max_tokens for r in rows]

        with torch.inference_mode():
            cache, logits, mask, width, shared = self._prefill([prompt_ids[p] for p in uniq], steps)
            padded = not bool(mask[:, :width].all())
            select = [slot_of[r.prompt] for r in rows]
            if select != list(range(len(uniq))):  # copy each prompt's KV to its rows
                index = torch.tensor(select, device=dev)
                cache.batch_select_indices(index)
                logits, mask = logits[index], mask[index]
            next_pos = torch.tensor([len(prompt_ids[r.prompt]) for r in rows], device=dev)
            live = list(range(len(rows)))  # batch slot -> row index
            for step in range(steps):
                tokens = sampler(logits, step)
                # DeepConf's token confidence from the raw distribution: minus the mean top-k log-probability
                confs = (-logits.log_softmax(-1).topk(min(TOP_K, logits.shape[-1]), dim=-1).values.mean(-1)).tolist()
                done = False
                for ri, tok, conf in zip(live, tokens.tolist(), confs, strict=True):
                    row = rows[ri]
                    if row.finish is not None:  # finished, still in the batch until the next compaction
                        continue
                    row.seq.append(tok)
                    row.confidences.append(conf)
                    if tok in eos:
                        row.finish = "eos"
                    elif stops[ri] and self._check_stop(row, stops[ri]):
                        row.finish = "stop"
                    elif row.generated >= max_new[ri]:
                        row.finish = "length"
                    done = done or row.finish is not None
                if all(rows[ri].finish is not None for ri in live):
                    break
                if done:
                    keep = [s for s, ri in enumerate(live) if rows[ri].finish is None]
                    if len(keep) <= 3 * len(live) // 4:  # compact: finished rows leave the batch
                        index = torch.tensor(keep, device=dev)
                        cache.batch_select_indices(index)
                        mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
                        sampler.select(index)
                        live = [live[s] for s in keep]
                cols = width + step + 1
                logits = self._forward(
                    tokens[:, None], mask[:, :cols] if padded else None, (next_pos + step)[:, None], cache
                )[:, -1, :].float()
            del cache
        # the batch prefilled each distinct prompt once (less a prefix shared with an earlier prompt); its
        # later rows reused that KV
        first = {slot_of[r.prompt]: k for k, r in reversed(list(enumerate(rows)))}
        out = []
        for k, r in enumerate(rows):
            n, slot = len(prompt_ids[r.prompt]), slot_of[r.prompt]
            out.append(self._completion(r, n, cached=n if first[slot] != k else shared[slot]))
        return out

    # -- prefill ------------------------------------------------------------------------------------

    def _buffer_class(self) -> Any:
        """The in-place KV layer class, or None where the cache's layers are not all plain
        ``DynamicLayer`` (transformers < 4.56, sliding-window models): those keep the stock cache."""
        if self._buffer_cls is False:
            layer_cls = getattr(self._transformers.cache_utils, "DynamicLayer", None)
            layers = getattr(self._new_cache(), "layers", None)
            ok = layer_cls is not None and layers and all(type(x) is layer_cls for x in layers)
            self._buffer_cls = _buffered_layer(layer_cls) if ok else None
        return self._buffer_cls

    def _prefill(self, prompts: list[list[int]], steps: int) -> tuple[Any, Any, Any, int, list[int]]:
        """Every prompt's KV cache (one row each, left-padded to a common width), the logits after each,
        the attention mask [rows, width + steps] (the future tokens' columns already 1) and, per prompt,
        how many of its tokens an earlier prompt's shared prefix prefilled."""
        torch, dev = self._torch, self.device
        buffered = self._buffer_class()
        groups = _share_groups(prompts, MIN_SHARED_PREFIX) if buffered is not None else []
        grouped = {k for _, members in groups for k in members}
        shared = [0] * len(prompts)
        parts = []  # (prompt slots, cache, mask [m, w], logits [m, vocab])
        rest = [k for k in range(len(prompts)) if k not in grouped]
        if rest:
            parts.append((rest, *self._prefill_padded([prompts[k] for k in rest])))
        for p, members in groups:
            parts.append((members, *self._prefill_shared([prompts[k] for k in members], p)))
            for k in members[1:]:
                shared[k] = p
        width = max(part[2].shape[1] for part in parts)
        future = torch.ones((len(prompts), steps), dtype=torch.long, device=dev)
        if buffered is None:  # the stock cache as the one padded prefill left it
            [(_, cache, mask, logits)] = parts
            return cache, logits, torch.cat([mask, future], 1), width, shared
        # one buffer per layer, [prompts, heads, width + steps, head_dim]; each part's rows right-aligned
        mask = torch.zeros((len(prompts), width), dtype=torch.long, device=dev)
        logits = None
        layers = []
        for slots, _, m, lg in parts:
            index = torch.tensor(slots, device=dev)
            mask[:, width - m.shape[1] :].index_copy_(0, index, m)
            if logits is None:
                logits = lg.new_empty((len(prompts), lg.shape[1]))
            logits.index_copy_(0, index, lg)
        for li in range(len(parts[0][1].layers)):
            bufs = []
            for which in ("keys", "values"):
                ref = getattr(parts[0][1].layers[li], which)
                buf = ref.new_zeros((len(prompts), ref.shape[1], width + steps, ref.shape[3]))
                for slots, cache, *_ in parts:
                    t = getattr(cache.layers[li], which)
                    buf[:, :, width - t.shape[2] : width].index_copy_(0, torch.tensor(slots, device=dev), t)
                bufs.append(buf)
            layers.append(buffered(*bufs, width))
        del parts
        cache = self._new_cache()
        cache.layers = layers
        return cache, logits, torch.cat([mask, future], 1), width, shared

    def _prefill_padded(self, prompts: list[list[int]]) -> tuple[Any, Any, Any]:
        """Prompts left-padded into one forward -> (cache, mask [n, width], last logits)."""
        torch = self._torch
        width = max(len(ids) for ids in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for k, p in enumerate(prompts):
            ids[k, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[k, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        padded = any(len(p) != width for p in prompts)
        cache = self._new_cache()
        logits = self._forward(ids, mask if padded else None, positions, cache, logits_to_keep=1)
        return cache, mask, logits[:, -1, :].float()

    def _prefill_shared(self, prompts: list[list[int]], shared: int) -> tuple[Any, Any, Any]:
        """Prompts whose first ``shared`` ids agree: that prefix as one sequence, its KV copied to every
        prompt, then the suffixes in one forward, each right-aligned (pad columns between prefix and
        suffix are masked out; positions count real tokens only) -> (cache, mask, last logits)."""
        torch, dev = self._torch, self.device
        cache = self._new_cache()
        prefix = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=dev)
        self._forward(prefix, None, torch.arange(shared, device=dev)[None], cache, logits_to_keep=1)
        cache.batch_select_indices(torch.zeros(len(prompts), dtype=torch.long, device=dev))
        tails = [p[shared:] for p in prompts]
        width = max(len(t) for t in tails)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.ones((len(prompts), shared + width), dtype=torch.long)
        for k, t in enumerate(tails):
            ids[k, width - len(t) :] = torch.tensor(t, dtype=torch.long)
            mask[k, shared : shared + width - len(t)] = 0
        positions = (mask.cumsum(-1) - 1)[:, shared:].clamp(min=0)
        ids, mask, positions = ids.to(dev), mask.to(dev), positions.to(dev)
        padded = any(len(t) != width for t in tails)
        logits = self._forward(ids, mask if padded else None, positions, cache, logits_to_keep=1)
        return cache, mask, logits[:, -1, :].float()

    def _completion(self, row: _Row, prompt_tokens: int, *, cached: int) -> Completion:
        if row.finish == "stop":
            text = row.text
        else:
            end = len(row.seq) - (row.finish == "eos")  # the EOS id is counted, not printed
            text = self._continuation(row.seq[: row.n_ctx], row.seq[row.n_ctx : end])
        return Completion(
            text=text,
            finish_reason=row.finish or "length",
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=cached,
            generated_tokens=row.generated,
            stop=row.stop,
            confidence=summarize(row.confidences),
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _continuation(self, context: list[int], ids: list[int]) -> str:
        """The text ``ids`` add after ``context`` (falls back to decoding them alone when the
        context's text is not a prefix, e.g. it ends inside a multi-byte character)."""
        before = self._decode(context)
        whole = self._decode(context + ids)
        return whole[len(before) :] if whole.startswith(before) else self._decode(ids)

    def _check_stop(self, row: _Row, stops: Sequence[str]) -> bool:
        """Detokenise the row's new tokens (vLLM's incremental scheme: decode a short window and keep
        what extends the text, holding back an incomplete character) and look for a stop string in
        the new text (and the few characters before it a stop string could start in)."""
        prefix = self._decode(row.seq[row.prefix_offset : row.read_offset])
        whole = self._decode(row.seq[row.prefix_offset :])
        if len(whole) <= len(prefix) or whole.endswith("\ufffd"):
            return False
        delta = whole[len(prefix) :]
        row.prefix_offset, row.read_offset = row.read_offset, len(row.seq)
        start = max(0, len(row.text) - max(len(s) for s in stops) + 1)
        row.text += delta
        hits = [(pos, s) for s in stops if s and (pos := row.text.find(s, start)) >= 0]
        if not hits:
            return False
        pos, stop = min(hits)
        row.text, row.stop = row.text[:pos], stop
        return True


def _lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _share_groups(prompts: list[list[int]], min_shared: int) -> list[tuple[int, list[int]]]:
    """Groups of prompts (indices) that share a token prefix worth prefilling once -> [(prefix length,
    members)], every member at least one token longer than the prefix. Prompts are taken in sorted
    order (so a group's common prefix is the minimum of its neighbours'); a prompt joins the current
    group while that keeps the tokens saved, (members - 1) x prefix, from shrinking."""
    groups: list[tuple[int, list[int]]] = []
    cur: list[int] = []
    cur_p = 0
    for k in sorted(range(len(prompts)), key=lambda i: prompts[i]):
        if cur:
            prev = prompts[cur[-1]]
            pair = min(_lcp(prev, prompts[k]), len(prev) - 1, len(prompts[k]) - 1)
            new = pair if len(cur) == 1 else min(cur_p, pair)
            if new >= min_shared and len(cur) * new >= (len(cur) - 1) * cur_p:
                cur.append(k)
                cur_p = new
                continue
            if len(cur) > 1:
                groups.append((cur_p, cur))
        cur, cur_p = [k], 0
    if len(cur) > 1:
        groups.append((cur_p, cur))
    return groups


def _buffered_layer(base: type) -> type:
    """A ``DynamicLayer`` over a preallocated [rows, heads, capacity, head_dim] buffer: ``update`` writes
    the new keys and values in place and exposes views of the filled part, where the stock layer
    concatenates (copies) the whole cache at every step."""

    class BufferedLayer(base):  # type: ignore[misc, valid-type]
        def __init__(self, keys: Any, values: Any, length: int) -> None:
            super().__init__()
            self.buf_k, self.buf_v, self.length = keys, values, length
            self.device = keys.device
            self.is_initialized = True
            self._view()

        def _view(self) -> None:
            self.keys, self.values = self.buf_k[:, :, : self.length], self.buf_v[:, :, : self.length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            end = self.length + key_states.shape[-2]
            if end > self.buf_k.shape[2]:
                raise RuntimeError("HFPolicy: KV buffer overflow (more steps than the batch was sized for)")
            self.buf_k[:, :, self.length : end] = key_states
            self.buf_v[:, :, self.length : end] = value_states
            self.length = end
            self._view()
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            self.buf_k, self.buf_v = self.buf_k[indices], self.buf_v[indices]
            self._view()

    return BufferedLayer


class _Sampler:
    """Picks the next token of every row at once: greedy rows take the argmax of the raw logits; the
    others the inverse-CDF token, for their own uniform, of softmax(logits / T) after top-k / top-p
    (a row without either is never masked). Every step is a fixed handful of batched kernels."""

    def __init__(
        self,
        torch: Any,
        device: Any,
        *,
        temps: list[float],
        greedy: list[bool],
        top_k: list[int],
        top_p: list[float],
        uniforms: np.ndarray,
    ):
        self.torch = torch
        self.all_greedy, self.any_greedy = all(greedy), any(greedy)
        self.scale = any(t != 1.0 for t in temps)
        self.any_top_k, self.any_top_p = any(k > 0 for k in top_k), any(p < 1.0 for p in top_p)
        self.temp = torch.tensor(temps, dtype=torch.float32, device=device)[:, None]
        self.greedy = torch.tensor(greedy, dtype=torch.bool, device=device)
        self.top_k = torch.tensor(top_k, dtype=torch.long, device=device)[:, None]
        self.top_p = torch.tensor(top_p, dtype=torch.float32, device=device)[:, None]
        self.u = torch.from_numpy(uniforms).to(device)  # [steps, rows]

    def select(self, index: Any) -> None:
        """Keep only these batch slots (after finished rows left the batch)."""
        self.temp, self.greedy = self.temp[index], self.greedy[index]
        self.top_k, self.top_p = self.top_k[index], self.top_p[index]
        self.u = self.u[:, index]

    def _filter(self, x: Any) -> Any:
        torch = self.torch
        ranked = x.sort(dim=-1, descending=True).values
        thresh = torch.full_like(ranked[:, :1], float("-inf"))
        if self.any_top_k:
            kth = ranked.gather(1, self.top_k.clamp(1, ranked.shape[1]) - 1)
            thresh = torch.where(self.top_k > 0, kth, thresh)
        if self.any_top_p:
            p = ranked.masked_fill(ranked < thresh, float("-inf")).softmax(-1)
            before = p.cumsum(-1) - p  # probability mass ranked above each token
            keep = (before < self.top_p).sum(-1, keepdim=True).clamp(min=1)  # smallest set with mass >= top_p
            thresh = torch.where(self.top_p < 1.0, torch.maximum(thresh, ranked.gather(1, keep - 1)), thresh)
        return x.masked_fill(x < thresh, float("-inf"))

    def __call__(self, logits: Any, step: int) -> Any:
        torch = self.torch
        if self.all_greedy:
            return logits.argmax(-1)
        x = logits / self.temp if self.scale else logits
        if self.any_top_k or self.any_top_p:
            x = self._filter(x)
        cdf = x.softmax(-1).cumsum(-1)
        total = cdf[:, -1:]
        # u * total < total, so the token found has positive probability
        value = torch.minimum(self.u[step][:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
        tokens = torch.searchsorted(cdf, value, right=True).squeeze(1)
        if self.any_greedy:
            tokens = torch.where(self.greedy, logits.argmax(-1), tokens)
        return tokens


def _eos_ids(lm: Any, tokenizer: Any) -> frozenset[int]:
    """End-of-generation ids: the generation config's (else the model config's) and the tokenizer's."""
    ids: set[int] = set()
    gen = getattr(lm, "generation_config", None)
    for value in (getattr(gen or lm.config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _config_fingerprint(config: Any) -> str:
    """A hub model: hash of its config and the revision it was loaded from."""
    h = hashlib.sha256(config.to_json_string(use_diff=False).encode())
    h.update(str(getattr(config, "_commit_hash", None)).encode())
    return h.hexdigest()[:10]


def _model_fingerprint(torch: Any, lm: Any) -> str:
    """An in-memory model: hash of its config, every parameter's name, shape and dtype, and the first
    values of each (cheap, and different for two random initialisations)."""
    h = hashlib.sha256(lm.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in lm.named_parameters():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            h.update(p.detach().reshape(-1)[:16].float().cpu().numpy().tobytes())
    return h.hexdigest()[:10]
