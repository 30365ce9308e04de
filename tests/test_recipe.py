"""Sweep recipes: YAML + --set overrides, validation errors that name the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from testtime.errors import ConfigError
from testtime.optimal.recipe import apply_overrides, load_recipe
from testtime.optimal.sweep import plan

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_defaults_and_budgets():
    r = load_recipe(None, ["n_max=16"])
    assert r.budgets == [1, 2, 4, 8, 16]
    assert [s.name for s in r.strategies] == ["cot", "best_of_n"]
    assert load_recipe(None, ["n_max=12"]).budgets == [1, 2, 4, 8]


def test_overrides_nested_and_typed():
    d = apply_overrides({"difficulty": {"easy": 0.5}}, ["difficulty.hard=0.2", "limit=10", "prm=null",
                                                       "strategies=[cot, {name: beam, m: 2}]"])
    assert d == {"difficulty": {"easy": 0.5, "hard": 0.2}, "limit": 10, "prm": None,
                 "strategies": ["cot", {"name": "beam", "m": 2}]}
    with pytest.raises(ValueError, match="--set limit: expected key=value"):
        apply_overrides({}, ["limit"])


def test_tree_budgets_are_multiples_of_m_and_plan_order():
    r = load_recipe(None, ["n_max=16", "strategies=[cot, majority, {name: beam, m: 4}, {name: dvts, m: 2}]"])
    beam, dvts = r.strategies[2], r.strategies[3]
    assert beam.cls.sweep_budgets(r.budgets, beam.options) == [4, 8, 16]
    assert dvts.cls.sweep_budgets(r.budgets, dvts.options) == [2, 4, 8, 16]
    runs = [(s.label, n) for s, n in plan(r)]
    assert runs[0] == ("majority", 16)  # the pool first: it gives every problem's difficulty
    assert runs[1:] == [("cot", 1), ("beam(m=4)", 4), ("beam(m=4)", 8), ("beam(m=4)", 16),
                        ("dvts(m=2)", 2), ("dvts(m=2)", 4), ("dvts(m=2)", 8), ("dvts(m=2)", 16)]
    with_bon = load_recipe(None, ["strategies=[best_of_n, majority]"])
    assert plan(with_bon)[0][0].name == "best_of_n"  # the scored pool also yields majority


def test_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\nn_max: [1\n")
    with pytest.raises(ValueError, match=r"r\.yaml line \d+: not valid YAML"):
        load_recipe(bad)
    bad.write_text("n_max: 4\nbudgets: [1, 8]\n")
    with pytest.raises(ValueError, match=r"r\.yaml: field .*budgets must lie in \[1, n_max=4\]"):
        load_recipe(bad)
    bad.write_text("strategies: [cot, {name: beam, width: 3}]\n")
    with pytest.raises(ValueError, match=r"field strategies\.1\.width"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="needs prm|need prm"):
        load_recipe(None, ["prm=null", "strategies=[best_of_n]"])
    with pytest.raises(ValueError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def test_shipped_recipes_load():
    for path in sorted(RECIPES.glob("*.yaml")):
        r = load_recipe(path)
        assert r.n_max >= max(r.budgets or [1])
        assert plan(r)


def test_seeds_and_datasets_axes():
    from testtime.optimal.sweep import n_runs

    r = load_recipe(None, ["seeds=[0, 1, 2]", "datasets=[arith, gsm8k]", "strategies=[cot, majority]", "n_max=4"])
    assert r.seeds == [0, 1, 2] and r.datasets == ["arith", "gsm8k"]
    assert n_runs(r) == 2 * 3 * 2  # (pool, cot) x seeds x datasets
    d = load_recipe(None, ["seed=5"])
    assert d.seeds == [5] and d.datasets == ["arith"]


def test_fewshot_file_reaches_the_run_config(tmp_path):
    shots = tmp_path / "shots.jsonl"
    shots.write_text('{"question": "q", "solution": "Step 1: 1 = 1.\\n\\nThe answer is 1."}\n', encoding="utf-8")
    recipe = load_recipe(None, [f"fewshot_file={shots}"])
    spec = recipe.strategies[0]
    config = recipe.run_config("arith", 0, spec, 1)
    assert config.fewshot_file == str(shots) and config.prompt_config().examples.examples[0].question == "q"
    assert "fewshot_file" not in load_recipe(None).run_config("arith", 0, spec, 1).identity("m")
    shots.write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^recipe: field fewshot_file: .*{shots}:1: field 'solution': missing$"):
        load_recipe(None, [f"fewshot_file={shots}"])


# --- run ids: the recipe model is generated from testtime.settings; the shipped recipes' runs keep their ids ---

# (number of runs, sha256 of their run ids in order) per shipped recipe, computed with the hand-written Recipe
# model before it was generated from the declarations; "refused:<strategy>:<n>" stands for a budget RunConfig
# refuses (a tree search at N below its M)
SHIPPED_RUN_IDS = {
    "recipes/arith-smollm2-beyond.yaml": (28, 'b80d6313180e6b21'),
    "recipes/arith-smollm2.yaml": (20, 'c4d68fb9422b179c'),
    "recipes/paper/llama3.1-8b-aime24.yaml": (30, 'f798f1538d105d9d'),
    "recipes/paper/llama3.1-8b-math500.yaml": (30, '255a78eee9e515cc'),
    "recipes/paper/llama3.2-1b-aime24.yaml": (30, 'f798f1538d105d9d'),
    "recipes/paper/llama3.2-1b-math500.yaml": (30, '255a78eee9e515cc'),
    "recipes/paper/llama3.2-3b-aime24.yaml": (30, 'f798f1538d105d9d'),
    "recipes/paper/llama3.2-3b-math500.yaml": (30, '255a78eee9e515cc'),
    "recipes/paper/qwen2.5-0.5b-aime24.yaml": (30, '06ac13d36da8c592'),
    "recipes/paper/qwen2.5-0.5b-math500.yaml": (30, 'ca32859a187316ce'),
    "recipes/paper/qwen2.5-1.5b-aime24.yaml": (30, '06ac13d36da8c592'),
    "recipes/paper/qwen2.5-1.5b-math500.yaml": (30, 'ca32859a187316ce'),
    "recipes/paper/qwen2.5-14b-aime24.yaml": (30, '06ac13d36da8c592'),
    "recipes/paper/qwen2.5-14b-math500.yaml": (30, 'ca32859a187316ce'),
    "recipes/paper/qwen2.5-32b-aime24.yaml": (30, '06ac13d36da8c592'),
    "recipes/paper/qwen2.5-32b-math500.yaml": (30, 'ca32859a187316ce'),
    "recipes/paper/qwen2.5-3b-aime24.yaml": (30, '06ac13d36da8c592'),
    "recipes/paper/qwen2.5-3b-math500.yaml": (30, 'ca32859a187316ce'),
    "recipes/paper/qwen2.5-72b-aime24.yaml": (30, '06ac13d36da8c592'),
    "recipes/paper/qwen2.5-72b-math500.yaml": (30, 'ca32859a187316ce'),
    "recipes/paper/qwen2.5-7b-aime24.yaml": (30, '06ac13d36da8c592'),
    "recipes/paper/qwen2.5-7b-math500.yaml": (30, 'ca32859a187316ce'),
    "recipes/table-smollm2-arithcheck-medium.yaml": (10, '86f939d4be086c0d'),
    "recipes/table-smollm2-arithcheck-medium2.yaml": (10, 'd17e58f5a75a0655'),
    "recipes/table-smollm2-arithcheck.yaml": (10, 'd346365fcb980898'),
    "recipes/table-smollm2-chat.yaml": (16, 'a8a39a84751f7f4b'),
}


def shipped_run_ids(path: Path) -> tuple[int, str]:
    import hashlib

    from testtime.config import run_id_for

    recipe = load_recipe(path)
    ids = []
    for dataset in recipe.datasets:
        for seed in recipe.seeds:
            for spec in recipe.strategies:
                for n in recipe.budgets:
                    try:
                        cfg = recipe.run_config(dataset, seed, spec, n)
                    except ConfigError:
                        ids.append(f"refused:{spec.name}:{n}")
                        continue
                    ids.append(run_id_for(cfg.identity("model")))
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def test_shipped_recipes_keep_their_run_ids():
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("recipes/*.yaml"), *root.glob("recipes/paper/*.yaml")]
    shipped = sorted(str(p.relative_to(root)) for p in files)
    assert shipped == sorted(SHIPPED_RUN_IDS)
    for rel in shipped:
        assert shipped_run_ids(root / rel) == SHIPPED_RUN_IDS[rel], rel


def test_difficulty_quantiles_is_dropped_with_one_warning(tmp_path, caplog):
    """The field was never read: a recipe (or a sweep file's stored recipe) that sets it loads, warned once."""
    from testtime.optimal import recipe as R

    saved = set(R._warned)
    R._warned.clear()
    try:
        p = tmp_path / "r.yaml"
        p.write_text("difficulty: {easy: 0.6, quantiles: 5}\n")
        with caplog.at_level("WARNING", logger="testtime.optimal.recipe"):
            first, second = load_recipe(p), load_recipe(p)
        assert first.difficulty.easy == second.difficulty.easy == 0.6
        assert "quantiles" not in first.difficulty.model_dump()
        assert [r.message for r in caplog.records].count(
            "difficulty.quantiles is ignored (no quantile bins are made); remove it from the recipe") == 1
        with pytest.raises(ValueError, match="field difficulty.bins"):
            load_recipe(None, ["difficulty.bins=3"])  # still extra="forbid" for anything else
    finally:
        R._warned.clear()
        R._warned.update(saved)


def test_top_p_and_every_strategy_option_reach_the_run_config():
    recipe = load_recipe(None, ["top_p=0.9", "strategies=[{name: best_of_n, aggregation: min}, {name: beam, m: 2}]"])
    bon, beam = recipe.strategies
    cfg = recipe.run_config("arith", 0, bon, 4)
    assert (cfg.top_p, cfg.aggregation, cfg.strategy) == (0.9, "min", "best_of_n")
    assert recipe.run_config("arith", 0, beam, 4).m == 2
    assert load_recipe(None).run_config("arith", 0, bon, 4).top_p == 1.0
    with pytest.raises(ValueError, match=r"^recipe: field top_p: "):
        load_recipe(None, ["top_p=0"])
    with pytest.raises(ValueError, match=r"^recipe: field strategies\.0: .*aggregation is not an option of cot"):
        load_recipe(None, ["strategies=[{name: cot, aggregation: min}]"])
    with pytest.raises(ValueError, match=r"^recipe: field terminate_on: .*'never': unknown \(valid: answer, boxed\)"):
        load_recipe(None, ["terminate_on=never"])
