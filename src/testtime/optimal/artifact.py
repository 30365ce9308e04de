"""Reading the JSON artifacts (sweep files, calibration tables) with one-line errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_artifact(path: str | Path, what: str, version: int, hint: str, kind: str | None = None) -> dict[str, Any]:
    """The artifact's dict; ValueError naming `what` (e.g. "--table t.json" or "t.json"), the line or field.

    `hint` says how to make one when the file is missing; `kind`, when given, must match the "kind" field.
    """
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{what}: no such file ({hint})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} line {e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what}: not a testtime artifact (expected a JSON object)")
    if kind is not None and d.get("kind") != kind:
        raise ValueError(f"{what}: field kind: {d.get('kind')!r} is not a {kind}")
    if d.get("version") != version:
        raise ValueError(f"{what}: field version: {d.get('version')!r}, this testtime reads {version}")
    return d
