"""testtime command line: a thin typer app over the library.

The commands only parse options, call a library workflow and print the dataclass it returns (tables, or
one JSON line with --json); values are validated by the library, whose ``ConfigError`` the CLI spells as
flags (``common.config_error``). ``run.py``: run, demo, grade, data list, models; ``optimal.py``: sweep,
calibrate, report, recalibrate (and ``run --strategy optimal``); ``prm.py``: the ``prm`` group; ``serve.py``: serve;
``store.py``:
the ``store`` group (check, salvage). A store that cannot be used (damaged, locked too long) stops any command
with one line (``guarded``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from testtime.cli import optimal, run, serve
from testtime.cli.common import fail
from testtime.cli.prm import prm_app
from testtime.cli.store import store_app


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with a store it cannot use (``StoreError``: damaged, another schema, locked too long)
    reported as one line naming the file and the way out instead of a traceback."""
    from testtime.store import StoreError

    @functools.wraps(command)  # typer reads the options from the wrapped signature
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except StoreError as e:
            fail(str(e))

    return wrapper


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compute-optimal test-time scaling.")
data_app = typer.Typer(no_args_is_help=True, help="Bundled datasets.")
app.add_typer(data_app, name="data")
app.add_typer(prm_app, name="prm")
app.add_typer(store_app, name="store")

app.command()(run.run)
app.command()(run.demo)
app.command()(optimal.sweep)
app.command()(optimal.calibrate)
app.command()(optimal.report)
app.command()(optimal.recalibrate)
data_app.command("list")(run.data_list)
app.command()(run.models)
app.command()(run.grade)
app.command()(serve.serve)
for _command in [*app.registered_commands, *prm_app.registered_commands]:
    _command.callback = guarded(_command.callback)


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
