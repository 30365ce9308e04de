"""Bundled benchmark files, the JSONL loader with its one-line errors, and load_dataset."""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib.resources import files
from pathlib import Path

import pytest

from testtime.datasets import (
    DatasetError,
    DatasetInfo,
    FewshotSet,
    clean_number,
    fewshot_for,
    list_datasets,
    load_bundled,
    load_dataset,
    load_fewshot_file,
    load_jsonl,
)
from testtime.types import Problem

DATA = files("testtime") / "data"

# From testtime/data/README.md: the files must stay byte-identical to their sources.
SHA256 = {
    "math500.jsonl": "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
    "aime24.jsonl": "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac",
    "amc23.jsonl": "43707e1ca784602d8479de24ee8ce36609dbebc46dd152b0b12a46611aa898a4",
    "gsm8k_test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
}


# --- bundled files ----------------------------------------------------------------------------


@pytest.mark.parametrize("filename", sorted(SHA256))
def test_bundled_files_unchanged(filename):
    assert hashlib.sha256((DATA / filename).read_bytes()).hexdigest() == SHA256[filename]


def test_licenses_present():
    texts = {p.name: p.read_text() for p in (DATA / "LICENSES").iterdir()}
    assert len(texts) == 3
    joined = "\n".join(texts.values())
    for line in ("Copyright (c) 2023 OpenAI", "Copyright (c) 2024 Zhibin Gou", "Copyright (c) 2021 OpenAI"):
        assert line in joined
    assert all("MIT License" in t and "WITHOUT WARRANTY" in t for t in texts.values())
    assert any("MAA" in t and "AIME" in t for t in texts.values())
    assert (DATA / "README.md").read_text().startswith("# Math-reasoning benchmark data")


def test_no_hosting_site_named_in_code():
    src = Path(__file__).resolve().parents[1] / "src" / "testtime" / "datasets"
    sources = sorted(src.glob("*.py"))
    assert len(sources) >= 3, src  # a moved package would otherwise pass with nothing read
    for path in sources:
        text = path.read_text().lower()
        for site in ("github", "huggingface", "hugging face", "pypi"):
            assert site not in text, f"{path.name} names {site}"


@pytest.mark.parametrize(
    ("name", "count", "first_id", "kind"),
    [("math500", 500, "test/precalculus/807.json", "math"), ("aime24", 30, "60", "aime"),
     ("amc23", 40, "0", "amc"), ("gsm8k", 1319, "gsm8k-0000", "gsm8k")],
)
def test_bundled_counts_and_ids(name, count, first_id, kind):
    problems = load_bundled(name)
    assert len(problems) == count
    assert problems[0].id == first_id
    assert len({p.id for p in problems}) == count
    assert all(p.kind == kind and p.question and p.answer and p.meta["source"] == name for p in problems)


def test_math500_fields():
    problems = load_bundled("math500")
    p = problems[0]
    assert p.question.startswith("Convert the point $(0,3)$ in rectangular coordinates")
    assert p.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert p.level == 2 and p.meta["subject"] == "Precalculus"
    assert "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}" in p.meta["solution"]
    levels = [q.level for q in problems]
    assert all(isinstance(x, int) for x in levels)
    assert {lv: levels.count(lv) for lv in range(1, 6)} == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}


def test_aime_answers_keep_leading_zeros():
    problems = load_bundled("aime24")
    assert [p.id for p in problems] == [str(i) for i in range(60, 90)]
    assert problems[0].answer == "204"
    assert problems[7].answer == "025"
    assert sum(p.answer.startswith("0") for p in problems) == 7
    assert all(re.fullmatch(r"\d{3}", p.answer) for p in problems)
    assert problems[0].meta["solution"] and problems[0].level is None


def test_amc_float_answers_cleaned():
    problems = load_bundled("amc23")
    assert problems[0].answer == "27"
    assert problems[3].answer == "3159"
    assert problems[15].answer == "-1"
    assert all(re.fullmatch(r"-?\d+", p.answer) for p in problems)


