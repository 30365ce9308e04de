"""Calibrated tables that ship with testtime: ``run --strategy optimal`` uses one when no ``--table`` is given.

One ships for the embedded default (SmolLM2-135M with the arith-check PRM, calibrated on ``arith``; how it was
made is in ``shipped/README.md``). A table says which policy and PRM it was calibrated for, and the selector
refuses it for others (``selector.check_table``), so only the matching default is offered here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from testtime.errors import ConfigError
from testtime.policy.models import DEFAULT_MODEL

# (embedded model, PRM spec) -> the table shipped for it
SHIPPED: dict[tuple[str, str], str] = {(DEFAULT_MODEL, "arith-check"): "smollm2-135m-arith-check.json"}


def shipped_table(model: str | None, prm: str | None) -> Path:
    """The shipped table for this policy and PRM (defaults: the embedded model, arith-check)."""
    key = (model or DEFAULT_MODEL, prm or "arith-check")
    name = SHIPPED.get(key)
    if name is None:
        raise ConfigError("table", message=(
            f"none ships for model {key[0]} with PRM {key[1]} (shipped: "
            f"{', '.join(f'{m} + {p}' for m, p in SHIPPED)}); calibrate one with `testtime recalibrate` or "
            "`testtime sweep` + `testtime calibrate` and pass it"))
    return Path(str(resources.files("testtime.optimal").joinpath("shipped", name)))
