"""ArithCheck: a rule-based process verifier that checks the arithmetic a step states.

A step such as "Step 2: 71 - 15 = 56." states the equation ``71 - 15 = 56``; ArithCheck finds every
such statement in the step, evaluates both sides exactly with ``fractions.Fraction`` and a small
recursive-descent parser (never ``eval``), and rewards the step with

* 1.0 when at least one statement is found and every one holds,
* 0.0 when any statement fails (division by zero on a side counts as failing),
* ``neutral`` when the step states nothing checkable ("The answer is 56.").

A solution's last step is usually "The answer is N.", which states nothing checkable, so with this
scorer the ``last`` aggregation (the last step's reward) is always ``neutral`` and carries no signal: the
scorer declares ``aggregations`` without ``last``, and its ``default_selection`` is ``prm_mean_max`` (the
candidate with the largest share of verified steps; ``min`` and ``prod`` only tell "some step failed" from
"none did", and every solution ending in a neutral step ties at ``neutral`` under ``min``).

What counts as a statement: a run of numbers, operators (``+ - * / ^``, plus ``x × · ⋅ ÷ −`` and
LaTeX ``\\times \\cdot \\div``), parentheses and spaces that contains ``=``. A chain
``3 + 4 = 7 + 2 = 9`` is checked link by link (``3 + 4 = 7`` and ``7 + 2 = 9``), and every run in
the step is read: "2 + 8 = 10, so 10 = 18." fails on its second statement. Numbers may carry
thousands commas (``1,234``) and decimals; ``$`` signs and a trailing period are ignored.

Word forms are rewritten into symbols first: ``plus minus times`` / ``multiplied by`` /
``divided by`` between two numbers; "the sum / product of 2, 3 and 4", "the difference between 9
and 4" (larger minus smaller, as people state it either way round), "the quotient of 12 and 4",
"twice / double / triple 6", "half / a third / a quarter of 10", "20% of 50"; and ``is``,
``equals``, ``is equal to``, ``makes``, ``gives``, ``yields`` between an operand and a number
("4 + 5 is 9"). Operands of word forms must be bare numbers ("the sum of 2 hours and 30 minutes"
is left alone); the result may carry one unit ("2 plus 8 is 10 apples.").

It is deliberately conservative where the text around a run makes the run ambiguous (a PRM's
false 0 costs more than a neutral): a side that is cut off by words ("12 apples - 5 = 7", "two
thirds of 9 = 6", "twice the sum of 2 and 8 is 20") or glued to other symbols ("f(2) = 5",
"x2 = 4", "= 5x", "3:4 = 0.75") is dropped, so such steps come out neutral, not wrong. A bare
number after a word starts a statement only after a connective at a clause boundary ("..., so
10 = 18", "Then 10 = 18"), not after "Page 12 = ..." or "Maria has 4 apples and 5 pears". A
statement made with a word must end cleanly ("5 is 2 more than 3", "12 is 3 dozen",
"14 / 4 is 3 remainder 2" are no claims), and two bare numbers followed by a unit ("So 120 = 2
hours") may compare different units, so they are not checked either.

Decimals: a side that is a bare decimal literal with k places (``10 / 3 = 3.33``) matches when the
other side rounds to it (|difference| <= half a unit in the k-th place), unless ``exact=True``;
two bare literals are always compared exactly (``1.5 = 1.50`` holds, ``1.5 = 1.59`` does not).

The scorer's ``name`` carries a rules version (``arith-check@v2``; v1 read only symbols and
trusted no bare number after a word): cached rewards are keyed by the name, so a change to the
rules bumps ``RULES_VERSION`` and rewards from older rules are never mixed in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from testtime.reward.base import BatchScorer, Scored, ScoreRequest

# Bump when a rule change can change any step's reward (it is in the scorer's name, the cache key).
RULES_VERSION = 2

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

# A word copula ("is", "equals", ...) becomes this marker rather than "=": a statement made with a
# word is held to a stricter right boundary ("5 is 2 more than 3" claims no 5 = 2).
_WORD_EQ = "\ue000"

# A run of arithmetic text; "." only as part of a number, so a sentence's final period ends it.
_RUN_RE = re.compile(rf"(?:\d+(?:\.\d+)?|\.\d+|[-+*/^()= \t{_WORD_EQ}])+")
_SEPARATOR_RE = re.compile(f"([={_WORD_EQ}])")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_LITERAL_RE = re.compile(r"[-+]?\s*(?:\d+(?:\.\d+)?|\.\d+)")  # a side with no operator
_DECIMAL_RE = re.compile(r"\d*\.(\d+)")
_STATEMENT_TAIL_RE = re.compile(r"[\d.()+\-*/^ \t]*\d[ \t)]*")  # the right side of a finished "="

# A run may start right after one of these without being cut off from what came before it.
_TRUSTED_BEFORE = set(":;,.!?\"'[{\n")
# ... and may end right before one of these.
_TRUSTED_AFTER = set(".,;:!?\"']}\n")
# Words that continue an expression: "= 3 times 4" means the run's last side is cut off; so do
# multipliers ("= 2 million", "= 3 dozen") and remainders ("14 / 4 = 3 remainder 2").
_OPERATOR_WORDS = ("times", "plus", "minus", "divided", "multiplied", "over", "of", "per", "squared",
                   "cubed", "percent", "to the", "mod", "dozen", "score", "hundred", "thousand",
                   "million", "billion", "trillion", "remainder", "rem", "r", "with a remainder",
                   "and a half", "and one half", "and a quarter", "and a third")
# Words that start a new clause: a bare number after one of them starts a statement ("..., so
# 10 = 18"), provided the word itself follows a boundary or a finished statement.
_CONNECTIVES = frozenset(("so", "then", "thus", "hence", "therefore", "and", "also", "now", "next",
                          "finally", "again", "check"))
# Words that bind to the number after them: the run's first side is then part of a longer
# expression ("twice (2 + 8) = 20", "the 3 = ...", "two thirds of 9 = 6").
_BINDING_WORDS = frozenset(("of", "times", "twice", "double", "triple", "thrice", "half", "halves",
                            "third", "thirds", "quarter", "quarters", "than", "by", "plus", "minus",
                            "over", "per", "percent", "a", "an", "the"))
# After a statement made with a word ("... is 12"), the only words that may follow the result:
# at most one unit ("is 12 apples"), then a boundary, a connective, or one of these.
_RESULT_TAILS = ("in total", "in all", "altogether", "total", "overall")
# ... and a unit is any word but these, which turn the result into part of a comparison or a
# larger quantity ("5 is 2 more than 3", "12 is 3 dozen", "7 is 2 away from 5").
_NOT_UNITS = frozenset(("more", "less", "fewer", "greater", "smaller", "larger", "bigger", "higher",
                        "lower", "longer", "shorter", "older", "younger", "away", "apart", "short",
                        "shy", "off", "up", "down", "than", "times", "as", "too", "and", "or",
                        "percent", "of", "out", "per", "to", "from", "plus", "minus", "by")) \
    | frozenset(w for w in _OPERATOR_WORDS if " " not in w)

_MAX_EXPONENT_BITS = 100_000  # refuse 9^9^9 and friends (the side is then not checkable)


def _normalize(text: str) -> str:
    text = text.replace(_WORD_EQ, " ")  # the marker is ours alone
    text = _MARKDOWN_STARS_RE.sub(" ", text)
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = _THOUSANDS_RE.sub("", text)
    text = _LETTER_X_RE.sub(" * ", text)
    return _rewrite_word_forms(text)


# --------------------------------------------------------------------------------------------
# Word forms: rewritten into symbols before statements are extracted
# --------------------------------------------------------------------------------------------

# A number as word forms take it (after normalisation: no "$", no thousands commas). It must end
# the number: "20%" is a percentage, "3x" an unknown, "12.5" a decimal, none of them a "12".
_NUM_BODY = r"-?(?:\d+(?:\.\d+)?|\.\d+)"
_NUM = _NUM_BODY + r"(?![\w%]|\.\d)"
_FLAGS = re.IGNORECASE

# "20% of 50", "20 percent of 50" -> (20 / 100 * 50).
_PERCENT_OF_RE = re.compile(rf"(?<![\w.])({_NUM_BODY})\s*(?:%|\bpercent)\s+of\s+({_NUM})", _FLAGS)
# "half of 10" -> (10 / 2); not "one and a half of 10", which is 15.
_PART_OF_RE = re.compile(
    rf"\b(?<!\band )(?<!\band a )(?<!\band one )"
    rf"(?:(?:a|one)\s+)?(half|third|quarter|fourth)\s+of\s+({_NUM})", _FLAGS)
_PART = {"half": 2, "third": 3, "quarter": 4, "fourth": 4}
# "twice 6" -> (2 * 6).
_MULTIPLE_RE = re.compile(rf"\b(twice|double|triple|thrice)\s+({_NUM})", _FLAGS)
_MULTIPLE = {"twice": 2, "double": 2, "triple": 3, "thrice": 3}
# "the sum of 2, 3 and 4", "the product of 3 and 4": operands are bare numbers only, so
# "the sum of 2 hours and 30 minutes" (the units may differ) is left alone.
_SUM_PRODUCT_RE = re.compile(
    rf"\b(?:the\s+)?(sum|product)\s+of\s+((?:{_NUM}\s*,\s*)*{_NUM}),?\s+and\s+({_NUM})", _FLAGS)
# "the difference between 9 and 4": people state it either way round, so it is larger - smaller.
_DIFFERENCE_RE = re.compile(rf"\b(?:the\s+)?difference\s+(?:between|of)\s+({_NUM})\s+and\s+({_NUM})", _FLAGS)
# "the quotient of 12 and 4" -> (12 / 4).
_QUOTIENT_RE = re.compile(rf"\b(?:the\s+)?quotient\s+of\s+({_NUM})\s+and\s+({_NUM})", _FLAGS)
# Operator words, only between two operands ("3 times 4"; "3 times a week" stays prose).
_OPERATOR_WORD_RE = re.compile(
    r"(?<=[\d)])\s+(plus|minus|times|multiplied\s+by|divided\s+by)\s+(?=-?[\d(.])", _FLAGS)
_OPERATOR_SYMBOL = {"plus": "+", "minus": "-", "times": "*", "multiplied": "*", "divided": "/"}
# Copulas, only between an operand and a number ("The answer is 56" has no left side).
_COPULA_RE = re.compile(
    r"(?<=[\d)])\s+(?:is\s+equal\s+to|equals|is|makes|gives|yields)\s+(?=-?[\d(.])", _FLAGS)


def _rewrite_word_forms(text: str) -> str:
    """Spell word forms as symbols: "the sum of 2 and 8 is 10" -> "(2 + 8) <_WORD_EQ> 10".

    Compound forms go first, so "3 times the sum of 2 and 8" meets "times" before "(".
    """
    text = _PERCENT_OF_RE.sub(lambda m: f"({m[1]} / 100 * {m[2]})", text)
    text = _PART_OF_RE.sub(lambda m: f"({m[2]} / {_PART[m[1].lower()]})", text)
    text = _MULTIPLE_RE.sub(lambda m: f"({_MULTIPLE[m[1].lower()]} * {m[2]})", text)

    def sum_product(m: re.Match[str]) -> str:
        operands = [x.strip() for x in m[2].split(",")] + [m[3]]
        return "(" + (" + " if m[1].lower() == "sum" else " * ").join(operands) + ")"

    def difference(m: re.Match[str]) -> str:
        a, b = sorted((m[1], m[2]), key=Fraction, reverse=True)
        return f"({a} - {b})"

    text = _SUM_PRODUCT_RE.sub(sum_product, text)
    text = _DIFFERENCE_RE.sub(difference, text)
    text = _QUOTIENT_RE.sub(lambda m: f"({m[1]} / {m[2]})", text)
    text = _OPERATOR_WORD_RE.sub(lambda m: f" {_OPERATOR_SYMBOL[m[1].split()[0].lower()]} ", text)
    return _COPULA_RE.sub(f" {_WORD_EQ} ", text)


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


def _after_boundary(before: str) -> bool:
    """Whether `before` ends at a clause boundary: nothing, punctuation, or a finished statement."""
    before = before.rstrip(" \t")
    if not before or before[-1] in _TRUSTED_BEFORE:
        return True
    # "2 + 8 = 10 so ...": only arithmetic since the last "=" (a word there ends the statement).
    last_eq = max(before.rfind("="), before.rfind(_WORD_EQ))
    return last_eq >= 0 and _STATEMENT_TAIL_RE.fullmatch(before, last_eq + 1) is not None


def _last_word(text: str) -> str:
    """The letters `text` ends with, lower case (scanned backwards: steps may be long)."""
    start = len(text)
    while start and text[start - 1].isalpha():
        start -= 1
    return text[start:].lower()


def _first_side_cut_off(before: str, run: str, side: str) -> bool:
    """Whether the run's first side may be the tail of a longer expression written in words."""
    if not before:
        return False
    if not run[:1].isspace():  # glued to the previous character: "x2 = 4", "f(2) = 5", "^3 = 8"
        if before[-1] == ":" and before[-2:-1].isdigit():  # a ratio or a time: "3:4 = 0.75"
            return True
        return before[-1] not in _TRUSTED_BEFORE
    prev = before.rstrip(" \t")
    if not prev or prev[-1] in _TRUSTED_BEFORE:
        return False
    if prev[-1].isalpha():
        word = _last_word(prev)
        if word in _BINDING_WORDS:  # "twice (2 + 8) = 20": the side is an operand of the word
            return True
        if word in _CONNECTIVES and _after_boundary(prev[: len(prev) - len(word)]):
            return False  # "2 + 8 = 10, so 10 = 18": a new statement starts
        # "12 apples - 5 = 7", "Page 12 = 4"; but "So 3 + 4 = 7", "Tom has 12 + 5 = 17" are fine
        return bool(_NUMBER_RE.fullmatch(side)) or side[:1] in "+-*/^"
    return True  # "50% 3 = ...", "} 3 = ..." and other symbols: not trustworthy