def test_gsm8k_answer_parsed():
    problems = load_bundled("gsm8k")
    p = problems[0]
    assert p.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert p.answer == "18"
    assert p.meta["solution"].endswith("every day at the farmer\u2019s market.")
    assert "####" not in p.meta["solution"]
    assert problems[146].answer == "2125"  # "#### 2,125" in the file
    assert problems[489].answer == "-10"
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", q.answer) for q in problems)


@pytest.mark.parametrize(
    ("value", "text"),
    [(27.0, "27"), (0.5, "0.5"), (-1.0, "-1"), (3, "3"), (2.25, "2.25"), (1e20, "1" + "0" * 20)],
)
def test_clean_number(value, text):
    assert clean_number(value) == text


@pytest.mark.parametrize("bad", [True, float("nan"), float("inf"), "3"])
def test_clean_number_rejects(bad):
    with pytest.raises(ValueError):
        clean_number(bad)


# --- load_dataset -----------------------------------------------------------------------------


def test_load_dataset_names_and_limit():
    assert len(load_dataset("math500", limit=5)) == 5
    assert [p.id for p in load_dataset("aime24", limit=2)] == ["60", "61"]
    assert len(load_dataset("arith")) == 50
    assert len(load_dataset("arith:7")) == 7
    assert len(load_dataset("arith", limit=4)) == 4
    assert len(load_dataset("arith:20", limit=4)) == 4
    assert {p.level for p in load_dataset("arith:10", levels=[3])} == {3}


def test_load_dataset_levels_and_shuffle():
    level1 = load_dataset("math500", levels=[1])
    assert len(level1) == 43 and all(p.level == 1 for p in level1)
    a = load_dataset("math500", shuffle=True, seed=1, limit=20)
    b = load_dataset("math500", shuffle=True, seed=1, limit=20)
    c = load_dataset("math500", shuffle=True, seed=2, limit=20)
    assert [p.id for p in a] == [p.id for p in b] != [p.id for p in c]
    assert [p.id for p in a] != [p.id for p in load_dataset("math500", limit=20)]
    full = load_dataset("amc23", shuffle=True)
    assert sorted(p.id for p in full) == sorted(p.id for p in load_dataset("amc23"))


def test_load_dataset_errors():
    with pytest.raises(DatasetError) as e:
        load_dataset("math5000")
    assert str(e.value) == ("unknown dataset 'math5000'; available: math500, aime24, amc23, gsm8k, arith, "
                            "arith:N, or a path to a .jsonl file")
    assert isinstance(e.value, ValueError)
    with pytest.raises(DatasetError, match="arith:N needs a whole number"):
        load_dataset("arith:ten")
    with pytest.raises(DatasetError, match="no difficulty levels"):
        load_dataset("gsm8k", levels=[1])
    with pytest.raises(DatasetError, match="applies only to .jsonl files"):
        load_dataset("math500", question_field="problem")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset("nowhere/missing.jsonl")


def test_list_datasets():
    infos = list_datasets()
    assert all(isinstance(i, DatasetInfo) for i in infos)
    by_name = {i.name: i for i in infos}
    assert {n: by_name[n].n_problems for n in ("math500", "aime24", "amc23", "gsm8k")} == {
        "math500": 500, "aime24": 30, "amc23": 40, "gsm8k": 1319}
    assert by_name["arith"].kind == "arith" and by_name["arith"].n_problems is None
    assert all(i.description and i.license for i in infos)


# --- load_jsonl -------------------------------------------------------------------------------


