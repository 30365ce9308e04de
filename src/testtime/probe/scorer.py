"""A probe PRM: a small trained head over the policy's own hidden states at each step's end.

``--prm probe`` is the head shipped for the embedded default policy (SmolLM2-135M, trained on `arith`
with Monte-Carlo labels; see ``testtime prm``); ``--prm probe:PATH`` loads any artifact made by
``testtime prm train``. The artifact names the policy it was trained on; loading it next to another
policy fails unless ``?force=true``, since its features would mean nothing there.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from testtime.probe.features import FeatureExtractor, extractor_for
from testtime.probe.head import ProbeArtifact
from testtime.reward.base import BatchScorer, Scored, ScoreRequest, check_scored

SHIPPED = {"smollm2-135m": "smollm2-135m-arith.json"}  # embedded model -> its shipped probe


def shipped_probe(model: str = "smollm2-135m") -> Path:
    name = SHIPPED.get(model)
    if name is None:
        raise ValueError(f"no probe ships for {model!r} (shipped: {', '.join(SHIPPED)}); pass probe:PATH")
    return Path(str(resources.files("testtime.probe").joinpath("artifacts", name)))


def probe_path(target: str | None) -> Path:
    """A `probe[:TARGET]` spec's artifact: a .json path, or the probe shipped for an embedded model."""
    if target and Path(target).suffix == ".json":
        return Path(target)
    return shipped_probe(target or "smollm2-135m")


class ProbeScorer(BatchScorer):
    """Features for every step of every solution in batched forward passes, then the head (numpy)."""

    outcome_only = False

    def __init__(self, artifact: ProbeArtifact, extractor: FeatureExtractor, owns_extractor: bool = True) -> None:
        self.artifact = artifact
        self.extractor = extractor
        self.owns_extractor = owns_extractor
        self.n_params = extractor.n_params
        self.name = f"probe@{artifact.digest}"

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        feats = self.extractor.features(requests)
        out = []
        for req, (x, tokens) in zip(requests, feats, strict=True):
            rewards = [float(r) for r in self.artifact.head(x)] if len(req.steps) else []
            out.append(Scored(rewards, tokens))
        return check_scored(self.name, requests, out)

    def close(self) -> None:
        if self.owns_extractor:
            self.extractor.close()


def load_probe(
    target: str | None, policy: Any = None, force: bool = False, **options: Any
) -> ProbeScorer:
    """`target` is an artifact path, an embedded model name with a shipped probe, or None (the default's).

    The features come from the artifact's policy model (its GGUF for llamacpp probes) even when the run's
    policy is served elsewhere; its fingerprint must match the artifact's.
    """
    path = probe_path(target)
    artifact = ProbeArtifact.load(path)
    want = artifact.policy.get("model_id")
    have = getattr(policy, "model_id", None)
    if policy is not None and have != want and not force:
        raise ValueError(f"probe {path}: trained on policy {want}, but this run's policy is {have} "
                         "(a probe reads its own policy's hidden states; pass ?force=true to use it anyway)")
    feat = artifact.features
    extractor = extractor_for(feat.get("backend", "llamacpp"), artifact.policy["model"], **options)
    if extractor.name != feat.get("extractor") and not force:
        extractor.close()
        raise ValueError(f"probe {path}: features were {feat.get('extractor')}, this extractor gives "
                         f"{extractor.name} (another model file or layer)")
    return ProbeScorer(artifact, extractor)
