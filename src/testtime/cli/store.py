"""`testtime store check | salvage`: look into a store SQLite says is damaged, and copy out what can be read.

A damaged store is found when it is opened (``Store`` runs SQLite's quick check), and every command
then stops with one line naming the file and pointing here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from testtime.cli.common import AsJsonOpt, fail, out_console

store_app = typer.Typer(no_args_is_help=True, help="Check a store, or salvage a damaged one.")


@store_app.command()
def check(
    path: Annotated[Path, typer.Argument(help="a store file (.sqlite) or the --out folder that holds one")],
    as_json: AsJsonOpt = False,
) -> None:
    """SQLite's full integrity check and the rows of each table; exit status 1 when the store is damaged."""
    from testtime.store_salvage import check_store

    report = check_store(path)
    if report.error == "no such file":
        fail(f"{report.path}: no such file")
    printer = out_console(as_json)
    if report.ok:
        printer.print(f"{report.path}: ok", highlight=False)
    else:
        printer.print(f"[red]{report.path}: damaged[/red] ({report.error or f'{len(report.problems)} problem(s)'})",
                      highlight=False)
        for line in report.problems:
            printer.print("  " + " ".join(line.split()), highlight=False, markup=False, soft_wrap=True)
    for table, rows in report.rows.items():
        printer.print(f"  {table}: {'unreadable' if rows is None else rows}", highlight=False)
    if not report.ok:
        printer.print(f"to copy every readable row into a new store: testtime store salvage {report.path} NEW.sqlite",
                      highlight=False, markup=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"path": report.path, "ok": report.ok, "error": report.error,
                          "problems": report.problems, "rows": report.rows}))
    if not report.ok:
        raise typer.Exit(1)


@store_app.command()
def salvage(
    path: Annotated[Path, typer.Argument(help="the damaged store (a .sqlite file or the folder holding one)")],
    new: Annotated[Path, typer.Argument(help="the new store to write (a .sqlite path or a folder; must not exist)")],
    as_json: AsJsonOpt = False,
) -> None:
    """Copy every row SQLite can still read into a new store and say what could not be read."""
    from testtime.store import StoreError
    from testtime.store_salvage import salvage_store

    try:
        report = salvage_store(path, new)
    except StoreError as e:
        fail(str(e))
    printer = out_console(as_json)
    total = sum(report.copied.values())
    printer.print(f"{report.target}: {total} rows copied from {report.source}", highlight=False)
    for table, rows in report.copied.items():
        printer.print(f"  {table}: {rows}", highlight=False)
    if report.lost:
        printer.print("[yellow]lost[/yellow] (unreadable in the damaged store):")
        for line in report.lost:
            printer.print("  " + line, highlight=False, markup=False, soft_wrap=True)
    else:
        printer.print("nothing unreadable was found", highlight=False)
    target = Path(report.target)
    where = target.parent if target.name == "testtime.sqlite" else "a folder holding it as testtime.sqlite"
    printer.print(f"rerun with --out {where}: the copied rows replay, the rest is recomputed", highlight=False,
                  markup=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"source": report.source, "target": report.target, "copied": report.copied,
                          "lost": report.lost}))
