"""`testtime prm label | train | eval`: on-policy probe PRMs from Monte-Carlo step labels."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from testtime import settings as S
from testtime.cli import options as opt
from testtime.cli.common import AsJsonOpt, fail, fail_config, load_problems, out_console, progress_bar
from testtime.errors import ConfigError

prm_app = typer.Typer(no_args_is_help=True, help="Process reward models: label steps, train a probe, evaluate.")


def _policy(model: str | None, backend: str, threads: int | None) -> tuple[Any, Any]:
    """The policy and the reference a probe records (how to reopen it for features, and its fingerprint)."""
    from testtime.policy import load_policy
    from testtime.probe.pipeline import PolicyRef

    if backend not in ("llamacpp", "hf", "vllm"):
        fail_config(ConfigError("backend", backend,
                                "probes read the policy's weights (llamacpp, hf or vllm), not a remote server"))
    if threads is not None and threads < 1:
        fail(f"--threads {threads}: must be >= 1")
    kwargs = {"threads": threads} if threads and backend == "llamacpp" else {}
    try:
        policy = load_policy(model, backend=backend, **kwargs)
    except (FileNotFoundError, ValueError, ImportError) as e:
        fail(str(e))
    return policy, PolicyRef(backend, model or "smollm2-135m", policy.model_id)


def _stats_table(stats: dict[str, Any], title: str) -> Table:
    t = Table(title=title)
    for col in ("level", "steps", "mean soft label", "hard label = 1"):
        t.add_column(col, justify="right")
    for level, row in stats["by_level"].items():
        t.add_row(level, str(row["steps"]), f"{row['mean_soft']:.3f}", f"{row['positive_hard']:.1%}")
    t.add_section()
    t.add_row("all", str(stats["steps"]), f"{stats['mean_soft']:.3f}", f"{stats['positive_hard']:.1%}", style="bold")
    t.caption = (f"{stats['problems']} problems, {stats['solutions']} solutions "
                 f"(accuracy {stats['solution_accuracy']:.1%}), {stats['rollouts']} rollouts, "
                 f"{stats['new_generations']} new generations")
    return t


Dataset = Annotated[str, typer.Option(help="arith, math500, gsm8k, ... (see `testtime data list`)")]
Limit = Annotated[int | None, typer.Option(help="first K problems")]
Level = Annotated[list[int] | None, typer.Option(help="keep only these difficulty levels")]
Seed = Annotated[int, typer.Option(help="problem selection (arith) and sampling seed")]
Model = Annotated[str | None, typer.Option(help="GGUF path or embedded model name (default: smollm2-135m)")]
Out = Annotated[Path, typer.Option(help="output folder (holds the SQLite store and labels/)")]
Threads = Annotated[int | None, typer.Option(help="llama.cpp threads (default: all cores)")]
Backend = Annotated[str, typer.Option(help="policy backend: llamacpp | hf | vllm")]
Solutions = Annotated[int, typer.Option(help="sampled solutions per problem")]
Rollouts = Annotated[int, typer.Option(help="Monte-Carlo completions per step prefix")]
AsJson = AsJsonOpt


@prm_app.command()
def label(
    dataset: Dataset = "arith", limit: Limit = 150, level: Level = None, seed: Seed = 0, model: Model = None,
    out: Out = Path("runs/probe"), solutions: Solutions = 4, rollouts: Rollouts = 4,
    max_tokens: opt.MaxTokens = S.MAX_TOKENS.default,
    temperature: opt.Temperature = S.TEMPERATURE.default,
    fewshot: opt.Fewshot = S.FEWSHOT.default,
    backend: Backend = "llamacpp", threads: Threads = None, as_json: AsJson = False,
) -> None:
    """Monte-Carlo step labels from the policy's own rollouts (batched, stored, resumable)."""
    from testtime.probe.labels import LabelConfig
    from testtime.probe.pipeline import SamplingSetup, run_label

    try:
        cfg, setup = LabelConfig(solutions, rollouts), SamplingSetup(seed, max_tokens, temperature, fewshot)
    except ConfigError as e:
        fail_config(e)
    problems = load_problems(dataset, limit, seed, level)
    policy, ref = _policy(model, backend, threads)
    printer = out_console(as_json)
    try:
        with progress_bar(printer, "labelling") as progress:
            task = progress.add_task("label", total=len(problems))
            path, _labeled, meta = run_label(
                problems, policy, ref, out, dataset, cfg, setup,
                on_progress=lambda done, total: progress.update(task, completed=done))
    finally:
        policy.close()
    printer.print(_stats_table(meta["stats"], f"Monte-Carlo step labels: {dataset}, seed {seed}"))
    printer.print(f"labels: {path} ({meta['wall_s']:.0f} s)")
    if as_json:
        print(json.dumps({"labels": str(path), "wall_s": meta["wall_s"], **meta["stats"]}))


