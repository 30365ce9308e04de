"""Reading the final answer out of a model's output, under an explicit extraction policy.

Two policies (``EXTRACTIONS``); a run records its policy in its identity, so runs stay comparable:

* ``strict``: answer *markers* only, as testtime always did: nothing is read from an output that
  marks no answer, so such an output is wrong.
* ``fallback`` (``DEFAULT_EXTRACTION``): the markers first; when an output has none, math-verify's
  own extraction picks its final answer-bearing expression (the last LaTeX expression, else the last
  plain number or expression, by math-verify's priorities, the first of them that parses). It runs in
  the math-verify worker, bounded in time like every math-verify call (``math_verify_worker``).

Markers, and how one marked statement is read:

* ``\\boxed{X}`` / ``\\fbox{X}``. Several boxes in one statement, with only separators between them
  (commas, "and", "or", ``$``, ``\\quad``, ``x =``), are one answer: their contents joined with ", "
  ("so the solutions are \\boxed{3} and \\boxed{-5}" -> ``3, -5``, a set or tuple for math-verify).
* "The (final) answer is X", "Answer: X". X is the mathematical object the statement states, not its
  sentence: a leading ``$..$`` / ``\\(..\\)`` / ``\\[..\\]`` span (several joined by "and"/","
  become one answer, as above); else the sentence itself when it has no words; else the math span or
  the number after its last verb ("The area of the garden is 48 square meters." -> ``48``); else
  the sentence (a word answer, "Tuesday"; it counts only when the output states nothing else).
  A multiple-choice label before a value is dropped (``\\textbf{(C)}\\ 12`` -> ``12``; ``(C)``
  alone -> ``C``).
* GSM8K's ``#### X``.

The *last* statement wins, whichever form it takes: a solution that boxes an intermediate 40 and
ends "The final answer is $52$." answers 52. A reasoning model's ``<think> ... </think>`` block is
skipped when something follows it: only the text after the last ``</think>`` is read.

What ``extract_answer`` returns, exactly: None, or a substring of its input, or several substrings of
its input joined with ", " (the boxed values / math spans of one statement, in order, duplicates
dropped). Nothing is rewritten: "#### 1,234" gives ``1,234`` and grading reads the separator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testtime.errors import ConfigError
from testtime.math_verify_worker import math_verify_extract_many
from testtime.policy.prompts import INSTRUCTION

if TYPE_CHECKING:
    from testtime.types import Problem

EXTRACTIONS: tuple[str, ...] = ("strict", "fallback")
DEFAULT_EXTRACTION = "fallback"
EXTRACTION_TIMEOUT_S = 5.0  # per output needing math-verify, like grading's per-pair bound


def check_extraction(policy: str) -> str:
    """``policy`` if it names an extraction policy; else a ``ConfigError`` on the field ``extraction``."""
    if policy not in EXTRACTIONS:
        raise ConfigError("extraction", policy, f"unknown (valid: {', '.join(EXTRACTIONS)})")
    return policy


# ---------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _balanced_group(text: str, start: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``start``; None when it is never closed.

    A backslash escapes the next character, so ``\\{`` / ``\\}`` (set braces) do not count, while
    ``\\\\}`` (a line break, then a real brace) does.
    """
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


@dataclass(frozen=True)
class _Box:
    start: int  # of the ``\boxed`` command
    end: int  # just past its argument
    content: str


def _boxes(text: str) -> list[_Box]:
    """Every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed 5``), in order; a box that a
    truncated generation never closed is skipped."""
    out: list[_Box] = []
    for m in _BOXED_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _balanced_group(text, i)
            if end is not None:
                out.append(_Box(m.start(), end, text[i + 1 : end - 1]))
        elif m.end() < len(text) and text[m.end()] == " ":
            tok = re.match(r"[^\s$]+", text[i:])  # "\boxed 5": the argument is the next token
            if tok:
                out.append(_Box(m.start(), i + tok.end(), tok.group(0)))
    return out


