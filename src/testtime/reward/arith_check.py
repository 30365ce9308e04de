"""ArithCheck: a rule-based process verifier that checks the arithmetic a step states.

A step such as "Step 2: 71 - 15 = 56." states the equation ``71 - 15 = 56``; ArithCheck finds such
statements, evaluates both sides exactly with ``fractions.Fraction`` and a small recursive-descent
parser (never ``eval``), and rewards the step with

* 1.0 when at least one statement is found and every one holds,
* 0.0 when any statement fails (division by zero on a side counts as failing),
* ``neutral`` when the step states nothing checkable ("The answer is 56.").

What counts as a statement: a run of numbers, operators (``+ - * / ^``, plus ``x × · ⋅ ÷ −`` and
LaTeX ``\\times \\cdot \\div``), parentheses and spaces that contains ``=``. A chain
``3 + 4 = 7 + 2 = 9`` is checked link by link (``3 + 4 = 7`` and ``7 + 2 = 9``). Numbers may carry
thousands commas (``1,234``) and decimals; ``$`` signs and a trailing period are ignored.

It is deliberately conservative where the text around a run makes the run ambiguous: a side that
is cut off by words ("12 apples - 5 = 7", "half of 20 = 10", "3 times 4 = 12") or glued to other
symbols ("f(2) = 5", "x2 = 4", "= 5x") is dropped, so such steps come out neutral, not wrong.

Decimals: a side that is a bare decimal literal with k places (``10 / 3 = 3.33``) matches when the
other side rounds to it (|difference| <= half a unit in the k-th place), unless ``exact=True``;
two bare literals are always compared exactly (``1.5 = 1.50`` holds, ``1.5 = 1.59`` does not).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from testtime.reward.base import BatchScorer, Scored, ScoreRequest

# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

_REPLACEMENTS = (
    ("\\left", ""), ("\\right", ""),
    ("\\times", " * "), ("\\cdot", " * "), ("\\div", " / "),
    ("\\(", " "), ("\\)", " "), ("\\[", " "), ("\\]", " "),
    ("−", "-"), ("×", " * "), ("÷", " / "), ("·", " * "), ("⋅", " * "),
    ("$", " "), ("==", "="),
)
_MARKDOWN_STARS_RE = re.compile(r"\*{2,}")  # **bold** markers; we never read ** as power
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LETTER_X_RE = re.compile(r"(?<=[\d)])[ \t]*x[ \t]*(?=[\d(])")  # 3 x 4, 3x4, (2)x(3)

# A run of arithmetic text; "." only as part of a number, so a sentence's final period ends it.
_RUN_RE = re.compile(r"(?:\d+(?:\.\d+)?|\.\d+|[-+*/^()= \t])+")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_DECIMAL_RE = re.compile(r"\d*\.(\d+)")

# A run may start right after one of these without being cut off from what came before it.
_TRUSTED_BEFORE = set(":;,.!?\"'[{\n")
# ... and may end right before one of these.
_TRUSTED_AFTER = set(".,;:!?\"']}\n")
# Words that continue an expression: "= 3 times 4" means the run's last side is cut off.
_OPERATOR_WORDS = ("times", "plus", "minus", "divided", "multiplied", "over", "of", "per", "squared",
                   "cubed", "percent", "to the", "mod")

_MAX_EXPONENT_BITS = 100_000  # refuse 9^9^9 and friends (the side is then not checkable)


def _normalize(text: str) -> str:
    text = _MARKDOWN_STARS_RE.sub(" ", text)
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = _THOUSANDS_RE.sub("", text)
    return _LETTER_X_RE.sub(" * ", text)


# --------------------------------------------------------------------------------------------
# Expression parser: tokenizer + recursive descent over Fractions
# --------------------------------------------------------------------------------------------


class _ParseError(ValueError):
    """The text is not an expression this parser understands (the side is not checkable)."""


_TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|([-+*/^()]))")


def _tokenize(expr: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None:
            raise _ParseError(f"unexpected character at {pos} in {expr!r}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    if not tokens:
        raise _ParseError("empty expression")
    return tokens


class _Parser:
    """Grammar (usual precedence; ^ binds tighter than unary minus and is right-associative)::

        expr  := term (('+' | '-') term)*
        term  := unary (('*' | '/') unary | implicit '(' unary)*
        unary := ('+' | '-') unary | power
        power := atom ('^' unary)?
        atom  := NUMBER | '(' expr ')'

    Values are Fractions, or None for "undefined" (division by zero), which propagates.
    """

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise _ParseError("unexpected end of expression")
        self.pos += 1
        return tok

    def parse(self) -> Fraction | None:
        value = self.expr()
        if self.peek() is not None:
            raise _ParseError(f"unexpected token {self.peek()!r}")
        return value

    def expr(self) -> Fraction | None:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            if value is None or rhs is None:
                value = None
            else:
                value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction | None:
        value = self.unary()
        while self.peek() in ("*", "/", "("):
            op = "*" if self.peek() == "(" else self.take()
            rhs = self.unary()
            if value is None or rhs is None:
                value = None
            elif op == "*":
                value = value * rhs
            else:
                value = None if rhs == 0 else value / rhs
        return value

    def unary(self) -> Fraction | None:
        if self.peek() in ("+", "-"):
            op = self.take()
            value = self.unary()
            return None if value is None else (-value if op == "-" else value)
        return self.power()

    def power(self) -> Fraction | None:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take()
        exp = self.unary()
        if base is None or exp is None:
            return None
        if exp.denominator != 1:
            raise _ParseError("non-integer exponent")  # not exact: leave the side unchecked
        size = max(base.numerator.bit_length(), base.denominator.bit_length(), 1)
        if size * abs(exp.numerator) > _MAX_EXPONENT_BITS:
            raise _ParseError("exponent too large")
        if base == 0 and exp < 0:
            return None
        return base ** int(exp)

    def atom(self) -> Fraction | None:
        tok = self.take()
        if tok == "(":
            value = self.expr()
            if self.take() != ")":
                raise _ParseError("expected ')'")
            return value
        if _NUMBER_RE.fullmatch(tok):
            return Fraction(tok)
        raise _ParseError(f"unexpected token {tok!r}")


def _evaluate(expr: str) -> Fraction | None:
    """The exact value of `expr`; None when undefined (division by zero); _ParseError if unparseable."""
    try:
        return _Parser(_tokenize(expr)).parse()
    except RecursionError as exc:  # absurdly deep parentheses
        raise _ParseError("expression too deep") from exc
    except _ParseError:
        raise
    except ValueError as exc:  # e.g. a number beyond int's digit limit
        raise _ParseError(str(exc)) from exc


def evaluate(expr: str) -> Fraction | None:
    """Public helper: the exact value of an arithmetic expression (same normalisation as steps).

    Returns None when the value is undefined (division by zero); raises ValueError when `expr`
    is not an arithmetic expression.
    """
    return _evaluate(_normalize(expr))


# --------------------------------------------------------------------------------------------
# Statement extraction and checking
# --------------------------------------------------------------------------------------------


def _strip_unbalanced(side: str) -> str:
    """Drop a leading "(" / trailing ")" that belongs to the surrounding prose: "(so 3 + 4 = 7)"."""
    side = " ".join(side.split())
    while side.startswith("(") and side.count("(") > side.count(")"):
        side = side[1:].strip()
    while side.endswith(")") and side.count(")") > side.count("("):
        side = side[:-1].strip()
    return side


def _parses(side: str) -> bool:
    if not side:
        return False
    try:
        _evaluate(side)
    except _ParseError:
        return False
    return True


def _first_side_cut_off(before: str, run: str, side: str) -> bool:
    """Whether the run's first side may be the tail of a longer expression written in words."""
    if not before:
        return False
    if not run[:1].isspace():  # glued to the previous character: "x2 = 4", "f(2) = 5", "^3 = 8"
        return before[-1] not in _TRUSTED_BEFORE
    prev = before.rstrip(" \t")
    if not prev or prev[-1] in _TRUSTED_BEFORE:
        return False
    if prev[-1].isalpha():  # "12 apples - 5 = 7", "half of 20 = 10"; but "So 3 + 4 = 7" is fine
        return bool(_NUMBER_RE.fullmatch(side)) or side[:1] in "+-*/^"
    return True  # "50% 3 = ...", "} 3 = ..." and other symbols: not trustworthy


