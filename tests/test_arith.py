"""The synthetic arith set: determinism, verifiable step arithmetic, balance and few-shot examples."""

from __future__ import annotations

import ast
import operator
import random
import re
from collections import Counter

import pytest

from testtime.datasets import (
    GSM8K_FEWSHOT,
    MATH_FEWSHOT,
    DatasetError,
    fewshot_examples,
    fewshot_for,
    generate_arith,
    load_arith,
)
from testtime.types import Problem

# --- a small evaluator written independently of the generator --------------------------------

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "x": operator.mul}
_STEP = re.compile(r"^Step (\d+): (\d+) ([-+*x/]) (\d+) = (-?\d+)\.$")
_FINAL = re.compile(r"^The answer is (-?\d+)\.$")
_STATEMENT = re.compile(r"(?<![\w/{])(\d+) ([-+*/]) (\d+) = (\d+)(?![\w/}])")


def apply(a: int, op: str, b: int) -> int:
    if op == "/":
        assert b != 0 and a % b == 0, f"inexact division {a} / {b}"
        return a // b
    return _OPS[op](a, b)


def eval_expr(text: str) -> int:
    """Evaluate + - * / over integers with standard precedence, via the ast (no eval)."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp):
            sym = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(node.op)]
            return apply(walk(node.left), sym, walk(node.right))
        raise AssertionError(f"unexpected syntax in {text!r}")

    return walk(ast.parse(text, mode="eval").body)


def check_solution(steps: list[str]) -> tuple[int, list[tuple[int, str, int, int]]]:
    """Verify every step's arithmetic and the chaining; return (final answer, parsed steps)."""
    parsed = []
    for k, step in enumerate(steps[:-1], start=1):
        m = _STEP.match(step)
        assert m, f"step not in 'Step k: a op b = c.' form: {step!r}"
        num, a, op, b, c = int(m[1]), int(m[2]), m[3], int(m[4]), int(m[5])
        assert num == k
        assert apply(a, op, b) == c, f"wrong arithmetic: {step!r}"
        assert c >= 0, f"negative intermediate: {step!r}"
        if parsed:
            assert a == parsed[-1][3], f"step {k} does not continue from the previous result"
        parsed.append((a, op, b, c))
    m = _FINAL.match(steps[-1])
    assert m, f"last step is not 'The answer is N.': {steps[-1]!r}"
    assert parsed and int(m[1]) == parsed[-1][3]
    return int(m[1]), parsed


# --- the evaluator itself must be able to fail ---------------------------------------------


def test_checker_rejects_wrong_steps():
    with pytest.raises(AssertionError):
        check_solution(["Step 1: 2 + 2 = 5.", "The answer is 5."])
    with pytest.raises(AssertionError):
        check_solution(["Step 1: 2 + 2 = 4.", "Step 2: 5 + 1 = 6.", "The answer is 6."])
    with pytest.raises(AssertionError):
        check_solution(["Step 1: 2 + 2 = 4.", "The answer is 5."])
    with pytest.raises(AssertionError):
        eval_expr("7 / 2")


# --- determinism ------------------------------------------------------------------------------


def _full(p: Problem) -> tuple:
    return (p.id, p.question, p.answer, p.kind, p.meta)


def test_same_seed_same_problems():
    assert [_full(p) for p in load_arith(40, seed=3)] == [_full(p) for p in load_arith(40, seed=3)]


def test_problem_i_independent_of_count():
    small, big = load_arith(10, seed=0), load_arith(100, seed=0)
    assert [_full(p) for p in small] == [_full(p) for p in big[:10]]
    sub_small, sub_big = load_arith(4, levels=[2, 5]), load_arith(30, levels=[2, 5])
    assert [_full(p) for p in sub_small] == [_full(p) for p in sub_big[:4]]


def test_independent_of_global_random_state():
    random.seed(1)
    a = load_arith(15)
    random.seed(2)
    random.random()
    b = load_arith(15)
    assert [_full(p) for p in a] == [_full(p) for p in b]


def test_different_seed_different_problems():
    a, b = load_arith(50, seed=0), load_arith(50, seed=1)
    same = sum(x.question == y.question for x, y in zip(a, b, strict=True))
    assert same < 10  # level 1 has few distinct sums, so a handful may coincide
    assert {p.id for p in a}.isdisjoint({p.id for p in b})  # seed is part of non-default ids


def test_generate_matches_load():
    problems = load_arith(10, levels=[1, 3])
    for i, p in enumerate(problems):
        level, index = [1, 3][i % 2], i // 2
        assert _full(generate_arith(level, index)) == _full(p)


# --- correctness ------------------------------------------------------------------------------

_N_STEPS = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4}


