"""What every CLI module shares: the consoles and the one-line error exit."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

# Tables and progress go to stderr with --json so stdout's last line is the JSON object.
console = Console()
err_console = Console(stderr=True)


def fail(msg: str) -> None:
    """Print `error: msg` on stderr and exit 2. The message is escaped: `testtime[ray]` stays visible."""
    err_console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
