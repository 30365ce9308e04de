"""The probe head and its versioned artifact: a few kilobytes of JSON, applied with numpy.

Training needs torch (probe/train.py); scoring with a trained head needs only numpy, so a shipped probe
works on the default install.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "testtime-probe"
VERSION = 1


def _encode(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "float32": base64.b64encode(a.tobytes()).decode("ascii")}


def _decode(d: dict[str, Any], where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(d["float32"])
        return np.frombuffer(raw, dtype=np.float32).reshape(d["shape"]).copy()
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: not an encoded float32 array ({e})") from None


@dataclass
class ProbeHead:
    """Standardise, then affine layers with ReLU between them, then a sigmoid: P(step leads to a correct answer).

    One layer is logistic regression; two are a one-hidden-layer MLP.
    """

    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight (in, out), bias (out,))

    @property
    def kind(self) -> str:
        return "logistic" if len(self.layers) == 1 else "mlp"

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, dtype=np.float32) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mean": _encode(self.mean),
            "scale": _encode(self.scale),
            "layers": [{"weight": _encode(w), "bias": _encode(b)} for w, b in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "probe") -> ProbeHead:
        layers = [(_decode(x["weight"], f"{where}: head.layers[{i}].weight"),
                   _decode(x["bias"], f"{where}: head.layers[{i}].bias")) for i, x in enumerate(d["layers"])]
        head = cls(_decode(d["mean"], f"{where}: head.mean"), _decode(d["scale"], f"{where}: head.scale"), layers)
        width = head.dim
        for i, (w, b) in enumerate(layers):
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ValueError(f"{where}: head.layers[{i}]: shapes {w.shape} / {b.shape} do not chain from {width}")
            width = w.shape[1]
        if width != 1:
            raise ValueError(f"{where}: head: the last layer has {width} outputs, expected 1")
        return head


@dataclass
class ProbeArtifact:
    """A trained probe: the head, the policy and feature extractor it belongs to, and how it was made."""

    head: ProbeHead
    policy: dict[str, Any]  # backend, model (name / path / id), model_id (fingerprint checked at load)
    features: dict[str, Any]  # extractor name, backend, layer, context rule, dim
    training: dict[str, Any] = field(default_factory=dict)  # labels summary, split, optimiser, epochs
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out AUROC, BCE, Brier

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "policy": self.policy, "features": self.features,
                "training": self.training, "metrics": self.metrics, "head": self.head.to_dict()}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @property
    def digest(self) -> str:
        """Short hash of the head and its feature extractor: part of the scorer's name (and store keys)."""
        payload = json.dumps({"head": self.head.to_dict(), "features": self.features.get("extractor")},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]

    @classmethod
    def load(cls, path: str | Path) -> ProbeArtifact:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such probe file (train one with `testtime prm train`)")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {e.lineno}: not JSON ({e.msg})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{path}: field format: not a {FORMAT} file")
        if d.get("version") != VERSION:
            raise ValueError(f"{path}: field version: {d.get('version')!r}, this testtime reads {VERSION}")
        for key in ("head", "policy", "features"):
            if not isinstance(d.get(key), dict):
                raise ValueError(f"{path}: field {key}: missing")
        try:
            head = ProbeHead.from_dict(d["head"], str(path))
        except KeyError as e:
            raise ValueError(f"{path}: field head.{e.args[0]}: missing") from None
        dim = d["features"].get("dim")
        if dim is not None and dim != head.dim:
            raise ValueError(f"{path}: field features.dim: {dim}, but the head reads {head.dim} features")
        return cls(head, d["policy"], d["features"], d.get("training", {}), d.get("metrics", {}))