@pytest.mark.parametrize("seed", [0, 7])
def test_answers_and_steps_verify(seed):
    for p in load_arith(500, seed=seed):
        steps = p.meta["solution_steps"]
        final, parsed = check_solution(steps)
        assert str(final) == p.answer
        assert p.kind == "arith" and p.meta["source"] == "arith" and p.meta["seed"] == seed
        assert p.meta["solution"] == "\n\n".join(steps)
        assert all("\n\n" not in s for s in steps)  # a step ends at a blank line
        assert len(parsed) == _N_STEPS[p.level]
        assert eval_expr(p.meta["expression"]) == final
        ops = [op for _, op, _, _ in parsed]
        operands = [parsed[0][0]] + [b for _, _, b, _ in parsed]
        if p.level == 1:
            assert ops == ["+"] and all(0 <= x <= 9 for x in operands)
        elif p.level == 2:
            assert ops in (["+"], ["-"]) and all(10 <= x <= 99 for x in operands)
        elif p.level == 3:
            assert set(ops) <= {"+", "-", "*"} and ops.count("*") <= 1
            assert all(b <= 9 for _, op, b, _ in parsed if op == "*")
        elif p.level == 4:
            assert "*" in ops and "/" not in ops
        else:
            assert "*" in ops and "/" in ops
        # The question states the same arithmetic: its numbers, in order, are the operands.
        assert [int(x) for x in re.findall(r"\d+", p.question)] == operands, p.question


def test_some_word_problems_only_additive():
    problems = load_arith(300)
    word = [p for p in problems if "have now?" in p.question]
    assert len(word) > 20
    assert all(p.level <= 3 and not re.search(r"[*/]", p.meta["expression"]) for p in word)


# --- balance and ids --------------------------------------------------------------------------


def test_levels_round_robin():
    problems = load_arith(23)
    counts = Counter(p.level for p in problems)
    assert set(counts) == {1, 2, 3, 4, 5}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert [p.level for p in problems[:7]] == [1, 2, 3, 4, 5, 1, 2]
    assert problems[0].id == "arith-L1-0000" and problems[7].id == "arith-L3-0001"
    assert len({p.id for p in load_arith(200)}) == 200


def test_levels_subset():
    problems = load_arith(9, levels=[4, 2])
    assert [p.level for p in problems] == [4, 2, 4, 2, 4, 2, 4, 2, 4]
    assert problems[8].id == "arith-L4-0004"
    assert all(re.fullmatch(r"arith-s5-L[1-5]-\d{4}", p.id) for p in load_arith(5, seed=5))


def test_bad_arguments():
    with pytest.raises(DatasetError, match="level must be one of"):
        load_arith(3, levels=[6])
    with pytest.raises(DatasetError, match="must not be empty"):
        load_arith(3, levels=[])
    with pytest.raises(DatasetError, match=">= 0"):
        load_arith(-1)
    assert load_arith(0) == []


# --- few-shot ---------------------------------------------------------------------------------


def test_fewshot_same_level_never_the_problem():
    for p in load_arith(400, seed=2):
        shots = fewshot_examples(p, k=3)
        assert len(shots) == 3
        assert len({q for q, _ in shots}) == 3
        for q, solution in shots:
            assert q != p.question
            steps = solution.split("\n\n")
            assert steps != p.meta["solution_steps"]
            _, parsed = check_solution(steps)
            assert len(parsed) == _N_STEPS[p.level]


def test_fewshot_deterministic_and_k():
    p = load_arith(8)[7]
    assert fewshot_examples(p, 3) == fewshot_examples(p, 3)
    assert fewshot_examples(p, 5)[:3] == fewshot_examples(p, 3)
    assert fewshot_examples(p, 0) == []


def test_fewshot_skips_an_example_equal_to_the_problem():
    # Build a problem that IS the first default example; it must not be shown to itself.
    base = load_arith(1, levels=[1])[0]
    first_q, first_solution = fewshot_examples(base, 1)[0]
    steps = first_solution.split("\n\n")
    expr = re.search(r"\d+ \+ \d+", steps[0])[0]
    twin = Problem("twin", first_q, steps[-1].split()[-1].rstrip("."), "arith",
                   {"level": 1, "seed": 0, "expression": expr})
    shots = fewshot_examples(twin, 3)
    assert first_q not in [q for q, _ in shots]
    assert all(expr not in s for _, s in shots)


def test_fewshot_for_dispatch():
    arith = load_arith(3)[2]
    assert fewshot_for(arith) == fewshot_examples(arith, 3)
    gsm = Problem("g", "How many?", "3", "gsm8k")
    assert fewshot_for(gsm) == list(GSM8K_FEWSHOT)
    for kind in ("math", "aime", "amc", "number"):
        assert fewshot_for(Problem("m", "Find x.", "1", kind), k=2) == list(MATH_FEWSHOT[:2])
    # Never the problem itself, even if someone evaluates on the examples.
    q0 = GSM8K_FEWSHOT[0][0]
    assert q0 not in [q for q, _ in fewshot_for(Problem("g0", q0, "12", "gsm8k"))]


@pytest.mark.parametrize("pool", [MATH_FEWSHOT, GSM8K_FEWSHOT])
def test_handwritten_examples_are_correct(pool):
    assert len(pool) == 3
    for _, solution in pool:
        steps = solution.split("\n\n")
        assert all(s.startswith(f"Step {k}: ") for k, s in enumerate(steps[:-1], start=1))
        assert re.fullmatch(r"The answer is .+\.", steps[-1])
        statements = _STATEMENT.findall(solution)
        assert statements, solution
        for a, op, b, c in statements:
            assert apply(int(a), op, int(b)) == int(c), f"{a} {op} {b} = {c}"