def write(tmp_path: Path, lines: list[str], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_mapping_and_dotted_paths(tmp_path):
    rows = [
        {"uid": "a", "data": {"q": "What is 1 + 1?", "sol": {"final": 2}}, "lvl": 1, "topic": "add"},
        {"uid": "b", "data": {"q": "Halve 5.", "sol": {"final": 2.5}}, "lvl": 2, "topic": "div"},
        {"uid": 7, "data": {"q": "Write six.", "sol": {"final": 6.0}}, "lvl": 2, "topic": "w"},
    ]
    path = write(tmp_path, [json.dumps(rows[0]), "", "   ", json.dumps(rows[1]), json.dumps(rows[2])])
    before, mtime = path.read_bytes(), os.stat(path).st_mtime_ns
    problems = load_jsonl(path, question_field="data.q", answer_field="data.sol.final", id_field="uid",
                          kind="number", meta_fields={"level": "lvl", "subject": "topic"})
    assert [(p.id, p.question, p.answer, p.kind) for p in problems] == [
        ("a", "What is 1 + 1?", "2", "number"), ("b", "Halve 5.", "2.5", "number"),
        ("7", "Write six.", "6", "number")]
    assert problems[1].meta == {"source": "data", "level": 2, "subject": "div"}
    assert path.read_bytes() == before and os.stat(path).st_mtime_ns == mtime
    assert [p.id for p in load_jsonl(path, "data.q", "data.sol.final", limit=2)] == ["data-0", "data-1"]
    listed = load_jsonl(path, "data.q", "data.sol.final", meta_fields=["data.sol.final"])
    assert listed[0].meta["data.sol.final"] == 2


def test_load_dataset_path_with_mapping(tmp_path):
    path = write(tmp_path, [json.dumps({"problem": f"Q{i}", "solution": {"answer": i}, "difficulty": i % 2})
                            for i in range(6)], name="mine.jsonl")
    problems = load_dataset(str(path), question_field="problem", answer_field="solution.answer",
                            meta_fields={"level": "difficulty"}, levels=[1], limit=2)
    assert [(p.id, p.answer) for p in problems] == [("mine-1", "1"), ("mine-3", "3")]


@pytest.mark.parametrize(
    ("lines", "kwargs", "message"),
    [
        (['{"question": "q1", "answer": "1"}', '{"question": "q2"}'], {},
         "data.jsonl:2: field 'answer': missing"),
        (['{"question": "q1", "answer": "1"}', "", '{"question": "q" "answer": 1}'], {},
         "data.jsonl:3: invalid JSON (Expecting ',' delimiter at column 18)"),
        (['{"question": {"text": "q"}, "answer": "1"}'], {},
         "data.jsonl:1: field 'question': expected a string, got object"),
        (['{"question": "q", "answer": [1, 2]}'], {},
         "data.jsonl:1: field 'answer': expected a string or number, got array"),
        (['{"question": "q", "answer": null}'], {},
         "data.jsonl:1: field 'answer': expected a string or number, got null"),
        (['{"question": "q", "answer": true}'], {},
         "data.jsonl:1: field 'answer': expected a string or number, got boolean"),
        (['{"question": "q", "answer": NaN}'], {},
         "data.jsonl:1: field 'answer': not a finite number: nan"),
        (['{"question": "  ", "answer": "1"}'], {},
         "data.jsonl:1: field 'question': empty string"),
        (['[1, 2]'], {}, "data.jsonl:1: expected a JSON object, got array"),
        (['{"data": {"x": 1}, "answer": "1"}'], {"question_field": "data.q"},
         "data.jsonl:1: field 'data.q': missing"),
        (['{"data": "flat", "answer": "1"}'], {"question_field": "data.q"},
         "data.jsonl:1: field 'data.q': missing"),
        (['{"question": "q", "answer": "1", "id": "a"}', '{"question": "r", "answer": "2", "id": "a"}'],
         {"id_field": "id"}, "data.jsonl:2: field 'id': duplicate id 'a' (first on line 1)"),
        (['{"question": "q", "answer": "1", "id": 1.5}'], {"id_field": "id"},
         "data.jsonl:1: field 'id': expected a string or integer, got number"),
        (['{"question": "q", "answer": "1"}'], {"meta_fields": ["level"]},
         "data.jsonl:1: field 'level': missing"),
    ],
)
def test_load_jsonl_errors(tmp_path, monkeypatch, lines, kwargs, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, lines)
    with pytest.raises(DatasetError) as e:
        load_jsonl("data.jsonl", **kwargs)
    assert str(e.value) == message
    assert "\n" not in str(e.value)


def test_load_jsonl_file_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as e:
        load_jsonl("absent.jsonl")
    assert str(e.value) == "absent.jsonl: no such file"
    (tmp_path / "bad.jsonl").write_bytes(b'{"question": "q", "answer": "1"}\n{"question": "\xff"}\n')
    with pytest.raises(DatasetError) as e:
        load_jsonl("bad.jsonl")
    assert str(e.value) == "bad.jsonl:2: not valid UTF-8"


def test_load_jsonl_limit_stops_before_bad_rows(tmp_path):
    path = write(tmp_path, ['{"question": "q", "answer": 1}', "not json"])
    assert len(load_jsonl(path, limit=1)) == 1
    assert load_jsonl(path, limit=0) == []
    with pytest.raises(DatasetError, match=r":2: invalid JSON"):
        load_jsonl(path)


# --- levels of a custom JSONL -------------------------------------------------------------------


def test_jsonl_keeps_a_level_field_ints_as_ints(tmp_path):
    rows = [{"question": "q0", "answer": 1, "level": 2}, {"question": "q1", "answer": 2, "level": "hard"},
            {"question": "q2", "answer": 3, "level": 3.0}, {"question": "q3", "answer": 4}]
    path = write(tmp_path, [json.dumps(r) for r in rows])
    problems = load_jsonl(path)
    assert [p.level for p in problems] == [2, "hard", 3, None]
    assert isinstance(problems[2].level, int)
    assert [p.question for p in load_dataset(str(path), levels=[2, 3])] == ["q0", "q2"]
    assert [p.question for p in load_dataset(str(path), levels=["hard"])] == ["q1"]


def test_jsonl_level_field_dotted_path(tmp_path):
    rows = [{"question": f"q{i}", "answer": i, "meta": {"difficulty": i % 3 + 1}, "level": "ignored"}
            for i in range(6)]
    path = write(tmp_path, [json.dumps(r) for r in rows])
    problems = load_dataset(str(path), level_field="meta.difficulty")
    assert [p.level for p in problems] == [1, 2, 3, 1, 2, 3]
    assert [p.question for p in load_dataset(str(path), level_field="meta.difficulty", levels=[2])] == ["q1", "q4"]


@pytest.mark.parametrize(
    ("row", "kwargs", "message"),
    [
        ({"question": "q", "answer": 1}, {"level_field": "meta.lvl"}, "data.jsonl:1: field 'meta.lvl': missing"),
        ({"question": "q", "answer": 1, "level": [1]}, {},
         "data.jsonl:1: field 'level': expected an integer or string, got array"),
        ({"question": "q", "answer": 1, "d": True}, {"level_field": "d"},
         "data.jsonl:1: field 'd': expected an integer or string, got boolean"),
        ({"question": "q", "answer": 1, "level": 1.5}, {},
         "data.jsonl:1: field 'level': expected an integer or string, got number"),
    ],
)
def test_jsonl_level_errors(tmp_path, monkeypatch, row, kwargs, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, [json.dumps(row)])
    with pytest.raises(DatasetError) as e:
        load_jsonl("data.jsonl", **kwargs)
    assert str(e.value) == message


# --- a user's few-shot file -----------------------------------------------------------------------

FEWSHOT_ROWS = [
    {"question": "Mine A: what is 2 + 2?", "solution": "Step 1: 2 + 2 = 4.\n\nThe answer is 4."},
    {"question": "Mine B: what is 3 * 3?", "solution": "Step 1: 3 * 3 = 9.\n\nThe answer is 9.", "level": 2},
    {"question": "Mine C: what is 8 - 5?", "solution": "Step 1: 8 - 5 = 3.\n\nThe answer is 3.", "level": 2},
    {"question": "Mine D: what is 6 / 2?", "solution": "Step 1: 6 / 2 = 3.\n\nThe answer is 3.", "level": "x"},
]


def test_fewshot_file_examples_k_and_levels(tmp_path):
    path = write(tmp_path, [json.dumps(r) for r in FEWSHOT_ROWS], name="shots.jsonl")
    shots = load_fewshot_file(path)
    assert isinstance(shots, FewshotSet) and [e.level for e in shots.examples] == [None, 2, 2, "x"]
    plain = Problem("p", "What is 1 + 1?", "2")
    assert [q for q, _ in fewshot_for(plain, 2, shots)] == ["Mine A: what is 2 + 2?", "Mine B: what is 3 * 3?"]
    assert fewshot_for(plain, 0, shots) == []
    assert len(fewshot_for(plain, 10, shots)) == 4
    # the problem's level first (file order), then the others; never the problem itself
    level2 = Problem("p", "What is 1 + 1?", "2", meta={"level": 2})
    assert [q[:6] for q, _ in fewshot_for(level2, 3, shots)] == ["Mine B", "Mine C", "Mine A"]
    levelx = Problem("p", "Mine A: what is 2 + 2?", "4", meta={"level": "x"})
    assert [q[:6] for q, _ in fewshot_for(levelx, 2, shots)] == ["Mine D", "Mine B"]
    assert fewshot_for(plain, 1, shots)[0][1] == "Step 1: 2 + 2 = 4.\n\nThe answer is 4."


def test_fewshot_file_digest_is_the_content(tmp_path):
    path = write(tmp_path, [json.dumps(r) for r in FEWSHOT_ROWS], name="shots.jsonl")
    first = load_fewshot_file(path).digest
    other = write(tmp_path, ["", json.dumps(FEWSHOT_ROWS[0]) + "  "] + [json.dumps(r) for r in FEWSHOT_ROWS[1:]],
                  name="moved.jsonl")
    assert load_fewshot_file(other).digest == first  # same examples elsewhere, blank lines aside
    write(tmp_path, [json.dumps(r) for r in FEWSHOT_ROWS[:3]], name="shots.jsonl")
    assert load_fewshot_file(path).digest != first


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "shots.jsonl: no few-shot examples (the file is empty)"),
        (["", "  "], "shots.jsonl: no few-shot examples (the file is empty)"),
        ([json.dumps(FEWSHOT_ROWS[0]), '{"question": "q" "solution": "s"}'],
         "shots.jsonl:2: invalid JSON (Expecting ',' delimiter at column 18)"),
        (['{"solution": "The answer is 1."}'], "shots.jsonl:1: field 'question': missing"),
        (['{"question": "q"}'], "shots.jsonl:1: field 'solution': missing"),
        (['{"question": 3, "solution": "The answer is 1."}'],
         "shots.jsonl:1: field 'question': expected a string, got number"),
        (['{"question": "q", "solution": ["The answer is 1."]}'],
         "shots.jsonl:1: field 'solution': expected a string, got array"),
        (['{"question": "q", "solution": ""}'], "shots.jsonl:1: field 'solution': empty string"),
        (['{"question": "q", "solution": "Step 1: I add."}'],
         'shots.jsonl:1: field \'solution\': no final answer (end it with "The answer is N.")'),
        (['{"question": "q", "solution": "The answer is 1.", "level": {"a": 1}}'],
         "shots.jsonl:1: field 'level': expected an integer or string, got object"),
        (['"just a string"'], "shots.jsonl:1: expected a JSON object, got string"),
    ],
)
def test_fewshot_file_errors(tmp_path, monkeypatch, lines, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shots.jsonl").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        load_fewshot_file("shots.jsonl")
    assert str(e.value) == message and "\n" not in str(e.value)


def test_fewshot_file_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"^nope\.jsonl: no such file$"):
        load_fewshot_file("nope.jsonl")