def _starts_with_word(text: str, words: Sequence[str] | frozenset[str]) -> bool:
    return any(re.match(rf"{re.escape(w)}\b", text) for w in words)


def _clause_ends(rest: str) -> bool:
    """Whether `rest` (stripped, lower case) begins where a statement may end."""
    return not rest or rest[0] in _TRUSTED_AFTER or _starts_with_word(rest, _CONNECTIVES) \
        or _starts_with_word(rest, _RESULT_TAILS)


def _last_side_cut_off(after: str, run: str, by_word: bool) -> bool:
    """Whether the run's last side continues in words or symbols: "= 3 times 4", "= 5x".

    `by_word`: the last link was stated with a word ("is"), which needs a clean end: "is 12.",
    "is 12 apples, so", "is 12 in total"; not "is 2 more than 3".
    """
    if not after:
        return False
    if not run[-1:].isspace():
        return after[0] not in _TRUSTED_AFTER
    rest = after.lstrip(" \t").lower()
    if _starts_with_word(rest, _OPERATOR_WORDS):
        return True
    if not by_word or _clause_ends(rest):
        return False
    unit = re.match(r"([a-z]+)[ \t]*", rest)
    return unit is None or unit.group(1) in _NOT_UNITS or not _clause_ends(rest[unit.end():])


