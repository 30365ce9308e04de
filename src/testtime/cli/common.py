"""What every CLI module shares: the consoles, the one-line error exit, the spelling of library errors,
the options that say where the policy runs, and the progress bar.

The library validates its own values and raises ``ConfigError`` naming *fields* (``n``, ``m``, ``prm``,
``executor``); the command line only spells them: ``config_error`` is the one place that does, as flags
(``--n 6 --m 4: N must be a positive multiple of M``) or, for a recipe, as its fields
(``r.yaml: field prm: ...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from testtime.errors import ConfigError

# Tables and progress go to stderr with --json so stdout's last line is the JSON object.
console = Console()
err_console = Console(stderr=True)


def out_console(as_json: bool) -> Console:
    """Where a command prints its tables: stderr when stdout is reserved for the JSON line."""
    return err_console if as_json else console


def fail(msg: str) -> NoReturn:
    """Print `error: msg` on stderr and exit 2. The message is escaped: `testtime[ray]` stays visible."""
    err_console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


# --- the one spelling of library errors ----------------------------------------------------------------

# A recipe names some fields differently from the command line's flags.
RECIPE_FIELDS = {"base_url": "policy_options.base_urls", "policy_option": "policy_options"}


def flag(field: str) -> str:
    """A library field as a command-line flag: ``step_max_tokens`` -> ``--step-max-tokens``."""
    return "--" + field.replace("_", "-")


def config_error(err: ConfigError, recipe: str | Path | None = None) -> str:
    """A library ``ConfigError`` as the CLI says it: each field as its flag (``--n 6 --m 4: N must be a
    positive multiple of M``), or, for a ``recipe`` file, as that file's fields (``r.yaml: field prm: ...``)."""
    if recipe is None:
        return err.render(flag)
    return f"{recipe}: " + err.render(lambda f: "field " + RECIPE_FIELDS.get(f, f))


def fail_config(err: ConfigError, recipe: str | Path | None = None) -> NoReturn:
    fail(config_error(err, recipe))


# --- where the policy runs: shared by run, demo and (as recipe fields) sweep ----------------------------

BackendOpt = Annotated[str, typer.Option(help="policy backend: llamacpp | vllm | hf | openai")]
BaseUrlOpt = Annotated[list[str] | None, typer.Option(
    "--base-url", help="openai: an OpenAI-compatible server (/v1/completions); repeat to spread load")]
PolicyOpt = Annotated[list[str] | None, typer.Option(
    "--policy-option", help="a backend option KEY=VALUE (repeatable), e.g. max_n_per_request=1, slots=8")]
ExecutorOpt = Annotated[str, typer.Option(help="local | ray (problems sharded over Ray actors)")]
AddressOpt = Annotated[str | None, typer.Option(help="ray: address of a running cluster (default: a local Ray)")]
ActorsOpt = Annotated[int | None, typer.Option(help="ray: number of actors (default: one per GPU, else 2)")]
AsJsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON summary as the last line")]


def policy_options(items: list[str] | None) -> dict[str, Any]:
    """--policy-option KEY=VALUE pairs; values are YAML scalars (16, 0.5, true, null, text)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError("policy_option", item, "expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def policy_spec(model: str | None, backend: str, base_urls: list[str] | None, options: dict[str, Any]) -> Any:
    """The PolicySpec the options describe; a combination no backend takes is a ``ConfigError``."""
    from testtime.execution import PolicySpec
    from testtime.policy import BACKENDS

    if backend not in BACKENDS:
        raise ConfigError("backend", backend, f"unknown (available: {', '.join(BACKENDS)})")
    options = dict(options)
    if base_urls:
        if backend != "openai":
            raise ConfigError("base_url", message="only applies to backend openai")
        options["base_urls"] = list(base_urls)
    if backend == "openai":
        if not options.get("base_urls"):
            raise ConfigError("base_url", message="backend openai needs one or more OpenAI-compatible servers")
        if not model:
            raise ConfigError("model", message="backend openai needs the model name the server serves")
    return PolicySpec(model, backend, options)


def open_policy(model: str | None, backend: str, base_urls: list[str] | None, executor: str, address: str | None,
                actors: int | None, options: dict[str, Any] | None = None, recipe: str | Path | None = None) -> Any:
    """Open the policy on the executor the options name; what the library refuses is one line (spelled as
    flags, or as the fields of ``recipe``)."""
    from testtime.execution import RAY_MISSING, open_executor

    prefix = f"{recipe}: " if recipe is not None else ""
    try:
        return open_executor(executor, policy_spec(model, backend, base_urls, options or {}),
                             address=address, actors=actors)
    except ConfigError as e:
        fail_config(e, recipe)
    except ImportError as e:
        fail(str(e) if str(e) == RAY_MISSING else config_error(ConfigError("backend", backend, str(e)), recipe))
    except TypeError as e:  # an option the backend does not take
        fail(config_error(ConfigError("policy_option", message=str(e)), recipe))
    except (ValueError, FileNotFoundError, RuntimeError, ConnectionError) as e:
        fail(prefix + str(e))


def check_prm(executor: Any, spec: str | None, recipe: str | Path | None = None) -> None:
    """Build the scorer now (on every actor with Ray), so a bad --prm is one line before any work."""
    try:
        executor.scorer_info(spec)
    except ConfigError as e:
        fail_config(e, recipe)
    except (ValueError, ImportError, FileNotFoundError) as e:
        if recipe is not None:
            fail(f"{recipe}: field prm: {e}")
        fail(str(e) if str(e).startswith("--prm") else f"--prm {spec}: {e}")


def load_problems(dataset: str, limit: int | None, seed: int, levels: list[int] | None, **mapping: Any) -> list:
    """The selected problems; an unreadable dataset or an empty selection is one line."""
    from testtime.datasets import DatasetError, load_dataset

    try:
        problems = load_dataset(dataset, limit=limit, seed=seed, levels=levels or None, **mapping)
    except (DatasetError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    if not problems:
        fail(f"--dataset {dataset}: no problems selected")
    return problems


# --- progress ----------------------------------------------------------------------------------------


@contextmanager
def progress_bar(out: Console, label: str = "", eta: bool = False) -> Iterator[Progress]:
    """A progress bar on `out` (stderr with --json); ``label`` fixes the description, else tasks name it."""
    columns: list[Any] = [TextColumn(f"[bold]{label}" if label else "[bold]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=out) as progress:
        yield progress


def print_failures(failures: dict[str, str] | None, out: Console, what: str = "counted as wrong") -> None:
    if failures:
        out.print(f"[yellow]warning:[/yellow] {len(failures)} problem(s) failed ({what}; rerun to retry "
                  "them):", highlight=False)
        for pid, err in list(failures.items())[:20]:
            out.print(escape(f"  {pid}: {err}"), highlight=False, soft_wrap=True)
        if len(failures) > 20:
            out.print(f"  ... and {len(failures) - 20} more (see the run's summary in the store)")


def fmt_flops(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.3g}"
