"""Problem sources: bundled benchmarks, synthetic arithmetic and user JSONL files."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testtime.datasets._common import DatasetError, DatasetInfo, clean_number
from testtime.datasets.arith import LEVELS, fewshot_examples, generate_arith, load_arith
from testtime.datasets.bundled import BUNDLED, bundled_infos, load_bundled
from testtime.datasets.fewshot import (
    GSM8K_FEWSHOT,
    MATH_FEWSHOT,
    FewshotExample,
    FewshotSet,
    fewshot_for,
    load_fewshot_file,
)
from testtime.datasets.jsonl import load_jsonl
from testtime.types import Problem

__all__ = [
    "ARITH_DEFAULT_N",
    "DatasetError",
    "DatasetInfo",
    "FewshotExample",
    "FewshotSet",
    "GSM8K_FEWSHOT",
    "LEVELS",
    "MATH_FEWSHOT",
    "clean_number",
    "dataset_names",
    "fewshot_examples",
    "fewshot_for",
    "generate_arith",
    "list_datasets",
    "load_arith",
    "load_bundled",
    "load_dataset",
    "load_fewshot_file",
    "load_jsonl",
]

ARITH_DEFAULT_N = 50


def dataset_names() -> list[str]:
    """The names `load_dataset` accepts besides "arith:N" and .jsonl paths."""
    return [*BUNDLED, "arith"]


def _unknown(spec: str) -> DatasetError:
    return DatasetError(f"unknown dataset '{spec}'; available: {', '.join(dataset_names())}, "
                        "arith:N, or a path to a .jsonl file")


def _parse_arith(spec: str) -> int | None:
    if spec == "arith":
        return None
    text = spec.removeprefix("arith:")
    if not text.isdigit():  # also rejects "-3" and "" without a traceback
        raise DatasetError(f"'{spec}': arith:N needs a whole number N >= 0, got '{text}'")
    return int(text)


def load_dataset(
    spec: str,
    limit: int | None = None,
    seed: int = 0,
    levels: Sequence[Any] | None = None,
    shuffle: bool = False,
    **field_mapping: Any,
) -> list[Problem]:
    """Problems named by `spec`: a bundled name, "arith", "arith:N" or a .jsonl path.

    Order of operations: keep `levels` (for arith: generate only those), shuffle with `seed`
    if asked, then keep the first `limit`. `field_mapping` goes to load_jsonl (paths only).
    """
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    spec = str(spec)
    is_arith = spec == "arith" or spec.startswith("arith:")
    looks_like_file = spec.lower().endswith(".jsonl") or Path(spec).is_file()
    is_file = not is_arith and spec not in BUNDLED and looks_like_file
    if field_mapping and not is_file:
        raise DatasetError(f"field mapping ({', '.join(field_mapping)}) applies only to .jsonl files, "
                           f"not '{spec}'")

    if is_arith:
        n = _parse_arith(spec)
        if n is None:
            n = limit if limit is not None and not shuffle else ARITH_DEFAULT_N
        problems = load_arith(n, list(levels) if levels is not None else None, seed)
    else:
        if spec in BUNDLED:
            problems = load_bundled(spec)
        elif is_file:
            # Stop reading early when nothing below needs the whole file.
            early = limit if levels is None and not shuffle else None
            problems = load_jsonl(spec, limit=early, **field_mapping)
        else:
            raise _unknown(spec)
        if levels is not None:
            if problems and all(p.level is None for p in problems):
                raise DatasetError(f"'{spec}' has no difficulty levels, so levels= cannot select from it")
            wanted = set(levels)
            problems = [p for p in problems if p.level in wanted]

    if shuffle:
        random.Random(f"shuffle|{seed}").shuffle(problems)
    return problems if limit is None else problems[:limit]


def list_datasets() -> list[DatasetInfo]:
    """Every named dataset, for `testtime data list`."""
    arith = DatasetInfo(
        "arith", None, "arith",
        f"Synthetic arithmetic, levels 1-5 (single-digit sums to four-step chains with * and /); "
        f"'arith:N' gives N problems (default {ARITH_DEFAULT_N})",
        "generated (Apache-2.0, as testtime)",
    )
    return [*bundled_infos(), arith]
