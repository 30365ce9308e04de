"""Property-based tests (hypothesis): grading, step splitting, selection, subsampled curves, the dataset and
recipe loaders, and every numeric option of the command line.

Deterministic in ``make test`` (the ``ci`` profile in conftest.py: derandomized, bounded examples); ``make
fuzz`` runs the ``fuzz`` profile, many more examples per property. Each bug these found is kept below as a
plain example test (``test_found_*``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from testtime import grading
from testtime.cli import app
from testtime.datasets import DatasetError, load_dataset
from testtime.extraction import extract_answer
from testtime.optimal.metrics import subsample_curve
from testtime.optimal.recipe import load_recipe
from testtime.search.base import split_steps
from testtime.search.selection import SELECTIONS, Pool, Selection, aggregate, answer_key, select

FUZZ = os.environ.get("TESTTIME_HYPOTHESIS", "ci") == "fuzz"


def budget(n: int) -> settings:
    """n examples in CI, 100 x n under ``make fuzz``; no per-example deadline (a loaded CI box is slow)."""
    return settings(max_examples=n * 100 if FUZZ else n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --- grading ---------------------------------------------------------------------------------------------

LATEX_BITS = ["\\frac{", "\\dfrac{", "}{", "}", "{", "\\sqrt{", "\\boxed{", "\\fbox{", "\\text{", "\\left(",
              "\\right)", "^{", "_{", "\\pi", "\\infty", "\\cdot", "\\times", "$", "$$", "\\(", "\\)", "\\[", "\\]",
              "**", ".", ",", " ", "\n", "\n\n", "-", "+", "=", "x", "1", "2", "9", "0.5", "%", "\\%", "°",
              "The answer is ", "The final answer is ", "Answer: ", "#### ", "\\begin{pmatrix}", "\\end{pmatrix}",
              "&", "\\\\", "∞", "√", "½", "٣", "𝟙"]

latex_text = st.lists(st.sampled_from(LATEX_BITS) | st.text(max_size=6), max_size=30).map("".join)
huge_numbers = st.integers(min_value=-(10**400), max_value=10**400).map(str) | st.from_regex(
    r"-?\d{1,3}(,\d{3}){0,80}(\.\d{1,40})?(e[+-]?\d{1,5})?", fullmatch=True)
deep = st.integers(min_value=1, max_value=300).flatmap(
    lambda d: st.sampled_from(["\\frac{", "\\sqrt{", "{", "(", "\\boxed{"]).map(lambda o: o * d + "7" + "}" * d))
answers_text = latex_text | huge_numbers | deep | st.text(max_size=200)


marked = st.tuples(latex_text, answers_text, st.sampled_from(["The answer is {}.", "\\boxed{{{}}}", "#### {}",
                                                                "Final Answer: {}"])).map(
    lambda t: t[0] + "\n\n" + t[2].format(t[1]))


def is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(c in it for c in small)


@budget(150)
@given(text=answers_text | marked, fallback=st.booleans())
@example(text="The answer is $1,234$.", fallback=False)
@example(text="\\boxed{\\frac{1}{2}} and then \\boxed{3", fallback=False)
def test_extract_answer_never_raises_and_returns_only_text_from_the_input(text, fallback):
    got = extract_answer(text, fallback_last_number=fallback)
    assert got is None or (isinstance(got, str) and is_subsequence(got, text))


@budget(150)
@given(text=answers_text)
def test_split_steps_loses_nothing(text):
    steps = split_steps(text)
    assert "".join(steps) == text
    assert all(s for s in steps)


# per-pair bound given to grading, and the slack a loaded machine may add to one call (the worker's own
# start, after a kill, is not charged to the pair: it is counted in worker_stats()["starts"])
PAIR_TIMEOUT_S = 1.0
SLACK_S = 1.5


@budget(40)
@given(pred=answers_text, ref=answers_text, kind=st.sampled_from(sorted(grading.KINDS)))
@example(pred="\\frac{" * 300 + "1" + "}" * 300, ref="1", kind="math")
@example(pred="9" * 5000, ref="9" * 4999, kind="number")
@example(pred="2^{2^{2^{2^{99}}}}", ref="2^{2^{2^{2^{98}}}}", kind="math")
def test_grading_any_pair_never_raises_and_keeps_its_time_bound(pred, ref, kind):
    starts = grading.worker_stats()["starts"]
    t0 = time.perf_counter()
    verdict = grading.is_equivalent(pred, ref, kind, timeout_s=PAIR_TIMEOUT_S)
    took = time.perf_counter() - t0
    assert isinstance(verdict, bool)
    if grading.worker_stats()["starts"] == starts:  # no worker (re)start inside this call
        assert took <= PAIR_TIMEOUT_S + SLACK_S, f"{took:.2f} s for one pair"


@budget(60)
@given(text=marked, kind=st.sampled_from(sorted(grading.KINDS - {"aime"})))
def test_equivalence_is_reflexive_on_extracted_answers(text, kind):
    got = extract_answer(text)
    assume(got is not None and got.strip())
    assert grading.is_equivalent(got, got, kind, timeout_s=PAIR_TIMEOUT_S)


@budget(60)
@given(n=st.integers(min_value=-(10**30), max_value=10**30), decorate=st.sampled_from(["{}", "$ {} $", "**{}**",
                                                                                     "\\boxed{{{}}}", "{}."]))
def test_aime_equivalence_is_reflexive_on_integers(n, decorate):
    text = "The answer is " + decorate.format(n)
    got = extract_answer(text)
    assert got is not None and grading.is_equivalent(got, got, "aime")
    assert grading.is_equivalent(got, str(n), "aime")


# --- selection and aggregation --------------------------------------------------------------------------

ANSWERS = st.sampled_from(["1", "2", "3", "17", None])
SCORED = [s for s in SELECTIONS.values() if s.uses_scores]


@st.composite
def scored_pool(draw, distinct: bool = True):
    n = draw(st.integers(min_value=1, max_value=8))
    answers = draw(st.lists(ANSWERS, min_size=n, max_size=n))
    rewards = draw(st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=4), min_size=n, max_size=n))
    return answers, rewards


def group_scores(answers, rewards, sel: Selection) -> dict[str, float]:
    per = [aggregate(r, sel.aggregation) for r in rewards]
    out: dict[str, float] = {}
    for a, s in zip(answers, per, strict=True):
        if a is not None:
            out[answer_key(a)] = out.get(answer_key(a), 0.0) + s if sel.rule == "prm_vote" else \
                max(out.get(answer_key(a), -1.0), s)
    return out


@budget(150)
@given(pool=scored_pool(), sel=st.sampled_from(SCORED + [SELECTIONS["majority"]]), data=st.data())
def test_permuting_candidates_never_changes_a_clear_choice(pool, sel, data):
    answers, rewards = pool
    assume(any(a is not None for a in answers))
    if sel.uses_scores:
        scores = group_scores(answers, rewards, sel)
        ranked = sorted(scores.values(), reverse=True)
        assume(len(ranked) == 1 or ranked[0] - ranked[1] > 1e-9)  # a clear winner (no tie to break)
    else:
        counts = sorted(
            (sum(a is not None and answer_key(a) == k for a in answers) for k in {answer_key(a) for a in answers if a}),
            reverse=True)
        assume(len(counts) == 1 or counts[0] > counts[1])
    order = data.draw(st.permutations(range(len(answers))))
    chosen = select(answers, rewards, sel)
    shuffled = select([answers[i] for i in order], [rewards[i] for i in order], sel)
    assert chosen is not None and answer_key(shuffled) == answer_key(chosen)


@budget(200)
@given(answers=st.lists(ANSWERS, min_size=1, max_size=8), reward=st.floats(0, 1),
       sel=st.sampled_from(SCORED + [SELECTIONS["majority"]]))
def test_ties_go_to_the_candidate_or_group_seen_first(answers, reward, sel):
    """The documented rule: with every score equal (and, for majority and prm_vote, equal group sizes
    among the leaders), the answer seen first wins."""
    assume(any(a is not None for a in answers))
    keys = [answer_key(a) for a in answers if a is not None]
    counts = {k: keys.count(k) for k in keys}
    top = max(counts.values())
    leaders = [k for k in dict.fromkeys(keys) if counts[k] == top]
    chosen = select(answers, [[reward]] * len(answers), sel)
    if sel.rule == "prm_max":
        assert chosen == next(a for a in answers if a is not None)
    else:  # majority and prm_vote: equal scores make the vote a count
        assert answer_key(chosen) == leaders[0]


BAD_REWARDS = st.sampled_from([math.nan, math.inf, -math.inf])


@budget(100)
@given(pool=scored_pool(), bad=BAD_REWARDS, data=st.data(), sel=st.sampled_from(SCORED))
def test_nan_or_infinite_rewards_are_refused_not_selected(pool, bad, data, sel):
    answers, rewards = pool
    i = data.draw(st.integers(0, len(rewards) - 1))
    j = data.draw(st.integers(0, len(rewards[i]) - 1))
    rewards = [list(r) for r in rewards]
    rewards[i][j] = bad
    with pytest.raises(ValueError, match="reward"):
        select(answers, rewards, sel)


def test_found_recipe_files_that_gave_tracebacks(tmp_path):
    """Found by the recipe property below: each raised a bare TypeError / UnicodeDecodeError (no file)."""
    path = tmp_path / "r.yaml"
    for data in (b'{"strategies": true}', b"strategies: 5", b"\xed\xa0\x80", b"name: x\n\x08"):
        path.write_bytes(data)
        with pytest.raises(ValueError) as err:
            load_recipe(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_found_an_infinite_reward_was_selected():
    """Found by the property above: +inf passed aggregation and won prm_max."""
    with pytest.raises(ValueError, match="reward"):
        select(["1", "2"], [[0.5], [math.inf]], SELECTIONS["prm_last_max"])


# --- subsampled curves -----------------------------------------------------------------------------------


@budget(100)
@given(correct=st.lists(st.booleans(), min_size=1, max_size=9), answers=st.data())
def test_subsampled_majority_curve_equals_exact_enumeration(correct, answers):
    n = len(correct)
    group_of = answers.draw(st.lists(st.integers(0, 3) | st.none(), min_size=n, max_size=n))
    pool = Pool.of(group_of)
    ks = list(range(1, n + 1))

    def score(subset):
        i = pool.choose(SELECTIONS["majority"], subset)
        return 0.0 if i is None else float(correct[i])

    curve = subsample_curve(n, ks, score, samples=7, exact_below=10**6)
    for k in ks:
        subsets = list(itertools.combinations(range(n), k))
        assert curve[k] == pytest.approx(sum(score(s) for s in subsets) / len(subsets))


# --- dataset and recipe loaders: bad files are one line naming the file, line and field -------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                                                      max_size=3), max_leaves=8)
ROW = st.fixed_dictionaries({}, optional={"question": JSON_VALUES, "answer": JSON_VALUES, "level": JSON_VALUES,
                                          "id": JSON_VALUES})
LINE = (ROW.map(json.dumps) | JSON_VALUES.map(json.dumps) | st.text(max_size=40)
        | st.just("x" * 200_000) | st.just('{"question": "' + "q" * 100_000 + '", "answer": "1"}'))


@st.composite
def jsonl_bytes(draw) -> bytes:
    lines = draw(st.lists(LINE, max_size=6))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    data = eol.join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a BOM
    if draw(st.booleans()):
        data += draw(st.binary(max_size=30))  # random bytes
    return data


def one_line_error(err: BaseException, path: Path) -> str:
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    assert str(path) in msg
    return msg


@budget(150)
@given(data=jsonl_bytes() | st.binary(max_size=200))
def test_a_jsonl_dataset_loads_or_fails_in_one_line_naming_file_line_field(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("ds") / "data.jsonl"
    path.write_bytes(data)
    try:
        problems = load_dataset(str(path))
    except DatasetError as e:
        msg = one_line_error(e, path)
        if "invalid JSON" in msg or "field '" in msg or "expected a JSON object" in msg:
            assert f"{path}:" in msg and msg.split(f"{path}:", 1)[1].split(":", 1)[0].isdigit()  # file:line
        return
    for p in problems:
        assert p.question.strip() and isinstance(p.answer, str)


RECIPE_VALUES = st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats() | st.text(max_size=12) | st.lists(
    st.integers(-3, 40) | st.text(max_size=6), max_size=4)
RECIPE_KEYS = st.sampled_from(["name", "dataset", "limit", "seed", "seeds", "n_max", "budgets", "strategies",
                               "holdout", "subsamples", "max_tokens", "temperature", "fewshot", "max_depth",
                               "step_max_tokens", "actors", "prm", "backend", "executor", "difficulty", "bogus"])


@budget(80)
@given(doc=st.dictionaries(RECIPE_KEYS, RECIPE_VALUES, max_size=5).map(json.dumps) | st.text(max_size=80)
       | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
@example(doc="n_max: 4\nbudgets: [0, 4]\r\n")
@example(doc="\ufeffmax_tokens: 0\n")
@example(doc='{"strategies": true}')
@example(doc="\ud800")
def test_a_recipe_loads_or_fails_in_one_line_naming_the_file(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("r") / "r.yaml"
    path.write_text(doc, encoding="utf-8", errors="surrogatepass")
    try:
        recipe = load_recipe(path)
    except ValueError as e:
        msg = one_line_error(e, path)
        assert "field " in msg or "YAML" in msg or "mapping" in msg or "UTF-8" in msg, msg
        return
    assert recipe.n_max >= 1 and all(1 <= b <= recipe.n_max for b in recipe.budgets)
    assert recipe.max_tokens >= 1 and 0 <= recipe.temperature <= 100


# --- the command line: every numeric option refuses out-of-range values in one line ---------------------


class Reached(Exception):
    """The command got past validation to loading a model: the value was accepted."""


def _reached(*args, **kwargs):
    raise Reached()


INT_LOW = st.integers(max_value=0)  # below a ">= 1" option
NEG = st.integers(max_value=-1)  # below a ">= 0" option
BAD_FLOAT = st.sampled_from(["nan", "inf", "-inf", "-1", "-0.001", "1e309"])

# (command and required arguments, option, values it must refuse)
OPTIONS = [
    (["run"], "--n", INT_LOW), (["run"], "--m", INT_LOW), (["run"], "--max-depth", INT_LOW),
    (["run"], "--step-max-tokens", INT_LOW), (["run"], "--limit", NEG),
    (["run"], "--seed", NEG | st.integers(min_value=2**31)), (["run"], "--max-tokens", INT_LOW),
    (["run"], "--temperature", BAD_FLOAT | st.floats(min_value=100.001, allow_infinity=False).map(str)),
    (["run"], "--fewshot", NEG), (["run", "--executor", "ray"], "--actors", INT_LOW),
    (["run", "--strategy", "optimal"], "--budget", INT_LOW),
    (["run", "--backend", "openai", "--base-url", "http://127.0.0.1:9", "--model", "m"], "--policy-option",
     st.sampled_from(["max_concurrency", "max_n_per_request", "timeout_s"]).flatmap(
         lambda k: INT_LOW.map(lambda v: f"{k}={v}")) | NEG.map(lambda v: f"retries={v}")),
    (["run"], "--policy-option", st.sampled_from(["slots", "ctx_per_slot", "threads"]).flatmap(
        lambda k: INT_LOW.map(lambda v: f"{k}={v}"))),
    (["demo"], "--limit", NEG), (["demo"], "--n", INT_LOW), (["demo"], "--seed", NEG),
    (["recalibrate", "--dataset", "arith"], "--n-max", INT_LOW),
    (["recalibrate", "--dataset", "arith"], "--holdout", BAD_FLOAT | st.sampled_from(["0", "1", "1.5"])),
    (["recalibrate", "--dataset", "arith"], "--limit", NEG), (["recalibrate", "--dataset", "arith"], "--seed", NEG),
    (["recalibrate", "--dataset", "arith"], "--fewshot", NEG),
    (["recalibrate", "--dataset", "arith"], "--max-tokens", INT_LOW),
    (["prm", "label"], "--limit", NEG), (["prm", "label"], "--solutions", INT_LOW),
    (["prm", "label"], "--rollouts", INT_LOW), (["prm", "label"], "--max-tokens", INT_LOW),
    (["prm", "label"], "--temperature", BAD_FLOAT), (["prm", "label"], "--fewshot", NEG),
    (["prm", "label"], "--threads", INT_LOW), (["prm", "label"], "--seed", NEG),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--hidden", INT_LOW),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--val-fraction",
     BAD_FLOAT | st.sampled_from(["0", "1", "2"])),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--epochs", INT_LOW),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--patience", INT_LOW),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--lr", BAD_FLOAT | st.just("0")),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--weight-decay", st.sampled_from(["-1", "nan"])),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--rank-weight", st.sampled_from(["-1", "nan"])),
    (["prm", "train", "--labels", "x.jsonl", "--out", "p.json"], "--seed", NEG),
    (["prm", "eval", "--prm", "arith-check"], "--limit", NEG),
    (["prm", "eval", "--prm", "arith-check"], "--n", INT_LOW),
    (["prm", "eval", "--prm", "arith-check"], "--solutions", INT_LOW),
    (["prm", "eval", "--prm", "arith-check"], "--rollouts", INT_LOW),
    (["prm", "eval", "--prm", "arith-check"], "--threads", INT_LOW),
    (["prm", "eval", "--prm", "arith-check"], "--seed", NEG),
]


@pytest.fixture
def no_models(monkeypatch):
    """Loading a model, calling a server or starting Ray means the value got through validation: each
    raises Reached instead (the backends' own option checks still run: they come first)."""
    import testtime.execution.ray as ray_exec
    import testtime.policy.llamacpp as llamacpp
    from testtime.policy.openai_compat import OpenAICompatPolicy

    monkeypatch.setattr(llamacpp, "read_gguf_info", _reached)
    monkeypatch.setattr(OpenAICompatPolicy, "generate", _reached)
    monkeypatch.setattr(ray_exec, "init_ray", _reached)


@budget(3)
@pytest.mark.parametrize("base, option, values", OPTIONS, ids=[f"{' '.join(b[:2])} {o}" for b, o, _ in OPTIONS])
@given(data=st.data())
def test_every_numeric_option_refuses_out_of_range_values_in_one_line(no_models, tmp_path_factory, base, option,
                                                                      values, data):
    value = str(data.draw(values))
    where = tmp_path_factory.mktemp("cli")
    args = [*base, option, value]
    if base[0] in ("run", "demo", "recalibrate") or base[:2] == ["prm", "label"]:
        args += ["--out", str(where)]
    res = CliRunner().invoke(app, args)
    assert not isinstance(res.exception, Reached), f"{' '.join(args)}: accepted"
    assert res.exit_code == 2, (args, res.output, res.exception)
    lines = [line for line in res.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    named = value.split("=")[0] if option == "--policy-option" else option.removeprefix("--").replace("-", "_")
    assert option in errors[0] or named in errors[0], errors[0]  # the flag, or the field it sets


def test_found_out_of_range_options_that_were_accepted(no_models, tmp_path):
    """Found by the property above (each used to start a run): kept as plain examples."""
    for args in (["run", "--seed", "-1"], ["run", "--strategy", "majority", "--m", "0"],
                 ["run", "--max-depth", "0"], ["run", "--step-max-tokens", "0"],
                 ["recalibrate", "--dataset", "arith", "--max-tokens", "0"], ["prm", "label", "--temperature", "nan"],
                 ["prm", "label", "--max-tokens", "0"], ["prm", "eval", "--prm", "arith-check", "--solutions", "0"],
                 ["prm", "train", "--labels", "x.jsonl", "--lr", "0"]):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o.json" if "train" in args else tmp_path)])
        assert res.exit_code == 2 and not isinstance(res.exception, Reached), args