def _last_side_cut_off(after: str, run: str) -> bool:
    """Whether the run's last side continues in words or symbols: "= 3 times 4", "= 5x"."""
    if not after:
        return False
    if not run[-1:].isspace():
        return after[0] not in _TRUSTED_AFTER
    rest = after.lstrip(" \t").lower()
    return any(re.match(rf"{w}\b", rest) for w in _OPERATOR_WORDS)


def _statements(text: str) -> list[tuple[str, str]]:
    text = _normalize(text)
    out: list[tuple[str, str]] = []
    for m in _RUN_RE.finditer(text):
        run = m.group(0)
        if "=" not in run:
            continue
        sides = [_strip_unbalanced(s) for s in run.split("=")]
        ok = [_parses(s) for s in sides]
        if ok[0] and _first_side_cut_off(text[: m.start()], run, sides[0]):
            ok[0] = False
        if ok[-1] and _last_side_cut_off(text[m.end():], run):
            ok[-1] = False
        out.extend((sides[i], sides[i + 1]) for i in range(len(sides) - 1) if ok[i] and ok[i + 1])
    return out


def extract_statements(step: str) -> list[tuple[str, str]]:
    """Every checkable equation link in `step`, as (left side, right side), normalised text.

    "3 + 4 = 7 + 2 = 9." -> [("3 + 4", "7"), ("7 + 2", "9")]; "1,234 × 2 = 2,468" ->
    [("1234 * 2", "2468")].
    """
    return _statements(step)


