"""Probe PRMs on the real embedded SmolLM2 (CPU): llama.cpp features, retraining from a small committed label
set, and the shipped probe as a scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testtime.probe.features import LlamaCppFeatures, feature_context
from testtime.probe.head import ProbeArtifact
from testtime.probe.labels import read_labels
from testtime.probe.scorer import shipped_probe
from testtime.reward import load_scorer
from testtime.reward.base import ScoreRequest

pytestmark = pytest.mark.integration

SMALL_LABELS = Path(__file__).parent / "data" / "probe-labels-small.jsonl"


@pytest.fixture(scope="module")
def features(smollm2):
    ex = LlamaCppFeatures(smollm2.info.path, slots=2, ctx_per_slot=1024)
    yield ex
    ex.close()


def test_one_pass_per_solution_equals_one_pass_per_prefix(features):
    steps = ("Step 1: 3 + 4 = 7.\n\n", "Step 2: 7 * 2 = 14.\n\n", "The answer is 14.")
    q = "Tom has 3 apples and gets 4 more. He doubles them. How many?"
    full, tokens = features.features([ScoreRequest(q, steps)])[0]
    assert full.shape == (3, 576) and tokens > 20
    for k in range(1, 3):
        prefix, _ = features.features([ScoreRequest(q, steps[:k])])[0]
        # causal attention: the state at step k's end does not see later steps
        assert np.allclose(prefix, full[:k], atol=1e-3)
    # the context is the policy's own chat template around the question
    ctx = feature_context(features._chat, q)
    assert q in ctx and ctx.startswith("<|im_start|>")
    # different step text, different state
    other, _ = features.features([ScoreRequest(q, ("Step 1: 3 + 4 = 8.\n\n",))])[0]
    assert not np.allclose(other[0], full[0], atol=1e-2)


def test_retrain_a_head_on_the_small_committed_label_set(tmp_path):
    rows, meta = read_labels(SMALL_LABELS)
    assert rows and meta["policy"]["model"] == "smollm2-135m"
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-m", "testtime.cli", "prm", "train", "--labels", str(SMALL_LABELS), "--out", str(out),
         "--store", str(tmp_path / "store"), "--head", "logistic", "--epochs", "300", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["train_rows"] + summary["val_rows"] == sum(len(s.steps) for s in rows)
    art = ProbeArtifact.load(out)
    assert art.policy["model"] == "smollm2-135m" and art.features["dim"] == 576
    assert art.metrics["val_auroc_hard"] == summary["val_auroc_hard"]


def test_shipped_probe_scores_through_load_scorer(smollm2):
    art = ProbeArtifact.load(shipped_probe())
    assert art.policy["model_id"] == smollm2.model_id  # the shipped head belongs to the embedded model
    scorer = load_scorer("probe", smollm2)
    try:
        q = "Maria has 4 pencils. She buys 5 more pencils. How many pencils does Maria have now?"
        right = ("Step 1: 4 + 5 = 9.\n\n", "The answer is 9.")
        out = scorer.score_batch([ScoreRequest(q, right), ScoreRequest(q, right[:1])])
        assert len(out[0].rewards) == 2 and all(0.0 < r < 1.0 for r in out[0].rewards)
        assert out[1].rewards[0] == pytest.approx(out[0].rewards[0], abs=1e-4)  # causal: same first step
    finally:
        scorer.close()


def test_label_then_eval_cli_reports_auroc_and_best_of_n(tmp_path):
    common = ["--dataset", "arith", "--limit", "3", "--level", "1", "--level", "2", "--out", str(tmp_path),
              "--solutions", "2", "--rollouts", "2", "--json"]
    label = subprocess.run([sys.executable, "-m", "testtime.cli", "prm", "label", "--seed", "1", *common],
                           capture_output=True, text=True, timeout=600)
    assert label.returncode == 0, label.stderr
    lab = json.loads(label.stdout.strip().splitlines()[-1])
    assert lab["solutions"] == 6 and lab["steps"] >= 6 and Path(lab["labels"]).is_file()
    ev = subprocess.run([sys.executable, "-m", "testtime.cli", "prm", "eval", "--prm", "arith-check", "--n", "2",
                         *common], capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr
    s = json.loads(ev.stdout.strip().splitlines()[-1])
    # eval relabels the same problems from the store: the same labels file, nothing generated twice
    assert s["labels"] == lab["labels"] and s["problems"] == 3
    assert s["auroc"] is None or 0.0 <= s["auroc"] <= 1.0
    assert set(s["bon_by_level"]) == {"1", "2"} == set(s["majority_by_level"])
    assert 0.0 <= s["bon@2"] <= s["pass@2"] and 0.0 <= s["majority@2"] <= s["pass@2"]
    assert s["pair"] == "prm_min_max" and "prm_min_max" in s["bon_selections"]