def has_boxed(text: str) -> bool:
    """Whether ``text`` holds a complete ``\\boxed{}`` / ``\\fbox{}`` answer."""
    return any(_clean_answer(b.content) for b in _boxes(text))


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (``\\boxed 5`` too)."""
    boxes = _boxes(text)
    return _clean_answer(boxes[-1].content) if boxes else None


# Between two boxes of one statement: whitespace (no blank line: a new step is a new statement),
# math delimiters, commas, "and" / "or", LaTeX spacing, a variable being assigned ("x ="), a unit word
# before the "and" ("\boxed{1} papers and \boxed{2} bins"), a \text{} aside that ends in "and" / "or"
# ("\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}").
_BOX_JOIN_RE = re.compile(
    r"(?:[ \t]|\n(?![ \t]*\n)|\$|\\[()\[\]]|,|;|&|\\q?quad|\\[,;: ]|\band\b|\bor\b"
    r"|[A-Za-z]+(?=[ \t]*(?:,|\band\b|\bor\b))"
    r"|\\text\{(?:[^{}\n]*?(?:\band|\bor|,))?\s*\}|[A-Za-z](?:_\{?\w+\}?)?\s*=)*"
)


def _joined(parts: Sequence[str]) -> str:
    """One answer from the parts of one statement: ", "-joined, in order, duplicates dropped."""
    seen: list[str] = []
    for p in parts:
        if p and p not in seen:
            seen.append(p)
    return ", ".join(seen)


# ---------------------------------------------------------------------------------------------
# Cleaning and reading one statement
# ---------------------------------------------------------------------------------------------


def _clean_answer(s: str) -> str:
    """Strip an answer's wrapping: whitespace, ``$``, ``**``, ``\\(..\\)``, a final '.' (a substring stays one)."""
    prev = None
    while prev != s:
        prev = s
        s = s.strip()
        # Markdown bold, also when the regex already ate the opening "**" ("is: **12**").
        s = s.removeprefix("**").removesuffix("**")
        if s.startswith("\\(") and s.endswith("\\)") or s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        if s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s.strip("$")
        elif s.count("$") == 1 and s.startswith("$"):  # "is $1,235.": currency, or a lost delimiter
            s = s[1:]
        if s.endswith(".") and not s.endswith(("..", "\\right.")):  # `\right.` is a delimiter
            s = s[:-1]
    return s


_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|answer)s?\s*(?:\*\*)?\s*(?:(?:is|are)\s*:?|:)\s*(?:\*\*)?",
    re.IGNORECASE,
)
# GSM8K's marker is exactly four '#': a longer run is degenerate output (or a Markdown rule), not a marker
# ("...######\n" once answered "##"), and an answer made of marker characters is none (see _statements).
_GSM8K_RE = re.compile(r"(?<!#)####(?!#)\s*((?:(?!####)[^\n])*)")
# A math span at the start of a statement: (open, close, may it span lines).
_DELIMS = (("$$", "$$", True), ("\\[", "\\]", True), ("$", "$", False), ("\\(", "\\)", False))
_SPAN_JOIN_RE = re.compile(r"\s*(?:,\s*(?:and|or)\b|,|\band\b|\bor\b)\s*")
# Spans inside a sentence ("the area is $48$ square meters"): inline only, no blank line.
_INNER_SPAN_RE = re.compile(r"(?<![\\\d])\$(?!\$)((?:\\\$|[^$\n])+?)(?<!\\)\$|\\\((.+?)\\\)")
# A word: two letters or more that are not a LaTeX command's name.
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
# Where a sentence states its object: after its last verb ("... is 48 square meters").
_VERB_RE = re.compile(r"\b(?:is|are|was|were|equals?|be|has|have|had|gets?|got|makes?|costs?)\b|=")
_NUMBER_RE = re.compile(
    r"(?<![\w.])-?(?:\\?\$)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?:\\?%)?|(?<![\w.])-?\.\d+"
)
# A multiple-choice label: "(C)", "\textbf{(C)}", "\text{(C)}", "C)" at the start of a statement.
_CHOICE_RE = re.compile(r"^(?:\\text(?:bf)?\{\s*\(?([A-E])\)?\s*\}|\(([A-E])\)|([A-E])\))(?:\s|\\[ ,;:!]|~|:)*")


def _drop_choice(s: str) -> str:
    """``\\textbf{(C)}\\ 12`` -> ``12``; a label alone (``(C)``) -> its letter."""
    m = _CHOICE_RE.match(s)
    if not m:
        return s
    rest = _clean_answer(s[m.end() :])
    return rest or next(g for g in m.groups() if g)


def _last_side(s: str) -> str:
    """An equation's value: ``5 + 3 = 8`` -> ``8``, ``a = b = 7`` -> ``7``; ``x = 5`` stays (math-verify
    reads an assignment, a bare number kind drops it)."""
    if "," in s or ";" in s:
        return s  # "a=1, b=2": a tuple of assignments
    parts = re.split(r"(?<![\\<>!])=", s)
    if len(parts) > 2 or len(parts) == 2 and not re.search(r"[A-Za-z]", parts[0]):
        return parts[-1].strip() or s
    return s