def _decimal_places(side: str) -> int | None:
    m = _DECIMAL_RE.fullmatch(side.lstrip("+-").strip())
    return len(m.group(1)) if m else None


def _holds(lhs: str, rhs: str, exact: bool) -> bool:
    a, b = _evaluate(lhs), _evaluate(rhs)
    if a is None or b is None:
        return False
    if a == b:
        return True
    if exact:
        return False
    pa, pb = _decimal_places(lhs), _decimal_places(rhs)
    if (pa is None) == (pb is None):  # neither is a bare decimal, or both are: exact only
        return False
    places = pa if pa is not None else pb
    return abs(a - b) <= Fraction(1, 2 * 10**places)  # type: ignore[operator]


def check_step(step: str, exact: bool = False) -> list[bool]:
    """For every statement `extract_statements(step)` finds, whether it holds."""
    return [_holds(lhs, rhs, exact) for lhs, rhs in _statements(step)]


class ArithCheck(BatchScorer):
    """Rule-based process verifier for arithmetic steps (see the module docstring)."""

    n_params = 0
    outcome_only = False

    def __init__(self, neutral: float = 0.5, *, exact: bool = False) -> None:
        if not 0.0 <= neutral <= 1.0:
            raise ValueError(f"arith-check neutral={neutral}: must be in [0, 1]")
        self.neutral = float(neutral)
        self.exact = exact
        # The name carries the settings that change rewards, so cached rewards never mix settings.
        default = (neutral, exact) == (0.5, False)
        self.name = "arith-check" if default else f"arith-check(neutral={neutral},exact={exact})"

    def step_reward(self, step: str) -> float:
        verdicts = check_step(step, self.exact)
        if not verdicts:
            return self.neutral
        return 1.0 if all(verdicts) else 0.0

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        # The question is not needed: each step is judged on the arithmetic it states.
        return [Scored([self.step_reward(step) for step in r.steps]) for r in requests]

    def __repr__(self) -> str:
        return f"ArithCheck(neutral={self.neutral}, exact={self.exact})"
