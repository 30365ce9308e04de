"""bench/gpu_check.py at its tiny CPU shape: it runs end to end and reports consistent, sane ratios."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def report() -> dict:
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--shape", "tiny", "--device", "cpu", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: one line on stdout (progress goes to stderr)
    assert "memory bandwidth" in done.stderr and "raw generate" in done.stderr
    return json.loads(lines[0])


def test_ratios_are_positive_and_finite(report):
    assert report["benchmark"] == "gpu_check" and report["shape"] == "tiny" and report["device"] == "cpu"
    assert set(report["ratios"]) == {"policy_vs_raw_generate_min", "prm_batched_vs_single"}
    assert all(positive(v) for v in report["ratios"].values())
    assert positive(report["bandwidth_bytes_per_s"]) and report["wall_s"] < 60


def test_policy_rows_are_consistent(report):
    pol = report["policy"]
    assert [r["batch_size"] for r in pol["rows"]] == [1, 8] and pol["new_tokens"] == 16
    for r in pol["rows"]:
        for key in ("testtime_tokens_per_s", "raw_tokens_per_s", "ratio", "roofline_tokens_per_s"):
            assert positive(r[key]), key
        assert r["ratio"] == pytest.approx(r["testtime_tokens_per_s"] / r["raw_tokens_per_s"])
        roofline = report["bandwidth_bytes_per_s"] / pol["weight_bytes_per_step"] * r["batch_size"]
        assert r["roofline_tokens_per_s"] == pytest.approx(roofline)
        for key in ("testtime_roofline_fraction", "raw_roofline_fraction"):
            assert 0 < r[key] < 1, key  # nothing decodes faster than reading the weights allows
    assert report["ratios"]["policy_vs_raw_generate_min"] == min(r["ratio"] for r in pol["rows"])
    assert pol["model_id"].startswith("hf:policy[float32]@")
    # tiny: 2 layers of 16 hidden, untied embedding not read per step
    assert 0 < pol["weight_bytes_per_step"] < 4 * pol["params"]


def test_prm_part_scores_batched_and_one_by_one(report):
    prm = report["prm"]
    assert prm["solutions"] == 8 and prm["steps"] >= prm["solutions"]
    assert prm["forwards_per_pass"] == {"batched": 1, "single": 8}
    assert prm["ratio"] == pytest.approx(prm["batched_steps_per_s"] / prm["single_steps_per_s"])
    assert report["ratios"]["prm_batched_vs_single"] == prm["ratio"]


def test_table_prints_the_ratios(report, capsys):
    gpu_check.print_table(report)
    out = capsys.readouterr().out
    assert "testtime / raw generate:" in out and "(goal >= 0.95x)" in out
    assert "batched / one per call:" in out and "GB/s" in out


def test_weight_bytes_per_step_counts_what_a_step_reads():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    for tied in (False, True):
        config = Qwen2Config(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
        model = Qwen2ForCausalLM(config)
        everything = sum(p.numel() * 4 for p in model.parameters())
        embed = 100 * 16 * 4
        # tied: the matrix is read once, as the LM head; untied: the input lookup reads a few rows only
        assert gpu_check.weight_bytes_per_step(model) == (everything if tied else everything - embed)


def test_bandwidth_is_measured():
    clock = gpu_check.Clock(torch, torch.device("cpu"))
    bw = gpu_check.measure_bandwidth(torch, torch.device("cpu"), clock, mib=8, repeats=3)
    assert 1e8 < bw < 1e13  # bytes/s: a real copy, read + written


def test_vllm_part_is_skipped_with_its_reason_without_a_gpu(report):
    # this suite runs on a CPU: part (c) never runs here, and the report says why
    assert set(report["vllm"]) == {"skipped"}
    assert report["vllm"]["skipped"] == gpu_check.vllm_skip_reason("cpu", gpu_check.vllm_installed())
    assert "vllm" not in report["ratios"]


def test_vllm_part_runs_only_with_vllm_and_cuda():
    assert gpu_check.vllm_skip_reason("cuda", True) is None
    assert "not installed" in gpu_check.vllm_skip_reason("cuda", False)
    assert "CUDA GPU" in gpu_check.vllm_skip_reason("cpu", True)


def test_vllm_rows_and_reward_differences():
    row = gpu_check.vllm_row(16, 900.0, 300.0)
    assert row == {"batch_size": 16, "vllm_tokens_per_s": 900.0, "hf_tokens_per_s": 300.0, "vllm_vs_hf": 3.0}
    assert gpu_check.vllm_row(8, 50.0, None)["vllm_vs_hf"] is None  # no transformers figure to compare
    assert gpu_check.max_reward_diff([[0.1, 0.5], [0.9]], [[0.1, 0.45], [0.7]]) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        gpu_check.max_reward_diff([[0.1]], [[0.1, 0.2]])


def test_table_prints_the_vllm_part(report, capsys):
    gpu_check.print_table({**report, "vllm": {"policy": {"rows": [gpu_check.vllm_row(1, 10.0, 5.0)]},
                                              "prm": {"vllm_steps_per_s": 3.0, "max_abs_reward_diff": 0.001}}})
    out = capsys.readouterr().out
    assert "(c) vLLM policy batch   1: 10.0 tok/s 2.00x testtime transformers" in out
    assert "max |reward diff| vs transformers 0.0010" in out