@prm_app.command()
def train(
    labels: Annotated[list[Path], typer.Option(help="labels JSONL from `testtime prm label` (repeatable)")],
    out: Annotated[Path, typer.Option(help="the probe artifact to write (.json)")] = Path("runs/probe/probe.json"),
    head: Annotated[str, typer.Option(help="logistic | mlp")] = "mlp",
    hidden: Annotated[int, typer.Option(help="mlp hidden units")] = 32,
    target: Annotated[str, typer.Option(help="soft (rollout success fraction) | hard (any success)")] = "soft",
    val_fraction: Annotated[float, typer.Option(help="share of problems held out for early stopping")] = 0.2,
    epochs: Annotated[int, typer.Option(help="full-batch epochs at most")] = 2000,
    patience: Annotated[int, typer.Option(help="stop after this many epochs without held-out improvement")] = 100,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 3e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 1e-2,
    seed: Annotated[int, typer.Option(help="split and initialisation seed")] = 0,
    rank_weight: Annotated[float, typer.Option(
        help="weight of a within-problem ranking term (0 = plain BCE; did not help on arith, see README)")] = 0.0,
    store: Annotated[Path | None, typer.Option(help="feature cache (default: the labels' store)")] = None,
    as_json: AsJson = False,
) -> None:
    """Features for every labelled step (cached), a probe head trained on them, a versioned artifact."""
    from testtime.probe.pipeline import run_train
    from testtime.probe.train import TrainConfig

    if out.suffix != ".json":
        fail(f"--out {out}: a probe artifact is a .json file")
    cfg = TrainConfig(head, hidden, target, val_fraction, lr, weight_decay, epochs, patience, seed, rank_weight)
    try:
        cfg.check()
        t0 = time.perf_counter()
        _artifact, metrics = run_train(labels, out, cfg, store)
    except ConfigError as e:
        fail_config(e)
    except (ValueError, FileNotFoundError, ImportError) as e:
        fail(str(e))
    printer = out_console(as_json)
    t = Table(title=f"probe head ({head}) trained on {metrics['train_rows']} steps")
    for col in ("split", "steps", "problems", "AUROC (hard labels)"):
        t.add_column(col, justify="right")
    t.add_row("train", str(metrics["train_rows"]), str(metrics["train_problems"]), _fmt(metrics["train_auroc_hard"]))
    t.add_row("held out", str(metrics["val_rows"]), str(metrics["val_problems"]), _fmt(metrics["val_auroc_hard"]))
    t.caption = f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}; {time.perf_counter() - t0:.0f} s"
    printer.print(t)
    printer.print(f"probe: {out}  (use it with --prm probe:{out})")
    if as_json:
        print(json.dumps({"probe": str(out), **{k: v for k, v in metrics.items() if k != "config"}}))


