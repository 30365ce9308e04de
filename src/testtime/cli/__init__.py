"""testtime command line: a thin typer app over the library.

The commands only parse options, call a library workflow and print the dataclass it returns (tables, or
one JSON line with --json); values are validated by the library, whose ``ConfigError`` the CLI spells as
flags (``common.config_error``). ``run.py``: run, demo, grade, data list, models; ``optimal.py``: sweep,
calibrate, report, recalibrate (and ``run --strategy optimal``); ``prm.py``: the ``prm`` group; ``serve.py``:
serve.
"""

from __future__ import annotations

import typer

from testtime.cli import optimal, run, serve
from testtime.cli.prm import prm_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compute-optimal test-time scaling.")
data_app = typer.Typer(no_args_is_help=True, help="Bundled datasets.")
app.add_typer(data_app, name="data")
app.add_typer(prm_app, name="prm")

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


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