def _object(s: str) -> str:
    """A statement's object once cleaned: no choice label, an equation's value."""
    return _last_side(_drop_choice(_clean_answer(s)))


def _leading_spans(rest: str) -> list[str] | None:
    """The math spans a statement opens with, several when joined by "and" / "," (None: it opens with none)."""
    spans: list[str] = []
    pos = 0
    while True:
        for open_, close, multiline in _DELIMS:
            if rest.startswith(open_, pos):
                end = rest.find(close, pos + len(open_))
                body = rest[pos + len(open_) : end] if end != -1 else ""
                if end == -1 or not multiline and "\n" in body or not body.strip():
                    return spans or None  # an unclosed "$" is currency ("is $1,235."): read as a sentence
                spans.append(body)
                pos = end + len(close)
                break
        else:
            return spans or None
        m = _SPAN_JOIN_RE.match(rest, pos)
        if not m or not rest.startswith(("$", "\\(", "\\["), m.end()):
            return spans
        pos = m.end()


def _sentence(rest: str) -> str:
    """The statement's sentence: up to the line's end or a period that ends it (not one inside 3.5)."""
    line = rest.split("\n", 1)[0]
    m = re.search(r"\.(?:\s|$)", line)
    return line[: m.start()] if m else line


def _statement_object(rest: str) -> tuple[str, bool] | None:
    """What "The answer is ..." states, and whether it is mathematical (a word answer is weak)."""
    rest = rest.lstrip()
    spans = _leading_spans(rest)
    if spans:
        return _joined([_object(s) for s in spans]), True
    sentence = _clean_answer(_sentence(rest))
    if not sentence:
        return None
    if not _WORD_RE.search(sentence):
        return _object(sentence), True  # all math: "x^2+1", "(1, 2]", "-5, 3", "\$18.50", "B"
    choice = _CHOICE_RE.match(sentence)
    if choice and not _NUMBER_RE.search(sentence):
        return next(g for g in choice.groups() if g), True  # "(C) because ..."
    # Math spans and bare numbers together, in sentence order: "The volume of $ABCDEFGH$ is 120" states 120,
    # the span before the verb only names what is measured. A number inside a span is the span's.
    inner = [(m.start(), m.end(), m.group(1) or m.group(2)) for m in _INNER_SPAN_RE.finditer(sentence)]
    numbers = [(m.start(), m.end(), m.group(0)) for m in _NUMBER_RE.finditer(sentence)
               if not any(a <= m.start() < b for a, b, _ in inner)]
    found = sorted((a, text) for a, _, text in inner + numbers)
    if found:
        return _object(_after_last_verb(sentence, found)), True
    return sentence, False


def _after_last_verb(sentence: str, found: list[tuple[int, str]]) -> str:
    """Of the objects ``found`` in ``sentence`` (position, text): the first after its last verb that has
    one after it ("The area of the 6 by 8 garden is 48 square meters" -> 48), else the last one."""
    for verb in reversed(list(_VERB_RE.finditer(sentence))):
        after = [text for pos, text in found if pos >= verb.end()]
        if after:
            return after[0]
    return found[-1][1]


# ---------------------------------------------------------------------------------------------
# Statements: the last one wins
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Statement:
    start: int
    answer: str
    strong: bool = True  # False: an "answer is" phrase without mathematical content


def _box_statements(text: str) -> list[_Statement]:
    out: list[_Statement] = []
    run: list[_Box] = []
    for box in _boxes(text):
        if run and _BOX_JOIN_RE.fullmatch(text, run[-1].end, box.start):
            run.append(box)
            continue
        if run:
            out.append(_Statement(run[0].start, _joined([_clean_answer(b.content) for b in run])))
        run = [box]
    if run:
        out.append(_Statement(run[0].start, _joined([_clean_answer(b.content) for b in run])))
    return [s for s in out if s.answer]


def _statements(text: str) -> list[_Statement]:
    found = _box_statements(text)
    for m in _ANSWER_IS_RE.finditer(text):
        obj = _statement_object(text[m.end() :])
        if obj is not None and obj[0]:
            found.append(_Statement(m.start(), obj[0], obj[1]))
    for m in _GSM8K_RE.finditer(text):
        ans = _clean_answer(m.group(1))
        ans = ans.removeprefix("\\$").removeprefix("$").strip()
        if ans.strip("#").strip():
            found.append(_Statement(m.start(), ans))
    return found


