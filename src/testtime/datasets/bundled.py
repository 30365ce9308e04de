"""The benchmark files shipped inside the package (see testtime/data/README.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from testtime.datasets._common import DatasetError, DatasetInfo, clean_number
from testtime.datasets.jsonl import iter_jsonl
from testtime.types import Problem


def _read(filename: str) -> str:
    # importlib.resources, not a path relative to __file__, so a zipped or installed wheel works.
    return (files("testtime") / "data" / filename).read_text(encoding="utf-8")


def _math500(row: dict[str, Any]) -> Problem:
    return Problem(
        id=row["unique_id"],
        question=row["problem"],
        answer=row["answer"],
        kind="math",
        meta={"level": int(row["level"]), "subject": row["subject"], "solution": row["solution"],
              "source": "math500"},
    )


def _aime24(row: dict[str, Any]) -> Problem:
    # The answer stays a string: seven answers have leading zeros ("025"); graders compare as int.
    return Problem(
        id=str(row["id"]),
        question=row["problem"],
        answer=str(row["answer"]),
        kind="aime",
        meta={"solution": row["solution"], "url": row["url"], "source": "aime24"},
    )


def _amc23(row: dict[str, Any]) -> Problem:
    # Answers are stored as JSON floats (27.0); render them as the integer/decimal a model writes.
    return Problem(
        id=str(row["id"]),
        question=row["problem"],
        answer=clean_number(row["answer"]),
        kind="amc",
        meta={"url": row["url"], "source": "amc23"},
    )


def split_gsm8k_answer(text: str) -> tuple[str, str]:
    """Split a GSM8K answer field into (worked solution, final number without thousands commas)."""
    worked, sep, final = text.rpartition("####")
    if not sep:
        raise ValueError("no '####' marker")
    return worked.rstrip("\n"), final.strip().replace(",", "")


def _gsm8k(row: dict[str, Any], index: int) -> Problem:
    solution, answer = split_gsm8k_answer(row["answer"])
    return Problem(
        # The file has no id field; the row position is stable because the file is never edited.
        id=f"gsm8k-{index:04d}",
        question=row["question"],
        answer=answer,
        kind="gsm8k",
        meta={"solution": solution, "source": "gsm8k"},
    )


@dataclass(frozen=True)
class _Bundled:
    filename: str
    kind: str
    description: str
    license: str
    build: Callable[[dict[str, Any], int], Problem]


BUNDLED: dict[str, _Bundled] = {
    "math500": _Bundled(
        "math500.jsonl", "math",
        "MATH-500: 500 competition problems (levels 1-5, 7 subjects) with worked solutions",
        "MIT (c) 2023 OpenAI", lambda r, i: _math500(r)),
    "aime24": _Bundled(
        "aime24.jsonl", "aime", "AIME 2024 I and II: 30 problems, integer answers 000-999",
        "MIT (c) 2024 Zhibin Gou; problems (c) MAA", lambda r, i: _aime24(r)),
    "amc23": _Bundled(
        "amc23.jsonl", "amc", "AMC 12 2023 A and B: 40 problems as free-answer questions",
        "MIT (c) 2024 Zhibin Gou; problems (c) MAA", lambda r, i: _amc23(r)),
    "gsm8k": _Bundled(
        "gsm8k_test.jsonl", "gsm8k", "GSM8K test split: 1319 grade-school word problems",
        "MIT (c) 2021 OpenAI", _gsm8k),
}


def load_bundled(name: str) -> list[Problem]:
    """All problems of the bundled dataset `name`, in file order."""
    try:
        spec = BUNDLED[name]
    except KeyError:
        raise DatasetError(f"unknown bundled dataset '{name}'; available: {', '.join(BUNDLED)}") from None
    problems = []
    for index, (lineno, row) in enumerate(iter_jsonl(_read(spec.filename), spec.filename)):
        try:
            problems.append(spec.build(row, index))
        except (KeyError, TypeError, ValueError) as e:
            # Only reachable if the shipped file were damaged; still say where.
            raise DatasetError(f"{spec.filename}:{lineno}: {type(e).__name__}: {e}") from None
    return problems


def bundled_infos() -> list[DatasetInfo]:
    """Descriptions of the bundled datasets, counting rows from the shipped files."""
    infos = []
    for name, spec in BUNDLED.items():
        n = sum(1 for line in _read(spec.filename).split("\n") if line.strip())
        infos.append(DatasetInfo(name, n, spec.kind, spec.description, spec.license))
    return infos

