"""Synthetic arithmetic with graded difficulty, for calibrating small models and PRM checks.

Each problem is a left-to-right chain of operations; its worked solution has one arithmetic
statement per step ("Step 2: 71 - 15 = 56.") so a checker can verify every step.

Levels, aimed at a ~135M few-shot model (pass@1 ~99% on L1, ~15-30% on L2-3, ~0% on L4-5):
  1  single-digit addition                                  3 + 5
  2  two-digit addition or subtraction                      47 - 19
  3  two steps: two-digit +/-, or one-digit * then +/-      23 + 48 - 15,  7 * 8 + 23
  4  three steps, one multiplication by a digit             (23 + 48) * 3 - 15
  5  four steps, multiplication and exact division          (23 + 49) * 3 / 4 - 15
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from testtime.datasets._common import DatasetError
from testtime.types import Problem

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)

# Operation patterns per level. Every pattern of a level has the same number of steps, so a
# level is a fixed amount of reasoning work; the patterns only vary where the hard step falls.
_PATTERNS: dict[int, list[tuple[str, ...]]] = {
    1: [("+",)],
    2: [("+",), ("-",)],
    3: [("+", "-"), ("-", "+"), ("+", "+"), ("-", "-"), ("*", "+"), ("*", "-")],
    4: [("+", "*", "-"), ("-", "*", "+"), ("*", "+", "-"), ("*", "-", "+"), ("+", "-", "*")],
    5: [("+", "*", "/", "-"), ("-", "*", "/", "+"), ("*", "+", "/", "-"), ("*", "-", "+", "/"),
        ("+", "*", "-", "/")],
}

_EXPR_TEMPLATES = ("What is {e}?", "Compute {e}.", "Calculate {e}.", "Evaluate {e}.",
                   "Find the value of {e}.")

# Word phrasing is used only for +/- chains, where the story maps one-to-one onto the steps.
_WORD_SHARE = 0.3
_NAMES = (("Tom", "he"), ("Anna", "she"), ("Sam", "he"), ("Maria", "she"), ("Ben", "he"),
          ("Lily", "she"), ("Omar", "he"), ("Priya", "she"))
_ITEMS = (("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("book", "books"),
          ("coin", "coins"), ("pencil", "pencils"), ("card", "cards"), ("stamp", "stamps"))
_GAIN = ("{P} gets {n} more {item}.", "{P} buys {n} more {item}.", "{P} finds {n} more {item}.")
_LOSS = ("{P} gives away {n} {item}.", "{P} loses {n} {item}.", "{P} sells {n} {item}.")

_MAX_TRIES = 1000


@dataclass(frozen=True)
class _Chain:
    start: int
    ops: tuple[tuple[str, int], ...]  # (operator, operand), applied left to right

    def values(self) -> list[int]:
        vals = [self.start]
        for op, x in self.ops:
            v = vals[-1]
            vals.append(v + x if op == "+" else v - x if op == "-" else v * x if op == "*" else v // x)
        return vals

    def expression(self) -> str:
        text, top = str(self.start), None  # top: the outermost operator of `text` so far
        for op, x in self.ops:
            # Left-to-right evaluation: wrap a +/- prefix before * or / so standard precedence agrees.
            if op in "*/" and top in ("+", "-"):
                text = f"({text})"
            text = f"{text} {op} {x}"
            top = op
        return text

    def steps(self) -> list[str]:
        vals = self.values()
        out = [f"Step {i + 1}: {vals[i]} {op} {x} = {vals[i + 1]}." for i, (op, x) in enumerate(self.ops)]
        out.append(f"The answer is {vals[-1]}.")
        return out


def _try_chain(level: int, rng: random.Random) -> _Chain | None:
    """One random chain for `level`, or None when a constraint fails (the caller redraws)."""
    pattern = rng.choice(_PATTERNS[level])
    if level == 1:
        start = rng.randint(1, 9)
    elif level == 3 and pattern[0] == "*":
        start = rng.randint(2, 9)  # level 3 keeps multiplication to the times table
    else:
        start = rng.randint(10, 99)
    cur, ops, prev = start, [], None
    for op in pattern:
        if op == "+":
            x = rng.randint(1, 9) if level == 1 else rng.randint(10, 99)
        elif op == "-":
            if cur < 10:
                return None
            x = rng.randint(10, min(99, cur))  # never below zero
        elif op == "*":
            x = rng.randint(2, 9)
        else:
            # Exact division by a digit, never just undoing the multiplication right before it.
            divisors = [d for d in range(2, 10) if cur % d == 0 and prev != ("*", d)]
            if not divisors or cur == 0:
                return None
            x = rng.choice(divisors)
        ops.append((op, x))
        prev = (op, x)
        cur = _Chain(start, tuple(ops)).values()[-1]
    return _Chain(start, tuple(ops))


def _draw(level: int, rng: random.Random) -> tuple[str, _Chain]:
    for _ in range(_MAX_TRIES):
        chain = _try_chain(level, rng)
        if chain is not None:
            return _question(chain, rng), chain
    raise RuntimeError(f"arith level {level}: no valid chain in {_MAX_TRIES} draws")  # pragma: no cover


def _question(chain: _Chain, rng: random.Random) -> str:
    additive = all(op in "+-" for op, _ in chain.ops)
    if not (additive and rng.random() < _WORD_SHARE):
        return rng.choice(_EXPR_TEMPLATES).format(e=chain.expression())
    name, pron = rng.choice(_NAMES)
    one, many = rng.choice(_ITEMS)

    def item(n: int) -> str:
        return one if n == 1 else many

    parts = [f"{name} has {chain.start} {item(chain.start)}."]
    for i, (op, x) in enumerate(chain.ops):
        sentence = rng.choice(_GAIN if op == "+" else _LOSS)
        subject = pron.capitalize() if i == 0 else f"Then {pron}"
        parts.append(sentence.format(P=subject, n=x, item=item(x)))
    parts.append(f"How many {many} does {name} have now?")
    return " ".join(parts)


def _check_level(level: int) -> None:
    if level not in LEVELS:
        raise DatasetError(f"arith level must be one of {list(LEVELS)}, got {level!r}")


def arith_id(level: int, index: int, seed: int = 0) -> str:
    """"arith-L3-0007"; a non-default seed is part of the id so results of two seeds never collide."""
    return f"arith-L{level}-{index:04d}" if seed == 0 else f"arith-s{seed}-L{level}-{index:04d}"


def _make(level: int, question: str, chain: _Chain, pid: str, seed: int, index: int) -> Problem:
    steps = chain.steps()
    return Problem(
        id=pid,
        question=question,
        answer=str(chain.values()[-1]),
        kind="arith",
        meta={"level": level, "source": "arith", "seed": seed, "index": index,
              "expression": chain.expression(), "solution_steps": steps, "solution": "\n\n".join(steps)},
    )


def generate_arith(level: int, index: int, seed: int = 0) -> Problem:
    """Problem `index` of `level` for `seed`: a pure function of the three (no global RNG state)."""
    _check_level(level)
    # Seeding with a str is stable across processes (hashed with SHA-512, not hash()).
    rng = random.Random(f"arith|{seed}|{level}|{index}")
    question, chain = _draw(level, rng)
    return _make(level, question, chain, arith_id(level, index, seed), seed, index)


def load_arith(n: int, levels: list[int] | None = None, seed: int = 0) -> list[Problem]:
    """`n` problems, levels taken round-robin: problem i has level levels[i % L], index i // L."""
    if n < 0:
        raise DatasetError(f"arith: number of problems must be >= 0, got {n}")
    chosen = list(dict.fromkeys(levels)) if levels is not None else list(LEVELS)  # dedupe, keep order
    if not chosen:
        raise DatasetError("arith: levels must not be empty")
    for level in chosen:
        _check_level(level)
    width = len(chosen)
    return [generate_arith(chosen[i % width], i // width, seed) for i in range(n)]


def fewshot_examples(problem: Problem, k: int = 3) -> list[tuple[str, str]]:
    """k (question, worked solution) pairs of the problem's level, never the problem itself.

    The examples come from their own seed stream and are the same for every problem of a
    (seed, level) except where one would coincide with the problem, so prompts share a prefix
    (which keeps the KV cache warm across problems).
    """
    level = problem.meta.get("level")
    if problem.kind != "arith" or level not in LEVELS:
        raise ValueError(f"problem {problem.id!r} is not an arith problem with a level")
    seed = problem.meta.get("seed", 0)
    own = {problem.question, problem.meta.get("expression")}
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    j = 0
    while len(out) < k:
        if j >= _MAX_TRIES:  # level 1 has only 81 distinct sums, so a huge k can run out
            raise ValueError(f"arith level {level}: cannot find {k} distinct few-shot examples")
        rng = random.Random(f"arith-fewshot|{seed}|{level}|{j}")
        j += 1
        question, chain = _draw(level, rng)
        expr = chain.expression()
        if question in own or expr in own or expr in seen:
            continue
        seen.add(expr)
        out.append((question, "\n\n".join(chain.steps())))
    return out
