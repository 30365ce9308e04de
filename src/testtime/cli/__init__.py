"""testtime command line: a thin typer app over the library."""

from testtime.cli.run import app

__all__ = ["app"]
