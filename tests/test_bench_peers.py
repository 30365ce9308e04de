"""bench/peers.py: its own grading, vote, aggregation and table code (unit), and a tiny run of the parts that need
no peer install (raw server, testtime serve in proxy mode and embedded) end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testtime.types import Problem

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402


def _problem(answer: str) -> Problem:
    return Problem(f"p{answer}", f"What is {answer}?", answer, kind="arith")


def test_the_vote_is_testtimes_majority_over_the_final_number():
    texts = ["7 - 2 = 5. The answer is 7.", "3 + 2 = 5.\n\nThe answer is 5.", "no marker, 5", "The answer is 5.0."]
    assert peers.vote(texts, "arith", "strict") == 1  # 5 and 5.0 are one group of two; 7 alone
    assert peers.vote(["The answer is 7.", "The answer is 5."], "arith", "strict") == 0  # a tie: seen first
    assert peers.vote(["no answer here", "nor here"], "arith", "strict") is None
    # the fallback extraction reads an unmarked last number; strict reads markers only
    assert peers.vote(["so it is 4", "The answer is 9.", "it makes 4"], "arith", "fallback") == 0
    assert peers.vote(["so it is 4", "The answer is 9.", "it makes 4"], "arith", "strict") == 1


def test_one_grader_reads_every_reply_and_an_error_is_wrong():
    problems = [_problem("12"), _problem("12"), _problem("3")]
    graded = peers.grade_replies(["The answer is 12.", None, "The answer is 4."], problems, "strict")
    assert graded == [("12", True), (None, False), ("4", False)]


def _result(**kw) -> peers.ToolResult:
    replies = [peers.Reply("The answer is 12.", 10), peers.Reply("The answer is 4.", 20),
               peers.Reply(error="APIError: boom")]
    base = dict(tool="optillm", wall_s=30.0, replies=replies, generated=90, generated_by="llama.cpp /metrics",
                sent=[{"temperature": 0.7, "top_k": 40}], notes=["x"], version="optillm 0.4.0")
    return peers.ToolResult(**{**base, **kw})


def test_a_row_counts_tokens_errors_and_accuracy():
    res = _result()
    graded = peers.grade_replies([r.text for r in res.replies], [_problem("12")] * 3, "strict")
    r = peers.row(res, graded, floor_wall=20.0)
    assert (r["wall_s"], r["vs_floor"]) == (30.0, 1.5)
    assert (r["generated_tokens"], r["reported_tokens"], r["undercount"]) == (90, 30, 3.0)
    assert (r["correct"], r["questions"], r["accuracy"], r["errors"], r["unanswered"]) == (1, 3, 0.3333, 1, 0)
    assert r["answers"] == ["12", "4", None] and r["error_examples"] == ["APIError: boom"]
    assert r["missing_usage"] == 0


def test_a_reply_without_usage_is_counted_not_taken_for_zero():
    res = _result(replies=[peers.Reply("The answer is 12.", None), peers.Reply("The answer is 12.", 7)])
    r = peers.row(res, peers.grade_replies([x.text for x in res.replies], [_problem("12")] * 2, "strict"), None)
    assert (r["reported_tokens"], r["missing_usage"], r["vs_floor"]) == (7, 1, None)
    none = _result(replies=[peers.Reply("The answer is 12.", None)])
    r = peers.row(none, [("12", True)], 10.0)
    assert (r["reported_tokens"], r["missing_usage"], r["undercount"]) == (None, 1, None)


def test_the_table_shows_every_tool_with_its_ratio_usage_and_settings():
    floor = peers.row(_result(tool="raw", wall_s=20.0, version=None), [("12", True), ("4", False), (None, False)],
                      20.0)
    peer = peers.row(_result(replies=[peers.Reply("The answer is 12.", None)]), [("12", True)], 20.0)
    text = peers.table([floor, peer])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| tool | wall s | / floor |")
    assert lines[2].startswith(f"| {peers.LABELS['raw']} | 20.0 | 1.00x | 90 | 30 | 1/3 | 1 |")
    assert "| optillm majority_voting optillm 0.4.0 | 30.0 | 1.50x | 90 | none (1 without usage) | 1/1 | 0 |" in text
    assert lines[3].endswith("| temperature=0.7 top_k=40 |")


def test_prometheus_values_are_read_by_exact_name():
    text = ("# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n"
            "# TYPE llamacpp:tokens_predicted_total counter\n"
            "llamacpp:tokens_predicted_total 1234\n"
            "llamacpp:tokens_predicted_seconds_total 5.5\n"
            'testtime_batch_size_count{le="x"} 3.0\n')
    assert peers.prometheus_value(text, "llamacpp:tokens_predicted_total") == 1234
    assert peers.prometheus_value(text, "llamacpp:tokens_predicted_seconds_total") == 5.5
    assert peers.prometheus_value(text, "testtime_batch_size_count") == 3.0
    assert peers.prometheus_value(text, "llamacpp:prompt_tokens_total") is None


def test_only_names_known_tools():
    assert peers.parse_only("raw, proxy") == ["raw", "proxy"]
    with pytest.raises(Exception, match="unknown tool nope"):
        peers.parse_only("raw,nope")


def test_the_prompt_is_testtimes_zero_shot_user_turn_or_the_bare_question():
    from testtime.policy.prompts import INSTRUCTION

    assert peers.user_turn("What is 2 + 3?", "question") == "What is 2 + 3?"
    assert peers.user_turn("What is 2 + 3?", "instruction") == f"{INSTRUCTION}\n\nWhat is 2 + 3?"


@pytest.mark.integration
def test_a_tiny_run_of_the_parts_that_need_no_peer(tmp_path):
    out = tmp_path / "peers.json"
    cmd = [sys.executable, str(BENCH / "peers.py"), "--limit", "2", "--n", "2", "--max-tokens", "24",
           "--concurrency", "2", "--only", "raw,proxy,embedded", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    tools = json.loads(out.read_text())["tools"]
    assert set(tools) == {"raw", "proxy", "embedded"}
    for name, t in tools.items():
        assert t["questions"] == 2 and t["errors"] == 0, name
        assert 0 < t["generated_tokens"] <= 2 * 2 * 24, name  # 2 questions x 2 samples x max_tokens
    assert tools["raw"]["vs_floor"] == 1.0
    # llama.cpp's usage counts the first of n choices; testtime's usage is every sample it generated
    assert tools["raw"]["reported_tokens"] < tools["raw"]["generated_tokens"]
    assert tools["proxy"]["reported_tokens"] == tools["proxy"]["generated_tokens"]
    assert tools["embedded"]["reported_tokens"] == tools["embedded"]["generated_tokens"]
    assert tools["raw"]["sent"][0]["top_k"] == 0 and tools["raw"]["sent"][0]["n"] == 2