def _fmt(x: float | None, ci: list[float] | None = None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" if not ci else f"{x:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


@prm_app.command("eval")
def evaluate(
    prm: Annotated[str, typer.Option(help="the scorer spec: probe[:PATH], arith-check, judge, hf:PATH, ...")],
    dataset: Dataset = "arith", limit: Limit = 50, level: Level = None,
    seed: Annotated[int, typer.Option(help="problem selection and sampling seed (hold out from training)")] = 1,
    model: Model = None, out: Out = Path("runs/probe"),
    n: Annotated[int, typer.Option(help="Best-of-N budget")] = 8,
    aggregation: Annotated[str, typer.Option(help="step rewards -> score: last | min | mean | prod")] = "min",
    selection: Annotated[str, typer.Option(help="prm_max | prm_vote")] = "prm_max",
    solutions: Solutions = 4, rollouts: Rollouts = 4, backend: Backend = "llamacpp", threads: Threads = None,
    exclude_from: Annotated[Path | None, typer.Option(
        help="drop problems this probe artifact was trained on (default: the --prm probe's own)")] = None,
    as_json: AsJson = False,
) -> None:
    """Step AUROC against held-out Monte-Carlo labels, and Best-of-N vs majority accuracy per level.

    Compare PRMs on the same problems: pass the probe's artifact as --exclude-from for every PRM.
    """
    from testtime.probe.labels import LabelConfig
    from testtime.probe.pipeline import SamplingSetup, eval_configs, evaluate_prm, held_out
    from testtime.reward import load_scorer

    try:
        setup, cfg = SamplingSetup(seed=seed), LabelConfig(solutions, rollouts)
        configs = eval_configs(prm, dataset, n=n, aggregation=aggregation, selection=selection, limit=limit,
                               levels=level, seed=seed, model=model, out=out, setup=setup)
        problems, excluded, _ = held_out(load_problems(dataset, limit, seed, level), prm, exclude_from)
    except ConfigError as e:
        fail_config(e)
    printer = out_console(as_json)
    policy, ref = _policy(model, backend, threads)
    scorer = None
    try:
        try:
            scorer = load_scorer(prm, policy)
        except (ValueError, ImportError, FileNotFoundError) as e:
            fail(str(e) if str(e).startswith("--prm") else f"--prm {prm}: {e}")
        with progress_bar(printer, "labelling held-out problems") as progress:
            task = progress.add_task("label", total=len(problems))
            result = evaluate_prm(
                problems, policy, ref, scorer, configs, cfg, setup, excluded=excluded,
                on_progress=lambda done, total: progress.update(task, completed=done))
    finally:
        if scorer is not None:
            scorer.close()
        policy.close()
    summary = result.summary()
    if result.oracle_upper_bound:
        printer.print(f"[yellow]{prm} reads the reference answer: its numbers are upper bounds[/yellow]")
    _print_eval(printer, summary)
    if as_json:
        print(json.dumps(summary))


def _print_eval(out: Console, s: dict[str, Any]) -> None:
    n = s["n"]
    t = Table(title=f"{s['prm']} on {s['problems']} held-out {s['dataset']} problems "
                    f"(step AUROC vs Monte-Carlo labels; Best-of-{n} with {s['pair']})")
    for col in ("level", "step AUROC", f"BoN@{n}", f"majority@{n}"):
        t.add_column(col, justify="right")
    for level in s["bon_by_level"]:
        t.add_row(level, _fmt(s["auroc_by_level"].get(level)), f"{s['bon_by_level'][level]:.1%}",
                  f"{s['majority_by_level'][level]:.1%}")
    t.add_section()
    t.add_row("all", _fmt(s["auroc"], s.get("auroc_ci")), _pct(s[f"bon@{n}"], s.get("bon_ci")),
              _pct(s[f"majority@{n}"], s.get("majority_ci")), style="bold")
    t.caption = (f"intermediate steps only: AUROC {_fmt(s['auroc_intermediate'], s.get('auroc_intermediate_ci'))} | "
                 f"pass@{n} {s[f'pass@{n}']:.1%} | {s['steps']} labelled steps, {s['positive_rate']:.1%} positive | "
                 f"{s['wall_s']:.0f} s | [95% bootstrap intervals over problems]")
    out.print(t)
    d = s.get("bon_minus_majority")
    if d:
        verdict = "significant" if d["significant"] else "not significant"
        out.print(f"BoN@{n} - majority@{n} on the same problems: {100 * d['difference']:+.1f} pts "
                  f"[{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}], McNemar p={d['p_value']:.2g} "
                  f"({d['better']} better, {d['worse']} worse: {verdict})", highlight=False)


def _pct(x: float, ci: list[float] | None) -> str:
    return f"{x:.1%}" if not ci else f"{x:.1%} [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"