def _unit_follows(after: str) -> bool:
    """Whether a word follows the run: "= 2 hours" (after "120 minutes" left the run)."""
    return re.match(r"[ \t]*[A-Za-z]", after) is not None


def _statements(text: str) -> list[tuple[str, str]]:
    text = _normalize(text)
    out: list[tuple[str, str]] = []
    for m in _RUN_RE.finditer(text):
        run = m.group(0)
        parts = _SEPARATOR_RE.split(run)  # side, separator, side, ...
        if len(parts) < 3:
            continue
        sides = [_strip_unbalanced(s) for s in parts[::2]]
        by_word_last = parts[-2] == _WORD_EQ
        ok = [_parses(s) for s in sides]
        if ok[0] and _first_side_cut_off(text[: m.start()], run, sides[0]):
            ok[0] = False
        after = text[m.end():]
        if ok[-1] and _last_side_cut_off(after, run, by_word_last):
            ok[-1] = False
        # "So 120 = 2 hours": two bare numbers with a unit after the second may compare different
        # units (the first one's unit was left out), so that link says nothing checkable.
        if _unit_follows(after) and all(_LITERAL_RE.fullmatch(s) for s in sides[-2:]):
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
    # the last step ("The answer is N.") states nothing checkable: `last` is always `neutral` (module docstring)
    aggregations = ("min", "mean", "prod")
    default_selection = "prm_mean_max"

    def __init__(self, neutral: float = 0.5, *, exact: bool = False) -> None:
        if not 0.0 <= neutral <= 1.0:
            raise ValueError(f"arith-check neutral={neutral}: must be in [0, 1]")
        self.neutral = float(neutral)
        self.exact = exact
        # The name carries the rules version and the settings that change rewards, so cached
        # rewards never mix rules or settings.
        base = f"arith-check@v{RULES_VERSION}"
        default = (neutral, exact) == (0.5, False)
        self.name = base if default else f"{base}(neutral={neutral},exact={exact})"

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
