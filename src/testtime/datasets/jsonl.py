"""Load any JSONL file into Problems through a field mapping (dotted paths allowed)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from testtime.datasets._common import DatasetError, clean_number
from testtime.types import Problem

_MISSING = object()

# JSON type names as a user would write them in the file, for error messages.
_JSON_TYPE = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPE.get(type(value), type(value).__name__)


def iter_jsonl(text: str, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-empty line; `label` names the file in errors."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{label}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{label}:{lineno}: expected a JSON object, got {json_type(row)}")
        yield lineno, row


def read_text(path: Path, label: str) -> str:
    """Read a UTF-8 file, turning I/O and decoding failures into one-line DatasetErrors."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{label}: is a directory, not a JSONL file") from None
    except OSError as e:
        raise DatasetError(f"{label}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")  # tolerate a BOM some editors add
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise DatasetError(f"{label}:{lineno}: not valid UTF-8") from None


def get_path(row: Mapping[str, Any], dotted: str) -> Any:
    """Look up "a.b.c" in nested objects; a key containing a dot wins over the nested path."""
    if dotted in row:
        return row[dotted]
    node: Any = row
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _field(row: dict[str, Any], name: str, where: str) -> Any:
    value = get_path(row, name)
    if value is _MISSING:
        raise DatasetError(f"{where}: field '{name}': missing")
    return value


def as_text(value: Any, name: str, where: str, *, numbers: bool) -> str:
    """A string field, or (when `numbers`) a JSON number rendered by the clean-number rule."""
    if isinstance(value, str):
        if not value.strip():
            raise DatasetError(f"{where}: field '{name}': empty string")
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return clean_number(value)
        except ValueError as e:
            raise DatasetError(f"{where}: field '{name}': {e}") from None
    wanted = "a string or number" if numbers else "a string"
    raise DatasetError(f"{where}: field '{name}': expected {wanted}, got {json_type(value)}")


def level_value(value: Any, name: str, where: str) -> int | str | None:
    """A difficulty level: an integer (2.0 counts as 2, so ``levels=[2]`` selects it), a string, or null."""
    if value is None or isinstance(value, str) and value.strip():
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    got = "empty string" if isinstance(value, str) else json_type(value)
    raise DatasetError(f"{where}: field '{name}': expected an integer or string, got {got}")


def load_jsonl(
    path: str | PathLike[str],
    question_field: str = "question",
    answer_field: str | None = "answer",
    id_field: str | None = None,
    kind: str = "math",
    meta_fields: Sequence[str] | Mapping[str, str] | None = None,
    limit: int | None = None,
    level_field: str | None = None,
) -> list[Problem]:
    """Read `path` (one JSON object per line) into Problems. The file is only read.

    Fields are dotted paths into each object. `meta_fields` is a list of paths (kept under the
    path as key) or a {meta key: path} mapping. Without `id_field`, ids are "<stem>-<row>". `answer_field`
    None reads unlabelled problems (answer ""), for what needs no reference (a label-free refit).
    The difficulty level (``Problem.level``) is `level_field` (required in every row when named), else a
    "level" field where a row has one; an integer stays an integer, a string a string.
    Any malformed row raises DatasetError("<path>:<line>: ...").
    """
    p = Path(path)
    label = str(path)
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    if meta_fields is None:
        meta_map: dict[str, str] = {}
    elif isinstance(meta_fields, Mapping):
        meta_map = dict(meta_fields)
    elif isinstance(meta_fields, str):
        # A bare string would otherwise be iterated character by character.
        meta_map = {meta_fields: meta_fields}
    else:
        meta_map = {f: f for f in meta_fields}

    problems: list[Problem] = []
    first_line: dict[str, int] = {}  # id -> line it first appeared on, to report duplicates
    text = read_text(p, label)
    if limit == 0:
        return problems
    for lineno, row in iter_jsonl(text, label):
        where = f"{label}:{lineno}"
        question = as_text(_field(row, question_field, where), question_field, where, numbers=False)
        answer = "" if answer_field is None else as_text(_field(row, answer_field, where), answer_field, where,
                                                         numbers=True)
        if id_field is None:
            pid = f"{p.stem}-{len(problems)}"
        else:
            raw = _field(row, id_field, where)
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise DatasetError(f"{where}: field '{id_field}': expected a string or integer, "
                                   f"got {json_type(raw)}")
            pid = str(raw)
        if pid in first_line:
            raise DatasetError(f"{where}: field '{id_field}': duplicate id '{pid}' "
                               f"(first on line {first_line[pid]})")
        first_line[pid] = lineno
        meta: dict[str, Any] = {"source": p.stem}
        level = get_path(row, level_field or "level")
        if level is _MISSING and level_field is not None:
            raise DatasetError(f"{where}: field '{level_field}': missing")
        if level is not _MISSING:
            meta["level"] = level_value(level, level_field or "level", where)
        for key, field_path in meta_map.items():
            meta[key] = _field(row, field_path, where)
        problems.append(Problem(id=pid, question=question, answer=answer, kind=kind, meta=meta))
        if limit is not None and len(problems) >= limit:
            break  # before parsing the next line, so rows past the limit are never judged
    return problems
