"""Probe PRMs: Monte-Carlo labels, step read positions, AUROC, training, the artifact and the scorer."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from testtime.policy.base import GenerationRequest
from testtime.policy.prompts import PromptConfig
from testtime.probe.features import CachedFeatures, encode_steps
from testtime.probe.head import ProbeArtifact, ProbeHead
from testtime.probe.labels import (
    LabelConfig,
    LabeledSolution,
    label_problems,
    read_labels,
    rollout_seed,
    step_labels,
    write_labels,
)
from testtime.probe.metrics import auroc, brier
from testtime.probe.pipeline import exclude_seen, question_digest, step_arrays, step_auroc
from testtime.probe.scorer import ProbeScorer, load_probe
from testtime.probe.train import TrainConfig, TrainData, split_groups, train_head
from testtime.replay import CachedGenerator
from testtime.reward.base import ScoreRequest
from testtime.search.base import SearchContext
from testtime.store import Store
from testtime.types import Completion, Problem

# -- AUROC ------------------------------------------------------------------------------------------------


def _pairwise_auroc(s, y):
    pos = [a for a, b in zip(s, y, strict=True) if b]
    neg = [a for a, b in zip(s, y, strict=True) if not b]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_known_values():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert auroc([0.3, 0.1, 0.4, 0.35], [0, 0, 1, 1]) == 1.0
    assert auroc([0.1, 0.2], [1, 1]) is None
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1])


def test_auroc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, size=30) / 4.0  # many ties
        y = rng.integers(0, 2, size=30)
        if y.all() or not y.any():
            continue
        assert auroc(s, y) == pytest.approx(_pairwise_auroc(s, y))


def test_brier():
    assert brier([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert brier([0.5, 0.5], [1.0, 0.0]) == 0.25


# -- labels ------------------------------------------------------------------------------------------------

GOOD = "Step 1: good.\n\n"


class RolloutPolicy:
    """Full solutions alternate a sound and a broken second step; rollouts after a 'bad' step never reach
    the answer, others reach it in 3 of 4 samples."""

    model_id = "rollout-fake"
    n_params = 1000

    def __init__(self) -> None:
        self.calls: list[list[GenerationRequest]] = []

    def render_chat(self, messages):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def _text(self, req: GenerationRequest, i: int) -> str:
        prefix = req.prompt.split("<assistant>", 1)[1]
        if not prefix:
            if i % 2 == 0:
                return GOOD + "Step 2: good.\n\nThe answer is 5."
            return GOOD + "Step 2: bad.\n\nThe answer is 7."
        if "bad" in prefix:
            return "The answer is 7."
        return "The answer is 5." if i % 4 < 3 else "The answer is 9."

    def generate(self, requests, on_chunk=None):
        self.calls.append(list(requests))
        out = []
        for ri, r in enumerate(requests):
            comps = [Completion(self._text(r, i), "eos", 10, 0, 5) for i in range(r.first_index, r.first_index + r.n)]
            if on_chunk:
                on_chunk(ri, r.first_index, comps)
            out.append(comps)
        return out

    def close(self):
        pass


def _ctx(policy, store):
    return SearchContext(generator=CachedGenerator(policy, store), prompt=PromptConfig(fewshot=0), seed=3)


def test_step_labels():
    assert step_labels([True, False, True, True]) == (0.75, 1)
    assert step_labels([False, False]) == (0.0, 0)
    with pytest.raises(ValueError):
        step_labels([])


def test_label_problems_monte_carlo_labels(tmp_path):
    policy = RolloutPolicy()
    problem = Problem("p1", "What is 2 + 3?", "5", kind="number", meta={"level": 1})
    with Store(tmp_path) as store:
        ctx = _ctx(policy, store)
        labeled, stats = label_problems([problem], ctx, LabelConfig(solutions=2, rollouts=4))
    good, broken = labeled
    assert good.steps == [GOOD, "Step 2: good.\n\n", "The answer is 5."]
    assert (good.soft, good.hard, good.rollouts, good.correct) == ([0.75, 0.75, 1.0], [1, 1, 1], [4, 4, 0], True)
    assert (broken.soft, broken.hard, broken.correct) == ([0.75, 0.0, 0.0], [1, 0, 0], False)
    # one call for the solutions, one for every rollout; the shared first step is one request
    assert len(policy.calls) == 2
    rollout_reqs = policy.calls[1]
    assert len(rollout_reqs) == 3 and all(r.n == 4 for r in rollout_reqs)
    seed = ctx.problem_seed(problem)
    assert {r.seed for r in rollout_reqs} == {rollout_seed(seed, GOOD), rollout_seed(seed, GOOD + "Step 2: good.\n\n"),
                                             rollout_seed(seed, GOOD + "Step 2: bad.\n\n")}
    assert stats.steps == 6 and stats.solutions == 2 and stats.rollouts == 12
    # the fake charges every sample 10 prompt tokens, none cached: 2 solutions + 12 rollouts generated now
    assert (stats.new_generations, stats.prompt_tokens_evaluated, stats.prompt_tokens_cached) == (14, 140, 0)
    assert stats.positive_hard == pytest.approx(4 / 6)
    assert stats.by_position["last"]["positive_hard"] == 0.5
    # a rerun replays everything from the store
    with Store(tmp_path) as store:
        again, stats2 = label_problems([problem], _ctx(policy, store), LabelConfig(solutions=2, rollouts=4))
    assert len(policy.calls) == 2 and stats2.new_generations == 0 and stats2.prompt_tokens_evaluated == 0
    assert [s.soft for s in again] == [s.soft for s in labeled]


def test_labels_file_roundtrip_and_errors(tmp_path):
    s = LabeledSolution("p", "q", "5", "number", 1, 0, ["a\n\n", "b"], [0.5, 1.0], [1, 1], [4, 0], True, "eos")
    path = write_labels(tmp_path / "l.jsonl", [s, s], {"policy": {"backend": "llamacpp"}})
    rows, meta = read_labels(path)
    assert rows == [s, s] and meta["policy"]["backend"] == "llamacpp"
    path.write_text(s.to_json() + "\n{not json\n")
    with pytest.raises(ValueError, match=r"l.jsonl line 2: not JSON"):
        read_labels(path)
    bad = json.loads(s.to_json())
    bad["soft"] = [0.5]
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"line 1: field soft/hard"):
        read_labels(path)
    with pytest.raises(ValueError, match="no such labels file"):
        read_labels(tmp_path / "missing.jsonl")


# -- read positions --------------------------------------------------------------------------------------


def test_encode_steps_reads_last_non_whitespace_token():
    def tok(text):  # one token per character
        return [ord(c) for c in text]

    ids, pos = encode_steps(tok, [1, 2], ["ab\n\n", "c", "  \n\n", "de"])
    text = "ab\n\nc  \n\nde"
    assert ids == [1, 2] + [ord(c) for c in text]
    assert [chr(ids[p]) for p in pos] == ["b", "c", "c", "e"]


# -- training ----------------------------------------------------------------------------------------------


def _synthetic(n_problems=60, steps=6, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    xs, soft, groups = [], [], []
    for p in range(n_problems):
        x = rng.normal(size=(steps, dim))
        xs.append(x)
        soft.extend(1 / (1 + np.exp(-2 * x @ w)))
        groups += [f"p{p}"] * steps
    soft = np.asarray(soft, np.float32)
    hard = (rng.random(len(soft)) < soft).astype(np.int64)
    return TrainData(np.concatenate(xs).astype(np.float32), soft, hard, groups)


def test_split_groups_keeps_problems_whole():
    groups = [f"p{i // 3}" for i in range(300)]
    val = split_groups(groups, 0.25, seed=1)
    held = {g for g, v in zip(groups, val, strict=True) if v}
    kept = {g for g, v in zip(groups, val, strict=True) if not v}
    assert held and kept and not held & kept
    assert 0.1 < len(held) / 100 < 0.4
    assert (split_groups(groups, 0.25, seed=1) == val).all()
    assert not (split_groups(groups, 0.25, seed=2) == val).all()


@pytest.mark.parametrize("head", ["logistic", "mlp"])
def test_train_head_learns_a_linear_signal(head):
    data = _synthetic()
    probe, metrics = train_head(data, TrainConfig(head=head, hidden=8, epochs=400, patience=50))
    assert probe.kind == head
    assert metrics["val_auroc_hard"] > 0.75  # the Bayes-optimal AUROC here is about 0.8
    assert metrics["val_problems"] + metrics["train_problems"] == 60
    # the numpy head reproduces what training measured
    val = split_groups(data.groups, 0.2, 0)
    assert auroc(probe(data.x[val]), data.hard[val]) == pytest.approx(metrics["val_auroc_hard"])


def test_train_head_on_noise_is_near_chance():
    data = _synthetic()
    rng = np.random.default_rng(5)
    data.soft = rng.random(len(data.soft)).astype(np.float32)
    data.hard = (rng.random(len(data.soft)) < 0.5).astype(np.int64)
    _, metrics = train_head(data, TrainConfig(head="logistic", epochs=300, patience=30))
    assert abs(metrics["val_auroc_hard"] - 0.5) < 0.15


def test_train_config_errors():
    with pytest.raises(ValueError, match="head"):
        TrainConfig(head="forest").check()
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0).check()
    data = _synthetic(n_problems=1)
    with pytest.raises(ValueError, match="too few"):
        train_head(data, TrainConfig())


# -- artifact ---------------------------------------------------------------------------------------------


def _head(dim=4, hidden=3, seed=0):
    rng = np.random.default_rng(seed)
    return ProbeHead(rng.normal(size=dim).astype(np.float32), (rng.random(dim) + 0.5).astype(np.float32),
                     [(rng.normal(size=(dim, hidden)).astype(np.float32), rng.normal(size=hidden).astype(np.float32)),
                      (rng.normal(size=(hidden, 1)).astype(np.float32), rng.normal(size=1).astype(np.float32))])


def test_head_matches_a_torch_forward():
    torch = pytest.importorskip("torch")
    head = _head()
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    (w1, b1), (w2, b2) = head.layers
    h = torch.relu(torch.from_numpy((x - head.mean) / head.scale) @ torch.from_numpy(w1) + torch.from_numpy(b1))
    ref = torch.sigmoid(h @ torch.from_numpy(w2) + torch.from_numpy(b2))[:, 0].numpy()
    assert np.allclose(head(x), ref, atol=1e-6)


def _artifact(head=None, model_id="rollout-fake"):
    return ProbeArtifact(head or _head(), {"backend": "llamacpp", "model": "m", "model_id": model_id},
                         {"extractor": "fake-extractor", "backend": "llamacpp", "dim": 4})


def test_artifact_roundtrip_and_errors(tmp_path):
    art = _artifact()
    path = art.save(tmp_path / "p.json")
    back = ProbeArtifact.load(path)
    x = np.ones((2, 4), np.float32)
    assert np.array_equal(back.head(x), art.head(x)) and back.digest == art.digest
    assert back.digest != _artifact(_head(seed=1)).digest
    d = json.loads(path.read_text())
    d["version"] = 99
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="field version"):
        ProbeArtifact.load(path)
    d["version"] = 1
    d["head"]["layers"][1]["weight"] = d["head"]["layers"][0]["weight"]
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"head.layers\[1\]"):
        ProbeArtifact.load(path)
    path.write_text("{\n\n oops")
    with pytest.raises(ValueError, match="line 3"):
        ProbeArtifact.load(path)
    with pytest.raises(FileNotFoundError):
        ProbeArtifact.load(tmp_path / "none.json")


# -- the scorer -------------------------------------------------------------------------------------------


class FakeExtractor:
    name = "fake-extractor"
    n_params = 10

    def __init__(self):
        self.seen: list[ScoreRequest] = []

    def features(self, requests):
        self.seen.extend(requests)
        return [(np.full((len(r.steps), 4), float(len(r.question)), np.float32), 7) for r in requests]

    def close(self):
        pass


def test_probe_scorer_applies_the_head_to_each_step():
    art = _artifact()
    ex = FakeExtractor()
    scorer = ProbeScorer(art, ex)
    out = scorer.score_batch([ScoreRequest("abc", ("s1", "s2")), ScoreRequest("abcdef", ("s1",))])
    assert out[0].rewards == pytest.approx([float(art.head(np.full((1, 4), 3.0))[0])] * 2)
    assert out[1].rewards == pytest.approx([float(art.head(np.full((1, 4), 6.0))[0])])
    assert out[0].tokens == 7 and scorer.name == f"probe@{art.digest}"


def test_load_probe_refuses_another_policy(tmp_path, monkeypatch):
    path = _artifact().save(tmp_path / "p.json")
    monkeypatch.setattr("testtime.probe.scorer.extractor_for", lambda *a, **k: FakeExtractor())

    class Other:
        model_id = "another-model"

    with pytest.raises(ValueError, match="trained on policy rollout-fake"):
        load_probe(str(path), Other())
    assert load_probe(str(path), Other(), force=True).name.startswith("probe@")
    assert load_probe(str(path), RolloutPolicy()).name.startswith("probe@")


def test_cached_features_compute_only_missing(tmp_path):
    ex = FakeExtractor()
    with Store(tmp_path) as store:
        cached = CachedFeatures(ex, store)
        reqs = [ScoreRequest("q1", ("a", "b")), ScoreRequest("q2", ("c",)), ScoreRequest("q1", ("a", "b"))]
        first = cached.features(reqs)
        assert len(ex.seen) == 2  # the duplicate is computed once
        second = cached.features(reqs[:2] + [ScoreRequest("q3", ("d",))])
        assert len(ex.seen) == 3
        assert np.array_equal(first[0][0], second[0][0]) and second[0][1] == 7


# -- evaluation helpers ----------------------------------------------------------------------------------


def test_step_auroc_splits_intermediate_steps():
    a = LabeledSolution("p", "q", "5", "number", 1, 0, ["x", "y", "z"], [1, 1, 1], [1, 1, 1], [4, 4, 0], True, "eos")
    b = LabeledSolution("r", "q", "5", "number", 2, 0, ["x", "y", "z"], [0, 0, 0], [0, 0, 0], [4, 4, 0], False, "eos")
    # intermediate steps are perfectly ranked, last steps inverted
    res = step_auroc([a, b], [[0.9, 0.8, 0.1], [0.2, 0.3, 0.95]])
    assert res["auroc_intermediate"] == 1.0
    assert res["auroc"] == pytest.approx(4 / 9)  # 4 of 9 positive-negative pairs ranked right
    assert res["auroc_by_level"] == {"1": None, "2": None}
    data = step_arrays([a, b], [(np.zeros((3, 2)), 1), (np.ones((3, 2)), 1)])
    assert data.x.shape == (6, 2) and list(data.hard) == [1, 1, 1, 0, 0, 0] and data.groups[3] == "r"


def test_exclude_seen_drops_training_questions():
    ps = [Problem("a", "q1", "1"), Problem("b", "q2", "2")]
    kept, n = exclude_seen(ps, [question_digest("q2")])
    assert [p.id for p in kept] == ["a"] and n == 1


def test_grouped_auroc_ignores_cross_problem_pairs():
    from testtime.probe.metrics import grouped_auroc

    # easy problem a (high scores, mostly positive) and hard problem b: the pooled AUROC credits telling a
    # from b, but inside each problem the ranking is inverted
    scores = [0.8, 0.9, 0.85, 0.95, 0.1, 0.2, 0.15, 0.05]
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    groups = ["a"] * 4 + ["b"] * 4
    assert grouped_auroc(scores, labels, groups) == 0.0
    assert auroc(scores, labels) == 9 / 16
    assert grouped_auroc([0.9, 0.1], [1, 1], ["a", "a"]) is None


def test_ranked_pairs_stay_inside_problems_and_rows():
    from testtime.probe.train import ranked_pairs

    soft = np.array([1.0, 0.0, 0.5, 0.5, 0.0], np.float32)
    groups = ["a", "a", "a", "b", "b"]
    rows = np.array([True, True, True, True, False])
    hi, lo = ranked_pairs(soft, groups, rows)
    assert sorted(zip(hi.tolist(), lo.tolist(), strict=True)) == [(0, 1), (0, 2), (2, 1)]


def test_rank_weight_trains_and_reports_pairs():
    data = _synthetic(n_problems=30)
    _, metrics = train_head(data, TrainConfig(head="logistic", epochs=200, patience=30, rank_weight=1.0))
    assert metrics["train_pairs"] > 0 and metrics["val_auroc_within_problem"] > 0.6


def test_labels_paths_are_unchanged_by_top_p_at_its_default(tmp_path):
    """Pinned before SamplingSetup had top_p: at its default (1.0) it stays out of the digest, so every labels
    file written before keeps its path; another top_p is another file."""
    from pathlib import Path

    from testtime.probe.pipeline import SamplingSetup, labels_path

    out = Path("o")
    assert str(labels_path(out, "arith:20", 0, 20, LabelConfig(), SamplingSetup(), "model")) == \
        "o/labels/arith_20-seed0-n20-abe13e9f.jsonl"
    setup = SamplingSetup(seed=3, max_tokens=512, temperature=0.8, fewshot=0)
    assert str(labels_path(out, "math500", 3, 50, LabelConfig(solutions=8), setup, "qwen")) == \
        "o/labels/math500-seed3-n50-071e50ea.jsonl"
    assert labels_path(out, "arith:20", 0, 20, LabelConfig(), SamplingSetup(top_p=1.0), "model") == \
        labels_path(out, "arith:20", 0, 20, LabelConfig(), SamplingSetup(), "model")
    assert labels_path(out, "arith:20", 0, 20, LabelConfig(), SamplingSetup(top_p=0.9), "model") != \
        labels_path(out, "arith:20", 0, 20, LabelConfig(), SamplingSetup(), "model")


def test_sampling_setup_takes_the_run_settings_declarations():
    from testtime import settings as S
    from testtime.errors import ConfigError
    from testtime.probe.pipeline import SamplingSetup, eval_configs

    assert (SamplingSetup().max_tokens, SamplingSetup().temperature, SamplingSetup().top_p) == \
        (S.MAX_TOKENS.default, S.TEMPERATURE.default, S.TOP_P.default)
    for field, bad in (("top_p", 0.0), ("top_p", 1.01), ("temperature", 2.01), ("max_tokens", 0)):
        with pytest.raises(ConfigError) as e:
            SamplingSetup(**{field: bad})
        assert e.value.field == field
    bon, majority = eval_configs("arith-check", "arith:4", setup=SamplingSetup(top_p=0.5))
    assert bon.top_p == majority.top_p == 0.5
    assert SamplingSetup(top_p=0.5).context(None, None).top_p == 0.5


def test_sampling_setup_keeps_its_positional_order():
    """``prm label`` builds it by position (seed, max_tokens, temperature, fewshot): top_p came after them."""
    from testtime.probe.pipeline import SamplingSetup

    assert SamplingSetup(1, 200, 0.5, 2) == SamplingSetup(seed=1, max_tokens=200, temperature=0.5, fewshot=2)
