"""bench/serve_auto.py: its held-out split, its choice of the fixed strategy auto must match, the paired
comparison and the table (unit), and a tiny run against the real server (the embedded SmolLM2, the shipped chat
table) driven by the openai SDK."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import serve_auto  # noqa: E402


def _row(series: str, correct: list[bool], tokens: int) -> dict:
    return {"series": series, "questions": len(correct), "correct": sum(correct),
            "accuracy": sum(correct) / len(correct),
            "accuracy_ci": [0.0, 1.0], "by_source": {"arith": f"{sum(correct)}/{len(correct)}"},
            "policy_tokens": tokens, "tokens_per_question": tokens / len(correct), "configs": {f"{series}@4": 4},
            "per_question": [{"correct": c} for c in correct]}


def test_the_held_out_questions_are_not_the_tables():
    problems = serve_auto.held_out(4, 7, 3, 80)
    ids = [p.id for p in problems]
    assert len(ids) == 7 and all(i.startswith("arith-s7-") for i in ids[:4])  # seed 7: the table's sweep used 0
    assert ids[4:] == ["gsm8k-0080", "gsm8k-0081", "gsm8k-0082"]  # the chat table's sweep took gsm8k 0..79
    assert serve_auto.held_out(0, 7, 2, 5)[0].id == "gsm8k-0005"


def test_auto_must_match_the_most_accurate_fixed_series_and_among_equals_the_cheapest():
    rows = {"auto": _row("auto", [True, True, False, False], 100),
            "cot": _row("cot", [True, False, False, False], 50),
            "majority": _row("majority", [True, True, False, False], 400),
            "best_of_n": _row("best_of_n", [True, True, False, False], 300)}
    assert serve_auto.best_fixed(rows) == "best_of_n"
    rows["majority"] = _row("majority", [True, True, True, False], 900)
    assert serve_auto.best_fixed(rows) == "majority"
    assert serve_auto.best_fixed({"auto": rows["auto"]}) is None


def test_the_paired_comparison_and_token_share_are_autos_against_each_fixed_series():
    rows = {"auto": _row("auto", [True, True, False, False], 100),
            "cot": _row("cot", [True, False, False, False], 50),
            "majority": _row("majority", [True, True, True, True], 400)}
    cmp = serve_auto.comparisons(rows)
    assert set(cmp) == {"cot", "majority"}
    assert cmp["cot"]["accuracy_diff"] == pytest.approx(0.25) and cmp["cot"]["token_share"] == pytest.approx(2.0)
    assert cmp["majority"]["accuracy_diff"] == pytest.approx(-0.5)
    assert cmp["majority"]["token_share"] == pytest.approx(0.25)
    text = serve_auto.table(rows, cmp)
    assert "| majority (best fixed) | 4/4" in text and "| auto | 2/4" in text
    assert "| 25% |" in text  # auto's tokens as a share of the best fixed series'
    assert serve_auto.comparisons({"cot": rows["cot"]}) == {}


def test_series_names_are_checked():
    assert serve_auto.parse_series("auto, cot") == ["auto", "cot"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown beam"):
        serve_auto.parse_series("auto,beam")


@pytest.mark.integration
def test_a_tiny_run_through_the_sdk(tmp_path):
    out = tmp_path / "serve_auto.json"
    report = serve_auto.main(["--arith", "2", "--gsm8k", "1", "--effort", "low", "--series", "auto,cot",
                              "--out", str(out)])
    assert out.is_file() and set(report["series"]) == {"auto", "cot"}
    auto, cot = report["series"]["auto"], report["series"]["cot"]
    assert auto["questions"] == cot["questions"] == 3 and auto["errors"] == cot["errors"] == 0
    assert cot["configs"] == {"cot@1": 3}
    # auto decided every request, each by a named rule: a difficulty bin of the table or the PRM-free fallback
    assert sum(auto["decided_by"].values()) == 3
    assert all(k.startswith(("bin ", "prm-free: ")) for k in auto["decided_by"]), auto["decided_by"]
    assert all(q["tokens"] > 0 for q in auto["per_question"] + cot["per_question"])
    assert report["best_fixed"] == "cot" and set(report["comparisons"]) == {"cot"}
