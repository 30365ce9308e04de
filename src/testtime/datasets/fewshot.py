"""Few-shot examples in the step format (one statement per step, blank-line separated, ending with
"The answer is N."): the hand-written built-in sets, and a user's own JSONL file (``load_fewshot_file``).

The built-in examples are original problems written for this package, not rows of any dataset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from testtime.datasets._common import DatasetError
from testtime.datasets.jsonl import as_text, iter_jsonl, level_value, read_text
from testtime.types import Problem

MATH_FEWSHOT: tuple[tuple[str, str], ...] = (
    (
        "Solve for $x$: $3x + 7 = 22$.",
        "Step 1: Subtract 7 from both sides: 3x = 22 - 7 = 15.\n\n"
        "Step 2: Divide both sides by 3: x = 15 / 3 = 5.\n\n"
        "The answer is 5.",
    ),
    (
        "What is the remainder when 2024 is divided by 7?",
        "Step 1: The largest multiple of 7 not above 2024 is 7 * 289 = 2023.\n\n"
        "Step 2: The remainder is 2024 - 2023 = 1.\n\n"
        "The answer is 1.",
    ),
    (
        "Compute $\\frac{3}{4} + \\frac{1}{6}$. Express your answer as a common fraction.",
        "Step 1: The least common denominator of 4 and 6 is 12, and 12 / 4 = 3, so "
        "$\\frac{3}{4} = \\frac{9}{12}$.\n\n"
        "Step 2: 12 / 6 = 2, so $\\frac{1}{6} = \\frac{2}{12}$.\n\n"
        "Step 3: Add the numerators: 9 + 2 = 11, giving $\\frac{11}{12}$.\n\n"
        "The answer is $\\frac{11}{12}$.",
    ),
)

GSM8K_FEWSHOT: tuple[tuple[str, str], ...] = (
    (
        "A baker makes 24 muffins in the morning and 18 muffins in the afternoon. She sells 30 of "
        "them. How many muffins are left?",
        "Step 1: She makes 24 + 18 = 42 muffins in total.\n\n"
        "Step 2: After selling 30, she has 42 - 30 = 12 muffins left.\n\n"
        "The answer is 12.",
    ),
    (
        "Pencils cost $3 each. Liam buys 5 pencils and pays with a $20 bill. How much change, in "
        "dollars, does he get?",
        "Step 1: The pencils cost 5 * 3 = 15 dollars.\n\n"
        "Step 2: His change is 20 - 15 = 5 dollars.\n\n"
        "The answer is 5.",
    ),
    (
        "A farm has 4 pens with 12 sheep in each pen. The farmer moves all the sheep in 6 trucks, "
        "with the same number in each truck. How many sheep ride in each truck?",
        "Step 1: There are 4 * 12 = 48 sheep.\n\n"
        "Step 2: Each truck carries 48 / 6 = 8 sheep.\n\n"
        "The answer is 8.",
    ),
)


@dataclass(frozen=True)
class FewshotExample:
    """One worked example of a user's few-shot file; `level` (optional) matches problems of that level."""

    question: str
    solution: str
    level: int | str | None = None


@dataclass(frozen=True)
class FewshotSet:
    """The examples of a few-shot file, in file order, and where they came from."""

    path: str
    examples: tuple[FewshotExample, ...]

    @property
    def digest(self) -> str:
        """A hash of the examples' content (not the path): what a run's identity records."""
        rows = [[e.question, e.solution, e.level] for e in self.examples]
        return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()

    def select(self, problem: Problem, k: int) -> list[tuple[str, str]]:
        """The first k examples for `problem`, never the problem itself: those of its level first (when
        the examples carry levels), then the others, each group in file order."""
        pool = [e for e in self.examples if e.question != problem.question]
        level = problem.level
        if level is not None:
            pool = [e for e in pool if e.level == level] + [e for e in pool if e.level != level]
        return [(e.question, e.solution) for e in pool[:k]]


def load_fewshot_file(path: str | PathLike[str]) -> FewshotSet:
    """Read a few-shot JSONL: one ``{"question": ..., "solution": ..., "level": optional}`` per line, the
    solution in the step format (steps separated by a blank line, ending with "The answer is N.").

    Any malformed line raises DatasetError("<path>:<line>: field '<name>': ..."); so does an empty file.
    """
    from testtime.extraction import extract_answer

    label = str(path)
    examples: list[FewshotExample] = []
    for lineno, row in iter_jsonl(read_text(Path(path), label), label):
        where = f"{label}:{lineno}"
        values = {}
        for name in ("question", "solution"):
            if name not in row:
                raise DatasetError(f"{where}: field '{name}': missing")
            values[name] = as_text(row[name], name, where, numbers=False)
        if extract_answer(values["solution"]) is None:
            raise DatasetError(f"{where}: field 'solution': no final answer (end it with \"The answer is N.\")")
        level = level_value(row.get("level"), "level", where)
        examples.append(FewshotExample(values["question"], values["solution"], level))
    if not examples:
        raise DatasetError(f"{label}: no few-shot examples (the file is empty)")
    return FewshotSet(label, tuple(examples))


def fewshot_for(problem: Problem, k: int = 3, examples: FewshotSet | Sequence[FewshotExample] | None = None
                ) -> list[tuple[str, str]]:
    """k (question, worked solution) pairs suited to `problem.kind`, or taken from `examples` (a user's
    few-shot file, see ``FewshotSet.select``) when given.

    arith: generated at the problem's level; gsm8k: word problems; anything else (math, aime,
    amc, custom files): short competition-style examples. Hand-written sets hold 3 examples.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if examples is not None:
        chosen = examples if isinstance(examples, FewshotSet) else FewshotSet("", tuple(examples))
        return chosen.select(problem, k)
    if problem.kind == "arith":
        from testtime.datasets.arith import fewshot_examples

        return fewshot_examples(problem, k)
    pool = GSM8K_FEWSHOT if problem.kind == "gsm8k" else MATH_FEWSHOT
    # A fixed set keeps prompts byte-identical across problems; never echo the problem itself.
    return [ex for ex in pool if ex[0] != problem.question][:k]