def _scope(text: str) -> str:
    """The part of an output that states its answer: after a closed ``<think>`` block, when anything is there."""
    end = text.rfind("</think>")
    if end != -1 and text[end + len("</think>") :].strip():
        return text[end + len("</think>") :]
    return text


def _last_statement(text: str, skip: frozenset[str] = frozenset()) -> str | None:
    found = [s for s in _statements(_scope(text)) if s.answer not in skip]
    strong = [s for s in found if s.strong]
    pick = max(strong or found, key=lambda s: s.start, default=None)
    return None if pick is None else pick.answer


def placeholders(instruction: str) -> frozenset[str]:
    """The answers the instruction's own quoted templates state: "End with: \"The answer is N.\"" -> {"N"}."""
    return frozenset(a for quoted in re.findall(r'"([^"]+)"', instruction) if (a := _last_statement(quoted)))


# A model that copies the prompt's template ("The answer is N.") states no answer: the placeholder is
# read from the instruction itself, so a reworded instruction cannot leave a stale copy here.
PLACEHOLDERS = placeholders(INSTRUCTION)


def marked_answer(text: str) -> str | None:
    """The answer the output's last marked statement states (the ``strict`` policy), or None.
    A statement of the instruction's placeholder (``PLACEHOLDERS``) is not one."""
    if not text:
        return None
    return _last_statement(text, PLACEHOLDERS)


_LAST_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def extract_answers(texts: Sequence[str], policy: str, timeout_s: float = EXTRACTION_TIMEOUT_S,
                    fallback_last_number: bool = False) -> list[str | None]:
    """The final answer of each output under ``policy`` (see the module docstring); what needs
    math-verify goes to the math-verify worker in one round trip, each output bounded by ``timeout_s``.

    ``fallback_last_number`` (either policy): an output without any answer gives its last number.
    """
    check_extraction(policy)
    out = [marked_answer(t) if isinstance(t, str) else None for t in texts]
    if policy == "fallback":
        need = [i for i, a in enumerate(out) if a is None and isinstance(texts[i], str) and texts[i].strip()]
        if need:
            found = math_verify_extract_many([_scope(texts[i]) for i in need], timeout_s)
            for i, ans in zip(need, found, strict=True):
                out[i] = None if ans in PLACEHOLDERS else ans
    if fallback_last_number:
        for i, a in enumerate(out):
            if a is None and isinstance(texts[i], str):
                nums = _LAST_NUMBER_RE.findall(texts[i])
                out[i] = nums[-1] if nums else None
    return out


def extract_answer(text: str, fallback_last_number: bool = False, *, policy: str = "strict",
                   timeout_s: float = EXTRACTION_TIMEOUT_S) -> str | None:
    """The final answer a model wrote, or None (see the module docstring for what is read and returned).

    ``policy`` "strict" (this function's default, kept so existing callers read markers only and never
    start a worker) or "fallback" (what runs use by default: ``DEFAULT_EXTRACTION``).
    ``fallback_last_number``: an output without any answer gives its last number instead of None.
    """
    return extract_answers([text], policy, timeout_s, fallback_last_number)[0]


def _clean_number_text(s: str) -> str:
    """A GSM8K reference's number: '$1,234' -> '1234' (references are normalized; extractions are not)."""
    s = _clean_answer(s).replace("\\$", "").lstrip("$").strip()
    return re.sub(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])", lambda m: m.group(0).replace(",", ""), s)


def reference_answer(problem_or_raw: Problem | str, kind: str | None = None) -> str:
    """The clean reference answer from a dataset's raw answer field.

    gsm8k: the worked solution's final line ``#### 1,234`` -> ``1234``. math: a full MATH solution
    (it contains ``\\boxed``) -> the boxed content; an already-clean answer is returned stripped.
    Given a Problem, its ``answer`` and (unless ``kind`` is passed) its ``kind`` are used.
    """
    if isinstance(problem_or_raw, str):
        raw, kind = problem_or_raw, kind or "math"
    else:
        raw, kind = problem_or_raw.answer, kind or problem_or_raw.kind
    if kind == "gsm8k" or "####" in raw:
        hashes = _GSM8K_RE.findall(raw)
        if hashes:
            return _clean_number_text(hashes[-1])
    if "\\boxed" in raw or "\\fbox" in raw:
        boxed = last_boxed(raw)
        if boxed is not None:
            return boxed
    return raw.strip()


__all__ = [
    "DEFAULT_EXTRACTION",
    "EXTRACTIONS",
    "check_extraction",
    "extract_answer",
    "extract_answers",
    "has_boxed",
    "last_boxed",
    "marked_answer",
    "placeholders",
    "reference_answer",
]
