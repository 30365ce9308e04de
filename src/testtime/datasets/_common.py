"""Pieces shared by every loader: the error type, dataset descriptions and number cleaning."""

from __future__ import annotations

import math
from dataclasses import dataclass


class DatasetError(ValueError):
    """A dataset could not be found or read; the message is one line naming where and why."""


@dataclass(frozen=True)
class DatasetInfo:
    """One row of `testtime data list`. `n_problems` is None for generated (unbounded) sets."""

    name: str
    n_problems: int | None
    kind: str
    description: str
    license: str


def clean_number(value: int | float) -> str:
    """Render a JSON number as an answer string: 27.0 -> "27", 0.5 -> "0.5", -1.0 -> "-1".

    Raises ValueError for bools and non-finite floats, which are never valid answers.
    """
    # bool is a subclass of int; `true` as an answer is a data error, not the number 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    if value.is_integer():
        return str(int(value))
    return repr(value)
